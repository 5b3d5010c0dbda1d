"""What one client may ask of the server: body size, completions, tokens, requests in flight, queue length.

Each limit is answered in OpenAI's error shape: a body over ``max_request_bytes`` is 413, ``n`` or
``max_tokens`` over their limits 400 naming the field, and a server already handling
``max_concurrent_requests`` requests, or with ``max_queued_completions`` completions waiting, 429 with a
``Retry-After`` header (the ``openai`` client waits and retries). ``/health`` is never limited.
"""

from __future__ import annotations

from dataclasses import dataclass

from rewardlab.serve.errors import APIError, error_response

UNLIMITED_PATHS = ("/health",)


@dataclass(frozen=True)
class ServeLimits:
    max_request_bytes: int = 1024 * 1024
    max_n: int = 32
    max_tokens: int = 4096
    max_concurrent_requests: int = 256
    max_queued_completions: int = 1024


def too_busy(message: str) -> APIError:
    return APIError(429, message, code="rate_limit_exceeded")


class RequestLimits:
    """ASGI middleware: at most ``max_concurrent_requests`` requests in flight (a stream counts until it
    ends) and bodies of at most ``max_request_bytes``, read here before the route sees them."""

    def __init__(self, app, limits: ServeLimits):
        self.app = app
        self.limits = limits
        self.in_flight = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        limits = self.limits
        if self.in_flight >= limits.max_concurrent_requests:
            most = limits.max_concurrent_requests
            busy = f"too many requests: the server handles at most {most} at once; retry later"
            await _answer(too_busy(busy), scope, receive, send)
            return
        self.in_flight += 1
        try:
            body = await _read_body(scope, receive, limits.max_request_bytes)
            if body is None:
                message = (
                    f"the request body is larger than this server's limit of {limits.max_request_bytes} bytes"
                )
                await _answer(APIError(413, message, code="request_too_large"), scope, receive, send)
                return
            await self.app(scope, _replay(body, receive), send)
        finally:
            self.in_flight -= 1


async def _read_body(scope, receive, limit: int) -> bytes | None:
    """The whole body, or ``None`` as soon as it is known to exceed ``limit`` (by its declared length
    first, so a large upload is refused before it is read)."""
    for name, value in scope.get("headers", []):
        if name == b"content-length" and value.strip().isdigit() and int(value) > limit:
            return None
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)  # the client left: the route finds out on its own
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive):
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the client's disconnect, for streams

    return replayed


async def _answer(error: APIError, scope, receive, send) -> None:
    await error_response(error)(scope, receive, send)
