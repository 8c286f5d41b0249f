"""Session fixtures: the tiny Qwen3 models are built once per test session."""

from __future__ import annotations

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


def pytest_terminal_summary(terminalreporter):
    if _MEASUREMENTS:
        terminalreporter.section("measurements")
        for name, value in _MEASUREMENTS.items():
            terminalreporter.write_line(f"{name}: {value}")
