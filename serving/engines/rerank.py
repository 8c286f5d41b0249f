"""RerankEngine: Qwen3-Reranker as one constrained generation step on vLLM.

Each (query, document) pair becomes the model card's prompt as token ids, prefix + body +
suffix, and vLLM generates one token restricted to {yes, no}. The score is
p(yes) / (p(yes) + p(no)). Knows nothing of HTTP or Ray.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from serving.config import RerankModelConfig
from serving.engines.base import OwnsEngine, TextEncoder, final_output, load_tokenizer, new_request_id, require_texts
from serving.engines.errors import EngineInputError, EngineUnavailableError, InputTooLongError
from serving.engines.startup import start_engine, startup_errors
from serving.engines.timing import EngineStats, StageClock, StageTimes
from serving.engines.truncation import DEFAULT, Truncation


@dataclass(frozen=True)
class RerankResult:
    scores: list[float]  # relevance in [0, 1] (or raw logits yes - no), in input order
    prompt_tokens: int  # tokens the model read, for usage accounting
    cached_tokens: int  # of those, tokens served from vLLM's prefix cache
    times: StageTimes = field(default_factory=StageTimes)  # where the call's time went


class RerankPrompts:
    """Builds the model card's reranker prompts as token ids: everything before the engine, no vLLM."""

    def __init__(self, config: RerankModelConfig, tokenizer: Any, max_model_len: int):
        self.config = config
        self.max_model_len = max_model_len  # what the engine runs with
        self.tokenizer = tokenizer
        self.encode = TextEncoder(tokenizer)
        self.yes_id = self._single_token(config.yes_token)
        self.no_id = self._single_token(config.no_token)
        self.prefix_ids: list[int] = tokenizer.encode(config.prefix, add_special_tokens=False)
        self.suffix_ids: list[int] = tokenizer.encode(config.suffix, add_special_tokens=False)
        # One position of max_model_len is left for the generated yes/no token.
        self.body_budget = max_model_len - 1 - len(self.prefix_ids) - len(self.suffix_ids)
        if self.body_budget < 16:
            raise ValueError(f"max_model_len={max_model_len} leaves no room for documents "
                             f"after the {len(self.prefix_ids) + len(self.suffix_ids)}-token prompt frame")

    def _single_token(self, text: str) -> int:
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"reranker answer token {text!r} must be one token, got ids {ids}")
        return ids[0]

    def build(self, query: str, documents: Sequence[str], instruction: str | None = None,
              max_tokens_per_doc: int | None = None, max_tokens_per_query: int | None = None,
              truncation: Truncation = DEFAULT) -> list[list[int]]:
        """prefix + truncated body + suffix, as token ids, so truncation never cuts the suffix.

        Whole bodies are tokenized, as the reference does, so token boundaries match it exactly;
        all documents of a request then share the leading system+instruction+query tokens.
        ``truncation.max_tokens`` bounds the whole prompt (vLLM's ``truncate_prompt_tokens``); the
        body is cut from its end to fit, as the model card truncates, never the prompt frame.
        """
        if not isinstance(query, str) or not query.strip():
            raise EngineInputError("`query` must be a non-empty string")
        if instruction is not None and (not isinstance(instruction, str) or not instruction.strip()):
            raise EngineInputError("`instruction` must be a non-empty string")
        documents = require_texts(documents, "documents")
        if max_tokens_per_doc is not None:
            documents = self._truncate_documents(documents, max_tokens_per_doc, "max_tokens_per_doc")
        if max_tokens_per_query is not None:
            [query] = self._truncate_documents([query], max_tokens_per_query, "max_tokens_per_query")
        budget = self._body_budget(truncation)
        instruction = instruction or self.config.default_instruction
        bodies = [self.config.pair_template.format(instruction=instruction, query=query, document=d)
                  for d in documents]
        encoded = self.encode(bodies, add_special_tokens=False, max_length=budget)
        if budget is None:
            for i, ids in enumerate(encoded):
                if len(ids) > self.body_budget:
                    raise InputTooLongError(f"documents[{i}] makes a {len(ids) + self.frame_tokens}-token prompt; "
                                            f"{self.config.name} accepts at most {self.max_model_len - 1}")
        return [self.prefix_ids + ids + self.suffix_ids for ids in encoded]

    @property
    def frame_tokens(self) -> int:
        return len(self.prefix_ids) + len(self.suffix_ids)

    def _body_budget(self, truncation: Truncation) -> int | None:
        """Tokens the query+document body may keep, or None when over-long prompts are rejected."""
        if truncation.side == "left":
            raise EngineInputError("`truncation_side: left` is not supported by the reranker: it would cut the "
                                   "prompt's instruction and query; bodies are cut from their end")
        # Rerank truncates by default, as vLLM's score API does with truncate_prompt_tokens=-1.
        keep = truncation.keep(self.max_model_len, default_enabled=True)
        if keep is None:
            return None
        keep = min(keep, self.max_model_len - 1)  # one position is the generated yes/no token
        if keep - self.frame_tokens < 1:
            raise EngineInputError(f"`truncate_prompt_tokens` must leave room for the {self.frame_tokens}-token "
                                   f"prompt frame: at least {self.frame_tokens + 1}, got {truncation.max_tokens}")
        return keep - self.frame_tokens

    def _truncate_documents(self, documents: list[str], max_tokens: int, field: str) -> list[str]:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise EngineInputError(f"`{field}` must be a positive integer, got {max_tokens!r}")
        encoded = self.tokenizer(documents, add_special_tokens=False, return_offsets_mapping=True)
        return [doc if len(offsets) <= max_tokens else doc[: offsets[max_tokens - 1][1]]
                for doc, offsets in zip(documents, encoded["offset_mapping"])]


