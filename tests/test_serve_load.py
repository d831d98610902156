"""`nora serve` under concurrent clients: no crash, every request answered or clearly refused.

A real `nora serve` (the embedded SmolLM2 behind llama-cpp-python's server) on a free
loopback port, with a key required.  Three threads send three requests each with
the real openai client (some streamed), while a fourth misbehaves: a wrong key, a
conversation too long for the window, a stream dropped after its first chunk.
Afterwards the server still answers, stops cleanly on Ctrl-C, and its log holds
one line per request and never the key.  Needs the [local] extra: run with
/work/venv (`-m model`).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nora_widgets.conversation import new_history, safe_run_turn
from nora_widgets.errors import describe_failure

pytestmark = [pytest.mark.model, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parent.parent
THREADS, PER_THREAD, MAX_TOKENS = 3, 3, 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served():
    """(process, base_url, key, lines, reader): `nora serve` started the way a person starts it; reader, the
    thread that appends its output to lines, ends once the process has closed its output."""
    pytest.importorskip("llama_cpp.server.app", reason="nora serve needs llama-cpp-python[server] ([local] extra)")
    key = "sk-test-serve-" + secrets.token_hex(12)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "NORA_"))}
    env.update(NORA_SERVE_API_KEY=key, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p))
    proc = subprocess.Popen([sys.executable, "-m", "nora_widgets.cli", "serve", "--port", str(port), "--n-ctx", "512"],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Serving"):
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not started.wait(60):
        proc.kill()
        pytest.fail(f"nora serve did not start: {''.join(lines)}")
    yield proc, f"http://127.0.0.1:{port}/v1", key, lines, reader
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def client(url: str, key: str):
    import openai

    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=60)


def ask(c, i: int, stream: bool) -> tuple[str, str]:
    """One request; ('answered', text) or ('refused', the one line a person would see)."""
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Name book number {i}."}]
    try:
        if stream:
            chunks = list(c.chat.completions.create(model="m", messages=messages, max_tokens=MAX_TOKENS,
                                                    temperature=0, stream=True))
            return "answered", "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        reply = c.chat.completions.create(model="m", messages=messages, max_tokens=MAX_TOKENS, temperature=0)
        assert reply.usage.completion_tokens <= MAX_TOKENS
        return "answered", reply.choices[0].message.content or ""
    except Exception as exc:  # noqa: BLE001 - a refusal is an outcome to check, not a test crash
        return "refused", describe_failure(exc).line()


def test_concurrent_clients_are_all_answered_or_clearly_refused(served):
    proc, url, key, lines, reader = served
    results: dict[tuple[int, int], tuple[str, str]] = {}
    misbehaving: dict[str, str] = {}

    def worker(t: int) -> None:
        c = client(url, key)
        for j in range(PER_THREAD):
            results[(t, j)] = ask(c, t * PER_THREAD + j, stream=(t + j) % 2 == 1)

    def troublemaker() -> None:
        misbehaving["wrong key"] = ask(client(url, "sk-test-wrong-key-000000"), 0, stream=False)[1]
        try:
            client(url, key).chat.completions.create(
                model="m", messages=[{"role": "user", "content": "books " * 600}], max_tokens=MAX_TOKENS)
        except Exception as exc:  # noqa: BLE001
            misbehaving["too long"] = describe_failure(exc).line()
        stream = client(url, key).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "Tell me a long story."}], max_tokens=64, stream=True)
        next(iter(stream))
        stream.close()  # the reader goes away mid-reply
        misbehaving["dropped stream"] = "closed"

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    threads.append(threading.Thread(target=troublemaker))
    t0 = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    wall = time.monotonic() - t0
    assert not any(thread.is_alive() for thread in threads), "a request hung"

    assert len(results) == THREADS * PER_THREAD
    refused = {k: v for k, v in results.items() if v[0] != "answered"}
    assert refused == {}, refused  # a classroom's worth of polite requests: every one answered
    assert all(text.strip() for _, text in results.values())
    assert misbehaving["wrong key"] == ("(error talking to the model: the server refused the API key (HTTP 401) - "
                                        "check OPENAI_API_KEY)")
    assert "context window" in misbehaving["too long"] and "(HTTP 400)" in misbehaving["too long"]
    assert misbehaving["dropped stream"] == "closed"
    print(f"\n{THREADS}x{PER_THREAD} requests (max_tokens {MAX_TOKENS}) + 3 misbehaving: {wall:.1f} s wall")

    # still alive, still answering, through Nora's own turn
    assert proc.poll() is None
    from nora_widgets.clients import make_client

    history = new_history()
    result = safe_run_turn(make_client("openai", base_url=url, api_key=key, max_retries=0, timeout=60),
                           history, "Do you sell maps?", max_tokens=MAX_TOKENS, temperature=0)
    assert result.ok and len(history) == 3

    proc.send_signal(signal.SIGINT)  # Ctrl-C
    assert proc.wait(30) == 0
    reader.join(10)  # the last lines read (a fixed 0.2 s pause could end before them with both cores busy)
    assert not reader.is_alive()
    log = "".join(lines)
    assert "Traceback" not in log and key not in log and key[14:] not in log
    requests = [ln for ln in lines if '"POST /v1/chat/completions' in ln]
    assert len(requests) == THREADS * PER_THREAD + 3 + 1  # one access-log line per request
    assert sum(" 401" in ln for ln in requests) == 1 and sum(" 400" in ln for ln in requests) == 1
    assert lines[-1] == "nora serve: stopped\n"
