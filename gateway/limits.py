"""Input limits enforced before any expensive work, and the counter of what they refused.

- `BodySizeLimit`: ASGI middleware; a request body above the limit gets 413 before the route
  parses it (by Content-Length up front, or by counting a chunked body as it arrives).
- `TokenBucket`: per-connection message rate (WebSocket ingest).
- `SecurityMetrics`: `sqal_security_rejections{reason}`, one bounded label set for every refusal
  made here and in gateway.auth (auth failures, body size, WebSocket size/rate/credentials).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REASONS = ("token_missing", "token_invalid", "token_malformed", "body_too_large", "body_length_invalid",
           "ws_frame_too_large", "ws_rate", "ws_device_auth")


class SecurityMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.rejections = Counter("sqal_security_rejections", "Requests/messages refused by an auth check or "
                                  "an input limit, by reason", ["reason"], registry=self.registry)
        for r in REASONS:  # every label present from the start: a scrape shows 0, not nothing
            self.rejections.labels(r)

    def reject(self, reason: str) -> None:
        self.rejections.labels(reason if reason in REASONS else "other").inc()

    def value(self, reason: str) -> float:
        v = self.registry.get_sample_value("sqal_security_rejections_total", {"reason": reason})
        return v or 0.0

    def register_into(self, registry: CollectorRegistry) -> None:
        """Also expose the counter on another registry (the ingest's /metrics)."""
        registry.register(self.rejections)


class _TooLarge(Exception):
    pass


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, metrics: SecurityMetrics | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    async def _refuse(self, send: Send, status: int, reason: str, detail: str) -> None:
        if self.metrics is not None:
            self.metrics.reject(reason)
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        too_big = f"request body too large: limit is {limit} bytes"
        for k, v in scope.get("headers") or ():
            if k.lower() == b"content-length":
                if not v.isdigit() or len(v) > 18:
                    await self._refuse(send, 400, "body_length_invalid", "Content-Length is not a number")
                    return
                if int(v) > limit:
                    await self._refuse(send, 413, "body_too_large", too_big)
                    return
        state = {"received": 0, "exceeded": False, "started": False}

        async def limited_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    state["exceeded"] = True
                    raise _TooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            if state["exceeded"]:
                return  # the route's own answer to the broken body is replaced by our 413
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            pass
        if state["exceeded"] and not state["started"]:
            await self._refuse(send, 413, "body_too_large", too_big)


class TokenBucket:
    """`rate` messages a second sustained, `burst` at once. `take()` is O(1) and never sleeps."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self.clock = clock
        self.tokens = float(burst)
        self.stamp = clock()

    def take(self, n: float = 1.0) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False


def ws_message_size(message: Message) -> int:
    """Bytes of one ASGI `websocket.receive` message (text counted as UTF-8)."""
    if message.get("bytes") is not None:
        return len(message["bytes"])
    text = message.get("text") or ""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
