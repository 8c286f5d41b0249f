"""values.yaml, values.schema.json and ci/: bad values are rejected at install, every key is
documented, the app config schema is AppConfig's own, the ci/ shapes are configs/'s."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from serving.config import AppConfig
from tests.helm.app_config_schema import VALUES_SCHEMA, synced
from tests.helm.conftest import CHART, ROOT, load_values, render

DEFAULT_MODELS = load_values(CHART / "values.yaml")["appConfig"]["models"]


@pytest.mark.parametrize("values,where", [
    ({"appConfig": {"api_keys": ["k"]}}, "additional properties 'api_keys'"),
    ({"appConfig": {"tenants": [{"name": "t", "keys": ["k"]}]}}, "additional properties 'tenants'"),
    ({"secrets": {"tenants": [{"name": "t", "keys": ["k"], "priorty": 1}]}}, "priorty"),
    ({"appConfig": {"modles": []}}, "additional properties 'modles'"),
    ({"appConfig": {"models": [{"name": "m", "kind": "embed", "engine": {"tensor_parallel_size": 0}}]}},
     "tensor_parallel_size"),
    ({"appConfig": {"models": [{"name": "m", "kind": "classify"}]}}, "/appConfig/models/0"),
    ({"appConfig": {"limits": {"max_inputs_per_request": "lots"}}}, "max_inputs_per_request"),
    ({"fullnameOverride": "x" * 48}, "maxLength"),
    ({"fullnameOverride": "Qwen3"}, "fullnameOverride"),
    ({"image": {"tag": 2.6}}, "/image/tag"),
    ({"workerGroups": {"gpu": {"replicas": -1}}}, "/workerGroups/gpu/replicas"),
    ({"workerGroups": {"GPU_big": {"enabled": True, "replicas": 1, "minReplicas": 1, "maxReplicas": 1}}},
     "GPU_big"),
    ({"workerGroups": {"gpu": {"rayStartParams": {"resources": {"GPU": 1}}}}}, "rayStartParams"),
    ({"workerGroups": {"gpu": {"resources": {"limits": {"nvidia.com/gpu": "one"}}}}}, "nvidia.com~1gpu"),
    ({"head": {"shmSize": "lots"}}, "/head/shmSize"),
    ({"modelCache": {"type": "s3"}}, "/modelCache/type"),
    ({"secrets": {"apiKeys": ["a,b"]}}, "/secrets/apiKeys/0"),
    ({"rayService": {"upgradeStrategy": {"type": "Rolling"}}}, "/rayService/upgradeStrategy/type"),
    ({"rayService": {"initializingTimeout": "soon"}}, "/rayService/initializingTimeout"),
    ({"rayJob": {"backoffLimit": -1}}, "/rayJob/backoffLimit"),
    ({"rayJob": {"submissionMode": "InteractiveMode"}}, "/rayJob/submissionMode"),
    ({"service": {"type": "ExternalName"}}, "/service/type"),
    ({"replicas": 3}, "additional properties 'replicas'"),
])
def test_values_schema_rejects_bad_values(values, where):
    with pytest.raises(helm.HelmValuesError, match=re.escape(where)):
        render(values)


@pytest.mark.parametrize("values,message", [
    ({"workerGroups": {"gpu": {"minReplicas": 3}}}, "need minReplicas (3) <= replicas (1)"),
    ({"rayService": {"upgradeStrategy": {"type": "NewClusterWithIncrementalUpgrade"}}}, "needs autoscaling.enabled"),
])
def test_templates_reject_inconsistent_values(values, message):
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(values)


def test_release_names_kuberay_cannot_take_are_rejected():
    with pytest.raises(helm.HelmRenderError, match="DNS-1035"):
        render(name="1st-release")


def test_values_schema_embeds_the_app_config_schema():
    """values.schema.json's appConfig part is AppConfig's generated schema, not a second one.
    If this fails, run `python -m tests.helm.app_config_schema`."""
    current = json.loads(VALUES_SCHEMA.read_text())
    assert current == synced(current)


def test_app_config_schema_and_app_config_agree_on_the_shipped_configs():
    # Every configs/*.yaml is accepted by both the chart's schema and AppConfig.
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        AppConfig(**data)
        helm.Chart.load(CHART).validate_schema({"appConfig": data})


CI_SHAPES = {"cpu-values.yaml": "cpu.yaml", "gpu-0.6b-values.yaml": "gpu-0.6b.yaml",
             "gpu-8b-tp2-values.yaml": "gpu-8b-tp2.yaml"}


@pytest.mark.parametrize("ci_file,config_file", CI_SHAPES.items())
def test_ci_values_deploy_the_shapes_in_configs(ci_file, config_file):
    config = yaml.safe_load((ROOT / "configs" / config_file).read_text())
    assert load_values(CHART / "ci" / ci_file)["appConfig"] == config


def test_every_ci_file_is_a_known_shape():
    assert {p.name for p in (CHART / "ci").glob("*.yaml")} == set(CI_SHAPES) | {"bulk-rayjob-values.yaml"}


# --- every values.yaml key has a `# --` comment (helm-docs style), as KubeRay's charts do.


def _keys_with_docs(text: str) -> list[tuple[tuple[str, ...], bool]]:
    """(path, has a `# --` comment above) for each block-style key outside list items."""
    lines = text.splitlines()
    stack: list[tuple[int, str]] = []
    out = []
    for i, line in enumerate(lines):
        item = re.match(r"^(\s*)- ", line)
        key = re.match(r"^(\s*)([A-Za-z0-9_./-]+):(\s|$)", line)
        if not (item or key):
            continue
        indent = len((item or key).group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if item:
            stack.append((indent, "[]"))
            continue
        stack.append((indent, key.group(2)))
        path = tuple(k for _, k in stack)
        j, documented = i - 1, False
        while j >= 0 and lines[j].lstrip().startswith("#"):
            documented |= lines[j].lstrip().startswith("# --")
            j -= 1
        out.append((path, documented))
    return out


def _declared(schema: dict[str, Any], path: tuple[str, ...]) -> bool:
    """Whether `path` names a property the values schema declares (not a free-form map entry)."""
    node, declared = schema, False
    for key in path:
        while "$ref" in node:
            node = schema["$defs"][node["$ref"].split("/")[-1]]
        if key in node.get("properties", {}):
            node, declared = node["properties"][key], True
        elif isinstance(node.get("additionalProperties"), dict):
            node, declared = node["additionalProperties"], False
        else:
            return False
    return declared


def test_every_values_key_has_a_doc_comment():
    schema = json.loads(VALUES_SCHEMA.read_text())
    keys = _keys_with_docs((CHART / "values.yaml").read_text())
    # appConfig's contents are documented where they are defined: serving/config.py.
    required = [p for p, _ in keys if "[]" not in p and p[0] != "appConfig" or p == ("appConfig",)]
    missing = [".".join(p) for p, doc in keys if p in required and _declared(schema, p) and not doc]
    assert len(required) > 100 and not missing, missing


def test_doc_check_notices_an_undocumented_key():
    keys = dict(_keys_with_docs("image:\n  # -- documented\n  repository: x\n  tag: y\n"))
    assert keys[("image", "repository")] and not keys[("image", "tag")]


def test_values_yaml_declares_every_schema_property():
    """No schema key that values.yaml forgets to show (and document)."""
    schema = json.loads(VALUES_SCHEMA.read_text())
    shown = {p for p, _ in _keys_with_docs((CHART / "values.yaml").read_text())}
    top = set(schema["properties"]) - {"global"}
    assert top <= {p[0] for p in shown}


def test_defaults_are_valid_for_the_schema_and_app_config():
    chart = helm.Chart.load(CHART)
    chart.validate_schema({})
    AppConfig(**chart.values["appConfig"])
    assert Path(VALUES_SCHEMA).exists()
