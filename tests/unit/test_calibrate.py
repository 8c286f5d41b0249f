"""`qwen3-serve calibrate` without an engine: reading the corpus, batching, the saved file, and
Parquet from `qwen3-serve encode` taken as it is."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serving.batch.calibrate import calibrate, embed_all, read_encoded, read_texts, save
from serving.batch.inputs import InputError
from serving.cli import build_parser
from serving.quantization import Quantizer


def test_text_files_give_one_text_per_non_empty_line_and_jsonl_its_field(tmp_path):
    (tmp_path / "c.txt").write_text("first\n\nsecond line\nthird\n")
    assert read_texts(str(tmp_path / "c.txt")) == ["first", "second line", "third"]
    assert read_texts(str(tmp_path / "c.txt"), limit=2) == ["first", "second line"]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in ("a", "b")))
    assert read_texts(str(tmp_path / "c.jsonl"), text_field="body") == ["a", "b"]


@pytest.mark.parametrize("name, content, message", [
    ("c.jsonl", '{"text": "a"}\n{"txt": "b"}\n', r"c.jsonl:2: no non-empty string `text`"),
    ("c.jsonl", '{"text": "a"}\n{oops\n', "c.jsonl:2: not valid JSON"),
    ("c.txt", "only one\n", "1 texts; calibration needs at least 2"),
    ("c.csv", "a\nb\n", "expected .txt"),
])
def test_a_corpus_that_cannot_calibrate_says_where(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(InputError, match=message):
        read_texts(str(tmp_path / name))


def test_texts_are_embedded_in_batches_in_order():
    calls = []

    async def embed(batch):
        calls.append(list(batch))
        return np.array([[float(t), 0.0] for t in batch], dtype=np.float32)

    vectors = asyncio.run(embed_all(embed, [str(i) for i in range(5)], batch=2))
    assert calls == [["0", "1"], ["2", "3"], ["4"]] and vectors[:, 0].tolist() == [0, 1, 2, 3, 4]
    assert vectors.dtype == np.float32


def _encoded(tmp_path, vectors: np.ndarray, valid: list[bool]):
    out = tmp_path / "encoded"
    out.mkdir()
    width = vectors.shape[1]
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), width,
                                               mask=pa.array([not v for v in valid]))
    pq.write_table(pa.table({"id": [str(i) for i in range(len(vectors))], "embedding": column}), out / "part-0.parquet")
    (out / "_bulk").mkdir()  # bookkeeping is never read
    return out


def test_encode_output_is_taken_as_it_is_without_error_rows(tmp_path):
    vectors = np.arange(12, dtype=np.float32).reshape(4, 3)
    out = _encoded(tmp_path, vectors, [True, False, True, True])
    np.testing.assert_array_equal(read_encoded(str(out)), vectors[[0, 2, 3]])
    np.testing.assert_array_equal(read_encoded(str(out), limit=2), vectors[[0, 2]])


def test_the_command_on_encode_output_writes_a_file_the_server_loads(tmp_path):
    vectors = np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32)
    out = _encoded(tmp_path, vectors, [True] * 6)
    args = build_parser().parse_args(["calibrate", "--input", str(out), "--output", str(tmp_path / "cal.npy")])
    summary = asyncio.run(calibrate(args))
    assert summary == {"output": str(tmp_path / "cal.npy"), "vectors": 6, "dimensions": 8, "encoded": str(out)}
    np.testing.assert_array_equal(Quantizer.load(tmp_path / "cal.npy").calibration, vectors)


def test_the_output_must_be_npy(tmp_path):
    with pytest.raises(InputError, match="must end in .npy"):
        save(np.zeros((2, 2), np.float32), str(tmp_path / "cal.bin"))


def test_texts_need_a_model(tmp_path, capsys, monkeypatch):
    from serving.cli import main

    monkeypatch.setenv("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # main sets it; undone after the test
    (tmp_path / "c.txt").write_text("a\nb\n")
    assert main(["calibrate", "--input", str(tmp_path / "c.txt"), "--output", str(tmp_path / "c.npy")]) == 2
    assert "--model is required" in capsys.readouterr().err


def test_calibrate_help_documents_every_flag():
    sub = build_parser()._subparsers._group_actions[0].choices["calibrate"]
    assert [a.option_strings for a in sub._actions if a.option_strings and not a.help] == []


def test_quantized_encode_output_cannot_calibrate(tmp_path):
    out = tmp_path / "int8"
    out.mkdir()
    column = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(8, np.int8)), 4)
    pq.write_table(pa.table({"id": ["a", "b"], "embedding": column}), out / "part-0.parquet")
    with pytest.raises(InputError, match="needs the float vectors"):
        read_encoded(str(out))
