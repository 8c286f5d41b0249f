"""Where each model's weights come from: a local path, the local HF cache, the hub, or, when
none of those can be had, a tiny random stand-in (only if the config allows it, and loudly)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from serving.config import AppConfig
from serving.models.tiny import ensure_tiny_models

logger = logging.getLogger(__name__)


def looks_like_path(model: str) -> bool:
    """Hub ids are `org/name`; anything else (absolute, ./, ~, deeper or no slash) names a local path."""
    return Path(model).is_absolute() or model.startswith((".", "~")) or model.count("/") != 1


def hub_status(model: str, timeout_s: float = 5.0) -> str:
    """'local', 'missing' (a path that does not exist), 'cached', 'hub' or 'unreachable'."""
    if Path(model).expanduser().exists():
        return "local"
    if looks_like_path(model):
        return "missing"
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(model, local_files_only=True, allow_patterns=["config.json"])
        return "cached"
    except Exception:
        pass
    try:
        from huggingface_hub import HfApi

        HfApi().model_info(model, timeout=timeout_s)
        return "hub"
    except Exception:
        return "unreachable"


def resolve_sources(config: AppConfig) -> tuple[AppConfig, dict[str, dict[str, Any]]]:
    """Returns the config to deploy and, per model, {"source", "fallback"} for /v1/models."""
    sources: dict[str, dict[str, Any]] = {}
    models = []
    tiny: dict[str, Path] | None = None
    for m in config.models:
        status = hub_status(m.engine.model)
        if status == "missing":  # a typo in a path is the user's to fix, not a reason for a tiny stand-in
            raise FileNotFoundError(f"model {m.name!r}: no such directory: {m.engine.model}")
        if status != "unreachable":
            sources[m.name] = {"source": m.engine.model, "fallback": False}
            models.append(m)
            continue
        if not config.fallback_to_tiny_models:
            raise RuntimeError(f"model {m.engine.model!r} is not a local path, not in the HF cache, and the hub "
                               "cannot be reached; point `engine.model` at local weights or enable "
                               "fallback_to_tiny_models")
        logger.warning("FALLBACK: %s cannot be reached and has no local copy; serving %r as a TINY RANDOM model "
                       "from %s. Its outputs are meaningless.", m.engine.model, m.name, config.tiny_models_dir)
        if tiny is None:
            tiny = ensure_tiny_models(Path(config.tiny_models_dir).resolve())
        path = str(tiny["embedding" if m.kind == "embed" else "reranker"])
        sources[m.name] = {"source": path, "fallback": True}
        models.append(m.model_copy(update={"engine": m.engine.model_copy(update={"model": path})}))
    return config.model_copy(update={"models": models}), sources
