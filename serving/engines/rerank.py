"""RerankEngine: Qwen3-Reranker as one constrained generation step on vLLM.

Each (query, document) pair becomes the model card's prompt as token ids, prefix + body +
suffix, and vLLM generates one token restricted to {yes, no}. The score is
p(yes) / (p(yes) + p(no)). Knows nothing of HTTP or Ray.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from serving.config import RerankModelConfig
from serving.engines.base import OwnsEngine, final_output, load_tokenizer, new_request_id, require_texts
from serving.engines.startup import start_engine, startup_errors
from serving.engines.errors import EngineInputError, EngineUnavailableError


@dataclass(frozen=True)
class RerankResult:
    scores: list[float]  # relevance in [0, 1], in input order
    prompt_tokens: int  # tokens the model read, for usage accounting
    cached_tokens: int  # of those, tokens served from vLLM's prefix cache


class RerankPrompts:
    """Builds the model card's reranker prompts as token ids: everything before the engine, no vLLM."""

    def __init__(self, config: RerankModelConfig, tokenizer: Any, max_model_len: int):
        self.config = config
        self.max_model_len = max_model_len  # what the engine runs with
        self.tokenizer = tokenizer
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
              max_tokens_per_doc: int | None = None) -> list[list[int]]:
        """prefix + truncated body + suffix, as token ids, so truncation never cuts the suffix.

        Whole bodies are tokenized, as the reference does, so token boundaries match it exactly;
        all documents of a request then share the leading system+instruction+query tokens.
        """
        if not isinstance(query, str) or not query.strip():
            raise EngineInputError("`query` must be a non-empty string")
        if instruction is not None and (not isinstance(instruction, str) or not instruction.strip()):
            raise EngineInputError("`instruction` must be a non-empty string")
        documents = require_texts(documents, "documents")
        if max_tokens_per_doc is not None:
            documents = self._truncate_documents(documents, max_tokens_per_doc)
        instruction = instruction or self.config.default_instruction
        bodies = [self.config.pair_template.format(instruction=instruction, query=query, document=d)
                  for d in documents]
        encoded = self.tokenizer(bodies, add_special_tokens=False, truncation=True, max_length=self.body_budget)
        return [self.prefix_ids + ids + self.suffix_ids for ids in encoded["input_ids"]]

    def _truncate_documents(self, documents: list[str], max_tokens: int) -> list[str]:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise EngineInputError(f"`max_tokens_per_doc` must be a positive integer, got {max_tokens!r}")
        encoded = self.tokenizer(documents, add_special_tokens=False, return_offsets_mapping=True)
        return [doc if len(offsets) <= max_tokens else doc[: offsets[max_tokens - 1][1]]
                for doc, offsets in zip(documents, encoded["offset_mapping"])]


class RerankEngine(OwnsEngine):
    def __init__(self, config: RerankModelConfig):
        self.config = config
        self._engine = start_engine(
            config,
            enable_prefix_caching=config.enable_prefix_caching,
            # By default vLLM reports logprobs of the raw logits, before allowed_token_ids masks
            # them, so yes/no can fall outside the returned top-k. Processed logprobs are the
            # log-softmax over exactly {yes, no}.
            logprobs_mode="processed_logprobs",
        )
        with startup_errors(config), self.shutdown_on_error():
            self.prompts = RerankPrompts(config, load_tokenizer(config.model), self._engine.model_config.max_model_len)

    async def rerank(self, query: str, documents: Sequence[str], *, instruction: str | None = None,
                     max_tokens_per_doc: int | None = None) -> RerankResult:
        prompts = self.prompts.build(query, documents, instruction, max_tokens_per_doc)
        return await self.score_token_ids(prompts)

    async def score_token_ids(self, prompts: Sequence[list[int]]) -> RerankResult:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=2, detokenize=False,
                                allowed_token_ids=[self.prompts.yes_id, self.prompts.no_id])

        async def one(ids: list[int]) -> tuple[float, int]:
            out = await final_output(self._engine.generate(TokensPrompt(prompt_token_ids=ids), params,
                                                           new_request_id("rerank")))
            return self._score(out.outputs[0].logprobs[0]), out.num_cached_tokens or 0

        # All pairs go in at once: vLLM shares the prefix blocks even within one step.
        results = await asyncio.gather(*(one(p) for p in prompts))
        return RerankResult(scores=[s for s, _ in results],
                            prompt_tokens=sum(len(p) for p in prompts),
                            cached_tokens=sum(c for _, c in results))

    def _score(self, logprobs: dict) -> float:
        try:
            yes, no = logprobs[self.prompts.yes_id].logprob, logprobs[self.prompts.no_id].logprob
        except KeyError as exc:  # cannot happen with processed logprobs and logprobs=2
            raise EngineUnavailableError(f"engine returned no logprob for token {exc}") from exc
        return 1.0 / (1.0 + math.exp(no - yes))
