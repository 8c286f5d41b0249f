"""EmbedEngine: Qwen3-Embedding on vLLM's pooling runner.

Last-token pooling on the EOS that the Qwen3-Embedding tokenizer appends, then L2
normalisation; MRL dimensions are truncated and re-normalised by vLLM (the config declares
``is_matryoshka``). Knows nothing of HTTP or Ray.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from serving.config import EmbedModelConfig
from serving.engines.base import OwnsEngine, TextEncoder, final_output, load_tokenizer, new_request_id, require_texts
from serving.engines.cache import EmbeddingCache, ids_bytes
from serving.engines.errors import EngineInputError, InputTooLongError
from serving.engines.startup import lane_steps, start_engine, startup_errors
from serving.engines.timing import EngineStats, StageClock, StageTimes
from serving.engines.truncation import DEFAULT, Truncation

InputType = Literal["query", "document"]


@dataclass(frozen=True)
class EmbedResult:
    embeddings: np.ndarray  # float32, shape (n_inputs, dimensions), rows L2-normalised unless asked not to
    prompt_tokens: int  # tokens the model read, for usage accounting
    times: StageTimes = field(default_factory=StageTimes)  # where the call's time went


def check_dimensions(config: EmbedModelConfig, hidden_size: int, dimensions: int | None) -> None:
    """MRL sizes run from the config's minimum to the model's hidden size."""
    if dimensions is None:
        return
    lo, hi = config.min_dimensions, hidden_size
    if isinstance(dimensions, bool) or not isinstance(dimensions, int) or not lo <= dimensions <= hi:
        raise EngineInputError(f"`dimensions` must be an integer between {lo} and {hi} for {config.name}, "
                               f"got {dimensions!r}")


class EmbedInputs:
    """Validation and tokenization of embed requests: everything before the engine, no vLLM."""

    def __init__(self, config: EmbedModelConfig, tokenizer: Any, hidden_size: int, vocab_size: int,
                 max_model_len: int):
        self.config = config
        self.tokenizer = tokenizer
        self.encode = TextEncoder(tokenizer)
        self.max_dimensions = hidden_size
        self.vocab_size = vocab_size
        self.max_model_len = max_model_len  # what the engine runs with, not what the config asked for

    def check_dimensions(self, dimensions: int | None) -> None:
        check_dimensions(self.config, self.max_dimensions, dimensions)

    def format_query(self, query: str, instruction: str | None = None) -> str:
        return self.config.query_template.format(instruction=instruction or self.config.default_instruction,
                                                 query=query)

    def tokenize(self, inputs: Any, *, input_type: InputType = "document", instruction: str | None = None,
                 first_index: int = 0, truncation: Truncation = DEFAULT) -> list[list[int]]:
        """Texts become token ids ending in EOS; token-id inputs are taken verbatim.

        Over-long inputs are cut as ``truncation`` says (vLLM's ``truncate_prompt_tokens`` semantics)
        or rejected. ``first_index`` numbers inputs in error messages when this is one chunk of a
        larger request.
        """
        if input_type not in ("query", "document"):
            raise EngineInputError(f"`input_type` must be 'query' or 'document', got {input_type!r}")
        if instruction is not None and (not isinstance(instruction, str) or not instruction.strip()):
            raise EngineInputError("`instruction` must be a non-empty string")
        keep = truncation.keep(self.max_model_len, self.config.truncate)
        if _is_token_lists(inputs):
            ids = [self._check_token_ids(i, list(t)) for i, t in enumerate(inputs, start=first_index)]
            if keep is not None:
                ids = [truncation.cut(t, keep) for t in ids]
        else:
            texts = require_texts(inputs, "input")
            if input_type == "query":
                texts = [self.format_query(t, instruction) for t in texts]
            if keep is not None and truncation.side is None:
                # The tokenizer's truncation reserves room for the appended EOS, so it survives
                # (vLLM tokenizes the same way when no side is given).
                ids = self.encode(texts, max_length=keep)
            else:
                # An explicit side slices the full sequence, as vLLM does: `right` may drop the EOS.
                ids = self.encode(texts)
                if keep is not None:
                    ids = [truncation.cut(t, keep) for t in ids]
        limit = self.max_model_len
        for i, t in enumerate(ids, start=first_index):
            if len(t) > limit:
                raise InputTooLongError(f"input[{i}] has {len(t)} tokens; {self.config.name} accepts at most {limit}")
        return ids

    def _check_token_ids(self, index: int, ids: list[Any]) -> list[int]:
        if not ids:
            raise EngineInputError(f"input[{index}] is an empty token list")
        for token in ids:
            if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < self.vocab_size:
                raise EngineInputError(f"input[{index}] holds {token!r}, not a token id in [0, {self.vocab_size})")
        return ids


class EmbedEngine(OwnsEngine):
    def __init__(self, config: EmbedModelConfig, on_step: Callable[[Any, Any], None] | None = None,
                 cache: EmbeddingCache | None = None, cache_all: bool = False):
        """``on_step(scheduler_stats, iteration_stats)``: called with vLLM's stats after every engine step.
        ``cache``: vectors of earlier calls that name a cache scope; ``cache_all``: documents too, not
        only queries."""
        self.config = config
        self.stats = EngineStats(on_step)
        self.cache, self.cache_all = cache, cache_all
        self._engine = start_engine(
            config,
            self.stats,
            runner="pooling",
            # Qwen3-Embedding reads the hidden state of the final (EOS) token, then L2-normalises.
            pooler_config={"pooling_type": "LAST", "use_activation": True},
            **lane_steps(config),
        )
        with startup_errors(config), self.shutdown_on_error():
            model_config = self._engine.model_config
            self.tokenizer = load_tokenizer(config.model)
            self.inputs = EmbedInputs(config, self.tokenizer, model_config.hf_config.hidden_size,
                                      model_config.hf_config.vocab_size, model_config.max_model_len)

    def format_query(self, text: str) -> str:
        return self.inputs.format_query(text)

    async def embed(self, inputs: Any, *, input_type: InputType = "document", instruction: str | None = None,
                    dimensions: int | None = None, first_index: int = 0, truncation: Truncation = DEFAULT,
                    normalize: bool = True, priority: int = 0, cache_scope: str | None = None) -> EmbedResult:
        """Embed a batch. All inputs go to vLLM at once so continuous batching fills each step.

        ``normalize=False`` returns the pooled hidden state as is (vLLM's ``use_activation: false``).
        ``priority``: vLLM's (lower first). ``cache_scope``: whose cached vectors this call may use and
        fill (a tenant, or a group of them); None, or a document while only queries are cached: none.
        """
        clock = StageClock()
        self.inputs.check_dimensions(dimensions)
        token_ids = self.inputs.tokenize(inputs, input_type=input_type, instruction=instruction,
                                         first_index=first_index, truncation=truncation)
        if not (self.cache_all or input_type == "query"):
            cache_scope = None
        return await self.embed_token_ids(token_ids, dimensions=dimensions, normalize=normalize, clock=clock,
                                          priority=priority, cache_scope=cache_scope)

    async def embed_token_ids(self, token_ids: Sequence[list[int]], *, dimensions: int | None = None,
                              normalize: bool = True, clock: StageClock | None = None, priority: int = 0,
                              cache_scope: str | None = None) -> EmbedResult:
        """Repeated inputs of the call are computed once; with a cache and a scope, cached ones not at all."""
        from vllm import PoolingParams
        from vllm.inputs.engine import tokens_input

        params = PoolingParams(task="embed", dimensions=dimensions, use_activation=bool(normalize))
        clock = clock or StageClock()
        clock.tokenized()
        cache = self.cache if cache_scope is not None else None
        rows = [ids_bytes(ids) for ids in token_ids]  # input -> its ids, compared whole
        vectors: dict[bytes, np.ndarray] = {}
        if cache is not None:
            for row in rows:
                if row not in vectors and (hit := cache.get(cache.key(cache_scope, row, dimensions, normalize))) is not None:
                    vectors[row] = hit
        todo = {row: ids for row, ids in zip(rows, token_ids) if row not in vectors}

        async def one(ids: list[int]) -> np.ndarray:
            request_id = new_request_id("embed")
            # Ids rendered as vLLM's own renderer would: taken on the event loop, where a raw prompt
            # would cost a job on vLLM's input-processing thread per input.
            out = await final_output(self._engine.encode(tokens_input(ids), params, request_id, priority=priority))
            clock.output_arrived()
            clock.queued(await self.stats.queue_time(request_id))
            return out.outputs.data.float().numpy()

        computed = await asyncio.gather(*(one(ids) for ids in todo.values()))
        vectors |= zip(todo, computed)
        if cache is not None:
            for row, vector in zip(todo, computed):
                cache.put(cache.key(cache_scope, row, dimensions, normalize), vector)
            cache.stats.hits += len(rows) - len(todo)
            cache.stats.misses += len(todo)
        return EmbedResult(embeddings=np.stack([vectors[row] for row in rows]).astype(np.float32, copy=False),
                           prompt_tokens=sum(len(ids) for ids in token_ids), times=clock.times(len(token_ids)))


def _is_token_lists(inputs: Any) -> bool:
    return (isinstance(inputs, Sequence) and not isinstance(inputs, str) and len(inputs) > 0
            and all(isinstance(x, Sequence) and not isinstance(x, str) for x in inputs))
