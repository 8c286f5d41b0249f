"""Session fixtures (the tiny Qwen3 models are built once per test session), and how the suite is
split over pytest-xdist's workers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# No environment is set here: engine settings travel in each test's config, so the tests
# start engines the way a user's clean shell does.


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    from serving.models.tiny import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def embed_tokenizer(tiny_models):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_models["embedding"])


@pytest.fixture(scope="session")
def rerank_tokenizer(tiny_models):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_models["reranker"])


_MEASUREMENTS: dict[str, object] = {}


@pytest.fixture(scope="session")
def measurements() -> dict[str, object]:
    """Numbers a test measured (not asserted on timing), printed in the run's summary."""
    return _MEASUREMENTS


# `make test` runs two xdist workers with `--dist loadgroup`: each group below runs whole in one
# worker, so a package's shared app or cluster (package- and session-scoped fixtures) starts once.
# A group is a package of tests/integration, a module beside them, or tests/unit or tests/helm.
# Workers take groups in this order, longest first (seconds of the suite run alone, README "Tests"),
# so that the two end at about the same time; a group not listed goes last.
LONGEST_FIRST = ("integration/cluster", "integration/serve", "integration/test_autoscaling.py",
                 "integration/replicas", "integration/test_benchmark_smoke.py", "integration/test_cli.py",
                 "integration/test_serve_cli.py", "integration/test_bulk_cli.py",
                 "integration/test_embed_engine.py", "unit", "integration/test_rerank_engine.py", "helm")
TESTS = Path(__file__).parent


def xdist_group(item: pytest.Item) -> str:
    parts = Path(item.path).relative_to(TESTS).parts
    return "/".join(parts[:2]) if parts[0] == "integration" else parts[0]


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the marks
def pytest_collection_modifyitems(config, items):
    for item in items:
        item.add_marker(pytest.mark.xdist_group(xdist_group(item)))
    if "PYTEST_XDIST_WORKER" in os.environ:  # the scheduler takes groups in the workers' collection order
        rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(xdist_group(item), len(rank)))


def pytest_sessionfinish(session):
    if hasattr(session.config, "workeroutput"):  # an xdist worker: its measurements go to the controller
        session.config.workeroutput["measurements"] = json.dumps(_MEASUREMENTS, default=str)


def pytest_testnodedown(node, error):
    _MEASUREMENTS.update(json.loads(getattr(node, "workeroutput", {}).get("measurements", "{}")))


def pytest_terminal_summary(terminalreporter):
    if _MEASUREMENTS:
        terminalreporter.section("measurements")
        for name, value in _MEASUREMENTS.items():
            terminalreporter.write_line(f"{name}: {value}")
