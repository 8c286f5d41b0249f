"""Benchmark inputs from real text: docstrings and source of Python standard-library modules.

Code search is a realistic embed/rerank workload and the standard library is on every machine,
so no data set has to be downloaded. Selection is deterministic for a given seed and Python
version (the installed standard library is the corpus, so the Python version is recorded too).
"""

from __future__ import annotations

import ast
import importlib.util
import random
import re
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

STDLIB_MODULES = (
    "json", "asyncio", "collections", "functools", "pathlib", "http", "email", "argparse", "logging",
    "inspect", "dataclasses", "contextlib", "csv", "textwrap", "urllib", "concurrent.futures", "shutil",
    "subprocess", "enum", "typing",
)

SnippetKind = Literal["docstring", "source"]


@dataclass(frozen=True)
class Snippet:
    origin: str  # "module:qualname", or just "module" for a module docstring
    kind: SnippetKind
    text: str
    summary: str  # first line of the docstring of the function it comes from; "" if none
    is_function: bool


@dataclass(frozen=True)
class WorkloadSpec:
    """How many requests of what size. Token lengths come from the corpus, clipped to max_doc_tokens."""

    embed_requests: int = 16
    texts_per_embed_request: int = 32
    rerank_requests: int = 6
    docs_per_rerank_request: tuple[int, int] = (32, 50)  # inclusive range, drawn per request
    max_doc_tokens: int = 512
    warmup_embed_requests: int = 1
    warmup_rerank_requests: int = 1
    seed: int = 0
    modules: tuple[str, ...] = STDLIB_MODULES


@dataclass(frozen=True)
class EmbedRequest:
    """One embed call: a client embedding a page of documents."""

    texts: tuple[str, ...]
    token_counts: tuple[int, ...]  # per text, as the model reads it (EOS included)


@dataclass(frozen=True)
class RerankRequest:
    """One rerank call: one query against N documents."""

    query: str
    documents: tuple[str, ...]
    token_counts: tuple[int, ...]  # per (query, document) prompt: prefix + body + suffix


@dataclass(frozen=True)
class Workload:
    embed: tuple[EmbedRequest, ...]
    rerank: tuple[RerankRequest, ...]
    # Warm-up uses different inputs, so the timed pass never hits a prefix cache warm-up filled.
    warmup_embed: tuple[EmbedRequest, ...]
    warmup_rerank: tuple[RerankRequest, ...]

    def describe(self) -> dict[str, Any]:
        embed_lengths = [n for r in self.embed for n in r.token_counts]
        rerank_lengths = [n for r in self.rerank for n in r.token_counts]
        return {
            "embed": {
                "requests": len(self.embed),
                "texts": len(embed_lengths),
                "input_tokens": sum(embed_lengths),
                "tokens_per_text": length_stats(embed_lengths),
            },
            "rerank": {
                "requests": len(self.rerank),
                "pairs": len(rerank_lengths),
                "docs_per_request": length_stats([len(r.documents) for r in self.rerank]),
                "input_tokens": sum(rerank_lengths),
                "tokens_per_pair": length_stats(rerank_lengths),
                "example_queries": [r.query for r in self.rerank[:3]],
            },
        }


