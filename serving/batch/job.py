"""A bulk job as one Ray Data pipeline: read -> map_batches over an engine actor pool -> Parquet.

    read (JSON Lines / Parquet, streamed)        Read op; Ray's checkpoint filter drops committed ids
      -> map_batches(EncodeWorker | ScoreWorker)  ActorPoolStrategy, async UDF, batches in flight
      -> write_parquet(DIR)                       Ray's 2-phase commit: pending ids, file, commit

Nothing is materialised: blocks stream through, so memory is bounded by the blocks in flight,
not by the corpus.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from serving.batch import bookkeeping
from serving.batch.inputs import check_parquet_columns, read_dataset, resolve_files
from serving.config import BulkJobConfig, EmbedDeploymentConfig, RerankDeploymentConfig

logger = logging.getLogger(__name__)

ModelEntry = EmbedDeploymentConfig | RerankDeploymentConfig
# What makes two runs the same job: change one of these and the rows would differ.
IDENTITY_FIELDS = ("kind", "id_field", "text_field", "query_field", "document_field", "input_type", "instruction",
                   "dimensions")
ENGINE_IDENTITY_FIELDS = ("model", "dtype", "max_model_len", "hf_overrides")


@dataclass(frozen=True)
class Summary:
    """What one run did (not the whole directory: a resumed run counts only its own rows)."""

    rows_ok: int
    rows_failed: int
    tokens: int
    wall_s: float
    engine_ready_s: float | None  # from the start to the first engine ready; the rest of wall_s is work
    output_rows: int  # every row now under the output directory, this run's and earlier runs'

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s > 0 else 0.0

    def line(self) -> str:
        ready = f", engine ready after {self.engine_ready_s:,.1f} s" if self.engine_ready_s is not None else ""
        return (f"rows ok {self.rows_ok:,}, rows failed {self.rows_failed:,}, tokens {self.tokens:,}, "
                f"{self.tokens_per_s:,.0f} tokens/s, wall {self.wall_s:,.1f} s{ready} "
                f"(output now holds {self.output_rows:,} rows)")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"tokens_per_s": round(self.tokens_per_s, 1)}


SUMMARY_FIELDS = tuple(f.name for f in fields(Summary))


def job_identity(job: BulkJobConfig, model: ModelEntry, files: list[str]) -> dict[str, Any]:
    fields = {k: getattr(job, k) for k in IDENTITY_FIELDS}
    engine = {k: getattr(model.engine, k) for k in ENGINE_IDENTITY_FIELDS}
    engine["truncate"] = getattr(model.engine, "truncate", None)
    if job.kind == "encode" and job.embedding_type != "float":  # absent for float: earlier jobs' identities hold
        fields["embedding_type"] = job.embedding_type
        if job.embedding_type in ("int8", "uint8"):
            fields["calibration_sha256"] = calibration_digest(model)
    return fields | {"engine": engine, "input_files": files}


def calibration_digest(model: ModelEntry) -> str | None:
    """What the int8/uint8 values depend on besides the model: the calibration file's content."""
    import hashlib

    path = model.quantization.calibration
    return hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest() if path else None


