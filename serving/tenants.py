"""Tenants: who a request comes from (by its API key), which lane it runs in, and its quotas.

No Ray and no HTTP: the ingress's `TenantGate` looks a key up here and asks for admission before the
request's body is read (a refusal becomes 429 with Retry-After); the pipeline charges its input
tokens once the model has read them.

Quotas are token buckets, one per tenant and quota, kept by each ingress replica. With N ingress
replicas each keeps 1/N of the quota, so the cluster admits at most the quota, and all of it when
HAProxy spreads the tenant's requests evenly (it balances by connections, so a tenant with few
long-lived connections may land unevenly and get somewhat less).
"""

from __future__ import annotations

import hmac
import math
import time
from dataclasses import dataclass, field

from serving.config import AppConfig, TenantConfig

DEFAULT_TENANT = "default"  # the tenant of `api_keys`, and of every request when auth is off
TENANT_KEY = "qwen3.tenant"  # where the routes leave the caller's Tenant in the request's ASGI scope


class TokenBucket:
    """``rate`` per second, at most ``depth`` held. A request takes ``cost`` if the bucket holds it;
    a charge after the fact (input tokens, known once the model has read them) may run it into debt,
    which later requests wait out."""

    def __init__(self, rate: float, depth: float, clock=time.monotonic):
        self.rate, self.depth, self.clock = rate, depth, clock
        self.level, self.updated = depth, clock()

    def _refill(self) -> None:
        now = self.clock()
        self.level = min(self.depth, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_s(self, cost: float) -> float:
        """0 if ``cost`` can be taken now, else the seconds until it can."""
        self._refill()
        return 0.0 if self.level >= cost else (cost - self.level) / self.rate

    def take(self, cost: float) -> None:
        self._refill()
        self.level -= cost


@dataclass
class Tenant:
    name: str
    priority: int = 0
    cache_scope: str = DEFAULT_TENANT
    requests: TokenBucket | None = None  # one request costs 1
    tokens: TokenBucket | None = None  # input tokens; admitted while not in debt

    def lane(self, requested: int | None) -> int:
        """The priority a request runs at: its own `priority` field may make it less urgent, never more."""
        return max(self.priority, requested or 0)

    def admit(self) -> float:
        """Take one request from the quotas: 0, or the seconds to wait before asking again."""
        wait = max(self.requests.wait_s(1) if self.requests else 0.0,
                   self.tokens.wait_s(0) if self.tokens else 0.0)  # in debt for tokens already read
        if wait == 0 and self.requests:
            self.requests.take(1)
        return wait

    def charge_tokens(self, tokens: int) -> None:
        if self.tokens is not None and tokens:
            self.tokens.take(tokens)


@dataclass
class Tenants:
    """Every tenant of the app, by key. ``replicas``: ingress replicas sharing each quota."""

    by_key: dict[bytes, Tenant] = field(default_factory=dict)
    open_access: Tenant | None = None  # auth off: every request is the default tenant

    @classmethod
    def from_config(cls, config: AppConfig, clock=time.monotonic) -> Tenants:
        """Each ingress replica's share of every quota: 1/num_replicas; with autoscaling 1/max_replicas,
        so the cluster never admits more than a quota (and, below max_replicas, less)."""
        router = config.router
        replicas = router.max_replicas if router.autoscaling else router.num_replicas
        tenants = cls()
        keyed = [TenantConfig(name=DEFAULT_TENANT, keys=config.api_keys)] if config.api_keys else []
        keyed += config.tenants
        for spec in keyed:
            tenant = _tenant(spec, replicas, clock)
            tenants.by_key |= {k.get_secret_value().encode(): tenant for k in spec.keys}
        if not keyed:
            tenants.open_access = Tenant(DEFAULT_TENANT)
        return tenants

    @property
    def auth(self) -> bool:
        return self.open_access is None

    def find(self, supplied: bytes) -> Tenant | None:
        """The tenant of a bearer key, or None. Compared with every key in constant time, so the
        time taken says nothing about which key, or how much of one, matched."""
        if self.open_access is not None:
            return self.open_access
        found = None
        for key, tenant in self.by_key.items():
            if hmac.compare_digest(key, supplied):
                found = tenant
        return found


def _tenant(spec: TenantConfig, replicas: int, clock) -> Tenant:
    share = 1 / replicas
    requests = tokens = None
    if spec.requests_per_s:
        rate = spec.requests_per_s * share
        requests = TokenBucket(rate, max(1.0, rate * spec.burst_s), clock)
    if spec.input_tokens_per_min:
        rate = spec.input_tokens_per_min * share / 60
        tokens = TokenBucket(rate, rate * 60, clock)  # a minute's worth at once, as the quota is per minute
    return Tenant(spec.name, spec.priority, spec.cache_group or spec.name, requests, tokens)


def retry_after(wait_s: float) -> dict[str, str]:
    """Headers telling a refused client when to come back: whole seconds (HTTP's Retry-After, rounded
    up so that a retry then is admitted) and milliseconds (`retry-after-ms`, which OpenAI's SDKs read
    first)."""
    return {"Retry-After": str(max(1, math.ceil(wait_s))), "retry-after-ms": str(max(1, math.ceil(wait_s * 1000)))}
