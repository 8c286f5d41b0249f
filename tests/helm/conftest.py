"""Render the chart with the real Helm engine (helm-python-sdk: Helm's Go SDK through ctypes).

No cluster and no helm binary: `Chart.render` runs Helm's template engine and values-schema
check offline, exactly as `helm template` would.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

ROOT = Path(__file__).parents[2]
CHART = ROOT / "helm" / "qwen3-serving"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
CRDS = Path(__file__).parent / "crds"
RELEASE, NAMESPACE = "qwen3", "ml"

# (id, values): the chart's defaults and every ci/ file, the cases every render test runs on.
VALUE_CASES = [("defaults", None)] + [(p.stem, p) for p in CI_VALUES]

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_values(path: Path | None) -> dict[str, Any]:
    return {} if path is None else (yaml.load(path.read_text(), Loader=_Loader) or {})


@functools.lru_cache(maxsize=1)
def chart() -> helm.Chart:
    return helm.Chart.load(CHART)


def render(values: dict[str, Any] | None = None, *, name: str = RELEASE) -> dict[str, str]:
    """Template path -> rendered text (empty templates and NOTES.txt dropped)."""
    out = chart().render(values or {}, name=name, namespace=NAMESPACE, is_install=True)
    return {path: text for path, text in out.items() if text.strip() and not path.endswith("NOTES.txt")}


def objects(values: dict[str, Any] | None = None, *, name: str = RELEASE) -> list[dict[str, Any]]:
    docs = []
    for text in render(values, name=name).values():
        docs += [d for d in yaml.load_all(text, Loader=_Loader) if d]
    return docs


@functools.lru_cache(maxsize=None)
def _rendered_case(case_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    path = dict(VALUE_CASES)[case_id]
    values = load_values(path)
    return values, objects(values)


@pytest.fixture(params=[c for c, _ in VALUE_CASES])
def rendered(request) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(user values, rendered objects) for the defaults and each ci/ values file."""
    return _rendered_case(request.param)


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def cluster_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(owner kind, RayCluster spec) of every RayService and RayJob."""
    return ([("RayService", d["spec"]["rayClusterConfig"]) for d in of_kind(docs, "RayService")]
            + [("RayJob", d["spec"]["rayClusterSpec"]) for d in of_kind(docs, "RayJob")])


def pod_templates(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(group name, pod template) of every head and worker group."""
    out = []
    for _, spec in cluster_specs(docs):
        out.append(("head", spec["headGroupSpec"]["template"]))
        out += [(g["groupName"], g["template"]) for g in spec.get("workerGroupSpecs", [])]
    return out


@functools.lru_cache(maxsize=None)
def crd_schema(filename: str) -> dict[str, Any]:
    """The v1 openAPIV3Schema of a vendored KubeRay CRD, made strict about unknown fields.

    The API server drops (or, with kubectl's default strict field validation, rejects) fields a
    structural schema does not declare; jsonschema would silently accept them. So every object
    schema that lists properties and allows nothing else gets additionalProperties: false.
    """
    crd = yaml.load((CRDS / filename).read_text(), Loader=_Loader)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return _strict(version["schema"]["openAPIV3Schema"])


def _strict(node: Any) -> Any:
    if isinstance(node, list):
        return [_strict(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out
