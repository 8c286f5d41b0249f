"""The actor side of a bulk job: one engine per actor, a batch in, result rows out.

Rows are validated one by one, so a bad row becomes an error row and its batch goes on. The
engine calls are the API's own (``EmbedEngine`` / ``RerankEngine``): same prompts, same numbers.
A dead engine ends the actor's process: Ray restarts the actor (a new engine) and retries the
batches it held.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from serving.batch.inputs import INPUT_ERROR
from serving.engines.errors import EngineInputError, EngineUnavailableError
from serving.quantization import Quantizer

logger = logging.getLogger(__name__)


EMBEDDING_ELEMENT = {"float": "float32", "int8": "int8", "uint8": "uint8", "binary": "int8", "ubinary": "uint8"}


def embedding_width(dimensions: int, embedding_type: str) -> int:
    """Values per vector: the packed sign bits take one byte per eight dimensions."""
    return -(-dimensions // 8) if embedding_type in ("binary", "ubinary") else dimensions


def embedding_schema(id_type: Any, dimensions: int, embedding_type: str = "float"):
    import pyarrow as pa

    element = pa.from_numpy_dtype(np.dtype(EMBEDDING_ELEMENT[embedding_type]))
    return pa.schema([("id", id_type), ("embedding", pa.list_(element, embedding_width(dimensions, embedding_type))),
                      ("n_tokens", pa.int32()), ("error", pa.string())])


def score_schema(id_type: Any):
    import pyarrow as pa

    return pa.schema([("id", id_type), ("score", pa.float64()), ("n_tokens", pa.int32()), ("error", pa.string())])


def row_errors(batch, id_field: str, text_fields: Sequence[str]) -> list[str | None]:
    """Why each row cannot be processed (None: it can), from what the batch itself shows."""
    ids = batch.column(id_field).to_pylist()
    texts = [batch.column(f).to_pylist() for f in text_fields]
    parsed = (batch.column(INPUT_ERROR).to_pylist() if INPUT_ERROR in batch.column_names else [None] * len(ids))
    errors: list[str | None] = []
    for i, rid in enumerate(ids):
        if parsed[i] is not None:
            errors.append(parsed[i])
        elif rid is None:
            errors.append(f"missing id (`{id_field}`)")
        else:
            missing = [f for f, values in zip(text_fields, texts) if values[i] is None]
            empty = [f for f, values in zip(text_fields, texts) if values[i] == ""]
            errors.append(f"missing `{missing[0]}`" if missing else f"`{empty[0]}` is an empty string" if empty
                          else None)
    return errors


def tokenize_rows(tokenize, texts: Sequence[str]) -> list[list[int] | str]:
    """Token ids per text, or the reason a text was refused; one call for the batch while it is
    clean, one call per text to find which ones are not."""
    try:
        return list(tokenize(list(texts)))
    except EngineInputError:
        pass
    out: list[list[int] | str] = []
    for text in texts:
        try:
            out.append(tokenize([text])[0])
        except EngineInputError as exc:
            out.append(str(exc).replace("input[0] ", "input ").replace("documents[0] ", "document "))
    return out


class _EngineWorker:
    """Owns the engine; a dead one takes the actor's process with it, so Ray restarts the actor."""

    engine: Any = None

    @staticmethod
    def _record_ready(events_dir: str | None, started: float) -> None:
        """When this actor's engine became ready, for the job's summary (start-up vs work)."""
        if events_dir:
            import json
            import socket
            import time

            path = Path(events_dir) / f"engine-ready-{socket.gethostname()}-{os.getpid()}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"started": started, "ready": time.time()}))

    def _die_if_engine_dead(self, exc: BaseException) -> None:
        if isinstance(exc, EngineUnavailableError):
            logger.error("engine died (%s); exiting so Ray restarts this actor and retries its batches", exc)
            try:
                self.engine.shutdown()
            finally:
                os._exit(1)

    def __del__(self):
        if self.engine is not None:
            self.engine.shutdown()


