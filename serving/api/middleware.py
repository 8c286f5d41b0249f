"""ASGI middleware of the ingress: limits enforced before a request reaches a route.

Each answers in the API's error shape. Ray Serve's own limits would answer in plain text.
"""

from __future__ import annotations

from typing import Any

from serving.api.errors import QuotaExceeded, RequestTooLarge, RouterBusy
from serving.api.timing import clock_of
from serving.tenants import TENANT_KEY, Tenants, retry_after

Scope = dict[str, Any]
UNROUTED = "unrouted"  # the `endpoint` label of a request answered before routing (over its quota)


class TenantGate:
    """The caller's tenant, from its bearer key, and its quotas, before the body is read.

    A request over its tenant's quota gets 429 (Retry-After) here: a client that ignores Retry-After
    costs no body read, parsing, validation or routing. The tenant is left in the scope for the
    routes; a request without a known key goes on to them, and they answer 401. Probes are exempt,
    and only POSTs (the API's model calls) count towards a quota."""

    def __init__(self, app, tenants: Tenants, exempt_paths: frozenset[str]):
        self.app = app
        self.tenants = tenants
        self.exempt_paths = exempt_paths

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.exempt_paths:
            return await self.app(scope, receive, send)
        tenant = self.tenants.find(bearer_key(scope))  # never log the key
        if tenant is not None:
            scope[TENANT_KEY] = tenant
            clock = clock_of(scope)
            clock.tenant = tenant.name  # the label of its metrics
            wait_s = tenant.admit() if scope.get("method") == "POST" else 0.0
            if wait_s:
                clock.endpoint, clock.code = UNROUTED, QuotaExceeded.code
                error = QuotaExceeded(f"tenant {tenant.name!r} is over its quota; retry in {wait_s:.2f} s",
                                      headers=retry_after(wait_s))
                return await error.response()(scope, receive, send)
        await self.app(scope, receive, send)


def bearer_key(scope: Scope) -> bytes:
    """The key of an `Authorization: Bearer <key>` header as sent (bytes, as the configured keys are
    compared: UTF-8), parsed as FastAPI's HTTPBearer does; else b""."""
    for name, value in scope.get("headers") or ():
        if name == b"authorization":
            scheme, _, key = value.partition(b" ")
            return key.strip() if scheme.lower() == b"bearer" else b""
    return b""


class BodySizeLimit:
    """413 for a body over ``max_bytes``, before it is parsed: at once when Content-Length says so,
    otherwise as soon as the streamed body passes the limit."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._reject(scope, receive, send)
        # Read the body here, counting, and replay it to the app.
        messages, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                messages.append(message)
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return await self._reject(scope, receive, send)
            messages.append(message)
            if not message.get("more_body", False):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope: Scope, receive, send) -> None:
        error = RequestTooLarge(f"request body is larger than {self.max_bytes} bytes",
                                headers={"Connection": "close"})
        await error.response()(scope, receive, send)


class ConcurrencyLimit:
    """429 with Retry-After once this replica runs ``max_ongoing`` requests; probes are exempt."""

    def __init__(self, app, max_ongoing: int, retry_after_s: float, exempt_paths: frozenset[str]):
        self.app = app
        self.max_ongoing = max_ongoing
        self.retry_after = str(max(1, round(retry_after_s)))
        self.exempt_paths = exempt_paths
        self.ongoing = 0

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.exempt_paths:
            return await self.app(scope, receive, send)
        if self.ongoing >= self.max_ongoing:
            error = RouterBusy(f"the server is at capacity ({self.max_ongoing} requests in flight); retry later",
                               headers={"Retry-After": self.retry_after})
            return await error.response()(scope, receive, send)
        self.ongoing += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.ongoing -= 1
