"""Helpers for tests that talk to a server over loopback."""

import os
import time
from collections.abc import Callable

import httpx


def wait_for(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.2) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return False


def wait_ready(url: str, timeout_s: float = 600, alive: Callable[[], bool] = lambda: True) -> bool:
    """Poll `url`/ready until 200; False on timeout or once `alive()` turns false."""
    deadline = time.time() + timeout_s
    while time.time() < deadline and alive():
        try:
            if httpx.get(f"{url}/ready", timeout=10).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(2)
    return False


def clean_env() -> dict[str, str]:
    """The environment of a user's fresh shell: nothing of vLLM's, Ray's or ours set."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "QWEN3_SERVE_", "RAY_"))}

