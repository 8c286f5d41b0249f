"""Exactly-once bookkeeping around Ray Data's own checkpointing.

Ray Data (``ray.data.checkpoint``) does the real work: a Parquet write writes a *pending*
checkpoint of its ids, then the data file, then renames the checkpoint to committed; a run that
starts over deletes the data files of pending checkpoints and filters committed ids out of the
read. Around it this module adds only what Ray does not do:

- rows without an id: Ray's loader sorts the checkpointed ids and fails on a null, and its
  filter cannot compare null with an id; nulls are dropped from the loaded ids and null-id rows
  are let through (they are error rows, which have no id to count once);
- one writer per output directory: an exclusive ``flock`` held by the driver for the whole run,
  released by the kernel however the driver ends (SIGKILL included), so a killed job never
  leaves a stale lock behind;
- the job's identity (``_bulk/job.json``): a rerun must ask for the same thing, or its rows
  would be mixed with another model's;
- completion (``_bulk/done.json``): a rerun of a finished job is a no-op that says so.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path
from typing import Any

CHECKPOINT_DIR = "_checkpoint"
BULK_DIR = "_bulk"


class OutputBusyError(RuntimeError):
    """Another job is writing the same output directory."""


class OutputMismatchError(ValueError):
    """The output directory holds (part of) a different job's result."""


def checkpoint_config(output: str, id_field: str):
    import pyarrow as pa
    import pyarrow.compute as pc
    from ray.data.checkpoint import CheckpointConfig
    from ray.data.checkpoint.checkpoint_filter import IdColumnCheckpointManager, NumpyArrayBasedCheckpointFilter

    class IdCheckpointManager(IdColumnCheckpointManager):
        def _preprocess_data_pipeline(self, checkpoint_ds):
            column = self.id_column
            return checkpoint_ds.map_batches(lambda t: t.filter(pc.is_valid(t[column])), batch_format="pyarrow")

    class IdCheckpointFilter(NumpyArrayBasedCheckpointFilter):
        def filter_rows_for_block(self, block):
            if block[self.id_column].null_count == 0:
                return super().filter_rows_for_block(block)
            valid = pc.is_valid(block[self.id_column])
            return pa.concat_tables([super().filter_rows_for_block(block.filter(valid)),
                                     block.filter(pc.invert(valid))])

    # Kept after success: it is what makes a finished job's rerun find nothing left to do, even
    # if done.json were lost.
    return CheckpointConfig(id_column=id_field, checkpoint_path=str(Path(output) / CHECKPOINT_DIR),
                            delete_checkpoint_on_success=False, checkpoint_filter_cls=IdCheckpointFilter,
                            checkpoint_manager_cls=IdCheckpointManager)


class OutputLock:
    """Exclusive ownership of an output directory for one driver process."""

    def __init__(self, output: str):
        self.path = Path(output) / BULK_DIR / "lock"
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputBusyError(f"{self.path.parent.parent} is being written by another job ({holder}); "
                                  "wait for it to finish or stop it, or choose another --output") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _write_json(path: Path, value: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)  # readers see the old file or the new one, never half of one


def claim_output(output: str, identity: dict[str, Any]) -> dict[str, Any] | None:
    """Record what this job computes; the finished summary if it is already done, else None.

    Raises OutputMismatchError if the directory belongs to a job with a different identity, or
    holds Parquet files no job of ours wrote.
    """
    root = Path(output)
    bulk = root / BULK_DIR
    recorded = _read_json(bulk / "job.json")
    if recorded is None:
        strangers = [p.name for p in root.glob("*.parquet")] if root.is_dir() else []
        if strangers:
            raise OutputMismatchError(f"{root} already holds Parquet files ({strangers[0]}, ...) that no bulk job "
                                      "recorded; choose an empty or new --output")
    elif recorded != identity:
        changed = sorted(k for k in identity.keys() | recorded.keys() if identity.get(k) != recorded.get(k))
        raise OutputMismatchError(
            f"{root} holds the output of a different job (differs in: {', '.join(changed)}); rerun with the same "
            "arguments to resume it, or choose another --output")
    bulk.mkdir(parents=True, exist_ok=True)
    _write_json(bulk / "job.json", identity)
    done = _read_json(bulk / "done.json")
    return done if done is not None and done.get("job") == identity else None


def mark_done(output: str, identity: dict[str, Any], summary: dict[str, Any]) -> None:
    _write_json(Path(output) / BULK_DIR / "done.json", {"job": identity, "summary": summary})
