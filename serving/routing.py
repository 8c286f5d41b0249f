"""Router logic with no Ray and no HTTP: model resolution, weighted traffic split, chunking."""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from serving.config import AppConfig

T = TypeVar("T")


class UnknownModelError(LookupError):
    """No model or alias of that name serves this kind of request."""


class ModelRequiredError(LookupError):
    """The request names no model and more than one model of its kind is served."""


@dataclass(frozen=True)
class Route:
    names: tuple[str, ...]  # deployment names
    cumulative: tuple[float, ...]  # cumulative weights, normalised to end at 1.0


class ModelTable:
    """Resolves a request's `model` to one deployment, splitting alias traffic by weight.

    The choice hashes (seed, routing key), so one request key always lands on the same
    deployment and a test can check the split exactly.
    """

    def __init__(self, config: AppConfig):
        self.kinds = {m.name: m.kind for m in config.models}
        self.first = config.models[0].name  # what a request for any kind of model gets without `model`
        self.seed = config.router.traffic_seed
        self.routes: dict[str, Route] = {name: Route((name,), (1.0,)) for name in self.kinds}
        for alias, targets in config.aliases.items():
            total = sum(t.weight for t in targets)
            acc, cumulative = 0.0, []
            for t in targets:
                acc += t.weight / total
                cumulative.append(acc)
            cumulative[-1] = 1.0
            self.routes[alias] = Route(tuple(t.model for t in targets), tuple(cumulative))

    def kind_of(self, name: str) -> str | None:
        route = self.routes.get(name)
        return self.kinds[route.names[0]] if route else None

    def served(self, kind: str) -> list[str]:
        """Model and alias names that serve this kind of request."""
        return sorted(n for n in self.routes if self.kind_of(n) == kind)

    def default(self, kind: str) -> str:
        """The model a request without `model` goes to: the only one of its kind."""
        models = [name for name, k in self.kinds.items() if k == kind]
        if len(models) == 1:
            return models[0]
        if not models:
            raise UnknownModelError(f"no {kind} model is served")
        raise ModelRequiredError(f"`model` is required: {len(models)} {kind} models are served. "
                                 f"Choices: {self.served(kind)}")

    def resolve(self, name: str | None, kind: str, routing_key: str) -> str:
        if name is None:
            return self.default(kind)
        route = self.routes.get(name)
        if route is None or self.kinds[route.names[0]] != kind:
            served = self.served(kind)
            hint = f"; it is a {self.kind_of(name)} model" if route else ""
            raise UnknownModelError(f"model {name!r} does not serve {kind} requests{hint}. Available: {served}")
        if len(route.names) == 1:
            return route.names[0]
        return route.names[bisect.bisect_right(route.cumulative, unit_hash(self.seed, routing_key))]

    def resolve_any(self, name: str | None, routing_key: str) -> str:
        """For requests any model can serve (its tokenizer): unset is the first configured model."""
        if name is None:
            return self.first
        kind = self.kind_of(name)
        if kind is None:
            raise UnknownModelError(f"model {name!r} is not served. Available: {sorted(self.routes)}")
        return self.resolve(name, kind, routing_key)


def unit_hash(seed: int, key: str) -> float:
    """A deterministic number in [0, 1) from a seed and a key."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def chunks(items: Sequence[T], size: int) -> list[tuple[int, Sequence[T]]]:
    """(start index, slice) pairs covering `items` in order."""
    return [(start, items[start : start + size]) for start in range(0, len(items), size)]
