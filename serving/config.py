"""Typed configuration. This module is the only place defaults live.

Model quirks (hf_overrides, prompt strings, yes/no tokens) are config fields, so a YAML file in
``configs/`` can describe any Qwen3 embedding/reranker checkpoint without code branches.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serving import prompts


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EngineConfig(_Strict):
    """vLLM engine settings shared by the embed and rerank engines."""

    model: str = Field(description="Hub id or local path of the checkpoint.")
    served_model_name: str | None = Field(None, description="Name clients use; defaults to `model`.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights/activation dtype. `auto` uses the checkpoint's (bf16 for Qwen3).")
    max_model_len: int = Field(8192, ge=16, description="Max tokens per sequence, prompt included.")
    tensor_parallel_size: int = Field(1, ge=1, description="Shards per replica (GPUs, or CPU NUMA/core groups).")
    hf_overrides: dict[str, Any] = Field(default_factory=dict, description="Overrides applied to the HF config.")
    enforce_eager: bool = Field(False, description="Skip torch.compile / CUDA graphs (faster start, slower run).")
    block_size: int | None = Field(None, ge=1, description="KV-cache block size in tokens; None = platform default.")
    max_num_seqs: int | None = Field(None, ge=1, description="Max sequences per engine step; None = vLLM default.")
    max_num_batched_tokens: int | None = Field(None, ge=1, description="Token budget per engine step.")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="Fraction of GPU memory vLLM may use.")
    cpu_kvcache_space_gib: int | None = Field(
        None, ge=1, description="CPU backend only: KV cache size in GiB (VLLM_CPU_KVCACHE_SPACE).")
    cpu_omp_threads_bind: str | None = Field(
        None, description='CPU backend only: VLLM_CPU_OMP_THREADS_BIND, e.g. "0-1" (TP=1) or "0|1" (TP=2).')
    seed: int = Field(0, description="Engine seed.")

    @property
    def name(self) -> str:
        return self.served_model_name or self.model


class EmbedModelConfig(EngineConfig):
    """A Qwen3-Embedding model: last-token pooling on the appended EOS, L2-normalised, MRL dimensions."""

    model: str = Field("Qwen/Qwen3-Embedding-0.6B", description="Hub id or local path of the checkpoint.")
    # vLLM rejects `dimensions` unless the config declares matryoshka support; Qwen3's configs don't.
    hf_overrides: dict[str, Any] = Field(
        default_factory=lambda: {"is_matryoshka": True}, description="Overrides applied to the HF config.")
    default_instruction: str = Field(
        prompts.DEFAULT_EMBED_INSTRUCTION, min_length=1, description="Task used for queries that name none.")
    query_template: str = Field(
        prompts.EMBED_QUERY_TEMPLATE, description="Query format; must contain {instruction} and {query}.")
    min_dimensions: int = Field(32, ge=1, description="Smallest MRL output dimension allowed.")
    truncate: bool = Field(
        True, description="Inputs longer than max_model_len are truncated (keeping the EOS) if true, rejected if false.")

    @model_validator(mode="after")
    def _check_template(self) -> EmbedModelConfig:
        for key in ("{instruction}", "{query}"):
            if key not in self.query_template:
                raise ValueError(f"query_template must contain {key}; got {self.query_template!r}")
        return self


class RerankModelConfig(EngineConfig):
    """A Qwen3-Reranker model scored as p(yes) / (p(yes) + p(no)) on one generated token."""

    model: str = Field("Qwen/Qwen3-Reranker-0.6B", description="Hub id or local path of the checkpoint.")
    enable_prefix_caching: bool = Field(
        True, description="Reuse the KV cache of the shared system+instruction+query prefix across documents.")
    default_instruction: str = Field(
        prompts.DEFAULT_RERANK_INSTRUCTION, min_length=1, description="Instruction used when a request names none.")
    prefix: str = Field(prompts.RERANK_PREFIX, description="System prompt and user-turn opener.")
    pair_template: str = Field(
        prompts.RERANK_PAIR_TEMPLATE, description="Must contain {instruction}, {query} and {document}.")
    suffix: str = Field(prompts.RERANK_SUFFIX, description="Assistant turn opener with the empty think block.")
    yes_token: str = Field(prompts.RERANK_YES_TOKEN, description="Token whose probability is the relevance.")
    no_token: str = Field(prompts.RERANK_NO_TOKEN, description="Token for 'not relevant'.")

    @model_validator(mode="after")
    def _check_template(self) -> RerankModelConfig:
        for key in ("{instruction}", "{query}", "{document}"):
            if key not in self.pair_template:
                raise ValueError(f"pair_template must contain {key}; got {self.pair_template!r}")
        return self
