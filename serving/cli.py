"""`qwen3-serve`: the command line. Every subcommand goes through the same engines as the server."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence

from serving.engines.errors import EngineInputError, EngineStartupError


def _engine_flags(parser: argparse.ArgumentParser, default_model: str) -> None:
    parser.add_argument("--model", default=default_model, help="hub id or local path (default: %(default)s)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--max-model-len", type=int, default=None,
                        help="tokens per sequence (default: the checkpoint's own limit)")
    parser.add_argument("--tensor-parallel-size", type=int, default=1)


def _engine_fields(args: argparse.Namespace) -> dict:
    return {"model": args.model, "dtype": args.dtype, "max_model_len": args.max_model_len,
            "tensor_parallel_size": args.tensor_parallel_size}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qwen3-serve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    tiny = sub.add_parser("tiny-models", help="write tiny random Qwen3 embedding + reranker models")
    tiny.add_argument("out_dir")
    tiny.add_argument("--shape", choices=["tiny", "0.6b-shaped"], default="tiny",
                      help="'0.6b-shaped' uses Qwen3-0.6B's layer shapes with 4 layers (benchmarks)")
    tiny.add_argument("--seed", type=int, default=0)

    embed = sub.add_parser("embed", help="print embeddings of TEXT... as JSON")
    _engine_flags(embed, "Qwen/Qwen3-Embedding-0.6B")
    embed.add_argument("--dimensions", type=int, default=None, help="MRL output size (32..hidden size)")
    embed.add_argument("--query", action="store_true", help="format inputs as instructed queries")
    embed.add_argument("--task", default=None, help="query instruction (implies --query)")
    embed.add_argument("texts", nargs="+", metavar="TEXT")

    rerank = sub.add_parser("rerank", help="print relevance scores of DOC... for --query, in input order")
    _engine_flags(rerank, "Qwen/Qwen3-Reranker-0.6B")
    rerank.add_argument("--query", required=True)
    rerank.add_argument("--instruction", default=None)
    rerank.add_argument("documents", nargs="+", metavar="DOC")
    _bulk_parser(sub, "encode", "embed every row of JSON Lines / Parquet files into Parquet, as a Ray job",
                 "Qwen3-Embedding")
    _bulk_parser(sub, "score", "score every (query, document) row of JSON Lines / Parquet files into Parquet, "
                 "as a Ray job", "Qwen3-Reranker")
    _calibrate_parser(sub)
    serve = sub.add_parser("serve", help="deploy the Ray Serve app and serve HTTP until SIGINT/SIGTERM")
    serve.add_argument("--config", default=None, help="YAML app config (default: built-in defaults)")
    serve.add_argument("--embed-model", default=None, help="hub id or path for the (first) embed model")
    serve.add_argument("--rerank-model", default=None, help="hub id or path for the (first) rerank model")
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--dashboard", action="store_true",
                       help="start Ray's dashboard (127.0.0.1:8265) with the local Ray instance this command starts; "
                            "off by default: its head and a process per module cost about 20 ms of CPU per "
                            "second idle (a fifth of the idle app's), and the API, /metrics and logs do not need it")
    return parser


def _bulk_parser(sub, name: str, help_text: str, family: str) -> None:
    from serving.config import BulkJobConfig
    from serving.quantization import EMBEDDING_TYPES

    # Defaults live in BulkJobConfig; flags left unset (None) take them.
    doc = {k: f"{f.description} (default: {f.default})" for k, f in BulkJobConfig.model_fields.items()}
    p = sub.add_parser(name, help=help_text, description=(
        f"{help_text}. Runs locally (a fresh Ray instance), on the cluster in RAY_ADDRESS, or under "
        "`ray job submit`. Output: Parquet files under --output with columns id, "
        + ("embedding (fixed_size_list<float32>[D]; with --embedding-type int8/uint8: <int8>/<uint8>[D], "
           "binary/ubinary: <int8>/<uint8>[ceil(D/8)]), " if name == "encode" else "score (float64), ")
        + "n_tokens, error; a row that cannot be processed has an error and a null result. A killed job "
        "rerun with the same arguments finishes the rest (every id once); a finished one is a no-op."))
    p.add_argument("--model", default=None,
                   help=f"{family} hub id or local path (required unless --config names the model)")
    p.add_argument("--input", required=True, metavar="PATH_OR_GLOB", help=BulkJobConfig.model_fields["input"].description)
    p.add_argument("--output", required=True, metavar="DIR", help=BulkJobConfig.model_fields["output"].description)
    p.add_argument("--id-field", help=doc["id_field"])
    if name == "encode":
        p.add_argument("--text-field", help=doc["text_field"])
        p.add_argument("--input-type", choices=["document", "query"], help=doc["input_type"])
        p.add_argument("--dimensions", type=int, default=None, help=doc["dimensions"])
        p.add_argument("--embedding-type", choices=EMBEDDING_TYPES,
                       help=doc["embedding_type"])
        p.add_argument("--calibration", default=None, metavar="FILE.npy",
                       help="int8/uint8: calibration embeddings from `qwen3-serve calibrate` (default: the config "
                            "model's quantization.calibration, else the range [-1, 1])")
    else:
        p.add_argument("--query-field", help=doc["query_field"])
        p.add_argument("--document-field", help=doc["document_field"])
    p.add_argument("--instruction", default=None, help=doc["instruction"])
    p.add_argument("--max-model-len", type=int, default=None,
                   help="tokens per sequence (default: the config's, else the checkpoint's own limit)")
    p.add_argument("--dtype", default=None, choices=["auto", "float32", "bfloat16", "float16"],
                   help="weights/activation dtype (default: the config's, else auto)")
    p.add_argument("--tensor-parallel-size", type=int, default=None, help="shards per engine (default: 1)")
    if name == "encode":
        p.add_argument("--truncate", action=argparse.BooleanOptionalAction, default=None,
                       help="cut over-long texts to max_model_len keeping the EOS (default), or make them error "
                            "rows (--no-truncate)")
    p.add_argument("--replicas", type=int, help=doc["replicas"])
    p.add_argument("--batch-size", type=int, help=doc["batch_size"])
    p.add_argument("--batches-in-flight", type=int, help=doc["batches_in_flight"])
    p.add_argument("--config", default=None, metavar="FILE",
                   help=f"serving config (YAML, as for `serve`): engine settings and resources come from its "
                        f"first {'embed' if name == 'encode' else 'rerank'} model (or --config-model); flags "
                        "override them")
    p.add_argument("--config-model", default=None, metavar="NAME", help="which model of --config to use")
    p.add_argument("--no-progress", action="store_true", help="no Ray Data progress bars")


def _calibrate_parser(sub) -> None:
    p = sub.add_parser("calibrate", help="calibration embeddings (.npy) for int8/uint8 output", description=(
        "Embed a calibration corpus at the model's full dimension and save the vectors as one float32 .npy, for "
        "`models[].quantization.calibration`: int8/uint8 embeddings are then scaled to each dimension's min and max "
        "over them. Use a few thousand texts like those you will embed. Runs the engine in this process (no Ray); "
        "an --input of Parquet from `qwen3-serve encode` (full dimension) is used as is, without an engine."))
    p.add_argument("--input", required=True, metavar="FILE",
                   help="a .txt (one text per line), a .jsonl (--text-field per row), or `encode` Parquet output")
    p.add_argument("--output", required=True, metavar="FILE.npy", help="where the float32 (texts, hidden size) "
                                                                      "array goes")
    p.add_argument("--model", default=None, help="Qwen3-Embedding hub id or local path (required unless --config "
                                                 "names the model; not used with `encode` output): the model "
                                                 "that will serve the vectors")
    p.add_argument("--text-field", default="text", help="JSON Lines: the field holding the text (default: text)")
    p.add_argument("--input-type", choices=["document", "query"], default="document",
                   help="`query` embeds the texts with the query instruction (default: document)")
    p.add_argument("--limit", type=int, default=None, help="use the first N texts or vectors (default: all)")
    p.add_argument("--dtype", default=None, choices=["auto", "float32", "bfloat16", "float16"],
                   help="weights/activation dtype (default: the config's, else auto); serve with the same")
    p.add_argument("--max-model-len", type=int, default=None,
                   help="tokens per sequence (default: the config's, else the checkpoint's own limit)")
    p.add_argument("--tensor-parallel-size", type=int, default=None, help="shards of the engine (default: 1)")
    p.add_argument("--config", default=None, metavar="FILE", help="serving config: the engine settings of its "
                                                                  "first embed model (or --config-model)")
    p.add_argument("--config-model", default=None, metavar="NAME", help="which model of --config to use")


def _calibrate(args: argparse.Namespace) -> int:
    import pydantic

    from serving.batch.calibrate import calibrate

    try:
        print(json.dumps(asyncio.run(calibrate(args))))
    except (OSError, ValueError, pydantic.ValidationError) as exc:  # InputError is a ValueError
        print(f"qwen3-serve: error: {str(exc).splitlines()[0] if isinstance(exc, OSError) else exc}", file=sys.stderr)
        return 2
    except EngineStartupError as exc:
        print(f"qwen3-serve: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _bulk(args: argparse.Namespace) -> int:
    from serving.batch.command import BulkCommandError, run_command

    try:
        return run_command(args)
    except BulkCommandError as exc:
        print(f"qwen3-serve: error: {exc}", file=sys.stderr)
        return exc.exit_code


def _serve(args: argparse.Namespace) -> int:
    import signal
    import time

    from serving.config import AppConfig
    from serving.models.sources import resolve_sources

    log = logging.getLogger("qwen3-serve")
    try:
        config = _with_cli_overrides(AppConfig.load(args.config), args)
        # First log lines: where every model's weights come from (a FALLBACK warning if tiny).
        config, sources = resolve_sources(config)
    except (OSError, ValueError) as exc:  # a bad config file or model path: say so before starting Ray
        print(f"qwen3-serve: error: {exc}", file=sys.stderr)
        return 2
    for name, src in sources.items():
        log.info("model %s <- %s%s", name, src["source"], "  [TINY FALLBACK]" if src["fallback"] else "")
    def interrupt(*_):
        raise KeyboardInterrupt

    address = os.environ.get("RAY_ADDRESS") or None
    local = address in (None, "local")  # Ray starts a new local cluster
    private_files = None  # HAProxy's files of the local cluster, removed at exit
    if local:
        # The local cluster's processes inherit the ingress settings; Ray Serve reads them at import.
        env = local_ray_serve_env(config.http)
        os.environ.update(env)
        private_files = env.get("RAY_SERVE_HAPROXY_SERVER_STATE_BASE")  # set only when we made the folder
    else:
        log.info("using the Ray cluster at %s: its own Ray Serve environment applies (%s are set where it starts)",
                 address, ", ".join(config.http.ray_serve_env()))

    import ray
    from ray import serve

    from serving.deployments.app import APP_NAME, build_app

    ray.init(address=address, **({"include_dashboard": args.dashboard} if local else {}))
    # SIGTERM (Kubernetes, systemd) takes the same clean path as Ctrl-C. Installed after
    # ray.init, which sets a handler of its own that would abort the shutdown.
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    failure = None
    try:
        serve.start(http_options={"host": config.http.host, "port": config.http.port,
                                  "request_timeout_s": config.http.request_timeout_s})
        # Returns once every deployment is up; raises once one has failed to start
        # `scaling.max_constructor_retry_count` times in a row.
        serve.run(build_app(config, sources), name=APP_NAME, route_prefix="/", blocking=False)
        log.info("serving on http://%s:%d (Ctrl-C to stop)", config.http.host, config.http.port)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        log.info("shutting down")
    except Exception as exc:
        status = f"{exc}\n{_deployment_messages(APP_NAME)}"
        log.error("deployment failed:\n%s", status)  # the whole status, tracebacks included, for the log
        failure = deployment_failure(status)
    finally:
        serve.shutdown()
        ray.shutdown()
        if private_files:
            import shutil

            stop_stray_haproxy(private_files)
            shutil.rmtree(private_files, ignore_errors=True)
    if failure:  # last, after Ray's shutdown noise, so it is the line a user sees
        print(f"qwen3-serve: error: {failure}", file=sys.stderr)
        return 1
    return 0


def local_ray_serve_env(http) -> dict[str, str]:
    """The Ray Serve environment for a local cluster this command starts. On a host with fewer than
    8 cores, Serve's controller loop every 0.5 s instead of 0.1 s (its cost is fixed per second,
    1-2% of a core, taken from the engines) and HAProxy with half the cores as threads (Ray's
    default is 4). With HAProxy, files and ports of this instance's own (`haproxy_instance_env`).
    The config and the user's own environment win over each of these."""
    env = http.ray_serve_env()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    small = {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5"}
    if http.ingress == "haproxy":
        small["RAY_SERVE_HAPROXY_NBTHREAD"] = str(max(1, cores // 2))
    if cores < 8:
        env |= {k: v for k, v in small.items() if k not in env and k not in os.environ}
    if http.ingress != "haproxy":
        return env
    return env | {k: v for k, v in haproxy_instance_env().items() if k not in os.environ}


def haproxy_instance_env() -> dict[str, str]:
    """What one Ray Serve with HAProxy needs for itself on a machine shared with others: a folder
    for HAProxy's files (Ray's default, /tmp/haproxy-serve, is shared by every Ray on the machine)
    and leased ports for HAProxy's Prometheus and stats listeners and the fallback proxy behind it
    (Ray's fixed 9101, 8404, 8500 and 9500 clash, and the second instance fails to start)."""
    import tempfile

    from serving.ports import reserve_port

    # Short: Ray adds a 40-character folder, and HAProxy's socket path may not exceed 97 characters.
    files = tempfile.mkdtemp(prefix="q3h-", dir="/tmp")
    env = {f"RAY_SERVE_HAPROXY_{key}": os.path.join(files, name) if name else files
           for key, name in (("CONFIG_FILE_LOC", "haproxy.cfg"), ("SOCKET_PATH", "admin.sock"),
                             ("SERVER_STATE_BASE", ""), ("SERVER_STATE_FILE", "server-state"))}
    for key in ("HAPROXY_METRICS_PORT", "HAPROXY_STATS_PORT", "FALLBACK_PROXY_HTTP_PORT", "FALLBACK_PROXY_GRPC_PORT"):
        env[f"RAY_SERVE_{key}"] = str(reserve_port())
    return env


def stop_stray_haproxy(files: str, timeout_s: float = 5.0) -> list[int]:
    """Stop HAProxy processes still running on this instance's files after Ray's shutdown; return
    their pids. Ray's HAProxy manager reloads HAProxy when replicas change (a new process replaces
    the old one, `-sf`), and at shutdown it could leave the newest running: it is in a process
    group of its own, so it outlived the command and kept the app's port (twice in about ten starts here)."""
    import psutil

    folder = files.rstrip("/") + "/"  # its config file and socket are in it
    strays = []
    for process in psutil.process_iter(["name", "cmdline"]):
        try:
            if "haproxy" in (process.info["name"] or "") and folder in " ".join(process.info["cmdline"] or []):
                process.terminate()
                strays.append(process)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(strays, timeout=timeout_s)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            pass
    if strays:
        logging.getLogger("qwen3-serve").warning("stopped %d HAProxy process(es) left after Ray's shutdown",
                                                 len(strays))
    return [process.pid for process in strays]


def _deployment_messages(app: str) -> str:
    """The status messages of an app's deployments; a failed replica's error is in them."""
    from ray import serve

    try:
        deployments = serve.status().applications[app].deployments
    except Exception:  # Serve itself is not up: the exception already says why
        return ""
    return "\n".join(f"{name}: {d.message}" for name, d in deployments.items() if d.message)


def deployment_failure(status: str) -> str:
    """The one line that says why a deployment failed: a model's start-up error if there is one."""
    import re

    causes = re.findall(r"EngineStartupError: (model .* failed to start: .*)", status)
    if causes:
        return causes[-1].strip()
    lines = [line.strip() for line in status.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "deployment failed"


def _with_cli_overrides(config, args: argparse.Namespace):
    models = list(config.models)
    for kind, path in (("embed", args.embed_model), ("rerank", args.rerank_model)):
        if path is None:
            continue
        i = next((i for i, m in enumerate(models) if m.kind == kind), None)
        if i is None:
            raise SystemExit(f"--{kind}-model given but the config has no {kind} model")
        models[i] = models[i].model_copy(update={"engine": models[i].engine.model_copy(update={"model": path})})
    update: dict = {"models": models}
    if args.port is not None:
        update["http"] = config.http.model_copy(update={"port": args.port})
    return config.model_copy(update=update)


async def _embed(args: argparse.Namespace) -> dict:
    from serving.config import EmbedModelConfig
    from serving.engines.embed import EmbedEngine, check_dimensions

    config = EmbedModelConfig(**_engine_fields(args))
    if args.dimensions is not None:  # a bad size fails before the engine starts, from the checkpoint's config
        hidden_size = _hidden_size(config.model)
        if hidden_size is not None:
            check_dimensions(config, hidden_size, args.dimensions)
    engine = EmbedEngine(config)
    try:
        result = await engine.embed(args.texts, input_type="query" if args.query or args.task else "document",
                                    instruction=args.task, dimensions=args.dimensions)
    finally:
        engine.shutdown()
    return {"model": args.model, "dimensions": int(result.embeddings.shape[1]),
            "embeddings": result.embeddings.tolist(), "usage": {"prompt_tokens": result.prompt_tokens}}


def _hidden_size(model: str) -> int | None:
    """The checkpoint's hidden size, or None if its config cannot be read here (the engine says why)."""
    from transformers import AutoConfig

    try:
        return int(AutoConfig.from_pretrained(model).hidden_size)
    except Exception:
        return None


async def _rerank(args: argparse.Namespace) -> dict:
    from serving.config import RerankModelConfig
    from serving.engines.rerank import RerankEngine

    engine = RerankEngine(RerankModelConfig(**_engine_fields(args)))
    try:
        result = await engine.rerank(args.query, args.documents, instruction=args.instruction)
    finally:
        engine.shutdown()
    return {"model": args.model, "scores": result.scores,
            "usage": {"prompt_tokens": result.prompt_tokens, "cached_tokens": result.cached_tokens}}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # stdout carries the JSON result; vLLM (and its engine processes) log to stdout by default.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "tiny-models":
        from serving.models.tiny import QWEN3_06B_SHAPED, TINY, build_tiny_models

        paths = build_tiny_models(args.out_dir, shape=QWEN3_06B_SHAPED if args.shape == "0.6b-shaped" else TINY,
                                  seed=args.seed)
        print(json.dumps({k: str(v) for k, v in paths.items()}))
        return 0
    if args.command == "serve":
        return _serve(args)
    if args.command in ("encode", "score"):
        return _bulk(args)
    if args.command == "calibrate":
        return _calibrate(args)
    run = {"embed": _embed, "rerank": _rerank}[args.command]
    try:
        print(json.dumps(asyncio.run(run(args))))
    except EngineInputError as exc:
        print(f"qwen3-serve: error: {exc}", file=sys.stderr)
        return 2
    except EngineStartupError as exc:  # the traceback is already in the log above
        print(f"qwen3-serve: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
