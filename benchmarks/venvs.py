"""Virtual environments for the peers, so their pins never touch the project's.

Each peer gets ``.bench-venvs/<name>`` (gitignored), created on first use with the machine's
``python3 -m venv`` and pinned packages. A peer whose environment cannot be built is reported as
unavailable with pip's last error line; the benchmark goes on without it.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("benchmarks.venvs")

REPO_ROOT = Path(__file__).resolve().parent.parent
VENVS_DIR = REPO_ROOT / ".bench-venvs"
# CPU-only torch: the local wheel when the machine has one (PyPI's default build pulls CUDA).
TORCH_CPU = ("torch==2.13.0+cpu", "torch==2.13.0")


@dataclass(frozen=True)
class VenvSpec:
    name: str
    packages: tuple[str, ...]
    torch: bool = False  # install CPU torch first, so the packages do not pull a CUDA build
    probe: str = "pass"  # Python run in the venv to check it works (imports)


VENVS: dict[str, VenvSpec] = {
    "st": VenvSpec("st", ("sentence-transformers==6.2.0", "transformers==5.19.0"), torch=True,
                   probe="import sentence_transformers, torch"),
    "infinity": VenvSpec("infinity", ("infinity-emb[server,torch]==0.0.78",), torch=True,
                         probe="import infinity_emb.cli"),
    "plot": VenvSpec("plot", ("matplotlib==3.11.2",), probe="import matplotlib"),
}


class VenvUnavailable(RuntimeError):
    """The environment could not be built; the message is the one-line reason."""


def _last_error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR") or "Error" in line]
    return (errors or lines or ["unknown error"])[-1][:400]


def _pip(python: Path, *args: str, log: Path) -> subprocess.CompletedProcess:
    with log.open("a") as out:
        out.write(f"\n$ pip {' '.join(args)}\n")
        out.flush()
        proc = subprocess.run([str(python), "-m", "pip", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=3600)
        out.write(proc.stdout)
    return proc


def ensure_venv(name: str) -> Path:
    """The venv's python, building the venv first if needed; VenvUnavailable with the reason if it can't."""
    spec = VENVS[name]
    root = VENVS_DIR / name
    python = root / "bin" / "python"
    stamp = root / "bench-venv.json"
    wanted = {"packages": list(spec.packages), "torch": spec.torch}
    if stamp.exists() and json.loads(stamp.read_text()).get("spec") == wanted:
        status = json.loads(stamp.read_text())
        if status.get("error"):
            raise VenvUnavailable(status["error"])
        return python
    logger.info("building %s (first use; minutes)", root)
    VENVS_DIR.mkdir(exist_ok=True)
    (VENVS_DIR / ".gitignore").write_text("*\n")
    log = VENVS_DIR / f"{name}.log"
    log.write_text("")
    error = None
    try:
        subprocess.run(["python3", "-m", "venv", "--clear", str(root)], check=True, capture_output=True, text=True)
        if spec.torch:
            for torch in TORCH_CPU:
                proc = _pip(python, "install", torch, log=log)
                if proc.returncode == 0:
                    break
            else:
                raise VenvUnavailable(f"torch: {_last_error_line(proc.stdout)}")
        proc = _pip(python, "install", *spec.packages, log=log)
        if proc.returncode != 0:
            raise VenvUnavailable(_last_error_line(proc.stdout))
        probe = subprocess.run([str(python), "-c", spec.probe], capture_output=True, text=True, timeout=600)
        if probe.returncode != 0:
            raise VenvUnavailable(f"installed but does not import: {_last_error_line(probe.stderr)}")
    except VenvUnavailable as exc:
        error = str(exc)
    except (OSError, subprocess.SubprocessError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"spec": wanted, "error": error}))
    if error:
        raise VenvUnavailable(error)
    return python


def package_versions(python: Path, names: tuple[str, ...]) -> dict[str, str | None]:
    """Installed versions of ``names`` in the venv of ``python``."""
    code = ("import importlib.metadata as m, json, sys\n"
            "def v(n):\n    try: return m.version(n)\n    except m.PackageNotFoundError: return None\n"
            "print(json.dumps({n: v(n) for n in sys.argv[1:]}))")
    proc = subprocess.run([str(python), "-c", code, *names], capture_output=True, text=True, timeout=120)
    return json.loads(proc.stdout) if proc.returncode == 0 else {n: None for n in names}


if __name__ == "__main__":  # python -m benchmarks.venvs st infinity plot: build ahead of a run
    logging.basicConfig(level=logging.INFO)
    for venv in sys.argv[1:] or list(VENVS):
        try:
            print(venv, ensure_venv(venv))
        except VenvUnavailable as exc:
            print(venv, "unavailable:", exc)


def plot(result_path: Path) -> list[str]:
    """The PNGs of a benchmark's JSON, drawn by benchmarks/plots.py in the plot venv (matplotlib is
    never installed in the serving venv); a plotting failure is logged, not fatal."""
    try:
        python = ensure_venv("plot")
    except VenvUnavailable as exc:
        logger.warning("no plots: %s", exc)
        return []
    proc = subprocess.run([str(python), str(REPO_ROOT / "benchmarks" / "plots.py"), str(result_path)],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        logger.warning("plotting failed: %s", proc.stderr.strip().splitlines()[-1:])
        return []
    return proc.stdout.split()
