"""What the embed and rerank engines share at run time: tokenizer, request ids, output streams, shutdown."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from serving.engines.errors import EngineDiedError, EngineInputError, EngineUnavailableError


def load_tokenizer(model: str):
    """The checkpoint's own HF tokenizer: the same files vLLM loads, so ids agree."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


class TextEncoder:
    """Token ids of texts, from the checkpoint's tokenizer called on its Rust core.

    The core runs the same normaliser, pre-tokenizer, model and post-processor as the HF tokenizer
    (so the EOS that Qwen3-Embedding's post-processor appends is there): the ids are the HF call's.
    What it skips is transformers' Python around each call (argument checks, re-applying truncation
    and padding state, building a BatchEncoding), most of a short query's tokenizing time. The core
    is a copy with truncation and padding off, so the HF tokenizer's per-call state never leaks in.
    A tokenizer without a Rust core (a slow one) is called as is.
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.core = None
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:
            from tokenizers import Tokenizer

            self.core = Tokenizer.from_str(backend.to_str())
            self.core.no_truncation()
            self.core.no_padding()
            self.core.encode_special_tokens = bool(getattr(tokenizer, "split_special_tokens", False))

    def __call__(self, texts: Sequence[str], add_special_tokens: bool = True,
                 max_length: int | None = None) -> list[list[int]]:
        """Each text's ids; with ``max_length``, a longer one is cut as the HF tokenizer's
        ``truncation=True`` cuts it (keeping room for the special tokens it appends)."""
        texts = list(texts)
        if self.core is None:
            return self.tokenizer(texts, add_special_tokens=add_special_tokens, truncation=max_length is not None,
                                  max_length=max_length)["input_ids"]
        if len(texts) == 1:  # holds the GIL: a batch call releases it, and on a busy host waits to get it back
            ids = [self.core.encode(texts[0], add_special_tokens=add_special_tokens).ids]
        else:  # spread over the cores
            ids = [e.ids for e in self.core.encode_batch_fast(texts, add_special_tokens=add_special_tokens)]
        if max_length is not None:
            long = [i for i, t in enumerate(ids) if len(t) > max_length]
            if long:  # rare, and truncation has its own rules: the HF tokenizer's own call
                cut = self.tokenizer([texts[i] for i in long], add_special_tokens=add_special_tokens, truncation=True,
                                     max_length=max_length)["input_ids"]
                for i, t in zip(long, cut):
                    ids[i] = t
        return ids


@dataclass(frozen=True)
class Tokens:
    """One text as the model's tokenizer splits it."""

    text: str  # what was tokenized: the input, or the query prompt built from it
    ids: list[int]
    pieces: list[str]  # the tokenizer's token strings
    spans: list[tuple[int, int] | None]  # character span of each token in `text`; None for added special tokens


def tokenize_texts(tokenizer: Any, texts: Sequence[str], add_special_tokens: bool = True) -> list[Tokens]:
    encoded = tokenizer(list(texts), add_special_tokens=add_special_tokens, return_offsets_mapping=True,
                        return_special_tokens_mask=True)
    result = []
    for text, ids, offsets, special in zip(texts, encoded["input_ids"], encoded["offset_mapping"],
                                           encoded["special_tokens_mask"]):
        spans = [None if s else (int(a), int(b)) for (a, b), s in zip(offsets, special)]
        result.append(Tokens(text, list(ids), tokenizer.convert_ids_to_tokens(ids), spans))
    return result


def decode_ids(tokenizer: Any, sequences: Sequence[Sequence[int]], skip_special_tokens: bool = True) -> list[str]:
    vocab = len(tokenizer)
    for i, ids in enumerate(sequences):
        for token in ids:
            if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < vocab:
                raise EngineInputError(f"ids[{i}] holds {token!r}, not a token id in [0, {vocab})")
    return [tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens) for ids in sequences]


def new_request_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex}"


@contextmanager
def dead_engine_is_unavailable() -> Iterator[None]:
    """Translate vLLM's EngineDeadError into EngineDiedError (503 at the API)."""
    from vllm.v1.engine.exceptions import EngineDeadError

    try:
        yield
    except EngineDeadError as exc:
        raise EngineDiedError(f"engine is not available: {exc}") from exc


