"""`nora serve`: the paths an OpenAI client may ask for that llama-cpp-python's server got wrong.

    asked                                     the server (0.3.x) answered                  now
    ---------------------------------------   ------------------------------------------   ------------------------------
    GET /v1/models (openai's models.list;     the list, once the model was free: the       the list at once, each model
    Nora's faces ask it as they start,        route waited its turn behind every reply     with its window (--n-ctx) as
    5 s at most)                              queued (the faces' question timed out        vLLM states it: max_model_len
                                              behind one 11 s reply); no window
    GET /v1/models/SmolLM2-135M-Instruct      404 {"detail": "Not Found"}                  the model, as /v1/models lists it
    (openai's models.retrieve)                                                             (another name: 404 model_not_found)
    POST /chat/completions, GET /models...    404 {"detail": "Not Found"}                  404 saying the API is under /v1
    (OPENAI_BASE_URL without /v1)                                                          and the OPENAI_BASE_URL to set
    POST /v1/embeddings                       500 and a page of traceback, then the        400: this server makes chat
                                              client's two retries did it again            completions, not embeddings
    POST /v1/responses, /v1/images/...,       404 {"detail": "Not Found"}: the openai      404 in OpenAI's shape naming what
    any /v1 path the server does not have     client said only "Error code: 404"           this server has (code unknown_url)
    GET /v1/chat/completions (openai's        405 {"detail": "Method Not Allowed"}:        405 in OpenAI's shape and words
    chat.completions.list()), a wrong method  "Error code: 405"                            (code null), naming the method
                                                                                           to use; Allow: kept
    any API path without the key the server   401 {"detail": "Invalid API key"}: the       401 in OpenAI's shape saying
    was started with (NORA_SERVE_API_KEY)     openai client said only "Error code: 401"    whether a key came, and where
                                                                                           it goes (code invalid_api_key)
    GET /health (what llama.cpp's server and  404 {"detail": "Not Found"}: a class's       200 {"status": "ok"}, as
    vLLM answer a tool or a monitor probing)  monitor saw the server as down               llama.cpp's server answers it
    GET / (the address opened in a browser)   404 {"detail": "Not Found"}: looked broken   200, one line of text: what it
                                                                                           is and the OPENAI_BASE_URL to set
    HEAD of those and of GET /v1/models       404, or 405 for /v1/models                   200, the GET's head
    GET /favicon.ico, /v2/x, any other path   404 {"detail": "Not Found"}                  404 in OpenAI's shape and words
    the server does not have                                                               (code unknown_url)
    POST /health, POST /docs, OPTIONS         405 {"detail": "Method Not Allowed"} (or     405 in OpenAI's shape, as for
    without an Origin (no CORS preflight)     a 400 about the body for /health)            a /v1 path; Allow: kept

    app = OpenAIPaths(app, model="SmolLM2-135M-Instruct", api_key=None,
                      routes={"/v1/chat/completions": {"POST"}, "/v1/models": {"GET"}, ...}, window=2048)
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

from ._chat_request import authorized, error_body

__all__ = ["OpenAIPaths", "key_refusal"]

_API = ("/chat/completions", "/completions", "/models", "/embeddings")  # what a client adds to its base URL
_SERVED = "POST /v1/chat/completions, POST /v1/completions and GET /v1/models"  # what a client can use here
_OWN = {"": {"GET", "HEAD"}, "/health": {"GET", "HEAD"}}  # the paths answered here that the server lacks
_DOCS = "https://platform.openai.com/docs/api-reference/"  # where OpenAI's 404 for an unknown URL points


def key_refusal(scope: dict) -> dict:
    """The 401 body for a request without the server's key, in OpenAI's shape (code invalid_api_key),
    saying whether a key came at all; the key given is never echoed.
    Example: key_refusal({"headers": []})["error"]["message"] -> "You didn't provide an API key: ..."""
    given = any(name.lower() == b"authorization" for name, _ in scope.get("headers", []))
    said = "Incorrect API key provided" if given else "You didn't provide an API key"
    return error_body(f"{said}: this server requires the key it was started with; set it as OPENAI_API_KEY "
                      "(sent as Authorization: Bearer KEY).", None, "invalid_api_key")


def _needs_key(path: str) -> bool:
    """The paths llama-cpp-python's server asks the key for (its API router), and those answered here.
    Example: _needs_key("/v1/models") -> True; _needs_key("/docs") -> False"""
    return path == "/v1" or path.startswith(("/v1/", "/extras/")) or any(
        path == p or path.startswith(p + "/") for p in _API)


