"""`nora serve`: which web pages may call the server from a browser (CORS), decided in front of everything.

llama-cpp-python's server (0.3.x) answers every origin: its CORS layer echoes any page's
``Origin`` back, with credentials allowed.  Measured in Chromium with the server on 127.0.0.1:
a page at http://page.test:8766 (a name that resolves to this machine, as DNS rebinding makes
one) called /v1/chat/completions and read the reply.  And that layer sits inside the app, so the
answers nora serve writes itself in front of it (a 400 refusal such as ``n: 2``, models.retrieve,
the 503 when Ctrl-C stops a reply) carried no CORS header: even a page on localhost got
``TypeError: Failed to fetch`` instead of the 400's message.

Now this layer is the outermost one:

- a page from this machine (http or https, ``localhost``, ``127.x.x.x`` or ``[::1]``, any port) may
  call the server, and so may the origins given with ``--allow-origin`` (``*``: any page,
  ``null``: a page opened from a file).  Every answer it gets carries the CORS headers;
- a request from any other page (a browser always sends its ``Origin`` on a cross-origin call, and
  on a POST) is refused with a 403 in OpenAI's shape before it reaches the model, and the server
  says so in one line the first time each origin is refused, naming the flag that allows it;
- a client that is not a browser (the openai client, curl, llm) sends no ``Origin``: unaffected.

    app = BrowserOrigins(app, allowed=["https://jsfiddle.net"])   # outermost
    remove_inner_cors(fastapi_app)                                 # before its first request
"""

from __future__ import annotations

import json
import re
from typing import Any, Awaitable, Callable, Iterable

from ._chat_request import error_body

__all__ = ["BrowserOrigins", "LOOPBACK_ORIGIN", "origin_problem", "remove_inner_cors"]

# a page served from this machine: its origin names a loopback host
LOOPBACK_ORIGIN = r"https?://(localhost|127(\.\d{1,3}){3}|\[::1\])(:\d{1,5})?"
NAMED_ORIGINS = 100  # refused origins named on the terminal, one line each; after that, one line for the rest


def origin_problem(origin: str) -> str | None:
    """None when `--allow-origin` can take this value, else one line saying what it takes.
    Example: origin_problem("http://localhost:5500/app") -> "--allow-origin takes an origin such as ..."
    """
    if origin in ("*", "null") or re.fullmatch(r"https?://[^/\s:]+(:\d{1,5})?", origin):
        return None
    return (f"--allow-origin takes an origin such as http://localhost:5500 or https://example.org "
            f"(scheme://host[:port], no path), '*' for any page or 'null' for a page opened from a file "
            f"(got {origin!r})")


def remove_inner_cors(app: Any) -> None:
    """Drop the CORS layer llama-cpp-python's create_app adds (any origin, credentials): BrowserOrigins
    decides instead.  Call before the app's first request (its middleware stack is built then)."""
    from starlette.middleware.cors import CORSMiddleware

    app.user_middleware = [m for m in app.user_middleware if m.cls is not CORSMiddleware]


class BrowserOrigins:
    """ASGI middleware, the outermost: the CORS rules in the module docstring.
    allowed: the origins given with --allow-origin (a trailing "/" is dropped), "*" for any.
    say: where the one line per refused origin goes (default: stdout, beside the access log)."""

    def __init__(self, app: Any, allowed: Iterable[str] = (),
                 say: Callable[[str], None] | None = None) -> None:
        from starlette.middleware.cors import CORSMiddleware

        self.allowed = {origin.rstrip("/") for origin in allowed}
        self.cors = CORSMiddleware(app, allow_origins=sorted(self.allowed), allow_origin_regex=LOOPBACK_ORIGIN,
                                   allow_methods=["GET", "POST"], allow_headers=["*"],
                                   allow_private_network=True)  # Chrome asks before a page reaches 127.0.0.1
        self.say = say or (lambda text: print(text, flush=True))
        self.refused: set[str] = set()  # the origins named so far (at most NAMED_ORIGINS)
        self.past_naming = False

    def allows(self, origin: str) -> bool:
        """Example: allows("http://localhost:5500") -> True; allows("https://example.org") -> False (unless given)"""
        return "*" in self.allowed or origin in self.allowed or re.fullmatch(LOOPBACK_ORIGIN, origin) is not None

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Any) -> None:
        if scope.get("type") == "http":
            origin = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() == b"origin"), None)
            if origin is not None and not self.allows(origin):
                await self._refuse(send, origin)
                return
        await self.cors(scope, receive, send)

    async def _refuse(self, send: Any, origin: str) -> None:
        flag = f"--allow-origin {origin}" if origin_problem(origin) is None else "--allow-origin"
        who = "pages from this machine" + (" and " + ", ".join(sorted(self.allowed)) if self.allowed else "")
        if origin not in self.refused and len(self.refused) < NAMED_ORIGINS:
            self.refused.add(origin)
            self.say(f"nora serve: refused a call from the web page at {origin}: only {who} may call it "
                     f"(start it with {flag} to allow that page)")
        elif origin not in self.refused and not self.past_naming:  # a page sends any Origin it likes: the
            self.past_naming = True  # set and the instructor's terminal stay bounded, all day
            self.say(f"nora serve: refused calls from more web pages than the {NAMED_ORIGINS} named above; "
                     "no more are named (they are still refused)")
        payload = json.dumps(error_body(
            f"A web page at {origin} may not call this server: it answers {who} "
            "(nora serve --allow-origin ORIGIN adds one).", None, "origin_not_allowed")).encode()
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})
