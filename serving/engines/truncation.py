"""How an over-long input is fitted to the model, in vLLM's terms. No HTTP, no Ray, no vLLM."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from serving.engines.errors import EngineInputError


@dataclass(frozen=True)
class Truncation:
    """Per-request truncation; the defaults mean "as the model's config says".

    ``max_tokens`` is vLLM's ``truncate_prompt_tokens``: -1 truncates to the model's limit, N keeps
    N tokens. ``side`` is vLLM's ``truncation_side``: unset truncates with the tokenizer (keeping the
    first tokens and the EOS it appends), ``right`` keeps the first N tokens of the full sequence and
    ``left`` the last N, exactly as vLLM slices; without ``max_tokens`` the side applies to the
    default truncation to the model's limit. ``enabled=False`` rejects over-long inputs instead.
    """

    max_tokens: int | None = None
    side: Literal["left", "right"] | None = None
    enabled: bool | None = None

    def keep(self, max_model_len: int, default_enabled: bool) -> int | None:
        """Tokens an input may keep, or None when over-long inputs are rejected."""
        if self.max_tokens is not None:
            if self.enabled is False:
                raise EngineInputError("`truncate: false` contradicts `truncate_prompt_tokens`; send one of them")
            if self.max_tokens == -1:
                return max_model_len
            if isinstance(self.max_tokens, bool) or not 1 <= self.max_tokens <= max_model_len:
                raise EngineInputError(f"`truncate_prompt_tokens` must be -1 or between 1 and max_model_len "
                                       f"({max_model_len}), got {self.max_tokens!r}")
            return self.max_tokens
        enabled = default_enabled if self.enabled is None else self.enabled
        return max_model_len if enabled else None

    def cut(self, ids: list[int], keep: int) -> list[int]:
        """A token list cut to ``keep`` tokens from this side (vLLM's default side for pooling: right)."""
        if len(ids) <= keep:
            return ids
        return ids[-keep:] if self.side == "left" else ids[:keep]


DEFAULT = Truncation()
