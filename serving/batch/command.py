"""`qwen3-serve encode` / `score`: flags and config file -> a job, run it, one summary line."""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
from pathlib import Path
from typing import Any

from serving.config import (
    AppConfig,
    BulkJobConfig,
    EmbedDeploymentConfig,
    QuantizationConfig,
    RerankDeploymentConfig,
)

logger = logging.getLogger("qwen3-serve")


class BulkCommandError(RuntimeError):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def model_entry(kind: str, args: argparse.Namespace) -> EmbedDeploymentConfig | RerankDeploymentConfig:
    """The engine and resources: a model of --config (if given), then the flags on top."""
    model_kind = "embed" if kind == "encode" else "rerank"
    entry_cls = EmbedDeploymentConfig if model_kind == "embed" else RerankDeploymentConfig
    if args.config:
        config = AppConfig.load(args.config)
        if args.config_model:
            matches = [m for m in config.models if m.name == args.config_model]
            if not matches or matches[0].kind != model_kind:
                raise ValueError(f"{args.config} has no {model_kind} model named {args.config_model!r}")
        else:
            matches = [m for m in config.models if m.kind == model_kind]
            if not matches:
                raise ValueError(f"{args.config} has no {model_kind} model")
        entry = matches[0]
    elif args.model is None:
        raise ValueError("--model is required (or --config with a model)")
    else:
        entry = entry_cls(name=args.model, engine={"model": args.model})
    overrides: dict[str, Any] = {}
    for flag, field in (("model", "model"), ("dtype", "dtype"), ("max_model_len", "max_model_len"),
                        ("tensor_parallel_size", "tensor_parallel_size"), ("truncate", "truncate")):
        value = getattr(args, flag, None)
        if value is not None:
            overrides[field] = value
    engine = entry.engine.model_validate(entry.engine.model_dump() | overrides)
    update: dict[str, Any] = {"engine": engine}
    if getattr(args, "calibration", None):
        update["quantization"] = QuantizationConfig(calibration=args.calibration)
    return entry.model_copy(update=update)


def job_config(kind: str, args: argparse.Namespace) -> BulkJobConfig:
    fields = {k: getattr(args, k) for k in ("input", "output", "id_field", "text_field", "query_field",
                                            "document_field", "input_type", "instruction", "dimensions",
                                            "embedding_type", "replicas", "batch_size", "batches_in_flight")
              if getattr(args, k, None) is not None}
    return BulkJobConfig(kind=kind, **fields)


def _check_model(model: str) -> None:
    from serving.models.sources import looks_like_path

    if looks_like_path(model) and not Path(model).expanduser().exists():
        raise FileNotFoundError(f"no such model directory: {model}")


def _check_calibration(job: BulkJobConfig, model, flag: str | None) -> None:
    """Before Ray starts: a calibration the job will read must load; one it would not read is an error."""
    from serving.quantization import Quantizer

    if flag and job.embedding_type not in ("int8", "uint8"):
        raise ValueError(f"--calibration scales int8/uint8 only; --embedding-type is {job.embedding_type}")
    if job.embedding_type in ("int8", "uint8"):
        Quantizer.load(model.quantization.calibration)  # CalibrationError (a ValueError) says why
        if model.quantization.calibration is None:
            logger.warning("no calibration for %s: %s uses the range [-1, 1] in every dimension (see "
                           "`qwen3-serve calibrate`)", model.name, job.embedding_type)


_STARTUP = re.compile(r"EngineStartupError: (model .* failed to start: .*)")


def run_command(args: argparse.Namespace) -> int:
    import pydantic

    from serving.batch import bookkeeping
    from serving.batch.inputs import InputError
    from serving.batch.job import init_ray, run_job

    try:
        job = job_config(args.command, args)
        model = model_entry(args.command, args)
        _check_model(model.engine.model)
        _check_calibration(job, model, getattr(args, "calibration", None))
    except (OSError, ValueError, pydantic.ValidationError) as exc:
        raise BulkCommandError(str(exc).splitlines()[0] if isinstance(exc, OSError) else str(exc), 2) from exc
    import ray

    def stop(*_):  # `ray job stop` and Ctrl-C: let Ray Data shut its actors (and their engines) down
        raise KeyboardInterrupt

    def start_ray() -> None:
        init_ray(job, model)
        # After ray.init, which installs a SIGTERM handler of its own that exits at once.
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    try:
        summary, already_done = run_job(job, model, progress=not args.no_progress, start_ray=start_ray)
    except (InputError, bookkeeping.OutputBusyError, bookkeeping.OutputMismatchError) as exc:
        raise BulkCommandError(str(exc), 2) from exc
    except KeyboardInterrupt:
        logger.warning("stopped; rerun the same command to finish the rest")
        return 130
    except Exception as exc:
        logger.exception("bulk job failed")
        causes = _STARTUP.findall(str(exc))
        raise BulkCommandError(causes[-1].strip() if causes else f"{type(exc).__name__}: "
                               f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}", 1) from exc
    finally:
        if ray.is_initialized():
            ray.shutdown()
    if already_done:
        print(f"qwen3-serve {job.kind}: {job.output} is already complete, nothing to do "
              f"(finished run: {summary.line()})", file=sys.stderr)
    else:
        print(f"qwen3-serve {job.kind}: done: {summary.line()}", file=sys.stderr)
    return 0
