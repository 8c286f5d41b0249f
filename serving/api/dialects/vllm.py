"""vLLM's score API: `POST /v1/score` and `POST /score` with `text_1` and `text_2`, computed by the reranker.

One `text_1` is scored against every `text_2` (1:N); equal-length lists are scored pairwise (N:N), as
vLLM does. Pairs that share a `text_1` go to the reranker as one request, so they share its cached
prompt prefix. vLLM's other request fields on the native routes live in `serving/api/protocol.py`.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, model_validator

from serving.api.errors import RequestTooLarge
from serving.api.pipeline import Pipeline, check_total_chars, new_id, to_internal
from serving.api.protocol import NonEmptyStr, RerankRequest, ScoringOptions, Usage

Texts = NonEmptyStr | Annotated[list[NonEmptyStr], Field(min_length=1)]

# --- schemas


class ScoreRequest(ScoringOptions):
    text_1: Texts = Field(description="The query, or one query per `text_2`.")
    text_2: Texts = Field(description="The documents to score against `text_1`.")

    @model_validator(mode="after")
    def _pairs_line_up(self) -> ScoreRequest:
        first, second = _as_list(self.text_1), _as_list(self.text_2)
        if len(first) > 1 and len(first) != len(second):
            raise ValueError(f"`text_1` has {len(first)} texts and `text_2` {len(second)}: send one `text_1`, "
                             "or as many as `text_2`")
        return self

    def pairs(self) -> list[tuple[str, str]]:
        first, second = _as_list(self.text_1), _as_list(self.text_2)
        return [(first[0] if len(first) == 1 else first[i], doc) for i, doc in enumerate(second)]


class ScoreData(BaseModel):
    index: int
    object: Literal["score"] = "score"
    score: float


class ScoreResponse(BaseModel):
    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[ScoreData]
    usage: Usage


def _as_list(texts: str | list[str]) -> list[str]:
    return [texts] if isinstance(texts, str) else texts


# --- adapters


def rerank_requests(body: ScoreRequest) -> list[tuple[list[int], RerankRequest]]:
    """One rerank request per distinct `text_1`, with the indices of its pairs."""
    groups: dict[str, list[int]] = {}
    pairs = body.pairs()
    for i, (query, _) in enumerate(pairs):
        groups.setdefault(query, []).append(i)
    return [(indices, to_internal(RerankRequest, query=query, documents=[pairs[i][1] for i in indices],
                                  return_documents=False, **body.options()))
            for query, indices in groups.items()]


# --- routes


def router(pipeline: Pipeline) -> APIRouter:
    api = APIRouter()
    limits = pipeline.config.limits

    async def score(body: ScoreRequest, request: Request) -> ScoreResponse:
        pairs = body.pairs()
        if len(pairs) > limits.max_documents_per_request:
            raise RequestTooLarge(f"{len(pairs)} pairs; at most {limits.max_documents_per_request} per request")
        check_total_chars(sum(len(q) + len(d) for q, d in pairs), limits)
        groups = rerank_requests(body)
        results = await pipeline.rerank_many([r for _, r in groups], request, endpoint="score")
        scores = [0.0] * len(pairs)
        for (indices, _), result in zip(groups, results):
            for i, s in zip(indices, result.scores):
                scores[i] = s
        tokens = sum(r.tokens for r in results)
        return ScoreResponse(id=new_id("score"), created=int(time.time()), model=results[0].model,
                             data=[ScoreData(index=i, score=s) for i, s in enumerate(scores)],
                             usage=Usage(prompt_tokens=tokens, total_tokens=tokens))

    for path in ("/v1/score", "/score"):
        api.add_api_route(path, score, methods=["POST"], response_model=ScoreResponse)
    return api
