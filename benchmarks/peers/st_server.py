"""A minimal OpenAI-shaped /v1/embeddings server over sentence-transformers: the reference peer.

Runs in its own venv (.bench-venvs/st), standard library HTTP server only. The model is built
as Qwen3-Embedding's own sentence-transformers config builds it: the transformer with left
padding, last-token pooling (the appended EOS), L2 normalisation. One forward pass at a time (a
lock), each request's inputs in one `encode` call, as a simple deployment would serve it.

    python st_server.py --model PATH --port PORT [--threads 2] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def build_model(path: str, max_length: int):
    from sentence_transformers import SentenceTransformer, models

    transformer = models.Transformer(path, max_seq_length=max_length, processor_kwargs={"padding_side": "left"},
                                     model_args={"torch_dtype": "bfloat16"})
    pooling = models.Pooling(transformer.get_embedding_dimension(), pooling_mode="lasttoken")
    return SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=1024)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    model = build_model(args.model, args.max_length)
    tokenizer = model.tokenizer
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):  # one line per request would cost more than the small models
            pass

        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._reply(200, {"status": "ok"}) if self.path in ("/health", "/ready") else self._reply(404, {})

        def do_POST(self) -> None:
            if self.path != "/v1/embeddings":
                return self._reply(404, {"error": {"message": "not found"}})
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            # usage: the tokens the model reads (text + the EOS the tokenizer appends), as vLLM reports them
            tokens = sum(len(ids) for ids in tokenizer(texts, truncation=True, max_length=args.max_length)["input_ids"])
            with lock:
                vectors = model.encode(texts, batch_size=args.batch_size, convert_to_numpy=True)
            self._reply(200, {"object": "list", "model": body.get("model"),
                              "data": [{"object": "embedding", "index": i, "embedding": v.tolist()}
                                       for i, v in enumerate(vectors)],
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"serving {args.model} on {args.port} at {time.strftime('%X')}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