class EncodeWorker(_EngineWorker):
    def __init__(self, engine_config: dict[str, Any], *, id_field: str, text_field: str, input_type: str,
                 instruction: str | None, dimensions: int | None, embedding_type: str = "float",
                 calibration: str | None = None, events_dir: str | None = None):
        from serving.config import EmbedModelConfig
        from serving.engines.embed import EmbedEngine

        started = time.time()
        self.engine = EmbedEngine(EmbedModelConfig.model_validate(engine_config))
        self.engine.inputs.check_dimensions(dimensions)
        self._record_ready(events_dir, started)
        self.id_field, self.text_field = id_field, text_field
        self.input_type, self.instruction, self.dimensions = input_type, instruction, dimensions
        self.width = dimensions or self.engine.inputs.max_dimensions
        self.embedding_type = embedding_type
        self.quantizer = Quantizer.load(calibration)
        # A calibration of another width fails the job here, before any batch.
        self._quantize(np.zeros((1, self.width), dtype=np.float32))

    def _quantize(self, vectors: np.ndarray) -> np.ndarray:
        return self.quantizer.quantize(vectors, self.embedding_type, full_width=self.dimensions is None)

    async def __call__(self, batch):
        import pyarrow as pa

        errors = row_errors(batch, self.id_field, [self.text_field])
        texts = batch.column(self.text_field).to_pylist()
        todo = [i for i, e in enumerate(errors) if e is None]
        tokenized = tokenize_rows(lambda t: self.engine.inputs.tokenize(t, input_type=self.input_type,
                                                                        instruction=self.instruction),
                                  [texts[i] for i in todo])
        n_tokens: list[int | None] = [None] * len(errors)
        ids: list[list[int]] = []
        rows: list[int] = []
        for i, tok in zip(todo, tokenized):
            if isinstance(tok, str):
                errors[i] = tok
            else:
                rows.append(i)
                ids.append(tok)
                n_tokens[i] = len(tok)
        vectors = np.zeros((len(errors), self.width), dtype=np.float32)
        if ids:
            try:
                result = await self.engine.embed_token_ids(ids, dimensions=self.dimensions)
            except Exception as exc:
                self._die_if_engine_dead(exc)
                raise
            vectors[rows] = result.embeddings
        valid = np.zeros(len(errors), dtype=bool)
        valid[rows] = True
        schema = embedding_schema(batch.schema.field(self.id_field).type, self.width, self.embedding_type)
        values = self._quantize(vectors)
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1],
                                                      mask=pa.array(~valid))
        return pa.Table.from_arrays([batch.column(self.id_field), embedding, pa.array(n_tokens, pa.int32()),
                                     pa.array(errors, pa.string())], schema=schema)


class ScoreWorker(_EngineWorker):
    def __init__(self, engine_config: dict[str, Any], *, id_field: str, query_field: str, document_field: str,
                 instruction: str | None, events_dir: str | None = None):
        from serving.config import RerankModelConfig
        from serving.engines.rerank import RerankEngine

        started = time.time()
        self.engine = RerankEngine(RerankModelConfig.model_validate(engine_config))
        self._record_ready(events_dir, started)
        self.id_field, self.query_field, self.document_field = id_field, query_field, document_field
        self.instruction = instruction

    async def __call__(self, batch):
        import pyarrow as pa

        errors = row_errors(batch, self.id_field, [self.query_field, self.document_field])
        queries = batch.column(self.query_field).to_pylist()
        documents = batch.column(self.document_field).to_pylist()
        # Rows of one query are built together, as the API builds one request's documents.
        by_query: dict[str, list[int]] = {}
        for i, e in enumerate(errors):
            if e is None:
                by_query.setdefault(queries[i], []).append(i)
        prompts: dict[int, list[int]] = {}
        for query, rows in by_query.items():
            built = tokenize_rows(lambda docs, q=query: self.engine.prompts.build(q, docs, self.instruction),
                                  [documents[i] for i in rows])
            for i, tok in zip(rows, built):
                if isinstance(tok, str):
                    errors[i] = tok
                else:
                    prompts[i] = tok
        scores: list[float | None] = [None] * len(errors)
        n_tokens: list[int | None] = [None] * len(errors)
        if prompts:
            order = list(prompts)
            try:
                result = await self.engine.score_token_ids([prompts[i] for i in order])
            except Exception as exc:
                self._die_if_engine_dead(exc)
                raise
            for i, score in zip(order, result.scores):
                scores[i], n_tokens[i] = score, len(prompts[i])
        schema = score_schema(batch.schema.field(self.id_field).type)
        return pa.Table.from_arrays([batch.column(self.id_field), pa.array(scores, pa.float64()),
                                     pa.array(n_tokens, pa.int32()), pa.array(errors, pa.string())], schema=schema)
