"""Running a benchmark's smoke mode from a test: one subprocess, the JSON it writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(module: str, out: Path, *args: str, timeout_s: float, env: dict[str, str] | None = None
                  ) -> dict[str, Any]:
    """``python -m <module> --smoke --out <out> <args>`` in the repository; fails the test with the output's tail."""
    proc = subprocess.run([sys.executable, "-m", module, "--smoke", "--out", str(out), *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout_s, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())