class RerankEngine(OwnsEngine):
    def __init__(self, config: RerankModelConfig, on_step: Callable[[Any, Any], None] | None = None):
        """``on_step(scheduler_stats, iteration_stats)``: called with vLLM's stats after every engine step."""
        self.config = config
        self.stats = EngineStats(on_step)
        self._engine = start_engine(
            config,
            self.stats,
            enable_prefix_caching=config.enable_prefix_caching,
            # By default vLLM reports logprobs of the raw logits, before allowed_token_ids masks
            # them, so yes/no can fall outside the returned top-k. Processed logprobs are the
            # log-softmax over exactly {yes, no}.
            logprobs_mode="processed_logprobs",
        )
        with startup_errors(config), self.shutdown_on_error():
            self.tokenizer = load_tokenizer(config.model)
            self.prompts = RerankPrompts(config, self.tokenizer, self._engine.model_config.max_model_len)

    async def rerank(self, query: str, documents: Sequence[str], *, instruction: str | None = None,
                     max_tokens_per_doc: int | None = None, max_tokens_per_query: int | None = None,
                     truncation: Truncation = DEFAULT, raw_scores: bool = False, priority: int = 0) -> RerankResult:
        """Scores in input order: p(yes) in [0, 1], or with ``raw_scores`` the logit before the sigmoid,
        logp(yes) - logp(no) (what a sequence-classification reranker reports without activation).
        ``priority``: vLLM's (lower first)."""
        clock = StageClock()
        prompts = self.prompts.build(query, documents, instruction, max_tokens_per_doc, max_tokens_per_query,
                                     truncation)
        return await self.score_token_ids(prompts, raw_scores=raw_scores, clock=clock, priority=priority)

    async def score_token_ids(self, prompts: Sequence[list[int]], *, raw_scores: bool = False,
                              clock: StageClock | None = None, priority: int = 0) -> RerankResult:
        from vllm import SamplingParams
        from vllm.inputs.engine import tokens_input

        params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=2, detokenize=False,
                                allowed_token_ids=[self.prompts.yes_id, self.prompts.no_id])

        clock = clock or StageClock()
        clock.tokenized()

        async def one(ids: list[int]) -> tuple[float, int]:
            request_id = new_request_id("rerank")
            out = await final_output(self._engine.generate(tokens_input(ids), params, request_id, priority=priority))
            clock.output_arrived()
            clock.queued(await self.stats.queue_time(request_id))
            return self._score(out.outputs[0].logprobs[0], raw_scores), out.num_cached_tokens or 0

        # All pairs go in at once: vLLM shares the prefix blocks even within one step.
        results = await asyncio.gather(*(one(p) for p in prompts))
        return RerankResult(scores=[s for s, _ in results],
                            prompt_tokens=sum(len(p) for p in prompts),
                            cached_tokens=sum(c for _, c in results), times=clock.times(len(prompts)))

    def _score(self, logprobs: dict, raw: bool = False) -> float:
        try:
            yes, no = logprobs[self.prompts.yes_id].logprob, logprobs[self.prompts.no_id].logprob
        except KeyError as exc:  # cannot happen with processed logprobs and logprobs=2
            raise EngineUnavailableError(f"engine returned no logprob for token {exc}") from exc
        return yes - no if raw else 1.0 / (1.0 + math.exp(no - yes))
