"""`nora serve` through a school day: does the server's memory, file descriptors or threads grow?

A real `nora serve` (the embedded SmolLM2, --n-ctx 512) on a free loopback port, and a class of
clients talking to it over real HTTP from several threads (the real openai client, and raw sockets
for what a browser or a broken script does).  Requests cycle through every kind a class sends:

    plain      chat.completions.create, 1-4 tokens, a prompt that differs each time
    stream     the same, stream=True, read to the end
    dropped    stream=True, the response closed after its first chunk (a tab closed mid-reply)
    models     models.list()
    bad        a request refused with a 400 (max_tokens 0, temperature 5)
    unknown    a path the server does not have (404) and a model it does not serve (404)
    silent     a raw socket that connects and closes without a byte
    half       a raw socket that sends half a request's head, or the head and half its body, then closes
    held       the same, or nothing at all, and then neither sends more nor closes (a laptop whose lid
               closed mid-request): kept open by the client to the end of the run

After the warm-up, every `--every` requests the clients wait until nothing is in flight and the
server's /proc/PID is read: VmRSS, open file descriptors (fd/), threads (task/).  The server closes a
connection whose request stops coming after NORA_SERVE_READ_TIMEOUT seconds (60 by default); the run
sets it to --read-timeout (2 s), so the clients that hold theirs open settle within a run of minutes,
as they do within a day at 60 s.  Printed: the
samples, and the growth per 1,000 requests after warm-up (a least-squares slope over the samples,
so one noisy reading does not make a trend), as numbers; nothing fails because a number is big.

    python benchmarks/bench_serve_soak.py [--requests 3000] [--threads 6] [--every 250] [--read-timeout 2]
                                          [--quick] [--json out.json]
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, finish, fmt_seconds, parser, skipped, table  # noqa: E402

KINDS = ("plain", "stream", "dropped", "models", "bad", "unknown", "plain", "stream", "silent", "half", "held")
N_CTX = 512


def proc_numbers(pid: int) -> dict:
    """What the server process holds now.  Example: {"rss_kb": 201234, "fds": 14, "threads": 9}"""
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    return {"rss_kb": rss, "fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": len(os.listdir(f"/proc/{pid}/task"))}


def slope_per_1000(points: list[tuple[int, float]]) -> float:
    """Least-squares growth per 1,000 requests.  Example: [(0, 10), (1000, 12), (2000, 14)] -> 2.0"""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return 0.0 if sxx == 0 else 1000 * sum((x - mx) * (y - my) for x, y in points) / sxx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m nora_widgets.cli serve` in a subprocess; its output is read (and counted) as it comes,
    so a full pipe never holds the server up."""

    def __init__(self, max_tokens: int = 8, read_timeout: float | None = None) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "NORA_"))}
        if read_timeout is not None:
            env["NORA_SERVE_READ_TIMEOUT"] = str(read_timeout)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nora_widgets.cli", "serve", "--port", str(self.port), "--n-ctx", str(N_CTX),
             "--max-tokens", str(max_tokens)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = {"stdout": 0, "stderr": 0, "tracebacks": 0}
        self.tail: list[str] = []
        started = threading.Event()

        def read(name: str, stream) -> None:
            for line in stream:
                self.lines[name] += 1
                self.lines["tracebacks"] += line.startswith("Traceback")
                self.tail = (self.tail + [line.rstrip()])[-20:]
                if line.startswith("Serving "):
                    started.set()
            started.set()  # it ended before it served

        for name in ("stdout", "stderr"):
            threading.Thread(target=read, args=(name, getattr(self.proc, name)), daemon=True).start()
        if not started.wait(90) or self.proc.poll() is not None:
            self.proc.kill()
            raise RuntimeError("nora serve did not start: " + "\n".join(self.tail))
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def numbers(self) -> dict:
        return proc_numbers(self.proc.pid)

    def stop(self) -> int:
        self.proc.send_signal(2)  # Ctrl-C
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


