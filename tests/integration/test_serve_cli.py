"""`qwen3-serve serve` end to end: hub unreachable -> tiny fallback, said in the first log line and
in /v1/models; serves HTTP; exits cleanly on SIGTERM."""

import os
import signal
import subprocess
import sys

import httpx
import pytest
import yaml

from tests.net import free_port, wait_ready

pytestmark = pytest.mark.slow


def test_serve_falls_back_to_tiny_models_and_stops_on_sigterm(tmp_path):
    port = free_port()
    engine = {"max_model_len": 256, "cpu_kvcache_space_gib": 1, "enforce_eager": True}
    config = {
        "models": [
            {"name": "Qwen/Qwen3-Embedding-0.6B", "kind": "embed", "resources": {"accelerator": "cpu"},
             "engine": {"model": "Qwen/Qwen3-Embedding-0.6B"} | engine},
            {"name": "Qwen/Qwen3-Reranker-0.6B", "kind": "rerank", "resources": {"accelerator": "cpu"},
             "engine": {"model": "Qwen/Qwen3-Reranker-0.6B", "block_size": 32} | engine},
        ],
        "tiny_models_dir": str(tmp_path / "tiny"),
        "http": {"host": "127.0.0.1", "port": port},
    }
    path = tmp_path / "app.yaml"
    path.write_text(yaml.safe_dump(config))
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "serving.cli", "serve", "--config", str(path)], stdout=log,
                            stderr=subprocess.STDOUT, env=os.environ | {"HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        ready = wait_ready(url, alive=lambda: proc.poll() is None)
        assert ready, (tmp_path / "serve.log").read_text()[-3000:]
        models = httpx.get(f"{url}/v1/models", timeout=30).json()["data"]
        assert {m["id"]: m["fallback"] for m in models} == {
            "Qwen/Qwen3-Embedding-0.6B": True, "Qwen/Qwen3-Reranker-0.6B": True}
        embed = httpx.post(f"{url}/v1/embeddings", json={"model": "Qwen/Qwen3-Embedding-0.6B", "input": "hi"},
                           timeout=60)
        assert embed.status_code == 200 and len(embed.json()["data"][0]["embedding"]) == 128
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], capture_output=True)
    first_line = (tmp_path / "serve.log").read_text().splitlines()[0]
    assert "FALLBACK" in first_line and "Qwen/Qwen3-Embedding-0.6B" in first_line
