"""Start-up failures become one line: vLLM's config errors, and causes printed by its child processes."""

import os
import subprocess
import sys

import pytest
from pydantic import BaseModel, ValidationError, field_validator

from serving.engines.output_tail import OutputTail
from serving.engines.startup import summarize

# As vLLM 0.32 prints them from its engine-core and worker processes (prefixes included).
CHILD_OUTPUT = """\
(Worker pid=5523) ERROR 11-22 20:23:39 [multiproc_executor.py:953] WorkerProc failed to start.
(Worker pid=5523) ERROR 11-22 20:23:39 [multiproc_executor.py:953] Traceback (most recent call last):
(Worker pid=5523) ERROR 11-22 20:23:39 [multiproc_executor.py:953]   File "x.py", line 1, in load
(Worker pid=5523) ERROR 11-22 20:23:39 [multiproc_executor.py:953] safetensors._safetensors_rust.SafetensorError: \
Error while deserializing header: incomplete metadata
(EngineCore pid=5248) ERROR 11-22 20:22:17 [core.py:1510] Exception: WorkerProc initialization failed due to an \
exception in a background process. See stack trace for root cause.
Process EngineCore:
Exception: WorkerProc initialization failed due to an exception in a background process. See stack trace for root cause.
""".splitlines()


def test_the_innermost_real_error_is_the_cause_not_the_wrappers():
    tail = OutputTail()
    tail.lines.extend(CHILD_OUTPUT)
    assert tail.cause() == "SafetensorError: Error while deserializing header: incomplete metadata"


def test_no_exception_line_means_no_cause():
    tail = OutputTail()
    tail.lines.extend(["INFO loading", "(EngineCore pid=1) INFO 11-22 20:22:17 [core.py:1] ready"])
    assert tail.cause() is None


def test_output_of_child_processes_is_forwarded_and_remembered(capfd):
    with OutputTail() as tail:
        subprocess.run([sys.executable, "-c", "import sys; print('hello from a child'); "
                        "print('ValueError: out of memory', file=sys.stderr)"], check=True)
    out, err = capfd.readouterr()
    assert "hello from a child" in out and "ValueError: out of memory" in err  # nothing swallowed
    assert tail.cause() == "ValueError: out of memory"
    assert os.write(1, b"") == 0  # this process's stdout is its own again


class _VllmLikeConfig(BaseModel):
    max_model_len: int

    @field_validator("max_model_len")
    @classmethod
    def _check(cls, value):
        raise ValueError(f"User-specified max_model_len ({value}) is greater than the derived max_model_len "
                         "(max_position_embeddings=4096 or model_max_length=None in model's config.json). "
                         "To allow overriding this maximum, set the env var VLLM_ALLOW_LONG_MAX_MODEL_LEN=1.")


def test_too_long_max_model_len_names_both_numbers_and_the_fix():
    with pytest.raises(ValidationError) as info:
        _VllmLikeConfig(max_model_len=8192)
    assert summarize(info.value) == ("max_model_len 8192 is above the checkpoint's limit of 4096 "
                                     "(max_position_embeddings); leave max_model_len unset to use 4096, "
                                     "or set it to at most 4096")


@pytest.mark.parametrize("exc,expected", [
    (RuntimeError("Worker failed with error 'Available memory on node 0 (6.27/8.84 GiB) is less than "
                  "requested memory for kv (200.0 GiB).', please check the stack trace above for the root cause"),
     "RuntimeError: Available memory on node 0 (6.27/8.84 GiB) is less than requested memory for kv (200.0 GiB)."),
    (ValueError("Model architectures ['FooBarModel'] are not supported for now. Supported architectures: "
                "dict_keys(['A', 'B'])"), "ValueError: Model architectures ['FooBarModel'] are not supported for now."),
    (FileNotFoundError("no such directory: /x\nmore"), "FileNotFoundError: no such directory: /x"),
])
def test_summaries_are_one_line(exc, expected):
    assert summarize(exc) == expected


def test_cpu_engines_preload_tcmalloc_when_it_is_installed(tmp_path, monkeypatch):
    from serving.config import EngineConfig
    from serving.engines.errors import EngineStartupError
    from serving.engines.startup import cpu_preload

    lib = tmp_path / "libtcmalloc_minimal.so.4"
    lib.write_bytes(b"")
    gomp = "/venv/torch/lib/libgomp.so.1"
    monkeypatch.setenv("LD_PRELOAD", gomp)
    auto = EngineConfig(model="m")
    assert cpu_preload(auto, "cpu", lib) == f"{lib}:{gomp}"
    assert cpu_preload(auto, "cuda", lib) is None
    assert cpu_preload(EngineConfig(model="m", cpu_malloc="system"), "cpu", lib) is None
    missing = tmp_path / "absent.so"
    assert cpu_preload(auto, "cpu", missing) is None
    with pytest.raises(EngineStartupError, match="libtcmalloc-minimal4"):
        cpu_preload(EngineConfig(model="m", cpu_malloc="tcmalloc"), "cpu", missing)
    monkeypatch.setenv("LD_PRELOAD", f"/opt/libtcmalloc.so:{gomp}")  # the user's own choice stays
    assert cpu_preload(auto, "cpu", lib) is None


X86_AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma f16c\n"
X86_AMX = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512bw avx512_vnni amx_bf16 amx_tile\n"
X86_AVX512_ONLY = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512bw avx512_vnni\n"  # bf16 emulated
ARM_V8 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32 atomics\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


@pytest.mark.parametrize(("cpuinfo", "native"), [(X86_AVX2, False), (X86_AMX, True), (X86_AVX512_ONLY, False),
                                                 (X86_AMX.replace("amx_bf16", "avx512_bf16"), True),
                                                 (ARM_V8, False), (ARM_BF16, True), ("", False)])
def test_native_bf16_comes_from_the_cpus_flags(cpuinfo, native):
    from serving.engines.startup import cpu_has_native_bf16

    assert cpu_has_native_bf16(cpuinfo) is native


@pytest.mark.parametrize("native", [True, False])
def test_auto_dtype_on_cpu_is_bf16_only_where_native_and_an_explicit_dtype_is_kept(monkeypatch, native):
    from serving.config import EngineConfig
    from serving.engines import startup

    monkeypatch.setattr(startup, "cpu_has_native_bf16", lambda: native)
    assert startup.resolved_dtype("auto") == ("bfloat16" if native else "float32")
    for dtype in ("float32", "bfloat16", "float16"):
        assert startup.resolved_dtype(dtype) == dtype
    assert startup.engine_args(EngineConfig(model="/nonexistent")).dtype == ("bfloat16" if native else "float32")


def test_cpu_engines_spin_briefly_unless_the_user_chose(monkeypatch):
    from serving.config import EngineConfig
    from serving.engines.startup import omp_spin_count

    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    assert omp_spin_count(EngineConfig(model="m"), "cpu") == "10000"
    assert omp_spin_count(EngineConfig(model="m", cpu_omp_spin_count=0), "cpu") == "0"
    assert omp_spin_count(EngineConfig(model="m", cpu_omp_spin_count=None), "cpu") is None
    assert omp_spin_count(EngineConfig(model="m"), "cuda") is None
    monkeypatch.setenv("GOMP_SPINCOUNT", "300000")  # the user's own choice stays
    assert omp_spin_count(EngineConfig(model="m"), "cpu") is None
