"""`nora serve`: close a connection whose request stops coming, instead of holding it all day.

uvicorn (0.3x-0.5x, its h11 protocol) closes a connection that sits idle *after* a reply (5 s),
but sets no limit on one that has not sent a whole request yet.  A client that connects and
sends nothing, or half a request's head, or a head and part of its body, and then neither sends
more nor closes (a laptop whose lid closed or whose Wi-Fi dropped mid-request, a script stuck
half-way, a port scanner that leaves sockets open) kept its socket, and with a body its request's
task, for as long as the server ran.  Measured: 60 such sockets held 60 more file descriptors
after 40 s and after 40 minutes alike; at the usual limit of 1,024 descriptors the server can
accept no one else.  nginx closes such a connection after 60 s (client_header_timeout,
client_body_timeout); so does this, with the same default.

The timer runs only while the request is not whole: from the connection's start, and again after
each piece of it that arrives (their side in h11's IDLE or SEND_BODY).  Once the request is whole
it stops: a request waiting its turn for the model, or a reply being written, is never cut
(those have their own rules: _keep_waiting.py, _client_gone.py).  A connection whose reading the
server itself paused (a body it has not taken yet) is not the client's fault: the timer waits again.

    config = uvicorn.Config(app, http=read_timeout_protocol(60.0))  # 0 or None: off (uvicorn's own)

NORA_SERVE_READ_TIMEOUT sets it in seconds (0: off); a bad value is a bad setting (exit 2).
"""

from __future__ import annotations

from typing import Any

from ._keep_waiting import seconds_from_env

__all__ = ["READ_TIMEOUT", "READ_TIMEOUT_ENV", "read_timeout_from_env", "read_timeout_protocol"]

READ_TIMEOUT = 60.0  # seconds a request may go without a byte before it is whole (nginx's default)
READ_TIMEOUT_ENV = "NORA_SERVE_READ_TIMEOUT"


def read_timeout_from_env(environ: dict | None = None) -> tuple[float, str | None]:
    """(seconds, None) from NORA_SERVE_READ_TIMEOUT (READ_TIMEOUT when unset; 0: off), or
    (READ_TIMEOUT, the line saying what is wrong).
    Example: read_timeout_from_env({"NORA_SERVE_READ_TIMEOUT": "2"}) -> (2.0, None)"""
    return seconds_from_env(READ_TIMEOUT_ENV, READ_TIMEOUT, environ)


def read_timeout_protocol(seconds: float | None) -> Any:
    """uvicorn's h11 protocol with the timer in the module docstring; "auto" (uvicorn's choice,
    no timer) when seconds is 0 or None, or when uvicorn's h11 protocol cannot be imported."""
    if not seconds:
        return "auto"
    after = float(seconds)
    try:
        import h11
        from uvicorn.protocols.http.h11_impl import H11Protocol
    except ImportError:
        return "auto"

    class ReadTimeoutH11(H11Protocol):
        """H11Protocol that closes the connection after `seconds` without a byte of an unfinished request."""

        read_timer: Any = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _waiting_for_request(self) -> bool:
            return self.conn.their_state in (h11.IDLE, h11.SEND_BODY)  # not yet a whole request

        def _arm(self) -> None:
            self._disarm()
            if self._waiting_for_request() and not self.transport.is_closing():
                self.read_timer = self.loop.call_later(after, self._timed_out)

        def _disarm(self) -> None:
            if self.read_timer is not None:
                self.read_timer.cancel()
                self.read_timer = None

        def _timed_out(self) -> None:
            self.read_timer = None
            if self.transport.is_closing() or not self._waiting_for_request():
                return
            if self.flow.read_paused:  # the server has not taken what came: not the client's silence
                self._arm()
                return
            self.transport.close()  # a body's task hears it as the client leaving (http.disconnect)

    return ReadTimeoutH11
