"""Remember what the engine-core processes print while an engine starts.

vLLM starts its engine core in a child process. When that child fails (weights that do not
load, a KV cache that does not fit in memory), the parent only learns "Engine core
initialization failed. See root cause above." The cause exists only in the child's output.
``OutputTail`` routes this process's stdout and stderr through pipes that the children
inherit, forwards every byte unchanged, and keeps the last lines so the cause can be named.
"""

from __future__ import annotations

import fcntl
import os
import re
import sys
import termios
import threading
import time
from collections import deque

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# "(EngineCore pid=42) " then, for logged tracebacks, "ERROR 11-22 20:23:39 [core.py:1510] "
_PREFIXES = re.compile(r"^(\([^)]*\)\s*)?([A-Z]+ \d\d-\d\d [\d:]+ \[[^\]]*\]\s*)?")
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)): (.+)$")
# Wrappers that only point at the real error printed before them.
_GENERIC = ("See root cause above", "See stack trace for root cause", "check the stack trace above")


class OutputTail:
    """While active, fds 1 and 2 go through pipes; processes started meanwhile keep them."""

    def __init__(self, max_lines: int = 400):
        self.lines: deque[str] = deque(maxlen=max_lines)
        self._restore: list[tuple[int, int]] = []
        self._pipes: list[int] = []

    def __enter__(self) -> OutputTail:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for fd in (1, 2):
            saved = os.dup(fd)
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            threading.Thread(target=self._forward, args=(read_end, saved), daemon=True,
                             name=f"output-tail-{fd}").start()
            self._restore.append((fd, saved))
            self._pipes.append(read_end)
        return self

    def __exit__(self, *exc) -> None:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        # Only this process's fds go back; children keep writing into the pipes, and the
        # forwarding threads run until the last child closes them.
        for fd, saved in self._restore:
            os.dup2(saved, fd)
        self._restore.clear()
        self._drain()

    def _drain(self, timeout_s: float = 2.0) -> None:
        """Wait until what was already written (say, by a child that just died) has been read."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(_pending_bytes(fd) for fd in self._pipes):
            time.sleep(0.01)
        time.sleep(0.01)  # the last chunk read is being split into lines

    def _forward(self, read_end: int, target: int) -> None:
        pending = b""
        try:
            while chunk := os.read(read_end, 65536):
                os.write(target, chunk)
                pending += chunk
                *complete, pending = pending.split(b"\n")
                self.lines.extend(line.decode(errors="replace") for line in complete)
        except OSError:
            pass
        finally:
            os.close(read_end)
            os.close(target)

    def cause(self) -> str | None:
        """The last exception line printed (``ValueError: ...``), without log prefixes."""
        for line in reversed(self.lines):
            text = _PREFIXES.sub("", _ANSI.sub("", line)).strip()
            match = _EXCEPTION_LINE.match(text)
            if match and not any(g in text for g in _GENERIC):
                return f"{match.group(1).rsplit('.', 1)[-1]}: {match.group(2)[:400]}"
        return None


def _pending_bytes(fd: int) -> int:
    try:
        return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), sys.byteorder)
    except OSError:  # closed: nothing left
        return 0