async def final_output(stream: AsyncIterator[Any]) -> Any:
    """Drain a vLLM output stream and return its last (final) output."""
    out = None
    with dead_engine_is_unavailable():
        async for out in stream:
            pass
    return out


def require_texts(values: Any, what: str) -> list[str]:
    """A non-empty list of non-empty strings, or a clear EngineInputError."""
    if isinstance(values, str) or not isinstance(values, Sequence) or len(values) == 0:
        raise EngineInputError(f"{what} must be a non-empty list of strings")
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise EngineInputError(f"{what}[{i}] must be a string, got {type(value).__name__}")
        if not value:
            raise EngineInputError(f"{what}[{i}] is an empty string")
    return list(values)


class OwnsEngine:
    """Base for classes holding an AsyncLLM in ``_engine``: explicit, idempotent shutdown."""

    _engine: Any = None
    tokenizer: Any = None  # the checkpoint's HF tokenizer, set by the subclass

    def format_query(self, text: str) -> str:
        raise EngineInputError("the query prompt applies to embedding models only")

    def tokenize(self, texts: Sequence[str], *, add_special_tokens: bool = True,
                 input_type: str = "document") -> list[Tokens]:
        """Texts as the model's tokenizer splits them; `query` tokenizes the query prompt built from each."""
        texts = require_texts(texts, "texts")
        if input_type == "query":
            texts = [self.format_query(t) for t in texts]
        return tokenize_texts(self.tokenizer, texts, add_special_tokens)

    def decode(self, sequences: Sequence[Sequence[int]], *, skip_special_tokens: bool = True) -> list[str]:
        return decode_ids(self.tokenizer, sequences, skip_special_tokens)

    def scheduler_limits(self) -> dict[str, Any]:
        """What the running engine resolved (vLLM's defaults fill what the config leaves unset): its
        dtype, token budget and sequences per step."""
        vllm_config = self._engine.vllm_config
        scheduler = vllm_config.scheduler_config
        return {"dtype": str(vllm_config.model_config.dtype).removeprefix("torch."),
                "max_num_batched_tokens": scheduler.max_num_batched_tokens, "max_num_seqs": scheduler.max_num_seqs}

    async def check_health(self) -> None:
        """Raise EngineUnavailableError unless the engine can take requests."""
        if self._engine is None:
            raise EngineUnavailableError("engine is shut down")
        with dead_engine_is_unavailable():
            await self._engine.check_health()

    @contextmanager
    def shutdown_on_error(self) -> Iterator[None]:
        """Stop the engine if the rest of the constructor fails, so no engine process is orphaned."""
        try:
            yield
        except BaseException:
            self.shutdown()
            raise

    def shutdown(self) -> None:
        """Stop the engine-core processes now. Left to garbage collection, AsyncLLM's finaliser
        runs during interpreter teardown and prints errors instead of exiting cleanly."""
        import gc

        engine, self._engine = self._engine, None
        if engine is not None:
            timeout_s = _shutdown_timeout_s(engine)
            # The kill after that short wait is expected: vLLM's warning about it would only alarm.
            with _quiet("vllm.v1.utils") if timeout_s is not None else nullcontext():
                engine.shutdown(timeout=timeout_s)
            del engine
            gc.collect()


def _shutdown_timeout_s(engine: Any) -> float | None:
    """How long the engine-core process may take to exit after SIGTERM before it is killed.

    With the model in the engine-core process (one CPU shard, the `uni` executor), all that is left
    to do after SIGTERM is unfreezing and collecting its whole heap, and the interpreter's teardown:
    2.5 s on an idle machine, over vLLM's 5 s default (then SIGKILL anyway) on 2 busy cores. It has
    no processes of its own to stop, so 0.5 s is enough. Other layouts keep vLLM's default: their
    engine core stops its workers first."""
    parallel = getattr(getattr(engine, "vllm_config", None), "parallel_config", None)
    return 0.5 if getattr(parallel, "distributed_executor_backend", None) == "uni" else None


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    import logging

    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
