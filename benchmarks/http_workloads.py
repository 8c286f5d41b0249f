"""The HTTP benchmark's requests: stdlib docstrings and sources, written as `vllm bench serve` custom datasets.

Every peer gets byte-identical request files per point (same texts, same order), so their
throughputs compare and their reported prompt tokens can be checked against each other and
against the serving code's own tokenization.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from benchmarks.workloads import RerankRequest, WorkloadSpec, build_workload, clip_to_tokens, stdlib_snippets

Task = Literal["embed", "rerank"]


@dataclass(frozen=True)
class HttpWorkload:
    """One request shape, swept over concurrency levels."""

    name: str  # "embed-b1", "embed-b32", "embed-short", "rerank-50"
    task: Task
    client_batch: int  # inputs per request (rerank: documents per query)
    max_tokens: int  # each text is clipped to this many tokens
    concurrency: tuple[int, ...]
    requests: int  # per point, at least ...
    requests_per_concurrency: int = 0  # ... and this many per concurrent client
    warmups: int = 4  # `vllm bench serve --num-warmups`: untimed requests before each point

    def requests_at(self, concurrency: int) -> int:
        # At least two waves of the concurrency: fewer requests never reach it.
        return max(self.requests, self.requests_per_concurrency * concurrency, 2 * concurrency)


@dataclass(frozen=True)
class Point:
    """One workload at one concurrency: the request file and what the model should read."""

    workload: HttpWorkload
    concurrency: int
    dataset: Path  # JSONL, one {"prompt": [...]} per request (rerank: [query, *documents])
    requests: int
    expected_tokens: tuple[int, ...]  # per request, from the serving code's tokenization

    @property
    def key(self) -> str:
        return f"{self.workload.name}@c{self.concurrency}"


def full_workloads(concurrency: Sequence[int]) -> list[HttpWorkload]:
    c = tuple(concurrency)
    return [
        HttpWorkload("embed-b1", "embed", 1, 256, c, requests=400),
        # One short search query per request (at most 32 tokens): where the path's fixed cost shows most.
        HttpWorkload("embed-q32", "embed", 1, 32, c, requests=400),
        # 32 inputs per request saturates the engine from a few concurrent requests on; past 32
        # (1,024 inputs in flight) a point only adds minutes of queueing.
        HttpWorkload("embed-b32", "embed", 32, 256, tuple(x for x in c if x <= 32) or c[:1], requests=32,
                     requests_per_concurrency=2),
        HttpWorkload("embed-short", "embed", 1, 16, (1,), requests=200, warmups=10),
        HttpWorkload("rerank-50", "rerank", 50, 256, (4,), requests=16, warmups=1),
    ]


def smoke_workloads(concurrency: Sequence[int]) -> list[HttpWorkload]:
    c = tuple(concurrency)
    return [
        HttpWorkload("embed-b1", "embed", 1, 64, c, requests=16),
        HttpWorkload("embed-b32", "embed", 32, 64, c[-1:], requests=4),
        HttpWorkload("rerank-50", "rerank", 10, 64, (4,), requests=4, warmups=1),
    ]


class Corpus:
    """Snippet texts in a seeded order, clipped per max_tokens, with the serving code's token counts."""

    def __init__(self, models: dict[str, Path], max_model_len: int, seed: int = 0):
        from serving.config import RerankModelConfig
        from serving.engines.base import load_tokenizer
        from serving.engines.rerank import RerankPrompts

        self.models, self.max_model_len, self.seed = models, max_model_len, seed
        self.embed_tok = load_tokenizer(str(models["embedding"]))
        self.prompts = RerankPrompts(RerankModelConfig(model=str(models["reranker"])),
                                     load_tokenizer(str(models["reranker"])), max_model_len)
        self.snippets = stdlib_snippets()
        self.order = random.Random(seed).sample(range(len(self.snippets)), len(self.snippets))
        self._clipped: dict[int, list[str]] = {}
        self._offset = 0

    def embed_counts(self, texts: list[str]) -> list[int]:  # as EmbedInputs.tokenize does for documents
        return [len(ids) for ids in
                self.embed_tok(texts, truncation=True, max_length=self.max_model_len)["input_ids"]]

    def rerank_counts(self, query: str, docs: list[str]) -> list[int]:
        return [len(ids) for ids in self.prompts.build(query, docs)]

    def texts(self, count: int, max_tokens: int) -> list[str]:
        """The next ``count`` texts of the corpus (wrapping around), so points don't repeat each other's."""
        if max_tokens not in self._clipped:
            raw = [self.snippets[i].text for i in self.order]
            self._clipped[max_tokens] = clip_to_tokens(raw, self.prompts.tokenizer, max_tokens)
        pool = self._clipped[max_tokens]
        picked = [pool[(self._offset + i) % len(pool)] for i in range(count)]
        self._offset = (self._offset + count) % len(pool)
        return picked

    def rerank_requests(self, count: int, docs: int, max_tokens: int, seed: int) -> list[RerankRequest]:
        spec = WorkloadSpec(embed_requests=0, texts_per_embed_request=1, rerank_requests=count,
                            docs_per_rerank_request=(docs, docs), max_doc_tokens=max_tokens,
                            warmup_embed_requests=0, warmup_rerank_requests=0, seed=self.seed + seed)
        return list(build_workload(spec, tokenizer=self.prompts.tokenizer, embed_token_counts=self.embed_counts,
                                   rerank_token_counts=self.rerank_counts).rerank)


def write_points(workloads: Sequence[HttpWorkload], corpus: Corpus, out_dir: Path) -> list[Point]:
    """One request file per (workload, concurrency). `vllm bench serve` warms up by sending its first request."""
    out_dir.mkdir(parents=True, exist_ok=True)
    points = []
    for w in workloads:
        for i, c in enumerate(w.concurrency):
            n = w.requests_at(c)
            rows: list[list[str]]
            if w.task == "embed":
                texts = corpus.texts(n * w.client_batch, w.max_tokens)
                rows = [texts[j:j + w.client_batch] for j in range(0, len(texts), w.client_batch)]
                expected = [sum(corpus.embed_counts(r)) for r in rows]
            else:
                reranks = corpus.rerank_requests(n, w.client_batch, w.max_tokens, seed=1000 * i + c)
                rows = [[r.query, *r.documents] for r in reranks]
                expected = [sum(r.token_counts) for r in reranks]
            path = out_dir / f"{w.name}-c{c}.jsonl"
            path.write_text("".join(json.dumps({"prompt": row}) + "\n" for row in rows))
            points.append(Point(w, c, path, n, tuple(expected)))
    return points


def describe(points: Sequence[Point]) -> list[dict[str, Any]]:
    return [{"point": p.key, "requests": p.requests, "client_batch": p.workload.client_batch,
             "max_tokens_per_text": p.workload.max_tokens, "expected_prompt_tokens": sum(p.expected_tokens)}
            for p in points]