def length_stats(values: Sequence[int]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    arr = np.asarray(values)
    return {"count": int(arr.size), "min": int(arr.min()), "median": float(np.median(arr)),
            "p90": float(np.percentile(arr, 90)), "max": int(arr.max()), "mean": round(float(arr.mean()), 1)}


def _module_files(name: str) -> list[Path]:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ValueError(f"standard-library module {name!r} not found")
    if spec.submodule_search_locations:  # a package: its own top-level files, not subpackages
        return sorted(p for loc in spec.submodule_search_locations for p in Path(loc).glob("*.py"))
    return [Path(spec.origin)]


def _definitions(tree: ast.Module) -> Iterator[tuple[str, ast.AST]]:
    """(qualname, node) of every function and class, depth first in source order."""

    def visit(node: ast.AST, prefix: str) -> Iterator[tuple[str, ast.AST]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                qualname = f"{prefix}{child.name}"
                yield qualname, child
                yield from visit(child, f"{qualname}.")

    yield from visit(tree, "")


def stdlib_snippets(modules: Sequence[str] = STDLIB_MODULES, min_chars: int = 40) -> list[Snippet]:
    """Every docstring and every function/class source of ``modules``, in a deterministic order."""
    snippets: list[Snippet] = []
    for name in modules:
        for path in _module_files(name):
            source = path.read_text(encoding="utf-8")
            lines = source.splitlines(keepends=True)
            tree = ast.parse(source)
            module = f"{name}.{path.stem}" if path.stem not in (name.rsplit(".", 1)[-1], "__init__") else name
            doc = ast.get_docstring(tree)
            if doc and len(doc) >= min_chars:
                snippets.append(Snippet(module, "docstring", doc, "", False))
            for qualname, node in _definitions(tree):
                doc = ast.get_docstring(node) or ""  # type: ignore[arg-type]
                summary = _first_sentence(doc)
                is_function = not isinstance(node, ast.ClassDef)
                origin = f"{module}:{qualname}"
                if len(doc) >= min_chars:
                    snippets.append(Snippet(origin, "docstring", doc, summary, is_function))
                # Whole lines by line number: ast.get_source_segment re-splits the file on every call.
                code = textwrap.dedent("".join(lines[node.lineno - 1:node.end_lineno]))  # type: ignore[attr-defined]
                if len(code) >= min_chars:
                    snippets.append(Snippet(origin, "source", code, summary, is_function))
    return snippets


def _first_sentence(doc: str) -> str:
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    return re.split(r"(?<=\.)\s", paragraph, maxsplit=1)[0]


def clip_to_tokens(texts: Sequence[str], tokenizer: Any, max_tokens: int) -> list[str]:
    """Cut each text after its first ``max_tokens`` tokens, at a character boundary."""
    encoded = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    return [text if len(offsets) <= max_tokens else text[: offsets[max_tokens - 1][1]]
            for text, offsets in zip(texts, encoded["offset_mapping"])]


def question(snippet: Snippet) -> str:
    """A code-search question from a function's docstring summary: 'json: how do I serialize ...?'"""
    summary = snippet.summary.rstrip(". ")
    return f"{snippet.origin.split(':')[0]}: how do I {summary[0].lower()}{summary[1:]}?"


def _is_question_source(snippet: Snippet) -> bool:
    """A documented function whose summary reads as an imperative sentence ("Return the ...")."""
    words = snippet.summary.split()
    return (snippet.kind == "source" and snippet.is_function and 4 <= len(words) <= 20
            and words[0].isalpha() and words[0][0].isupper() and snippet.summary.endswith("."))


def build_workload(spec: WorkloadSpec, *, tokenizer: Any, embed_token_counts: Callable[[list[str]], list[int]],
                   rerank_token_counts: Callable[[str, list[str]], list[int]]) -> Workload:
    """Deterministic requests for ``spec``.

    ``embed_token_counts(texts)`` and ``rerank_token_counts(query, docs)`` give the tokens the
    model reads per input, from the serving code's own tokenization, so the harness can check
    every backend read the same number of tokens.
    """
    rng = random.Random(spec.seed)
    pool = stdlib_snippets(spec.modules)
    order = rng.sample(range(len(pool)), len(pool))

    def clipped(indices: Sequence[int]) -> list[str]:
        return clip_to_tokens([pool[i].text for i in indices], tokenizer, spec.max_doc_tokens)

    n_embed = (spec.warmup_embed_requests + spec.embed_requests) * spec.texts_per_embed_request
    if n_embed > len(order):
        raise ValueError(f"the corpus has {len(order)} snippets, the embed workload needs {n_embed}")
    embed: list[EmbedRequest] = []
    for start in range(0, n_embed, spec.texts_per_embed_request):
        batch = clipped(order[start:start + spec.texts_per_embed_request])
        embed.append(EmbedRequest(tuple(batch), tuple(embed_token_counts(batch))))

    # Queries come from documented functions; the function's own source is one of the documents
    # (the relevant one), the others are drawn from the whole corpus.
    n_rerank = spec.warmup_rerank_requests + spec.rerank_requests
    lo, hi = spec.docs_per_rerank_request
    rerank: list[RerankRequest] = []
    for i in [i for i in order if _is_question_source(pool[i])][:n_rerank]:
        picks = rng.sample([j for j in range(len(pool)) if j != i], rng.randint(lo, hi) - 1)
        picks.insert(rng.randrange(len(picks) + 1), i)
        docs = clipped(picks)
        query = question(pool[i])
        rerank.append(RerankRequest(query, tuple(docs), tuple(rerank_token_counts(query, docs))))

    we, wr = spec.warmup_embed_requests, spec.warmup_rerank_requests
    return Workload(embed=tuple(embed[we:]), rerank=tuple(rerank[wr:]),
                    warmup_embed=tuple(embed[:we]), warmup_rerank=tuple(rerank[:wr]))
