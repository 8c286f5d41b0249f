"""Which files a job reads, and reading them as a Ray dataset with one id per row.

JSON Lines are parsed line by line here rather than by Arrow's JSON reader, which infers one type
per column and fails the whole file on a row whose text is a number or whose line is not JSON;
such rows must become error rows instead. Parquet goes through Ray's own reader.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

Format = Literal["jsonl", "parquet"]
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
INPUT_ERROR = "_input_error"  # set by the reader for rows it could not parse; never written out
ROWS_PER_BLOCK = 4096  # JSON Lines rows per block: bounds the reader's memory, whatever the file size


class InputError(ValueError):
    """The input cannot be read as asked (no files, mixed formats, a missing column)."""


def _skipped(path: Path, root: Path) -> bool:
    """Bookkeeping (`_checkpoint`, `_bulk`) and hidden files are never input."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        parts = path.parts
    return any(p.startswith(("_", ".")) for p in parts)


def resolve_files(spec: str) -> tuple[Format, list[str]]:
    """A file, a directory (searched recursively) or a glob, as absolute paths of one format."""
    path = Path(spec).expanduser()
    if path.is_dir():
        root, candidates = path, [p for p in path.rglob("*") if p.is_file()]
    elif path.is_file():
        root, candidates = path.parent, [path]
    else:
        root = Path(glob.escape(spec)).parent if not glob.has_magic(spec) else Path(".")
        candidates = [Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file()]
        if not candidates:
            raise InputError(f"--input {spec}: no such file, directory or matching files")
    files = sorted(str(p.resolve()) for p in candidates
                   if not _skipped(p, root) and p.suffix.lower() in JSONL_SUFFIXES + PARQUET_SUFFIXES)
    if not files:
        raise InputError(f"--input {spec}: no {', '.join(JSONL_SUFFIXES + PARQUET_SUFFIXES)} files there")
    formats = {"parquet" if f.lower().endswith(PARQUET_SUFFIXES) else "jsonl" for f in files}
    if len(formats) > 1:
        raise InputError(f"--input {spec}: mixes JSON Lines and Parquet files; give one format per job")
    return formats.pop(), files


def check_parquet_columns(files: Sequence[str], id_field: str, text_fields: Sequence[str]) -> None:
    """Fail before any engine starts if a column is missing or a text column holds no strings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for file in files:
        schema = pq.read_schema(file)
        for name in (id_field, *text_fields):
            if name not in schema.names:
                raise InputError(f"{file}: no column {name!r} (columns: {', '.join(schema.names)})")
        for name in text_fields:
            kind = schema.field(name).type
            if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)):
                raise InputError(f"{file}: column {name!r} is {kind}, not a string")
        if pa.types.is_null(schema.field(id_field).type):
            raise InputError(f"{file}: column {id_field!r} holds no ids (all null)")


def parse_jsonl_row(line: str, id_field: str, text_fields: Sequence[str]) -> dict[str, Any]:
    """One line as {id, texts..., _input_error}: ids become strings (JSON integers too), so every
    file of a job gives the id column the same type; a bad row keeps whatever id it has."""
    row: dict[str, Any] = {id_field: None, **{f: None for f in text_fields}, INPUT_ERROR: None}
    try:
        obj = json.loads(line)
    except ValueError as exc:
        row[INPUT_ERROR] = f"not valid JSON: {exc}"
        return row
    if not isinstance(obj, dict):
        row[INPUT_ERROR] = f"not a JSON object but {type(obj).__name__}"
        return row
    rid = obj.get(id_field)
    if isinstance(rid, str) or (isinstance(rid, int) and not isinstance(rid, bool)):
        row[id_field] = str(rid)
    elif rid is not None:
        row[INPUT_ERROR] = f"`{id_field}` must be a string or an integer, got {type(rid).__name__}"
    for field in text_fields:
        value = obj.get(field)
        if isinstance(value, str):
            row[field] = value
        elif value is not None and row[INPUT_ERROR] is None:
            row[INPUT_ERROR] = f"`{field}` must be a string, got {type(value).__name__}"
    return row


def _jsonl_datasource_cls():
    from ray.data.datasource import FileBasedDatasource

    class JsonLinesDatasource(FileBasedDatasource):
        """Each line one row; a line that is not a JSON object becomes a row with `_input_error`."""

        def __init__(self, paths: list[str], id_field: str, text_fields: Sequence[str]):
            super().__init__(paths, file_extensions=[s.lstrip(".") for s in JSONL_SUFFIXES])
            self.id_field, self.text_fields = id_field, tuple(text_fields)

        def _read_stream(self, f, path: str) -> Iterator[Any]:
            import pyarrow as pa

            names = [self.id_field, *self.text_fields, INPUT_ERROR]
            schema = pa.schema([(n, pa.string()) for n in names])
            rows: list[dict[str, Any]] = []
            for line in _lines(f):
                if line.strip():
                    rows.append(parse_jsonl_row(line, self.id_field, self.text_fields))
                if len(rows) >= ROWS_PER_BLOCK:
                    yield pa.Table.from_pylist(rows, schema=schema)
                    rows = []
            if rows:
                yield pa.Table.from_pylist(rows, schema=schema)

    return JsonLinesDatasource


def _lines(f, chunk_bytes: int = 1 << 20) -> Iterator[str]:
    """Lines of a binary stream read in chunks, so a large file is never held whole."""
    tail = b""
    while chunk := f.read(chunk_bytes):
        *lines, tail = (tail + chunk).split(b"\n")
        for line in lines:
            yield line.decode("utf-8", errors="replace")
    if tail:
        yield tail.decode("utf-8", errors="replace")


def read_dataset(fmt: Format, files: list[str], id_field: str, text_fields: Sequence[str]):
    """The job's source: a Read operator, which Ray Data's checkpoint filter attaches to."""
    import ray

    if fmt == "parquet":
        return ray.data.read_parquet(files, columns=[id_field, *text_fields])
    return ray.data.read_datasource(_jsonl_datasource_cls()(files, id_field, text_fields))
