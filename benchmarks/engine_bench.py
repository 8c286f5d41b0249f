"""Engine throughput: the vLLM engines against the model card's transformers loop, in one run.

    python -m benchmarks.engine_bench            # both model shapes; ~13 min on 2 CPU cores
    python -m benchmarks.engine_bench --smoke    # tiny shape, a few inputs: the CI check

For each model shape the same requests, built from real text (``benchmarks.workloads``), go to
every backend: EmbedEngine vs ReferenceEmbedder, and RerankEngine with and without prefix
caching vs ReferenceReranker. Each backend is timed after a warm-up on different inputs.
Throughput is input tokens (the tokens the model reads) per second of wall time, tokenization
included. Failed requests are counted, not raised. Results, with the machine, the package
versions and every case's config, go to ``benchmarks/results/engine-*.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from benchmarks.workloads import EmbedRequest, RerankRequest, Workload, WorkloadSpec, build_workload
from serving.models.tiny import QWEN3_06B_SHAPED, TINY, TinyShape, ensure_tiny_models

logger = logging.getLogger("benchmarks.engine_bench")

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
MODELS_DIR = REPO_ROOT / ".tiny-models"  # gitignored; built once, reused by later runs
SHAPES: dict[str, TinyShape] = {"tiny": TINY, "0.6b-shaped": QWEN3_06B_SHAPED}

Task = Literal["embed", "rerank"]
Request = EmbedRequest | RerankRequest


@dataclass(frozen=True)
class BenchSettings:
    """Run-wide settings; each case's own config is derived from these and recorded with it."""

    shapes: tuple[str, ...] = tuple(SHAPES)
    workload: WorkloadSpec = WorkloadSpec()
    # bf16 is ~4x faster than fp32 on this CPU (avx512_bf16); both sides use it, so it is fair.
    dtype: str = "bfloat16"
    max_model_len: int = 1024
    cpu_kvcache_space_gib: int = 2
    cpu_omp_threads_bind: str = "0-1"  # both cores for the engine-core process
    # The CPU default block is 128 tokens, longer than the ~80-token prompt prefix the documents
    # of one query share, so with it nothing would ever be a full cached block.
    rerank_block_size: int = 32
    reference_batch_size: int = 16
    reference_threads: int = 2
    enforce_eager: bool = False  # smoke mode: True (no inductor build at every start; the numbers do not count)


SMOKE = BenchSettings(
    shapes=("tiny",),
    # float32: on a CPU without AVX-512 (as in CI here) bf16 is emulated, and the model card's
    # reranker, which computes logits over the whole vocabulary at every position, then took 285 s.
    dtype="float32",
    enforce_eager=True,
    workload=WorkloadSpec(embed_requests=3, texts_per_embed_request=8, rerank_requests=2,
                          docs_per_rerank_request=(6, 10), max_doc_tokens=256),
)
FULL = BenchSettings()


@dataclass(frozen=True)
class Case:
    """One backend on one model shape and task."""

    shape: str
    task: Task
    name: str  # label in the results, e.g. "vllm-no-prefix-cache"
    backend: str  # key of BACKENDS
    model: str  # checkpoint path
    config: dict[str, Any]  # everything the backend is built from


@dataclass
class Outcome:
    """What one request produced: tokens read, or the error it raised."""

    tokens: int = 0
    cached_tokens: int = 0
    padded_tokens: int = 0  # reference only: tokens computed including padding
    output: Any = None  # embeddings (n, d) or scores, kept in memory for the agreement check
    error: str | None = None


@dataclass
class CaseResult:
    case: Case
    requests: int
    failures: int
    input_tokens: int  # of successful requests only
    seconds: float
    tokens_per_s: float
    startup_s: float
    warmup_s: float
    expected_tokens: int  # what the serving tokenization says the requests hold
    cached_tokens: int | None = None  # vLLM rerank: tokens served from the prefix cache
    padded_tokens: int | None = None  # reference: tokens computed, padding included
    # Contention check: CPU time of this process and its children in the timed pass, and that as a
    # fraction of all usable CPUs. Well below 1 for a vLLM case means other work took the cores.
    cpu_s: float | None = None
    cpu_share: float | None = None
    load_avg_1m: float | None = None  # machine load when the timed pass ended
    errors: list[str] = field(default_factory=list)  # first few distinct messages
    details: dict[str, Any] = field(default_factory=dict)  # effective backend settings
    outcomes: list[Outcome] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("case", "outcomes")}
        case = asdict(self.case)
        return {"name": case.pop("name"), "task": case.pop("task"), "backend": case.pop("backend"),
                **data, "model": case["model"], "config": case["config"]}


