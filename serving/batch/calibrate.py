"""`qwen3-serve calibrate`: calibration embeddings for `int8` / `uint8` output (`serving/quantization.py`).

The vectors of a calibration corpus, at the model's full dimension, saved as one float32 `.npy`
that `models[].quantization.calibration` names. The server takes each dimension's min and max
from them (for MRL `dimensions`, of the vectors truncated and re-normalised), so the corpus
should look like what will be embedded: a few thousand texts of the same kind.

The corpus is a text file (one text per line), JSON Lines (a text field per row), or the Parquet
output of `qwen3-serve encode` at full dimension, whose vectors are taken as they are. Texts are
embedded in this process by the API's own `EmbedEngine` (same prompts, same numbers): no Ray.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import numpy as np

from serving.batch.inputs import JSONL_SUFFIXES, PARQUET_SUFFIXES, InputError, resolve_files

TEXT_SUFFIXES = (".txt",)
EMBED_BATCH = 256  # texts per engine call: continuous batching fills each step, memory stays bounded


def read_texts(path: str, text_field: str = "text", limit: int | None = None) -> list[str]:
    """Non-empty texts of a `.txt` file (one per line) or JSON Lines (`text_field`), in file order.
    A JSON line without a string `text_field` is an error: a calibration set should be clean."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise InputError(f"--input {path}: no such file")
    jsonl = file.suffix.lower() in JSONL_SUFFIXES
    if not jsonl and file.suffix.lower() not in TEXT_SUFFIXES:
        raise InputError(f"--input {path}: expected {', '.join(TEXT_SUFFIXES + JSONL_SUFFIXES)} "
                         f"(or {', '.join(PARQUET_SUFFIXES)} from `qwen3-serve encode`)")
    texts: list[str] = []
    with file.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if limit is not None and len(texts) >= limit:
                break
            if not line.strip():
                continue
            if not jsonl:
                texts.append(line.rstrip("\r\n"))
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise InputError(f"{path}:{number}: not valid JSON: {exc}") from None
            text = row.get(text_field) if isinstance(row, dict) else None
            if not isinstance(text, str) or not text:
                raise InputError(f"{path}:{number}: no non-empty string `{text_field}`")
            texts.append(text)
    if len(texts) < 2:
        raise InputError(f"--input {path}: {len(texts)} texts; calibration needs at least 2 (thousands are better)")
    return texts


def read_encoded(path: str, limit: int | None = None) -> np.ndarray:
    """The `embedding` column of `qwen3-serve encode` output (rows with an error skipped)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    _, files = resolve_files(path)
    parts: list[np.ndarray] = []
    for file in files:
        table = pq.read_table(file, columns=["embedding"])
        if not pa.types.is_floating(table.schema.field("embedding").type.value_type):
            raise InputError(f"{file}: `embedding` is {table.schema.field('embedding').type}; calibration needs the "
                             "float vectors (encode without --embedding-type)")
        column = table["embedding"].combine_chunks()
        column = column.filter(pc.is_valid(column))
        if len(column):
            parts.append(column.flatten().to_numpy().reshape(len(column), -1))
    if not parts:
        raise InputError(f"--input {path}: no embeddings")
    vectors = np.concatenate(parts).astype(np.float32)
    return vectors[:limit] if limit is not None else vectors


async def embed_all(embed: Callable[[Sequence[str]], Awaitable[np.ndarray]], texts: Sequence[str],
                    batch: int = EMBED_BATCH) -> np.ndarray:
    """Full-dimension float32 vectors of `texts`, `batch` texts per call."""
    parts = [await embed(texts[i:i + batch]) for i in range(0, len(texts), batch)]
    return np.concatenate(parts).astype(np.float32, copy=False)


def save(vectors: np.ndarray, output: str) -> Path:
    path = Path(output).expanduser()
    if path.suffix != ".npy":
        raise InputError(f"--output {output}: must end in .npy")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors.astype(np.float32, copy=False), allow_pickle=False)
    return path


async def calibrate(args) -> dict:
    """Run the command: read, embed if needed, save; a summary for stdout."""
    from serving.batch.command import model_entry

    if Path(args.input).suffix.lower() in PARQUET_SUFFIXES or Path(args.input).expanduser().is_dir():
        vectors = read_encoded(args.input, args.limit)
        source = {"encoded": args.input}
    else:
        texts = read_texts(args.input, args.text_field, args.limit)
        entry = model_entry("encode", args)
        from serving.engines.embed import EmbedEngine

        engine = EmbedEngine(entry.engine)
        try:
            async def embed(batch: Sequence[str]) -> np.ndarray:
                return (await engine.embed(list(batch), input_type=args.input_type)).embeddings

            vectors = await embed_all(embed, texts)
        finally:
            engine.shutdown()
        source = {"model": entry.engine.model, "input_type": args.input_type}
    path = save(vectors, args.output)
    return {"output": str(path), "vectors": int(vectors.shape[0]), "dimensions": int(vectors.shape[1]), **source}
