"""`qwen3-serve embed` and `qwen3-serve rerank` run real engines and print JSON."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def clean_env() -> dict[str, str]:
    """The environment of a user's fresh shell: nothing of vLLM's or ours set."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "QWEN3_SERVE_", "RAY_"))}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "serving.cli", *args], capture_output=True, text=True,
                          timeout=600, env=clean_env())


def test_embed_prints_normalised_vectors_of_the_requested_size(tiny_models):
    proc = run_cli("embed", "--model", str(tiny_models["embedding"]), "--max-model-len", "256",
                   "--dimensions", "48", "--query", "--task", "Find facts", "What is the capital of China?", "Gravity")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    vectors = np.array(out["embeddings"])
    assert vectors.shape == (2, 48)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)


def test_rerank_prints_scores_in_input_order(tiny_models):
    from serving.reference import ReferenceReranker

    docs = ["The capital of China is Beijing.", "Gravity attracts bodies.", "def f(): pass"]
    proc = run_cli("rerank", "--model", str(tiny_models["reranker"]), "--max-model-len", "256",
                   "--dtype", "float32", "--query", "What is the capital of China?", *docs)
    assert proc.returncode == 0, proc.stderr[-2000:]
    scores = json.loads(proc.stdout)["scores"]
    expected = ReferenceReranker(str(tiny_models["reranker"]), max_length=255).rerank(
        "What is the capital of China?", docs)
    assert max(abs(a - b) for a, b in zip(scores, expected)) <= 1e-4


def test_bad_dimensions_exit_2_with_a_message(tiny_models):
    proc = run_cli("embed", "--model", str(tiny_models["embedding"]), "--max-model-len", "256",
                   "--dimensions", "8", "hello")
    assert proc.returncode == 2
    assert "between 32 and 128" in proc.stderr