# --- backends ------------------------------------------------------------------------------------
# Each backend serves one request at a time; the harness (run_case) owns warm-up, timing and
# failure accounting, so every backend is measured the same way.


class Backend(Protocol):
    concurrent: bool  # True: all requests are submitted at once (vLLM batches them itself)

    def __call__(self, request: Any) -> Awaitable[Outcome]: ...

    def details(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


def _engine_details(engine: Any) -> dict[str, Any]:
    """The settings vLLM actually resolved (block size, batch budget), not just those we passed."""
    vllm_config = getattr(getattr(engine, "_engine", None), "vllm_config", None)
    if vllm_config is None:
        return {}
    cache, sched = vllm_config.cache_config, vllm_config.scheduler_config
    return {"block_size": cache.block_size, "enable_prefix_caching": cache.enable_prefix_caching,
            "max_num_seqs": sched.max_num_seqs, "max_num_batched_tokens": sched.max_num_batched_tokens,
            "enable_chunked_prefill": getattr(sched, "enable_chunked_prefill", None),
            "compilation_mode": str(getattr(vllm_config.compilation_config, "mode", None))}


class VllmEmbed:
    concurrent = True

    def __init__(self, case: Case):
        from serving.config import EmbedModelConfig
        from serving.engines.embed import EmbedEngine

        self.engine = EmbedEngine(EmbedModelConfig(model=case.model, **case.config))

    async def __call__(self, request: EmbedRequest) -> Outcome:
        result = await self.engine.embed(list(request.texts))
        return Outcome(tokens=result.prompt_tokens, output=result.embeddings)

    def details(self) -> dict[str, Any]:
        return _engine_details(self.engine)

    def close(self) -> None:
        self.engine.shutdown()


class VllmRerank:
    concurrent = True

    def __init__(self, case: Case):
        from serving.config import RerankModelConfig
        from serving.engines.rerank import RerankEngine

        self.engine = RerankEngine(RerankModelConfig(model=case.model, **case.config))

    async def __call__(self, request: RerankRequest) -> Outcome:
        result = await self.engine.rerank(request.query, list(request.documents))
        return Outcome(tokens=result.prompt_tokens, cached_tokens=result.cached_tokens, output=result.scores)

    def details(self) -> dict[str, Any]:
        return _engine_details(self.engine)

    def close(self) -> None:
        self.engine.shutdown()


def _length_sorted_batches(token_counts: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices sorted by length, in batches: the usual way to cut padding in an offline loop."""
    order = sorted(range(len(token_counts)), key=token_counts.__getitem__)
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


class _ReferenceBase:
    """The transformers loop: each request's inputs sorted by length, run in fixed-size batches."""

    concurrent = False  # one model, one forward pass at a time

    def __init__(self, case: Case):
        import torch

        torch.set_num_threads(case.config["torch_threads"])
        self.batch_size: int = case.config["batch_size"]
        self.model: Any = None

    def details(self) -> dict[str, Any]:
        import torch

        return {"torch_threads": torch.get_num_threads(),
                "attn_implementation": getattr(self.model.model.config, "_attn_implementation", None)}

    def close(self) -> None:
        self.model = None
        gc.collect()


class ReferenceEmbed(_ReferenceBase):
    def __init__(self, case: Case):
        super().__init__(case)
        from serving.reference import ReferenceEmbedder

        self.model = ReferenceEmbedder(case.model, dtype=case.config["dtype"], max_length=case.config["max_length"])

    async def __call__(self, request: EmbedRequest) -> Outcome:
        vectors: list[Any] = [None] * len(request.texts)
        padded = 0
        for batch in _length_sorted_batches(request.token_counts, self.batch_size):
            out = self.model.embed([request.texts[i] for i in batch]).numpy()
            padded += len(batch) * max(request.token_counts[i] for i in batch)
            for row, i in enumerate(batch):
                vectors[i] = out[row]
        return Outcome(tokens=sum(request.token_counts), padded_tokens=padded, output=np.stack(vectors))


class ReferenceRerank(_ReferenceBase):
    def __init__(self, case: Case):
        super().__init__(case)
        self.model = self._load(case)

    @staticmethod
    def _load(case: Case) -> Any:
        from serving.reference import ReferenceReranker

        return ReferenceReranker(case.model, dtype=case.config["dtype"], max_length=case.config["max_length"])

    async def __call__(self, request: RerankRequest) -> Outcome:
        scores = [0.0] * len(request.documents)
        padded = 0
        for batch in _length_sorted_batches(request.token_counts, self.batch_size):
            out = self.model.rerank(request.query, [request.documents[i] for i in batch])
            padded += len(batch) * max(request.token_counts[i] for i in batch)
            for score, i in zip(out, batch):
                scores[i] = score
        return Outcome(tokens=sum(request.token_counts), padded_tokens=padded, output=scores)


class ReferenceRerankLastLogit(ReferenceRerank):
    """The card's loop but projecting only the last position onto the vocabulary.

    The card computes logits for every position and keeps the last; with a 152k vocabulary
    that projection costs more than all transformer layers of the 0.6B-shaped model. This
    variant shows how much of the engine's lead is that waste rather than batching.
    """

    @staticmethod
    def _load(case: Case) -> Any:
        from serving.reference import ReferenceReranker

        class LastLogitReranker(ReferenceReranker):
            def compute_logits(self, inputs) -> list[float]:
                import torch

                with torch.no_grad():
                    logits = self.model(**inputs, logits_to_keep=1).logits[:, -1, :]
                pair = torch.stack([logits[:, self.token_false_id], logits[:, self.token_true_id]], dim=1)
                return torch.nn.functional.log_softmax(pair.float(), dim=1)[:, 1].exp().tolist()

        return LastLogitReranker(case.model, dtype=case.config["dtype"], max_length=case.config["max_length"])


BACKEND_NOTES = {
    "vllm-embed": "serving.engines.embed.EmbedEngine.embed, one call per request",
    "vllm-rerank": "serving.engines.rerank.RerankEngine.rerank, one call per request (1 query x N docs)",
    "reference-embed": "serving.reference.ReferenceEmbedder (the model card's loop), length-sorted batches",
    "reference-rerank": "serving.reference.ReferenceReranker (the model card's loop), length-sorted batches",
    "reference-rerank-last-logit": "informational: ReferenceReranker computing logits for the last position "
                                   "only (logits_to_keep=1) instead of the whole sequence",
}
BACKENDS: dict[str, Callable[[Case], Backend]] = {
    "vllm-embed": VllmEmbed,
    "vllm-rerank": VllmRerank,
    "reference-embed": ReferenceEmbed,
    "reference-rerank": ReferenceRerank,
    "reference-rerank-last-logit": ReferenceRerankLastLogit,
}


# --- harness -------------------------------------------------------------------------------------


def _cpu_seconds() -> float | None:
    """User + system CPU time of this process and its live children (vLLM's engine core and workers)."""
    try:
        import psutil  # installed with vLLM
    except ImportError:
        return None
    me = psutil.Process()
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


@dataclass
class Pass:
    seconds: float
    cpu_s: float | None
    outcomes: list[Outcome]


async def _measure(backend: Backend, requests: Sequence[Request]) -> Pass:
    async def guarded(request: Request) -> Outcome:
        try:
            return await backend(request)
        except Exception as exc:  # a benchmark records failures; it does not stop at the first
            return Outcome(error=f"{type(exc).__name__}: {exc}")

    cpu_start, start = _cpu_seconds(), time.perf_counter()
    if backend.concurrent:
        outcomes = list(await asyncio.gather(*(guarded(r) for r in requests)))
    else:
        outcomes = [await guarded(r) for r in requests]
    seconds, cpu_end = time.perf_counter() - start, _cpu_seconds()
    cpu_s = cpu_end - cpu_start if cpu_start is not None and cpu_end is not None else None
    return Pass(seconds, cpu_s, outcomes)


def _distinct(errors: Sequence[str | None], limit: int = 5) -> list[str]:
    return list(dict.fromkeys(e[:500] for e in errors if e))[:limit]


async def run_case(case: Case, workload: Workload) -> CaseResult:
    requests = workload.embed if case.task == "embed" else workload.rerank
    warmup = workload.warmup_embed if case.task == "embed" else workload.warmup_rerank
    expected = sum(sum(r.token_counts) for r in requests)
    logger.info("[%s] %s/%s: starting", case.shape, case.task, case.name)
    start = time.perf_counter()
    try:
        backend = BACKENDS[case.backend](case)
    except Exception as exc:
        logger.exception("[%s] %s/%s: failed to start", case.shape, case.task, case.name)
        return CaseResult(case, requests=len(requests), failures=len(requests), input_tokens=0, seconds=0.0,
                          tokens_per_s=0.0, startup_s=time.perf_counter() - start, warmup_s=0.0,
                          expected_tokens=expected, errors=[f"startup: {type(exc).__name__}: {exc}"])
    try:
        startup_s = time.perf_counter() - start
        warm = await _measure(backend, warmup)
        timed = await _measure(backend, requests)
        details = backend.details()
    finally:
        backend.close()
    outcomes, seconds = timed.outcomes, timed.seconds
    ok = [o for o in outcomes if o.error is None]
    tokens = sum(o.tokens for o in ok)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    result = CaseResult(
        case, requests=len(requests), failures=len(outcomes) - len(ok), input_tokens=tokens, seconds=seconds,
        tokens_per_s=tokens / seconds if seconds > 0 else 0.0, startup_s=startup_s, warmup_s=warm.seconds,
        expected_tokens=expected, cpu_s=timed.cpu_s,
        cpu_share=round(timed.cpu_s / (seconds * cpus), 3) if timed.cpu_s is not None and seconds > 0 else None,
        cached_tokens=sum(o.cached_tokens for o in ok) if case.backend == "vllm-rerank" else None,
        padded_tokens=sum(o.padded_tokens for o in ok) if case.backend.startswith("reference") else None,
        load_avg_1m=round(os.getloadavg()[0], 2),
        errors=_distinct([o.error for o in outcomes] + [f"warm-up: {o.error}" for o in warm.outcomes if o.error]),
        details=details, outcomes=outcomes,
    )
    logger.info("[%s] %s/%s: %.0f tokens/s (%d tokens in %.1f s, %d failures)", case.shape, case.task,
                case.name, result.tokens_per_s, tokens, seconds, result.failures)
    return result


def shape_cases(shape: str, paths: dict[str, Path], settings: BenchSettings) -> list[Case]:
    engine = {"dtype": settings.dtype, "max_model_len": settings.max_model_len,
              "cpu_kvcache_space_gib": settings.cpu_kvcache_space_gib,
              "cpu_omp_threads_bind": settings.cpu_omp_threads_bind, "enforce_eager": settings.enforce_eager}
    rerank_engine = {**engine, "block_size": settings.rerank_block_size}
    reference = {"dtype": settings.dtype, "max_length": settings.max_model_len,
                 "batch_size": settings.reference_batch_size, "torch_threads": settings.reference_threads,
                 "batching": f"each request's inputs sorted by token length, in batches of "
                             f"{settings.reference_batch_size}, one forward pass at a time"}
    embed, rerank = str(paths["embedding"]), str(paths["reranker"])
    return [
        Case(shape, "embed", "reference", "reference-embed", embed, reference),
        Case(shape, "embed", "vllm", "vllm-embed", embed, engine),
        Case(shape, "rerank", "reference", "reference-rerank", rerank, reference),
        Case(shape, "rerank", "reference-last-logit", "reference-rerank-last-logit", rerank, reference),
        Case(shape, "rerank", "vllm", "vllm-rerank", rerank, {**rerank_engine, "enable_prefix_caching": True}),
        Case(shape, "rerank", "vllm-no-prefix-cache", "vllm-rerank", rerank,
             {**rerank_engine, "enable_prefix_caching": False}),
    ]


def _by_name(results: Sequence[CaseResult], task: Task, name: str) -> CaseResult | None:
    return next((r for r in results if r.case.task == task and r.case.name == name), None)


def _ratio(num: CaseResult | None, den: CaseResult | None) -> float | None:
    if num is None or den is None or den.tokens_per_s <= 0:
        return None
    return round(num.tokens_per_s / den.tokens_per_s, 3)


def ratios(results: Sequence[CaseResult]) -> dict[str, float | None]:
    """Throughput ratios, > 1 meaning the first named backend is faster."""
    embed = {n: _by_name(results, "embed", n) for n in ("vllm", "reference")}
    rerank = {n: _by_name(results, "rerank", n)
              for n in ("vllm", "vllm-no-prefix-cache", "reference", "reference-last-logit")}
    return {
        "embed_vllm_vs_reference": _ratio(embed["vllm"], embed["reference"]),
        "rerank_vllm_vs_reference": _ratio(rerank["vllm"], rerank["reference"]),
        "rerank_vllm_no_prefix_cache_vs_reference": _ratio(rerank["vllm-no-prefix-cache"], rerank["reference"]),
        "rerank_prefix_cache_on_vs_off": _ratio(rerank["vllm"], rerank["vllm-no-prefix-cache"]),
        "rerank_vllm_vs_reference_last_logit": _ratio(rerank["vllm"], rerank["reference-last-logit"]),
    }


def agreement(results: Sequence[CaseResult]) -> dict[str, float | None]:
    """Sanity check that the backends computed the same thing (bf16 on both sides, so not exact)."""

    def paired(task: Task, a: str, b: str) -> list[tuple[Any, Any]]:
        ra, rb = _by_name(results, task, a), _by_name(results, task, b)
        if ra is None or rb is None or not ra.outcomes or not rb.outcomes:
            return []
        return [(x.output, y.output) for x, y in zip(ra.outcomes, rb.outcomes)
                if x.error is None and y.error is None]

    embed = paired("embed", "vllm", "reference")
    cosines = [float(np.min(np.sum(np.asarray(x) * np.asarray(y), axis=1))) for x, y in embed]
    rerank = paired("rerank", "vllm", "reference")
    diffs = [float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in rerank]
    return {"embed_min_cosine_vllm_vs_reference": round(min(cosines), 5) if cosines else None,
            "rerank_max_abs_score_diff_vllm_vs_reference": round(max(diffs), 5) if diffs else None}


# --- models, workload, environment ---------------------------------------------------------------


def ensure_models(shape: str, models_dir: Path) -> dict[str, Path]:
    """Build the shape's tiny models once; later runs reuse them if the shape and seed match."""
    return ensure_tiny_models(models_dir / shape, shape=SHAPES[shape], seed=0)


def make_workload(paths: dict[str, Path], settings: BenchSettings) -> Workload:
    """The requests, with per-input token counts from the serving code's own tokenization."""
    from serving.config import RerankModelConfig
    from serving.engines.base import load_tokenizer
    from serving.engines.rerank import RerankPrompts

    embed_tok = load_tokenizer(str(paths["embedding"]))
    prompts = RerankPrompts(RerankModelConfig(model=str(paths["reranker"])),
                            load_tokenizer(str(paths["reranker"])), settings.max_model_len)

    def embed_counts(texts: list[str]) -> list[int]:  # as EmbedInputs.tokenize does for documents
        return [len(ids) for ids in embed_tok(texts, truncation=True, max_length=settings.max_model_len)["input_ids"]]

    def rerank_counts(query: str, docs: list[str]) -> list[int]:
        return [len(ids) for ids in prompts.build(query, docs)]

    return build_workload(settings.workload, tokenizer=prompts.tokenizer, embed_token_counts=embed_counts,
                          rerank_token_counts=rerank_counts)


def machine_info() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields = dict(line.split(":", 1) for line in cpuinfo.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    mem_kib = next((int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal:")), 0)
    flags = set(fields.get("flags", "").split())
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": fields.get("model name") or platform.processor() or None,
        "cpu_bf16_flags": sorted(f for f in flags if "bf16" in f or f.startswith("amx")),
        "ram_gib": round(mem_kib / 2**20, 1),
        "gpu": None,
    }


def versions() -> dict[str, str | None]:
    import torch
    import transformers
    import vllm

    import serving

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"python": platform.python_version(), "vllm": vllm.__version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "numpy": np.__version__, "serving": serving.__version__,
            "git_commit": commit}


# --- run, report ---------------------------------------------------------------------------------


async def run(settings: BenchSettings, models_dir: Path) -> tuple[dict[str, Any], list[CaseResult]]:
    shapes: dict[str, Any] = {}
    everything: list[CaseResult] = []
    for shape in settings.shapes:
        paths = ensure_models(shape, models_dir)
        workload = make_workload(paths, settings)
        results = [await run_case(case, workload) for case in shape_cases(shape, paths, settings)]
        for r in results:  # every backend must have read exactly the tokens the workload holds
            if r.failures == 0 and r.input_tokens != r.expected_tokens:
                r.errors.append(f"read {r.input_tokens} tokens, the workload holds {r.expected_tokens}")
        shapes[shape] = {
            "model_shape": asdict(SHAPES[shape]),
            "models": {k: str(v) for k, v in paths.items()},
            "workload": workload.describe(),
            "cases": [r.to_json() for r in results],
            "ratios": ratios(results),
            "agreement": agreement(results),
        }
        everything += results
        for r in results:
            r.outcomes = []  # free the embeddings before the next shape
    return shapes, everything


def summary_table(results: Sequence[CaseResult], shapes: dict[str, Any]) -> str:
    head = f"{'shape':<12} {'task':<7} {'backend':<22} {'req':>4} {'fail':>4} {'tokens':>8} {'seconds':>8} " \
           f"{'tokens/s':>9} {'cached':>7} {'cpu%':>5}"
    lines = [head, "-" * len(head)]
    for r in results:
        cached = "" if r.cached_tokens is None else str(r.cached_tokens)
        cpu = "" if r.cpu_share is None else f"{100 * r.cpu_share:.0f}"
        lines.append(f"{r.case.shape:<12} {r.case.task:<7} {r.case.name:<22} {r.requests:>4} {r.failures:>4} "
                     f"{r.input_tokens:>8} {r.seconds:>8.2f} {r.tokens_per_s:>9.0f} {cached:>7} {cpu:>5}")
    for shape, data in shapes.items():
        lines.append("")
        lines.append(f"{shape}: " + ", ".join(
            f"{k} {'n/a' if v is None else f'{v:.2f}x'}" for k, v in data["ratios"].items()))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engine_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny shape and a few inputs (CI; a few minutes)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON path; default benchmarks/results/engine-<shapes>-<timestamp>.json, plus "
                             "benchmarks/results/engine-latest.json for a full run")
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=None,
                        help="model shapes to run (default: all; tiny only with --smoke)")
    parser.add_argument("--embed-requests", type=int, default=None, help="timed embed requests per shape")
    parser.add_argument("--rerank-requests", type=int, default=None, help="timed rerank queries per shape")
    parser.add_argument("--seed", type=int, default=None, help="workload selection seed (default 0)")
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR, help="cache of built tiny models")
    return parser


