"""`qwen3-serve embed` and `qwen3-serve rerank` run real engines and print JSON, from a clean
environment and with default flags; start-up failures are one line and a non-zero exit."""

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.net import clean_env

pytestmark = pytest.mark.slow


EMBED_TEXTS = ["What is the capital of China?", "Gravity attracts bodies. " * 1500]  # the second: ~6,000 tokens
RERANK_QUERY = "What is the capital of China?"
RERANK_DOCS = ["The capital of China is Beijing.", "Gravity attracts bodies. " * 1000, "def f(): pass"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "serving.cli", *args], capture_output=True, text=True,
                          timeout=600, env=clean_env())


@pytest.fixture(scope="module")
def engine_runs(short_context_models, broken_embedding_checkpoint):
    """The runs that start an engine, two at a time: a start-up is mostly one core importing Python."""
    commands = {
        "embed": ("embed", "--model", str(short_context_models["embedding"]), *EMBED_TEXTS),
        "rerank": ("rerank", "--model", str(short_context_models["reranker"]), "--query", RERANK_QUERY, *RERANK_DOCS),
        "broken": ("embed", "--model", str(broken_embedding_checkpoint), "hi"),
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run_cli, *command) for name, command in commands.items()}
        yield {name: future.result for name, future in futures.items()}


def test_embed_with_only_model_on_a_4096_position_checkpoint(short_context_models, engine_runs):
    from transformers import AutoTokenizer

    from serving.reference import ReferenceEmbedder

    texts = EMBED_TEXTS
    proc = engine_runs["embed"]()
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    vectors = np.array(out["embeddings"])
    expected = np.asarray(ReferenceEmbedder(str(short_context_models["embedding"]), max_length=4096).embed(texts))
    assert vectors.shape == (2, 256)
    # Default flags: vLLM's dtype `auto` runs this float32 checkpoint in bf16 on CPU, so the
    # tolerance is bf16's (float32 exactness is tested with --dtype float32 elsewhere).
    np.testing.assert_allclose(np.sum(vectors * expected, axis=1), 1.0, atol=2e-3)  # cosine, both normalised
    # The long input was truncated to the checkpoint's 4,096 positions (EOS kept), not rejected.
    first = len(AutoTokenizer.from_pretrained(str(short_context_models["embedding"]))(texts[0])["input_ids"])
    assert out["usage"]["prompt_tokens"] == first + 4096


def test_rerank_with_only_model_on_a_4096_position_checkpoint(short_context_models, engine_runs):
    from serving.reference import ReferenceReranker

    proc = engine_runs["rerank"]()
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores = json.loads(proc.stdout)["scores"]
    # The engine runs at the checkpoint's 4,096 positions and leaves one for the generated token.
    expected = ReferenceReranker(str(short_context_models["reranker"]), max_length=4095).rerank(
        RERANK_QUERY, RERANK_DOCS)
    assert max(abs(a - b) for a, b in zip(scores, expected)) <= 2e-2  # bf16 (dtype auto), see above


def test_bad_dimensions_exit_2_with_a_message(tiny_models):
    proc = run_cli("embed", "--model", str(tiny_models["embedding"]), "--max-model-len", "256",
                   "--dimensions", "8", "hello")
    assert proc.returncode == 2
    assert "between 32 and 128" in proc.stderr
    assert "starting vLLM engine" not in proc.stderr  # refused from the checkpoint's config, before any engine


def test_max_model_len_above_the_checkpoint_fails_at_once_naming_both_numbers(short_context_models):
    proc = run_cli("embed", "--model", str(short_context_models["embedding"]), "--max-model-len", "8192", "hi")
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("qwen3-serve: error: model ") and "8192" in last and "4096" in last, last


def test_a_checkpoint_whose_weights_do_not_load_names_the_cause_from_the_engine_process(
        broken_embedding_checkpoint, engine_runs):
    broken = broken_embedding_checkpoint
    proc = engine_runs["broken"]()
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    # The cause is raised in vLLM's worker process; the parent only sees "engine core failed".
    assert last.startswith(f"qwen3-serve: error: model '{broken}' failed to start: SafetensorError"), last


@pytest.mark.parametrize("model,cause", [("/no/such/checkpoint", "no such directory"),
                                         ("/tmp", "not a checkpoint directory")])
def test_bad_paths_fail_in_one_line(model, cause):
    proc = run_cli("rerank", "--model", model, "--query", "q", "d")
    assert proc.returncode == 1 and cause in proc.stderr.strip().splitlines()[-1], proc.stderr[-2000:]
