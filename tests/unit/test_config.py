import pytest
from pydantic import ValidationError

from serving.config import EmbedModelConfig, RerankModelConfig


def test_defaults_are_the_hub_models_with_matryoshka_enabled():
    assert EmbedModelConfig().model == "Qwen/Qwen3-Embedding-0.6B"
    assert EmbedModelConfig().hf_overrides == {"is_matryoshka": True}
    assert RerankModelConfig().model == "Qwen/Qwen3-Reranker-0.6B"
    assert RerankModelConfig().enable_prefix_caching


def test_templates_missing_a_placeholder_fail_at_load():
    with pytest.raises(ValidationError, match=r"\{query\}"):
        EmbedModelConfig(query_template="Instruct: {instruction}")
    with pytest.raises(ValidationError, match=r"\{document\}"):
        RerankModelConfig(pair_template="{instruction} {query}")


def test_unknown_fields_are_rejected():
    with pytest.raises(ValidationError, match="tensor_paralel_size"):
        EmbedModelConfig(tensor_paralel_size=2)


def test_served_name_defaults_to_model():
    assert EmbedModelConfig(model="m").name == "m"
    assert EmbedModelConfig(model="m", served_model_name="alias").name == "alias"


def test_a_core_binding_list_gives_each_replica_of_a_node_its_own_cores():
    from serving.config import EmbedModelConfig
    from serving.engines.startup import cores_for_replica

    config = EmbedModelConfig(cpu_omp_threads_bind=["0", "1"])
    assert [cores_for_replica(config.cpu_omp_threads_bind, r) for r in range(3)] == ["0", "1", "0"]
    assert cores_for_replica("0-1", 5) == "0-1" and cores_for_replica(None) is None


def test_a_relative_calibration_path_is_made_absolute_where_the_config_loads(tmp_path, monkeypatch):
    from serving.config import AppConfig

    monkeypatch.chdir(tmp_path)
    config = AppConfig.model_validate({"models": [{"name": "e", "kind": "embed",
                                                   "quantization": {"calibration": "cal/q.npy"}}]})
    assert config.models[0].quantization.calibration == str(tmp_path / "cal" / "q.npy")
    default = AppConfig.model_validate({"models": [{"name": "e", "kind": "embed"}]})
    assert default.models[0].quantization.calibration is None
    with pytest.raises(ValidationError, match="calibraton"):
        AppConfig.model_validate({"models": [{"name": "e", "kind": "embed", "quantization": {"calibraton": "x"}}]})


@pytest.mark.parametrize("device, backend, world_size, asked, runs_in_engine_core", [
    ("cpu", "mp", 1, None, True),  # vLLM's CPU platform turns a one-shard engine's `uni` into `mp`
    ("cpu", None, 1, None, True),
    ("cpu", "mp", 1, "mp", False),  # asked for: vLLM's own layout
    ("cpu", "mp", 2, None, False),  # TP=2: a worker process per shard
    ("cuda", None, 1, None, False),
])
def test_one_cpu_shard_runs_in_the_engine_core_unless_mp_is_asked_for(device, backend, world_size, asked,
                                                                       runs_in_engine_core):
    from types import SimpleNamespace

    from serving.engines.startup import _run_cpu_worker_in_engine_core

    parallel = SimpleNamespace(distributed_executor_backend=backend, world_size_across_dp=world_size)
    vllm_config = SimpleNamespace(device_config=SimpleNamespace(device_type=device), parallel_config=parallel)
    config = EmbedModelConfig(distributed_executor_backend=asked)
    assert _run_cpu_worker_in_engine_core(config, vllm_config) is runs_in_engine_core
    assert parallel.distributed_executor_backend == ("uni" if runs_in_engine_core else backend)