def settings_from(args: argparse.Namespace) -> BenchSettings:
    settings = SMOKE if args.smoke else FULL
    overrides = {k: v for k, v in (("embed_requests", args.embed_requests),
                                   ("rerank_requests", args.rerank_requests), ("seed", args.seed)) if v is not None}
    return replace(settings, shapes=tuple(args.shapes or settings.shapes),
                   workload=replace(settings.workload, **overrides))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = settings_from(args)
    started = datetime.now(timezone.utc)
    load_start = os.getloadavg()
    shapes, results = asyncio.run(run(settings, args.models_dir))
    finished = datetime.now(timezone.utc)

    report = {
        "benchmark": "engine",
        "mode": "smoke" if args.smoke else "full",
        "command": [sys.executable, "-m", "benchmarks.engine_bench", *(argv if argv is not None else sys.argv[1:])],
        "started_at": started.isoformat(timespec="seconds"),
        "duration_s": round((finished - started).total_seconds(), 1),
        # Another process on the machine slows every backend alike; ratios hold up, absolutes don't.
        "machine": {**machine_info(), "load_avg_1m_start": round(load_start[0], 2),
                    "load_avg_1m_end": round(os.getloadavg()[0], 2)},
        "versions": versions(),
        "settings": {
            **{k: v for k, v in asdict(settings).items() if k != "workload"},
            "workload": {**asdict(settings.workload),
                         "corpus": "docstrings and function/class sources of the workload.modules "
                                   "(installed Python standard library), clipped to max_doc_tokens"},
            "throughput": "input tokens the model reads (embed: text + EOS; rerank: prefix + pair + suffix) "
                          "per second of wall time for the whole timed pass, tokenization included",
            "vllm_submission": "all requests of the pass submitted at once (offline throughput)",
            "backends": BACKEND_NOTES,
            "warmup": "one pass over separate warm-up requests, not timed, before each backend's timed pass",
        },
        "shapes": shapes,
        "failures": sum(r.failures for r in results),
    }
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    name = ("engine-smoke-" if args.smoke else "engine-") + "+".join(settings.shapes) + f"-{stamp}.json"
    out = args.out or RESULTS_DIR / name
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2) + "\n"
    out.write_text(text)
    if not args.smoke and args.out is None:
        (RESULTS_DIR / "engine-latest.json").write_text(text)
    print(summary_table(results, shapes))
    print(f"\nwrote {out}")
    return 1 if report["failures"] else 0


if __name__ == "__main__":  # vLLM spawns engine-core processes that re-import this module
    sys.exit(main())