class OpenAIPaths:
    """ASGI middleware: answers the paths in the module docstring; everything else passes through.
    A request to an API path (_needs_key) without the server's key, when one is required, gets a 401
    in OpenAI's shape (key_refusal) and never a word about the model: the server's own 401 said only
    {"detail": "Invalid API key"}, and the paths answered here gave a 404 (a wrong key looked like a
    wrong URL).  A browser's CORS preflight (OPTIONS) carries no key: it is never refused for one.

    routes: the server's own paths and their methods ({"/v1/models": {"GET"}, ...}); a path not
    among them (nor answered here), or a method a path does not take, is answered here in OpenAI's
    shape (None: left to the server).
    """

    def __init__(self, app: Any, model: str, api_key: str | None = None,
                 routes: dict[str, set[str]] | None = None, window: int | None = None) -> None:
        self.app, self.model, self.api_key, self.routes, self.window = app, model, api_key, routes, window
        self._paths = None if routes is None else {**routes, **_OWN}  # every path answered, and its methods

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Any) -> None:
        answer = self._answer(scope) if scope.get("type") == "http" else None
        path = scope.get("path", "").rstrip("/")
        if (scope.get("type") == "http" and scope.get("method") != "OPTIONS" and _needs_key(path)
                and not authorized(scope, self.api_key)):
            answer = 401, key_refusal(scope)
        if answer is None:
            await self.app(scope, receive, send)
            return
        status, body, *allow = answer
        text = isinstance(body, str)  # the page at /: one line for a person, not JSON
        payload = body.encode() if text else json.dumps(body).encode()
        headers = [(b"content-type", b"text/plain; charset=utf-8" if text else b"application/json"),
                   (b"content-length", str(len(payload)).encode())]
        headers += [(b"allow", methods.encode()) for methods in allow]  # a 405 says what the path takes
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else payload})

    def _model(self) -> dict:
        """The model as llama-cpp-python's server lists it, with its context window (window: --n-ctx)
        as vLLM states it, ``max_model_len``: Nora's faces, and other clients that read vLLM's
        field, show the window the server really has."""
        model: dict[str, Any] = {"id": self.model, "object": "model", "owned_by": "me", "permissions": []}
        if self.window is not None:
            model["max_model_len"] = self.window
        return model

    def _answer(self, scope: dict) -> tuple | None:
        """(status, body) or, for a 405, (status, body, the Allow header); None: the server answers."""
        path, method = scope.get("path", "").rstrip("/"), scope.get("method")
        host = dict(scope.get("headers", [])).get(b"host", b"").decode("latin-1") or "HOST:PORT"
        method = "GET" if method == "HEAD" and path in ("", "/health", "/v1/models") else method  # its head only
        if method == "GET" and path == "/health":  # llama.cpp's server's answer: what tools and monitors probe
            return 200, {"status": "ok"}
        if method == "GET" and path == "":  # the address opened in a browser: say what is here
            key = "the key it was started with" if self.api_key else "any (no key is required)"
            return 200, (f"nora serve is running: an OpenAI-compatible API. Set OPENAI_BASE_URL=http://{host}/v1 "
                         f"and OPENAI_API_KEY={key}. It has {_SERVED} (/docs lists them).\n")
        if method == "GET" and path == "/v1/models":  # the server's own route waits its turn for the model
            return 200, {"object": "list", "data": [self._model()]}
        if method == "GET" and path.startswith("/v1/models/"):
            name = path[len("/v1/models/"):]
            if name == self.model:
                return 200, self._model()
            return 404, error_body(f"The model '{name}' does not exist: this server serves '{self.model}' "
                                   "(GET /v1/models lists it).", "model", "model_not_found")
        if method == "POST" and path == "/v1/embeddings":
            return 400, error_body(f"This server makes chat completions, not embeddings: '{self.model}' is served "
                                   "for /v1/chat/completions only.", "model", "model_not_supported")
        if any(path == p or path.startswith(p + "/") for p in _API):
            # the fix first: a face shows 120 characters of a server's message
            return 404, error_body(f"Nothing at {path}: set OPENAI_BASE_URL=http://{host}/v1 (this server's API is "
                                   f"under /v1: {method} /v1{path}).", None, "unknown_url")
        if self._paths is None:
            return None
        # any method, OPTIONS too: a browser's CORS preflight was answered outside (BrowserOrigins)
        stored = (" (it stores no completions: each request sends the whole conversation)"
                  if path.startswith("/v1/chat/completions") and method != "POST" else "")
        methods = self._paths.get(path)
        if methods is None and (path == "/v1" or path.startswith("/v1/")):
            return 404, error_body(f"Unknown request URL: {method} {path}. This server has {_SERVED}, "
                                   f"nothing else of OpenAI's API{stored}.", None, "unknown_url")
        if methods is None:  # /favicon.ico, /v2/x: OpenAI's own words
            return 404, error_body(f"Unknown request URL: {method} {scope.get('path', '')}. Please check the URL "
                                   f"for typos, or see the docs at {_DOCS}.", None, "unknown_url")
        if method == "HEAD" and "GET" in methods:  # /docs' head: the server's to answer
            return None
        if method not in methods:
            # OpenAI's words, then the fix; its code is null (405 {"message": "Invalid method for URL (GET /x)", ...})
            return 405, error_body(f"Invalid method for URL ({method} {path or '/'}): use "
                                   f"{' or '.join(sorted(methods))}{stored}.", None, None), ", ".join(sorted(methods))
        return None
