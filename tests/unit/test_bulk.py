"""Bulk jobs without Ray or engines: reading rows, which files are input, the output's ownership
and identity, per-row errors, and what an engine actor reserves."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from serving.batch import bookkeeping
from serving.batch.inputs import INPUT_ERROR, InputError, parse_jsonl_row, resolve_files
from serving.batch.job import actor_options
from serving.batch.workers import row_errors, tokenize_rows
from serving.config import EmbedDeploymentConfig
from serving.engines.errors import EngineInputError, InputTooLongError


@pytest.mark.parametrize("line,expected", [
    ('{"id": "a", "text": "hi"}', {"id": "a", "text": "hi", INPUT_ERROR: None}),
    ('{"id": 7, "text": "hi"}', {"id": "7", "text": "hi", INPUT_ERROR: None}),  # one id type for every file
    ('{"text": "hi"}', {"id": None, "text": "hi", INPUT_ERROR: None}),
    ('{"id": "a", "text": 5}', {"id": "a", "text": None, INPUT_ERROR: "`text` must be a string, got int"}),
    ('{"id": true, "text": "x"}', {"id": None, "text": "x", INPUT_ERROR: "`id` must be a string or an integer, got bool"}),
    ('[1, 2]', {"id": None, "text": None, INPUT_ERROR: "not a JSON object but list"}),
])
def test_jsonl_rows_parse_to_one_schema_and_name_what_is_wrong(line, expected):
    assert parse_jsonl_row(line, "id", ["text"]) == expected


def test_invalid_json_is_a_row_error_not_a_failure():
    assert parse_jsonl_row("{oops", "id", ["text"])[INPUT_ERROR].startswith("not valid JSON")


def test_input_directories_skip_bookkeeping_and_hidden_files(tmp_path):
    (tmp_path / "a.jsonl").write_text("{}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.jsonl").write_text("{}\n")
    (tmp_path / "_checkpoint").mkdir()
    (tmp_path / "_checkpoint" / "c.jsonl").write_text("{}\n")
    (tmp_path / ".hidden.jsonl").write_text("{}\n")
    (tmp_path / "notes.txt").write_text("")
    fmt, files = resolve_files(str(tmp_path))
    assert fmt == "jsonl" and [f.rsplit("/", 2)[-2:] for f in files] == [[tmp_path.name, "a.jsonl"], ["sub", "b.jsonl"]]
    assert resolve_files(str(tmp_path / "*.jsonl"))[1] == [str(tmp_path / "a.jsonl")]


def test_mixed_formats_and_empty_inputs_are_refused(tmp_path):
    (tmp_path / "a.jsonl").write_text("{}\n")
    (tmp_path / "b.parquet").write_bytes(b"")
    with pytest.raises(InputError, match="mixes JSON Lines and Parquet"):
        resolve_files(str(tmp_path))
    with pytest.raises(InputError, match="no such file"):
        resolve_files(str(tmp_path / "nothing-*.jsonl"))


def test_rows_without_id_or_text_get_reasons():
    batch = pa.table({"id": ["a", None, "c", "d", "e"], "text": ["ok", "x", None, "", "y"],
                      INPUT_ERROR: [None, None, None, None, "not valid JSON: ..."]})
    assert row_errors(batch, "id", ["text"]) == [None, "missing id (`id`)", "missing `text`",
                                                 "`text` is an empty string", "not valid JSON: ..."]


def test_one_over_long_text_fails_only_its_own_row():
    def tokenize(texts):
        if any(len(t) > 5 for t in texts):
            if len(texts) == 1:
                raise InputTooLongError("input[0] has 9 tokens; m accepts at most 5")
            raise EngineInputError("batch refused")
        return [[1] * len(t) for t in texts]

    assert tokenize_rows(tokenize, ["ab", "toolongtext", "abc"]) == [[1, 1], "input has 9 tokens; m accepts at most 5",
                                                                      [1, 1, 1]]


def test_a_second_writer_is_refused_while_the_first_holds_the_output(tmp_path):
    with bookkeeping.OutputLock(str(tmp_path)):
        with pytest.raises(bookkeeping.OutputBusyError, match="being written by another job"):
            with bookkeeping.OutputLock(str(tmp_path)):
                pass
    with bookkeeping.OutputLock(str(tmp_path)):  # released with the first holder
        pass


def test_output_identity_resume_finish_and_mismatch(tmp_path):
    job = {"kind": "encode", "engine": {"model": "m"}, "input_files": ["/a.jsonl"]}
    assert bookkeeping.claim_output(str(tmp_path), job) is None  # new
    assert bookkeeping.claim_output(str(tmp_path), job) is None  # resumed, not finished
    bookkeeping.mark_done(str(tmp_path), job, {"rows_ok": 3})
    assert bookkeeping.claim_output(str(tmp_path), job)["summary"] == {"rows_ok": 3}
    with pytest.raises(bookkeeping.OutputMismatchError, match="differs in: engine"):
        bookkeeping.claim_output(str(tmp_path), job | {"engine": {"model": "other"}})


def test_an_output_with_foreign_parquet_is_refused(tmp_path):
    (tmp_path / "data.parquet").write_bytes(b"")
    with pytest.raises(bookkeeping.OutputMismatchError, match="no bulk job recorded"):
        bookkeeping.claim_output(str(tmp_path), {"kind": "encode"})


def _model(accelerator: str, tp: int) -> EmbedDeploymentConfig:
    return EmbedDeploymentConfig.model_validate({
        "name": "m", "engine": {"model": "m", "tensor_parallel_size": tp},
        "resources": {"accelerator": accelerator, "gpus_per_shard": 1, "cpus_per_shard": 2, "replica_cpus": 1}})


def test_engine_actors_reserve_what_serving_replicas_reserve():
    assert actor_options(_model("cpu", 1), cluster_has_gpus=False) == ({"num_cpus": 2}, {
        "distributed_executor_backend": None})
    assert actor_options(_model("gpu", 1), cluster_has_gpus=True)[0] == {"num_cpus": 1, "num_gpus": 1}
    args, overrides = actor_options(_model("gpu", 2), cluster_has_gpus=True)
    assert args == {"num_cpus": 1, "num_gpus": 0, "placement_group": {
        "bundles": [{"CPU": 1}, {"CPU": 2, "GPU": 1}, {"CPU": 2, "GPU": 1}], "strategy": "STRICT_PACK"}}
    assert overrides == {"distributed_executor_backend": "ray"}


def test_help_documents_every_flag():
    from serving.cli import build_parser

    for command in ("encode", "score"):
        sub = build_parser()._subparsers._group_actions[0].choices[command]
        undocumented = [a.option_strings for a in sub._actions if a.option_strings and not a.help]
        assert undocumented == []


def test_summary_line_names_rows_tokens_rate_and_wall_time():
    from serving.batch.job import Summary

    line = Summary(rows_ok=90, rows_failed=10, tokens=5000, wall_s=10.0, engine_ready_s=4.0, output_rows=100).line()
    assert line.startswith("rows ok 90, rows failed 10, tokens 5,000, 500 tokens/s, wall 10.0 s")
    assert json.dumps(Summary(1, 0, 1, 1.0, None, 1).as_dict())


# --- quantized `encode` output (--embedding-type)


def _unit_vectors(n: int, d: int) -> np.ndarray:
    rows = np.random.default_rng(n * 1000 + d).standard_normal((n, d)).astype(np.float32)
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


class FakeEmbedEngine:
    """What EncodeWorker uses of EmbedEngine: 16-dimensional unit vectors, one token per character."""

    def __init__(self, config):
        from types import SimpleNamespace

        self.inputs = SimpleNamespace(max_dimensions=16, check_dimensions=lambda d: None,
                                      tokenize=lambda texts, **_: [[1] * len(t) for t in texts])

    async def embed_token_ids(self, ids, dimensions=None):
        from serving.engines.embed import EmbedResult

        return EmbedResult(_unit_vectors(len(ids), dimensions or 16), sum(map(len, ids)))

    def shutdown(self):
        pass


def _encode(monkeypatch, **kwargs) -> pa.Table:
    import asyncio

    from serving.batch.workers import EncodeWorker

    monkeypatch.setattr("serving.engines.embed.EmbedEngine", FakeEmbedEngine)
    worker = EncodeWorker({"model": "m"}, id_field="id", text_field="text", input_type="document",
                          instruction=None, **kwargs)
    return asyncio.run(worker(pa.table({"id": ["a", "b", "c"], "text": ["xx", None, "yyy"]})))


@pytest.mark.parametrize("kind, element, width", [("float", pa.float32(), 24), ("int8", pa.int8(), 24),
                                                  ("uint8", pa.uint8(), 24), ("binary", pa.int8(), 3),
                                                  ("ubinary", pa.uint8(), 3)])
def test_encode_writes_each_embedding_type_as_a_fixed_size_list_of_its_element(monkeypatch, kind, element, width):
    from serving.quantization import quantize

    table = _encode(monkeypatch, dimensions=24, embedding_type=kind)
    assert table.schema.field("embedding").type == pa.list_(element, width)
    rows = table["embedding"].to_pylist()
    assert rows[1] is None and table["error"].to_pylist()[1] == "missing `text`"
    assert [rows[0], rows[2]] == quantize(_unit_vectors(2, 24), kind).tolist()


def test_encode_int8_uses_the_calibration_and_refuses_one_of_another_width(monkeypatch, tmp_path):
    from serving.quantization import CalibrationError, Quantizer

    calibration = _unit_vectors(50, 16) * 0.5
    np.save(tmp_path / "cal.npy", calibration)
    table = _encode(monkeypatch, dimensions=None, embedding_type="int8", calibration=str(tmp_path / "cal.npy"))
    expected = Quantizer(calibration).quantize(_unit_vectors(2, 16), "int8", full_width=True)
    assert [r for r in table["embedding"].to_pylist() if r is not None] == expected.tolist()
    np.save(tmp_path / "wide.npy", _unit_vectors(50, 32))
    with pytest.raises(CalibrationError, match="32-dimensional"):
        _encode(monkeypatch, dimensions=None, embedding_type="uint8", calibration=str(tmp_path / "wide.npy"))


def test_the_embedding_type_and_calibration_are_part_of_the_jobs_identity(tmp_path):
    from serving.batch.job import job_identity
    from serving.config import BulkJobConfig

    np.save(tmp_path / "cal.npy", _unit_vectors(4, 8))
    model = EmbedDeploymentConfig.model_validate({"name": "m",
                                                   "quantization": {"calibration": str(tmp_path / "cal.npy")}})
    job = BulkJobConfig(kind="encode", input="in", output="out")
    assert "embedding_type" not in job_identity(job, model, [])  # float jobs keep their earlier identity
    binary = job_identity(job.model_copy(update={"embedding_type": "binary"}), model, [])
    assert binary["embedding_type"] == "binary" and "calibration_sha256" not in binary
    int8 = job_identity(job.model_copy(update={"embedding_type": "int8"}), model, [])
    np.save(tmp_path / "cal.npy", _unit_vectors(4, 8) * 0.5)
    assert job_identity(job.model_copy(update={"embedding_type": "int8"}), model, []) != int8


def test_calibration_flag_sets_the_model_and_is_refused_without_int8(tmp_path):
    from serving.batch.command import _check_calibration, job_config, model_entry
    from serving.cli import build_parser

    np.save(tmp_path / "cal.npy", _unit_vectors(4, 8))
    argv = ["encode", "--model", "m", "--input", "in.jsonl", "--output", "out",
            "--calibration", str(tmp_path / "cal.npy")]
    args = build_parser().parse_args(argv + ["--embedding-type", "uint8"])
    model = model_entry("encode", args)
    assert model.quantization.calibration == str(tmp_path / "cal.npy")
    _check_calibration(job_config("encode", args), model, args.calibration)
    args = build_parser().parse_args(argv + ["--embedding-type", "binary"])
    with pytest.raises(ValueError, match="int8/uint8 only"):
        _check_calibration(job_config("encode", args), model_entry("encode", args), args.calibration)
    args = build_parser().parse_args(argv[:-1] + [str(tmp_path / "missing.npy"), "--embedding-type", "int8"])
    with pytest.raises(ValueError, match="cannot read calibration file"):
        _check_calibration(job_config("encode", args), model_entry("encode", args), args.calibration)
