"""`app_builder` takes the app config as a file path or as the mapping the chart embeds; both
give the same AppConfig, with the environment (API keys from the Secret) on top. No Ray."""

from __future__ import annotations

import pytest
import yaml

from serving.config import AppConfig
from serving.deployments import app as app_module
from tests.helm.conftest import ROOT, objects, of_kind

CONFIG_FILE = ROOT / "configs" / "gpu-8b-tp2.yaml"


@pytest.fixture
def built(monkeypatch):
    """Calls app_builder with source resolution and the Ray app build stubbed out; returns the config."""
    seen = {}
    monkeypatch.setattr("serving.models.sources.resolve_sources", lambda config: (config, {"resolved": True}))
    monkeypatch.setattr(app_module, "build_app", lambda config, sources: seen.update(config=config, sources=sources))
    for var in [v for v in __import__("os").environ if v.startswith("QWEN3_SERVE_")]:
        monkeypatch.delenv(var)

    def call(args):
        app_module.app_builder(args)
        assert seen["sources"] == {"resolved": True}  # resolve_sources still runs on the config
        return seen["config"]
    return call


def test_file_path_and_mapping_give_the_same_config(built):
    from_file = built({"config": str(CONFIG_FILE)})
    from_mapping = built({"config": yaml.safe_load(CONFIG_FILE.read_text())})
    assert isinstance(from_mapping, AppConfig)
    assert from_mapping.model_dump() == from_file.model_dump() == AppConfig.load(CONFIG_FILE).model_dump()


def test_no_config_gives_the_defaults(built):
    assert built({}).model_dump() == AppConfig().model_dump()


def test_environment_overrides_the_mapping(built, monkeypatch):
    monkeypatch.setenv("QWEN3_SERVE_API_KEYS", "k1,k2")
    monkeypatch.setenv("QWEN3_SERVE_LIMITS__MAX_INPUTS_PER_REQUEST", "64")
    config = built({"config": {"limits": {"max_inputs_per_request": 8}}})
    assert [k.get_secret_value() for k in config.api_keys] == ["k1", "k2"]
    assert config.limits.max_inputs_per_request == 64


def test_tenants_come_from_the_secrets_json(built, monkeypatch):
    """The chart's Secret holds `tenants` as JSON (QWEN3_SERVE_TENANTS), as a user may export it."""
    import json

    tenants = [{"name": "search", "keys": ["ks"], "cache_group": "g"},
               {"name": "bulk", "keys": ["kb1", "kb2"], "priority": 9, "input_tokens_per_min": 1000}]
    monkeypatch.setenv("QWEN3_SERVE_TENANTS", json.dumps(tenants))
    config = built({"config": {}})
    assert [(t.name, [k.get_secret_value() for k in t.keys], t.priority) for t in config.tenants] == [
        ("search", ["ks"], 0), ("bulk", ["kb1", "kb2"], 9)]
    assert config.tenants[1].input_tokens_per_min == 1000 and config.tenants[0].cache_group == "g"


def test_invalid_mapping_fails_with_the_field(built):
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        built({"config": {"models": [{"name": "m", "kind": "embed", "engine": {"tensor_parallel_size": 0}}]}})


def test_other_config_types_are_refused(built):
    with pytest.raises(TypeError, match="file path or a mapping"):
        built({"config": ["models"]})


def test_the_charts_serve_args_build_the_app(built):
    (service,) = of_kind(objects(), "RayService")
    (application,) = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    config = built(application["args"])
    assert [m.name for m in config.models] == ["Qwen/Qwen3-Embedding-0.6B", "Qwen/Qwen3-Reranker-0.6B"]
