"""Errors in OpenAI's shape, whatever went wrong: ``{"error": {"message", "type", "code", "param"}}``.

Clients written for OpenAI (the ``openai`` package among them) pick the exception class from the status code
and show ``message``, so a validation error, a wrong key, an unknown model and a crash in generation all reach
the user the same way. Nothing here stops the server: every handler answers and the next request is served,
on the same connection (a route's unexpected exception is answered as a 500 inside the route, see
:class:`GuardedRoute`, so it never reaches the server, which would close the connection after answering).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from rewardlab.errors import RewardlabError

logger = logging.getLogger("rewardlab.serve")


class APIError(Exception):
    """An answer other than 200, with the status and the fields of OpenAI's error body."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param


class UnknownModelError(RewardlabError):
    """A request or an unload named a model the server does not serve."""


class AdapterError(RewardlabError):
    """An adapter that cannot be loaded (bad name, bad path, incompatible weights)."""


class AdapterPathForbidden(RewardlabError):
    """A runtime adapter load naming a path outside the directories the server may load from."""


def error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> dict:
    # OpenAI calls every client mistake an "invalid_request_error" and tells them apart by status and code.
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "code": code, "param": param}}


class ASCIIJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: a message quoting the client's own input (a model name
    holding a lone surrogate, say) always encodes, where UTF-8 would fail on the surrogate."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def error_response(error: APIError) -> JSONResponse:
    # A 429 says when to try again: the openai client waits that long before it retries.
    headers = {"Retry-After": "1"} if error.status == 429 else None
    body = error_body(error.status, error.message, error.code, error.param)
    return ASCIIJSONResponse(body, error.status, headers=headers)


# Exceptions the handlers below answer (in Starlette's exception middleware, which keeps the connection).
HANDLED = (APIError, RequestValidationError, HTTPException, RewardlabError)  # subclasses included


class GuardedRoute(APIRoute):
    """A route whose unexpected exceptions are answered as a 500 in OpenAI's shape by the route itself.

    Starlette hands an exception no handler claims to its outermost middleware, which answers 500 and then
    raises it again to the server, and uvicorn closes the connection: the client's next request on it would
    fail. Answered here, the exception ends its own request only.
    """

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def guarded(request: Request):
            try:
                return await handler(request)
            except HANDLED:
                raise
            except Exception as error:
                logger.exception("unhandled error in %s %s", request.method, request.url.path)
                return error_response(APIError(500, f"internal error: {type(error).__name__}: {error}"))

        return guarded


def validation_message(error: RequestValidationError) -> tuple[str, str | None]:
    """The first validation problem as one line ("temperature: Input should be ..."), and its field."""
    problems = error.errors()
    if not problems:
        return "invalid request", None
    first = problems[0]
    if first.get("type") == "json_invalid":
        reason = first.get("ctx", {}).get("error", "cannot parse it")
        return f"the request body is not valid JSON: {reason}", None
    if tuple(first.get("loc", ())) == ("body",):
        # FastAPI only parses bodies sent as application/json; anything else arrives as one string.
        return "the request body must be a JSON object sent as Content-Type: application/json", None
    # FastAPI prefixes body fields with "body"; union members add their type name, which says nothing here.
    location = [
        str(part)
        for part in first.get("loc", ())
        if part != "body" and not str(part).startswith(("str", "list[", "function-"))
    ]
    field = ".".join(location) or None
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return (f"{field}: {message}" if field else message), field


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError) -> JSONResponse:
        return error_response(error)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        # FastAPI answers 422; OpenAI (and every client written against it) expects 400.
        message, field = validation_message(error)
        return error_response(APIError(400, message, code="invalid_request", param=field))

    @app.exception_handler(UnknownModelError)
    async def unknown_model(request: Request, error: UnknownModelError) -> JSONResponse:
        return error_response(APIError(404, str(error), code="model_not_found"))

    @app.exception_handler(AdapterPathForbidden)
    async def forbidden_path(request: Request, error: AdapterPathForbidden) -> JSONResponse:
        return error_response(APIError(403, str(error), code="adapter_path_forbidden", param="lora_path"))

    @app.exception_handler(RewardlabError)
    async def user_error(request: Request, error: RewardlabError) -> JSONResponse:
        return error_response(APIError(400, str(error), code="invalid_request"))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        # Unknown routes (404) and wrong methods (405) in the same shape as everything else, with the
        # headers they come with (a 405's Allow: the methods the route does take, as RFC 9110 requires).
        response = error_response(APIError(error.status_code, str(error.detail)))
        response.headers.update(error.headers or {})
        return response

    @app.exception_handler(Exception)
    async def crash(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error in %s %s", request.method, request.url.path)
        return error_response(APIError(500, f"internal error: {type(error).__name__}: {error}"))