class Class:
    """The clients: one openai client per thread (each keeps its connection, as a learner's does)."""

    def __init__(self, server: Server, threads: int) -> None:
        import openai

        self.server, self.openai = server, openai
        self.local = threading.local()
        self.clients: list = []
        self.holding: list[socket.socket] = []  # the "held" kind's sockets, open until close()
        self.counts: dict[str, int] = {}
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="learner")

    def client(self):
        if getattr(self.local, "client", None) is None:
            self.local.client = self.openai.OpenAI(base_url=self.server.url, api_key="any", max_retries=0, timeout=60)
            with self.lock:
                self.clients.append(self.local.client)
        return self.local.client

    def run(self, numbers: range) -> None:
        """Send requests numbered `numbers` from the pool's threads; back when all are answered."""
        for future in [self.pool.submit(self.one, i) for i in numbers]:
            future.result()

    def one(self, i: int) -> None:
        kind = KINDS[i % len(KINDS)]
        try:
            getattr(self, kind)(i)
        except Exception as exc:  # counted, never raised: one odd answer is not the soak's end
            with self.lock:
                self.failures.append(f"{kind} #{i}: {type(exc).__name__}: {str(exc)[:160]}")
        with self.lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1

    def messages(self, i: int) -> list[dict]:
        return [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": f"Request {i}: name a colour and the number {i * 7 % 1000}."}]

    def plain(self, i: int) -> None:
        self.client().chat.completions.create(model="any", messages=self.messages(i), max_tokens=1 + i % 4)

    def stream(self, i: int) -> None:
        for _ in self.client().chat.completions.create(model="any", messages=self.messages(i), max_tokens=1 + i % 4,
                                                       stream=True):
            pass

    def dropped(self, i: int) -> None:
        with self.client().chat.completions.create(model="any", messages=self.messages(i), max_tokens=8,
                                                   stream=True) as chunks:
            next(iter(chunks))  # the first chunk, then the tab is closed

    def models(self, i: int) -> None:
        self.client().models.list()

    def bad(self, i: int) -> None:
        wrong = {"max_tokens": 0} if i % 2 else {"max_tokens": 4, "temperature": 5}
        try:
            self.client().chat.completions.create(model="any", messages=self.messages(i), **wrong)
        except self.openai.BadRequestError:
            return
        raise AssertionError("a bad request was answered")

    def unknown(self, i: int) -> None:
        try:
            if i % 2:
                self.client().models.retrieve("no-such-model")
            else:
                self.client().get("/no/such/path", cast_to=object)
        except self.openai.NotFoundError:
            return
        raise AssertionError("an unknown path was answered")

    def silent(self, i: int) -> None:
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=10):
            pass  # connects, sends nothing, closes

    def part(self, i: int) -> bytes:
        """Half a request's head, or its head and half its body, or nothing."""
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{self.server.port}\r\n"
                "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n")
        return [head[: len(head) // 2], head + '{"model": "any", "messages": [{"role": "us', ""][i % 3].encode()

    def half(self, i: int) -> None:
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=10) as raw:
            raw.sendall(self.part(i // len(KINDS) % 2))  # half a head, a head and half a body, in turn
            time.sleep(0.01)

    def held(self, i: int) -> None:
        raw = socket.create_connection(("127.0.0.1", self.server.port), timeout=10)
        raw.sendall(self.part(i // len(KINDS)))  # each of the three in turn
        with self.lock:
            self.holding.append(raw)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        for c in [*self.clients, *self.holding]:
            c.close()


def closed_by_server(sockets: list[socket.socket]) -> int:
    """How many of these client sockets the server has closed (the client reads its end of the stream)."""
    closed = 0
    for raw in sockets:
        try:
            closed += raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:  # still open: nothing to read yet
            pass
        except OSError:  # reset: closed too
            closed += 1
    return closed


def soak(requests: int, threads: int, every: int, warm_up: int, settle: float, read_timeout: float | None) -> dict:
    server = Server(read_timeout=read_timeout)
    learners = Class(server, threads)
    samples: list[dict] = []
    started = time.perf_counter()
    try:
        samples.append({"requests": 0, "seconds": 0.0, **server.numbers()})
        done = 0
        for end in itertools.chain(range(warm_up, requests, every), [requests]):
            if end <= done:
                continue
            learners.run(range(done, end))
            done = end
            time.sleep(settle)  # the last connections closing, the server's tasks ending
            sample = {"requests": done, "seconds": round(time.perf_counter() - started, 1), **server.numbers(),
                      "held_open": len(learners.holding)}
            samples.append(sample)
            print(f"  {done:6d} requests  {sample['seconds']:7.1f} s  RSS {sample['rss_kb'] / 1024:7.1f} MB  "
                  f"fds {sample['fds']:4d}  threads {sample['threads']:3d}  "
                  f"(clients holding a half-sent request open: {sample['held_open']})", flush=True)
        held_closed = closed_by_server(learners.holding)  # before the clients close their ends below
        learners.close()
        time.sleep(settle)
        after_close = server.numbers()  # every client gone: what the server still holds
    finally:
        learners.pool.shutdown(wait=False)
        code = server.stop()
    steady = [s for s in samples if s["requests"] >= warm_up]
    growth = {key: round(slope_per_1000([(s["requests"], s[key]) for s in steady]), 2)
              for key in ("rss_kb", "fds", "threads")}
    return {"requests": requests, "threads": threads, "every": every, "warm_up": warm_up, "samples": samples,
            "read_timeout_s": read_timeout, "held": len(learners.holding), "held_closed_by_server": held_closed,
            "after_clients_closed": after_close, "growth_per_1000_after_warm_up": growth,
            "counts": learners.counts, "failures": len(learners.failures), "failure_examples": learners.failures[:5],
            "server_lines": server.lines, "exit_code": code, "wall_s": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=3000, help="requests in all (default 3000)")
    p.add_argument("--threads", type=int, default=6, help="clients at once (default 6)")
    p.add_argument("--every", type=int, default=250, help="requests between samples (default 250)")
    p.add_argument("--warm-up", type=int, default=500, help="requests before the growth is counted (default 500)")
    p.add_argument("--read-timeout", type=float, default=2.0, metavar="SECONDS",
                   help="the server's NORA_SERVE_READ_TIMEOUT (default 2: a run of minutes reaches the steady state "
                        "that a day reaches with the server's own 60 s; -1: the server's own)")
    args = p.parse_args(argv)
    if args.quick:
        args.requests, args.threads, args.every, args.warm_up = 44, 4, 22, 22
    try:
        import llama_cpp.server.app  # noqa: F401
        import openai  # noqa: F401
    except ImportError as exc:
        skipped(args, "serve_soak", f"needs llama-cpp-python's server and openai ({exc.name}): pip install -e '.[local]'")
        return 0
    print(f"nora serve soak: {args.requests} requests from {args.threads} threads, "
          f"a sample every {args.every} after {args.warm_up} to warm up", flush=True)
    read_timeout = None if args.read_timeout < 0 else args.read_timeout
    r = soak(args.requests, args.threads, args.every, args.warm_up, settle=0.5 if args.quick else 1.0,
             read_timeout=read_timeout)
    first, last = r["samples"][0], r["samples"][-1]
    warm = next(s for s in r["samples"] if s["requests"] >= args.warm_up)
    rows = [[name, f"{first[key] / scale:.1f}", f"{warm[key] / scale:.1f}", f"{last[key] / scale:.1f}",
             f"{r['after_clients_closed'][key] / scale:.1f}",
             f"{r['growth_per_1000_after_warm_up'][key] / scale:+.2f}"]
            for name, key, scale in (("RSS (MB)", "rss_kb", 1024), ("open fds", "fds", 1), ("threads", "threads", 1))]
    print(table(["", "start", f"after {warm['requests']}", f"after {last['requests']}", "clients closed",
                 "growth per 1,000 after warm-up"], rows))
    said = "the server's default" if read_timeout is None else f"{read_timeout:g} s"
    print(f"clients that held a half-sent request open: {r['held']}, closed by the server (read timeout {said}): "
          f"{r['held_closed_by_server']}")
    print(f"{r['requests']} requests in {fmt_seconds(r['wall_s'])}; by kind {r['counts']}; "
          f"{r['failures']} failed; server printed {r['server_lines']}; exit {r['exit_code']}")
    for line in r["failure_examples"]:
        print(f"  {line}")
    finish(args, "serve_soak", r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