def actor_options(model: ModelEntry, cluster_has_gpus: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """(map_batches remote args, engine overrides): what one engine actor reserves.

    The same shapes as a serving replica (``replica_options``): GPU TP=1 reserves its GPUs on the
    actor; GPU TP>1 gets a STRICT_PACK placement group of its own (one bundle for the actor, one
    GPU bundle per shard) in which vLLM's Ray executor places its workers; CPU reserves CPUs.
    """
    from serving.deployments.app import replica_options

    options, overrides = replica_options(model, cluster_has_gpus)
    remote_args: dict[str, Any] = dict(options["ray_actor_options"])
    bundles = options.get("placement_group_bundles")
    if bundles:
        remote_args["placement_group"] = {"bundles": bundles, "strategy": options["placement_group_strategy"]}
    return remote_args, overrides


def actor_args_fn(placement: dict[str, Any] | None, max_task_retries: int) -> Callable[[], dict[str, Any]]:
    """Ray Data calls this for every engine actor it starts (and restarts)."""

    def args() -> dict[str, Any]:
        # A batch whose engine died is retried on the restarted actor, a bounded number of times,
        # so an input that kills the engine every time fails the job instead of looping.
        out: dict[str, Any] = {"max_task_retries": max_task_retries}
        if placement:
            from ray.util.placement_group import placement_group
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            group = placement_group(placement["bundles"], strategy=placement["strategy"])
            out["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                group, placement_group_bundle_index=0, placement_group_capture_child_tasks=True)
        return out

    return args


def _output_files(output: Path) -> set[str]:
    return {str(p) for p in output.glob("*.parquet")}


def _count(files: set[str]) -> tuple[int, int, int]:
    """(rows ok, rows failed, tokens) of result files; reads two small columns, not the vectors."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    ok = failed = tokens = 0
    for file in files:
        table = pq.read_table(file, columns=["n_tokens", "error"])
        n_failed = table["error"].length() - table["error"].null_count
        failed += n_failed
        ok += table.num_rows - n_failed
        tokens += int(pc.sum(table["n_tokens"]).as_py() or 0)
    return ok, failed, tokens


def _rows(files: set[str]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def run_job(job: BulkJobConfig, model: ModelEntry, *, progress: bool = True,
            start_ray: Callable[[], None] | None = None) -> tuple[Summary, bool]:
    """Run (or resume) a job; (summary, already_done). ``start_ray`` is called once the job is
    known to have work left (a finished job's rerun starts nothing); without it, Ray must be up."""
    import ray

    fmt, files = resolve_files(job.input)
    text_fields = [job.text_field] if job.kind == "encode" else [job.query_field, job.document_field]
    if fmt == "parquet":
        check_parquet_columns(files, job.id_field, text_fields)
    output = Path(job.output).expanduser().resolve()
    identity = job_identity(job, model, files)
    with bookkeeping.OutputLock(str(output)):
        done = bookkeeping.claim_output(str(output), identity)
        if done is not None:
            return Summary(**{k: done["summary"].get(k) for k in SUMMARY_FIELDS}), True
        if start_ray is not None:
            start_ray()
        start = time.time()
        ctx = ray.data.DataContext.get_current()
        saved = ctx.checkpoint_config, ctx.enable_progress_bars
        ctx.checkpoint_config = bookkeeping.checkpoint_config(str(output), job.id_field)
        ctx.enable_progress_bars = progress
        try:
            summary = _run_pipeline(job, model, fmt, files, text_fields, output, start)
        finally:  # the context is process-wide; leave it as it was for whatever runs next
            ctx.checkpoint_config, ctx.enable_progress_bars = saved
        bookkeeping.mark_done(str(output), identity, summary.as_dict())
        return summary, False


def _run_pipeline(job: BulkJobConfig, model: ModelEntry, fmt: str, files: list[str], text_fields: list[str],
                  output: Path, start: float) -> Summary:
    import ray

    before = _output_files(output)
    events = output / bookkeeping.BULK_DIR / "events"
    shutil.rmtree(events, ignore_errors=True)  # this run's actors only
    remote_args, overrides = actor_options(model, ray.cluster_resources().get("GPU", 0) > 0)
    placement = remote_args.pop("placement_group", None)
    engine = model.engine.model_copy(update=overrides)
    if not engine.served_model_name:
        engine = engine.model_copy(update={"served_model_name": model.name})
    if job.kind == "encode":
        from serving.batch.workers import EncodeWorker as worker

        kwargs = {"id_field": job.id_field, "text_field": job.text_field, "input_type": job.input_type,
                  "instruction": job.instruction, "dimensions": job.dimensions,
                  "embedding_type": job.embedding_type, "calibration": model.quantization.calibration,
                  "events_dir": str(events)}
    else:
        from serving.batch.workers import ScoreWorker as worker

        kwargs = {"id_field": job.id_field, "query_field": job.query_field, "document_field": job.document_field,
                  "instruction": job.instruction, "events_dir": str(events)}
    # One block per batch: each batch is then one Parquet file and one checkpoint commit, so a
    # killed job loses at most the batches in flight, and no actor holds more than those.
    ds = read_dataset(fmt, files, job.id_field, text_fields).repartition(target_num_rows_per_block=job.batch_size)
    ds = ds.map_batches(
        worker, fn_constructor_args=(engine.model_dump(mode="json"),), fn_constructor_kwargs=kwargs,
        batch_size=job.batch_size, batch_format="pyarrow", zero_copy_batch=True,
        # The UDF is async: each actor works on this many batches at once, fed as many.
        compute=ray.data.ActorPoolStrategy(size=job.replicas, max_tasks_in_flight_per_actor=job.batches_in_flight,
                                           max_concurrent_calls_per_actor=job.batches_in_flight),
        num_cpus=remote_args.get("num_cpus"), num_gpus=remote_args.get("num_gpus"),
        ray_remote_args_fn=actor_args_fn(placement, job.max_task_retries))
    ds.write_parquet(str(output))
    wall_s = time.time() - start
    ok, failed, tokens = _count(_output_files(output) - before)
    ready = [json.loads(p.read_text())["ready"] for p in events.glob("engine-ready-*.json")]
    return Summary(rows_ok=ok, rows_failed=failed, tokens=tokens, wall_s=round(wall_s, 3),
                   engine_ready_s=round(min(ready) - start, 3) if ready else None,
                   output_rows=_rows(_output_files(output)))


def init_ray(job: BulkJobConfig, model: ModelEntry) -> None:
    """Join the cluster in RAY_ADDRESS (a `ray job submit` entrypoint has it set), else start a
    local one. Locally, logical CPUs cover the actors plus reading and writing, so a 2-core
    machine does not deadlock with every CPU held by an engine actor; the engines themselves use
    the cores their thread binding names."""
    import ray

    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
        return
    # "local": never attach to some other cluster found through /tmp/ray's address file.
    per_actor = model.resources.cpus_per_shard * model.engine.tensor_parallel_size
    ray.init(address="local", num_cpus=max(os.cpu_count() or 1, int(job.replicas * per_actor) + 2),
             include_dashboard=False)
