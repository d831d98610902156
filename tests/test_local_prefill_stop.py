"""Stopping the embedded model while it reads a long prompt (_abort.py), in every face that can know of the stop.

The prompt is read in llama.cpp calls of 512 tokens (n_batch), each one C call that Python cannot leave;
~1,800 tokens take seconds on one thread.  Each test starts a turn on such a prompt, stops it once
llama.n_tokens shows the first batch read, and checks that the model stopped inside the prompt read
(n_tokens < the prompt's length: without the abort it reads all of it before it looks at the stop) and
that it is left consistent: the batches it kept are the prompt's, and the next call answers as a model
that read everything afresh.  No wall-clock assertion: counts and events, with generous hang guards.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from tests import helpers
from tests.helpers import ROOT, nora_env, run_async, sigint_as_in_a_terminal

pytestmark = [pytest.mark.timeout(600), pytest.mark.model]

helpers.model_file_or_skip()

from nora_widgets import LocalClient, arun_turn, astream_turn  # noqa: E402
from nora_widgets._background import BackgroundTurn  # noqa: E402

SYSTEM = {"role": "system", "content": "You are Nora. Answer in one short line."}
LONG = "Here is my reading list, summarise it. " + " ".join(f"book{i} by author{i}," for i in range(190))
HANG_GUARD = 300.0  # seconds: only a hang reaches it (a whole prompt read is ~10-30 s here)


@pytest.fixture(scope="module")
def client() -> LocalClient:
    return LocalClient(n_threads=1, reuse_prefix=False).load()


@pytest.fixture(scope="module")
def prompt(client) -> list[int]:
    tokens = client.prompt_tokens([SYSTEM, {"role": "user", "content": LONG}])
    assert 1500 < len(tokens) < client.n_ctx - 8, len(tokens)  # several batches of 512, room for the reply
    return tokens


@pytest.fixture(scope="module")
def fresh_reply(client) -> str:
    """The reply of a model that read the whole prompt from an empty cache (temperature 0)."""
    return ask(client).choices[0].message.content


def ask(client, **kw):
    return client.chat.completions.create(model="x", messages=[SYSTEM, {"role": "user", "content": LONG}],
                                          temperature=0, max_tokens=4, **kw)


def wait_for_first_batch(engine, prompt_len: int) -> None:
    """Until the model holds its lock and has read at least one batch, not yet all of the prompt."""
    since = time.monotonic()
    while not (engine.lock.locked() and 512 <= engine.llama.n_tokens < prompt_len):
        assert time.monotonic() - since < HANG_GUARD, "the prompt read never showed its first batch"
        time.sleep(0.002)


def wait_until_free(engine) -> None:
    assert engine.lock.acquire(timeout=HANG_GUARD), f"the model was still held after {HANG_GUARD} s"
    engine.lock.release()


def assert_stopped_inside_the_read_and_consistent(client, prompt, fresh_reply) -> int:
    llama = client._engine.llama
    kept = llama.n_tokens
    assert 0 < kept < len(prompt), kept  # stopped inside the read (without the abort: all of it, and a token)
    assert kept % 512 == 0  # whole batches only: llama.cpp dropped the one it gave up
    assert llama.input_ids[:kept].tolist() == prompt[:kept]
    # the kept batches are taken from the cache and the rest read: the same reply as a model that read it all
    again = ask(LocalClient(n_threads=1, reuse_prefix=True))
    assert again.usage.prompt_tokens_details.cached_tokens == kept
    assert again.choices[0].message.content == fresh_reply
    return kept


def test_a_cancelled_arun_turn_stops_inside_the_prompt_read(client, prompt, fresh_reply):
    engine = client._engine
    history = [SYSTEM]

    async def main():
        task = asyncio.create_task(arun_turn(client, history, LONG, temperature=0, max_tokens=4))
        await asyncio.to_thread(wait_for_first_batch, engine, len(prompt))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.to_thread(wait_until_free, engine)

    run_async(main())
    assert history == [SYSTEM]
    assert_stopped_inside_the_read_and_consistent(client, prompt, fresh_reply)


def test_an_astream_turn_left_early_stops_inside_the_prompt_read(client, prompt, fresh_reply):
    engine = client._engine
    history = [SYSTEM]

    async def main():
        async def consume():
            async for _piece in astream_turn(client, history, LONG, temperature=0, max_tokens=4):
                pass

        task = asyncio.create_task(consume())
        await asyncio.to_thread(wait_for_first_batch, engine, len(prompt))
        task.cancel()
        await asyncio.wait([task])  # its stream's next() runs on in the worker: only the cancel stops it
        await asyncio.to_thread(wait_until_free, engine)
        return task.cancelled()

    assert run_async(main())
    assert history == [SYSTEM]
    assert_stopped_inside_the_read_and_consistent(client, prompt, fresh_reply)


def test_the_panels_stop_stops_inside_the_prompt_read(client, prompt, fresh_reply):
    engine = client._engine
    history = [SYSTEM]
    runner = BackgroundTurn(flush_interval=0.0)
    ended = []
    runner.start(client, history, LONG, temperature=0, extra={"max_tokens": 4},
                 on_text=lambda so_far: None, on_finish=lambda result, late: ended.append(result))
    wait_for_first_batch(engine, len(prompt))
    assert runner.cancel() == "stopped"  # what the Stop button does (it streams, as the panel does)
    runner.worker.join(HANG_GUARD)
    assert not runner.worker.is_alive()
    assert history == [SYSTEM] and len(ended) == 1 and ended[0].failure.kind == "cancelled"
    assert_stopped_inside_the_read_and_consistent(client, prompt, fresh_reply)


CHAT_WATCHED = '''
import sys, threading, time
from pathlib import Path
from nora_widgets.cli import main

marks = Path(sys.argv[1])


def watched(client):
    """The client nora chat built, and a thread that says when the model has read its first batch and,
    once nora chat is over, how many tokens the model holds."""
    engine = client._engine

    def watch():
        while not (engine.lock.locked() and engine._llama is not None and engine._llama.n_tokens >= 512):
            time.sleep(0.002)
        marks.write_text("first batch\\n")
        peak = 0
        while engine.lock.locked() and engine._llama is not None:  # the most tokens it held (what it kept may be read on)
            peak = max(peak, getattr(engine._llama, "n_tokens", 0))
            time.sleep(0.002)
        peaks.append(peak)

    watchers.append(threading.Thread(target=watch, daemon=True))
    watchers[0].start()
    return client


peaks, watchers = [], []
code = main(["chat", "--backend", "local", "--temperature", "0", "--max-tokens", "4"], wrap=watched)
watchers[0].join(30)
marks.write_text(f"peak {peaks[0] if peaks else -1}\\n")
sys.exit(code)
'''


def test_ctrl_c_in_nora_chat_stops_inside_the_prompt_read_and_is_not_lost(tmp_path, prompt):
    # SIGINT while the main thread is inside llama_decode: the C callback has no Python in it, so the Ctrl-C
    # is raised as KeyboardInterrupt when the call returns (never 'Exception ignored' in a callback)
    script, marks = tmp_path / "chat_watched.py", tmp_path / "marks.txt"
    script.write_text(CHAT_WATCHED)
    proc = subprocess.Popen([sys.executable, str(script), str(marks)], cwd=ROOT, env=nora_env(NORA_N_THREADS="1"),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_as_in_a_terminal)
    try:
        proc.stdin.write(LONG + "\n")
        proc.stdin.flush()
        since = time.monotonic()
        while not marks.exists():
            assert proc.poll() is None and time.monotonic() - since < HANG_GUARD, "no first batch"
            time.sleep(0.01)
        proc.send_signal(subprocess.signal.SIGINT)
        out, err = proc.communicate("/history\n", timeout=HANG_GUARD)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "(error talking to the model: cancelled - the turn was rolled back" in err
    assert "Exception ignored" not in err and "Traceback" not in err
    # llama.cpp's own lines about the read it gave up ("decode: removing memory module entries ...",
    # "llama_decode: failed to decode, ret = 2") are no error to show: the user asked for the stop
    assert "decode" not in err, err
    assert "nora:" not in out  # no reply: the turn was stopped, and rolled back
    peak = int(marks.read_text().split()[1])
    # Ctrl-C came while the second batch was read (~3 s on one thread; the mark is seen within 10 ms): that batch
    # was given up.  Without the abort, Python's KeyboardInterrupt stops the read only between two batches, so
    # after the second one (1,024 tokens; measured with the abort disabled)
    assert peak == 512, peak


def cpu_seconds(pid: int) -> float:
    """The CPU time a process has used so far (Linux: /proc/PID/stat's utime + stime)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to see the server at work")
def test_a_nora_serve_client_that_leaves_during_the_prompt_read_frees_the_model_at_once():
    # a client that left (a timeout, a closed tab) while its long prompt was read kept the model busy
    # reading all of it, then stopped at the first token; the class waited behind it.  Now llama.cpp gives
    # the read up: the server says so ("while its prompt was read": without the abort it said "after 0
    # tokens", once the whole prompt was read), and the next request is answered by a consistent model.
    pytest.importorskip("llama_cpp.server.app", reason="nora serve needs llama-cpp-python[server] ([local] extra)")
    from tests.test_serve import Served, clean_env

    served = Served(env=clean_env(NORA_N_THREADS="1"))
    try:
        body = json.dumps({"model": "m", "messages": [SYSTEM, {"role": "user", "content": LONG}],
                           "max_tokens": 4, "temperature": 0}).encode()
        idle = cpu_seconds(served.proc.pid)
        leaving = socket.create_connection(("127.0.0.1", served.port), timeout=HANG_GUARD)
        leaving.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        # the server at work on it: a second of CPU is ~150 of the ~1,700 tokens on one thread (the whole read
        # takes ten times that); counted in CPU time, not wall-clock time, which a busy machine stretches
        since = time.monotonic()
        while cpu_seconds(served.proc.pid) - idle < 1.5:
            assert served.proc.poll() is None and time.monotonic() - since < HANG_GUARD, "the server never read it"
            time.sleep(0.02)
        leaving.close()
        said = served._readline(timeout=HANG_GUARD)
        while said.startswith("INFO:"):  # the access log's line for the request that left, if any
            said = served._readline(timeout=HANG_GUARD)
        assert re.fullmatch(r"nora serve: the client at 127\.0\.0\.1:\d+ left; its reply stopped while its prompt "
                            r"was read\n", said), said
        # the next request is answered, and as a model that read it all afresh answers it (temperature 0)
        # the first takes the batches kept from the cache; a short question between makes the second read
        # the long one again from its first words (the server's cache keeps the longest common start)
        client = served.client()
        again = []
        for content in (LONG, "Do you sell maps?", LONG):
            again.append(client.chat.completions.create(model="m", messages=[SYSTEM, {"role": "user", "content": content}],
                                                        max_tokens=4, temperature=0).choices[0].message.content)
        assert again[0].strip() and again[0] == again[2], again
        code, out, err = served.stop()
    finally:
        if served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait()
    assert code == 0 and err == "", err  # no "decode: removing ..." from llama.cpp, no traceback
    assert "Traceback" not in out and "decode" not in out


def test_only_the_lines_of_an_aborted_decode_are_dropped_from_llamas_log(capsys):
    # the filter before llama-cpp-python's log callback (_abort.py): an aborted decode's pair goes, a decode
    # that failed otherwise is still said (both its lines), and so is any other line
    from llama_cpp import _logger

    from nora_widgets._abort import _quiet_aborts, _strlen_callback

    assert _strlen_callback() is not None  # installs the filter (once)
    say = _quiet_aborts.callback
    previous = _logger.logger.level
    _logger.set_verbose(False)  # as Nora loads the model: errors only
    try:
        say(3, b"decode: removing memory module entries for seq_id = 0, pos = [512, +inf)\n", None)
        say(3, b"llama_decode: failed to decode, ret = 2\n", None)
        assert capsys.readouterr().err == ""
        say(3, b"decode: removing memory module entries for seq_id = 0, pos = [0, +inf)\n", None)
        say(3, b"llama_decode: failed to decode, ret = -3\n", None)
        say(3, b"some other error\n", None)
        say(1, b"an info line, below the level shown\n", None)
        assert capsys.readouterr().err == ("decode: removing memory module entries for seq_id = 0, pos = [0, +inf)\n"
                                           "llama_decode: failed to decode, ret = -3\nsome other error\n")
    finally:
        _logger.logger.setLevel(previous)
