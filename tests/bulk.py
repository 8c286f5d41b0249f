"""Inputs, outputs and process helpers for the bulk-job tests (`qwen3-serve encode` / `score`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psutil
import yaml

from tests.texts import DOCUMENTS

LONG_TEXT = "gravity attracts bodies " * 400  # ~1,600 tokens: over the tests' max_model_len of 512

# Rows every job must turn into error rows, each with the reason the error must name.
BAD_ENCODE_ROWS: list[tuple[Any, str | None]] = [  # (JSON line or object, expected error substring)
    ({"text": "a row without an id"}, "missing id"),
    ({"id": "bad-int-text", "text": 42}, "must be a string"),
    ({"id": "bad-empty-text", "text": ""}, "empty string"),
    ({"id": "bad-null-text", "text": None}, "missing `text`"),
    ({"id": "bad-no-text"}, "missing `text`"),
    ("{this is not json", "not valid JSON"),
]
TOO_LONG = ({"id": "bad-too-long", "text": LONG_TEXT}, "accepts at most 512")


def corpus_texts(n: int) -> list[str]:
    """n distinct texts of varied length from real sentences."""
    return [f"{i}: " + " ".join(DOCUMENTS[(i + k) % len(DOCUMENTS)] for k in range(1 + i % 5)) for i in range(n)]


def write_encode_jsonl(path: Path, n_good: int, bad: list[tuple[Any, str | None]]) -> dict[str, str]:
    """Good rows first, bad rows last; {id: text} of the good rows."""
    good = {f"doc-{i:05d}": text for i, text in enumerate(corpus_texts(n_good))}
    with path.open("w") as f:
        for rid, text in good.items():
            f.write(json.dumps({"id": rid, "text": text}) + "\n")
        for row, _ in bad:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return good


def score_rows(n: int, queries: list[str]) -> list[dict[str, Any]]:
    docs = corpus_texts(n)
    return [{"id": f"pair-{i:05d}", "query": queries[i % len(queries)], "document": docs[i]} for i in range(n)]


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([(k, pa.string()) for k in rows[0]])), path,
                   row_group_size=64)


def read_output(out: Path):
    """Every result row under `out`, read by plain pyarrow (which skips `_` folders)."""
    import pyarrow.dataset as pads

    return pads.dataset(str(out), format="parquet").to_table()


def write_engine_config(path: Path, tiny_models: dict[str, Path], fields: dict[str, Any]) -> Path:
    """A serving config whose model entries carry the tests' engine settings (for --config)."""
    path.write_text(yaml.safe_dump({"models": [
        {"name": "tiny-embed", "kind": "embed", "engine": {"model": str(tiny_models["embedding"]), **fields},
         "resources": {"accelerator": "cpu", "cpus_per_shard": 1}},
        {"name": "tiny-rerank", "kind": "rerank",
         "engine": {"model": str(tiny_models["reranker"]), "block_size": 32, **fields},
         "resources": {"accelerator": "cpu", "cpus_per_shard": 1}},
    ]}))
    return path


def committed_checkpoints(out: Path) -> list[Path]:
    return sorted(p for p in (out / "_checkpoint").glob("*.parquet") if not p.name.endswith(".pending.parquet"))


def committed_ids(out: Path) -> set[str]:
    import pyarrow.parquet as pq

    return {v for p in committed_checkpoints(out) for v in pq.read_table(p)["id"].to_pylist()}


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def is_engine_process(proc: psutil.Process) -> bool:
    """A vLLM engine-core process or a Ray Data actor holding an engine."""
    try:
        cmd = " ".join(proc.cmdline())
        return "EngineCore" in proc.name() or "EngineCore" in cmd or "MapWorker" in cmd
    except psutil.Error:
        return False


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            pass
    return out


def kill_all(procs: list[psutil.Process]) -> None:
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
