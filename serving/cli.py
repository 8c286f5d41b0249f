"""`qwen3-serve`: the command line. Every subcommand goes through the same engines as the server."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence

from serving.engines.errors import EngineInputError


def _engine_flags(parser: argparse.ArgumentParser, default_model: str) -> None:
    parser.add_argument("--model", default=default_model, help="hub id or local path (default: %(default)s)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--max-model-len", type=int, default=8192)
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
    return parser


async def _embed(args: argparse.Namespace) -> dict:
    from serving.config import EmbedModelConfig
    from serving.engines.embed import EmbedEngine

    engine = EmbedEngine(EmbedModelConfig(**_engine_fields(args)))
    try:
        result = await engine.embed(args.texts, input_type="query" if args.query or args.task else "document",
                                    instruction=args.task, dimensions=args.dimensions)
    finally:
        engine.shutdown()
    return {"model": args.model, "dimensions": int(result.embeddings.shape[1]),
            "embeddings": result.embeddings.tolist(), "usage": {"prompt_tokens": result.prompt_tokens}}


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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "tiny-models":
        from serving.models.tiny import QWEN3_06B_SHAPED, TINY, build_tiny_models

        paths = build_tiny_models(args.out_dir, shape=QWEN3_06B_SHAPED if args.shape == "0.6b-shaped" else TINY,
                                  seed=args.seed)
        print(json.dumps({k: str(v) for k, v in paths.items()}))
        return 0
    run = {"embed": _embed, "rerank": _rerank}[args.command]
    try:
        print(json.dumps(asyncio.run(run(args))))
    except EngineInputError as exc:
        print(f"qwen3-serve: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
