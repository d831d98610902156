"""`nora` as a person (or a script) uses it.

Most tests run `python -m nora_widgets.cli` as a subprocess with stdin piped, against
the loopback stub server (tests/servers/openai_stub.py): the real openai client inside
nora, real HTTP on 127.0.0.1, a fake key in the environment.  Whole sessions are
compared line by line, stderr merged in order, not one substring.  Quick checks of
flags and slash commands call main() in-process with the scripted backend.
"""

from __future__ import annotations

import contextlib
import html
import importlib.util
import io
import json
import os
import re
import signal
import socket
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from nora_widgets import cli
from nora_widgets.clients import ScriptedClient
from nora_widgets.conversation import SYSTEM_PROMPT
from nora_widgets.render import markdown_to_html
from tests import helpers
from tests.servers.openai_stub import (
    StubServer,
    context_length_exceeded,
    cut_stream,
    default_reply,
    drop,
    error,
    error_after_head,
    malformed_json,
    not_a_completion,
    ok,
    rate_limit,
    server_error,
    stall,
    unauthorized,
    unavailable,
    web_page,
    whole_reply,
)

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-test-" + "N0raK3y" * 4  # fake; it must never show up in anything nora writes
SYSTEM = {"role": "system", "content": SYSTEM_PROMPT}
FAST = ["--max-retries", "0", "--timeout", "1"]


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def nora_env(stub: StubServer | None = None, **extra: str) -> dict:
    """A clean environment (tests/helpers.py), pointed at the stub with this module's key."""
    if stub is None:
        return helpers.nora_env(**extra)
    return helpers.nora_env(stub.base_url, KEY, **extra)


def nora(*args: str, stdin: str = "", stub: StubServer | None = None, cwd: Path | None = None,
         merge: bool = False, **env: str) -> subprocess.CompletedProcess:
    """Run `nora ARGS` with stdin piped; merge=True puts stderr into stdout, in order."""
    return helpers.run_nora(*args, env=nora_env(stub, **env), stdin=stdin, cwd=cwd, merge=merge)


def header(stub: StubServer, model: str | None = None) -> list[str]:
    """nora chat's opening lines; with no --model, the model is the one the stub lists."""
    return [f"Nora chat: OpenAI-compatible server {stub.base_url}, model {model or stub.model}",
            "(type /help for commands; quit or Ctrl-D to leave)"]


def assert_no_key(*texts: str) -> None:
    for text in texts:
        assert KEY not in text
        assert KEY[8:20] not in text  # not even a piece of it


# --------------------------------------------------------------------------- #
# whole sessions against the stub server


def test_session_resends_the_whole_transcript(keyed_stub):
    questions = ["Do you have any Ursula K. Le Guin novels?", "How much is it?", "Can you hold a copy for me?"]
    result = nora("chat", "--model", "test-model", *FAST, stdin="\n".join(questions) + "\nquit\n",
                  stub=keyed_stub)

    history = [SYSTEM]
    expected = header(keyed_stub, "test-model")
    for q in questions:
        reply = default_reply(history + [user(q)])
        expected += [f"you: {q}", f"nora: {reply}"]
        history += [user(q), assistant(reply)]
    expected.append("you: quit")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == expected
    # the API is stateless: call k carried the whole list so far (2, 4, 6 messages)
    sent = [r.body for r in keyed_stub.chat_requests]
    assert [len(b["messages"]) for b in sent] == [2, 4, 6]
    assert [b["messages"] for b in sent] == [history[:2], history[:4], history[:6]]
    assert all(b["model"] == "test-model" and b["stream"] is True and b["temperature"] == 0.7 for b in sent)
    assert keyed_stub.chat_requests[0].headers["authorization"] == f"Bearer {KEY}"  # it went to the server...
    assert_no_key(result.stdout, result.stderr)  # ...and nowhere else


FAULTS = [  # (behaviour, words the one stderr line must contain)
    (unauthorized(), ["HTTP 401", "OPENAI_API_KEY"]),
    (rate_limit(retry_after=1), ["rate limit", "HTTP 429, retry after 1 s"]),
    (server_error(), ["HTTP 500", "try again"]),
    (unavailable(), ["HTTP 503"]),
    (context_length_exceeded(), ["context window", "/trim N"]),
    (malformed_json(), ["the server's answer is not JSON"]),
    (web_page(), ["(a text/HTML page) - check that OPENAI_BASE_URL is an OpenAI-compatible API"]),
    (drop(), ["the server closed the connection without answering"]),
    (stall(3.0), ["timed out", "--timeout"]),
    (cut_stream("one two three four", after_pieces=2), ["cut off", "the server closed the connection"]),
    (stall(3.0, after_pieces=2, text="one two three four"), ["timed out"]),
    (error(401, f"Incorrect API key provided: {KEY}", "invalid_request_error", "invalid_api_key"), ["HTTP 401"]),
]


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
def test_every_fault_is_one_line_and_rolled_back(keyed_stub, tmp_path, stream):
    """good, then for each fault: a failing turn and a good one.  The failed user turns
    never reach a later request, the saved transcript, or /history."""
    for behaviour, _words in FAULTS:
        keyed_stub.enqueue(ok(), behaviour)
    keyed_stub.enqueue(ok())
    lines = ["q0"] + [x for i in range(len(FAULTS)) for x in (f"bad{i}", f"good{i}")] + ["/history", "quit"]
    saved = tmp_path / "chat.json"
    args = ["chat", *FAST, "--save", str(saved)] + ([] if stream else ["--no-stream"])
    result = nora(*args, stdin="\n".join(lines) + "\n", stub=keyed_stub, merge=True)

    error_lines = iter([x for x in result.stdout.splitlines() if x.startswith("(error talking to the model: ")])
    history = [SYSTEM]
    expected = header(keyed_stub)
    for q in lines[:-2]:
        expected.append(f"you: {q}")
        if q.startswith("bad"):
            behaviour, words = FAULTS[int(q[3:])]
            if stream and behaviour.after_pieces:  # the start of the reply was already on screen
                expected.append("nora: one two [reply dropped]")
            line = next(error_lines)
            assert all(w in line for w in words), (q, line)
            expected.append(line)
            continue
        reply = default_reply(history + [user(q)])
        expected.append(f"nora: {reply}")
        history += [user(q), assistant(reply)]
    expected += ["you: /history", *json.dumps(history, indent=2).splitlines(),
                 f"(next call sends these {len(history)} messages plus your new one)", "you: quit"]
    assert result.returncode == 0
    assert result.stdout.splitlines() == expected
    assert sum(x.startswith("(error talking to the model:") for x in expected) == len(FAULTS)

    good = [r.messages for r in keyed_stub.chat_requests if r.messages[-1]["content"].startswith(("good", "q"))]
    assert good == [history[:k] for k in range(2, len(history) + 1, 2)]  # no dangling user turn, ever
    assert json.loads(saved.read_text())["messages"] == history
    assert_no_key(result.stdout, saved.read_text())


def test_the_advice_names_where_the_url_came_from(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    args = ("ask", "--model", "m", "--max-retries", "0", "hi")
    flag = helpers.run_nora(*args[:-1], "--base-url", url, "hi", env=nora_env(), cwd=tmp_path)
    variable = helpers.run_nora(*args, env=nora_env(OPENAI_BASE_URL=url), cwd=tmp_path)
    assert (flag.returncode, variable.returncode) == (1, 1)
    where = url.split("//")[1].split("/")[0]  # 127.0.0.1:PORT: the line says where it could not get to
    assert flag.stderr == (f"(error talking to the model: could not reach the server: nothing is listening at {where}"
                           " - check --base-url and your network)\n")
    assert variable.stderr == flag.stderr.replace("--base-url", "OPENAI_BASE_URL")


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
def test_ask_says_an_answer_that_is_not_json_or_is_a_web_page_in_one_line(keyed_stub, stream):
    # a body that is not JSON: json's "Expecting property name enclosed in double quotes ..." came out of the
    # turn; a web page answering a stream said "the server sent an empty stream (no chunks)"
    advice = " - check that OPENAI_BASE_URL is an OpenAI-compatible API)\n"
    page = "not a stream of chat chunks" if stream else "not a chat completion"
    for behaviour, says in ((malformed_json(), "the server's answer is not JSON"),
                            (web_page(), f"the server's answer is {page} (a text/HTML page)")):
        keyed_stub.enqueue(behaviour)
        result = nora("ask", *FAST, *([] if stream else ["--no-stream"]), "Any Le Guin?", stub=keyed_stub)
        assert (result.returncode, result.stdout) == (1, "")
        assert result.stderr == f"(error talking to the model: {says}{advice}", result.stderr


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
def test_ask_takes_a_whole_reply_answering_a_stream_and_says_other_json_in_one_line(keyed_stub, stream):
    # a server that ignores "stream": true answers with JSON: the reply it gave, an error as the body and
    # other JSON each said "the server sent an empty stream (no chunks)"
    keyed_stub.enqueue(whole_reply("Yes, two novels."))
    result = nora("ask", *FAST, *([] if stream else ["--no-stream"]), "Any Le Guin?", stub=keyed_stub)
    assert (result.returncode, result.stdout, result.stderr) == (0, "Yes, two novels.\n", "")
    other = "not a stream of chat chunks (JSON)" if stream else "not a chat completion (no choices)"
    for behaviour, says in ((error_after_head("overloaded"),
                             "the server answered with an error: overloaded - try again in a moment)\n"),
                            (not_a_completion(), f"the server's answer is {other} - check that OPENAI_BASE_URL is "
                                                 "an OpenAI-compatible API)\n")):
        keyed_stub.enqueue(behaviour)
        result = nora("ask", *FAST, *([] if stream else ["--no-stream"]), "Any Le Guin?", stub=keyed_stub)
        assert (result.returncode, result.stdout) == (1, "")
        assert result.stderr == f"(error talking to the model: {says}", result.stderr
    assert [r.body.get("stream", False) for r in keyed_stub.chat_requests] == [stream] * 3


def test_retries_follow_the_setting(keyed_stub):
    keyed_stub.enqueue(unavailable(), "Back again.")
    result = nora("chat", "--max-retries", "1", "--timeout", "2", stdin="hello\n", stub=keyed_stub)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines()[-1] == "nora: Back again."
    assert [r.messages for r in keyed_stub.chat_requests] == [[SYSTEM, user("hello")]] * 2


def test_keep_turns_sends_only_recent_turns_but_saves_everything(keyed_stub, tmp_path):
    saved = tmp_path / "all.json"
    result = nora("chat", *FAST, "--keep-turns", "1", "--save", str(saved), stdin="a\nb\nc\n/history\n",
                  stub=keyed_stub)
    assert (result.returncode, result.stderr) == (0, "")
    r1 = default_reply([SYSTEM, user("a")])
    r2 = default_reply([SYSTEM, user("a"), assistant(r1), user("b")])
    assert [r.messages for r in keyed_stub.chat_requests] == [  # the persona plus at most 1 earlier turn
        [SYSTEM, user("a")],
        [SYSTEM, user("a"), assistant(r1), user("b")],
        [SYSTEM, user("b"), assistant(r2), user("c")],
    ]
    history = json.loads(saved.read_text())["messages"]
    assert [m["content"] for m in history if m["role"] == "user"] == ["a", "b", "c"]
    assert len(history) == 7
    # /history shows what the next call sends: the persona and the last turn only
    tail = result.stdout.split("you: /history\n", 1)[1]
    shown = json.loads(tail[: tail.rindex("]") + 1])
    assert shown == [history[0]] + history[-2:]
    assert "(next call sends 3 of 7 messages plus your new one: /trim 1 keeps the last 1 turn)" in tail


def test_save_then_load_continues_the_conversation(keyed_stub, tmp_path):
    saved = tmp_path / "chat.json"
    first = nora("chat", *FAST, "--save", str(saved), stdin="one\ntwo\n", stub=keyed_stub)
    assert first.returncode == 0
    document = json.loads(saved.read_text())
    assert document["format"] == "nora-transcript" and document["model"] == keyed_stub.model
    assert len(document["messages"]) == 5

    second = nora("chat", *FAST, "--load", str(saved), stdin="three\n", stub=keyed_stub)
    assert second.returncode == 0
    assert second.stdout.splitlines()[2:] == [f"(loaded 5 messages from {saved})", "you: three",
                                              "nora: I got 6 messages; the last one says 'three'."]
    assert keyed_stub.chat_requests[-1].messages == document["messages"] + [user("three")]
    assert json.loads(saved.read_text()) == document  # --load alone never writes the file
    assert_no_key(first.stdout, second.stdout, saved.read_text())


def test_save_over_an_earlier_conversation_says_so_before_the_first_turn(keyed_stub, tmp_path):
    # it was replaced at the first turn without a word: yesterday's chat lost to `nora chat --save chat.json`
    saved = tmp_path / "chat.json"
    assert nora("chat", *FAST, "--save", str(saved), stdin="one\ntwo\n", stub=keyed_stub).returncode == 0
    kept = saved.read_bytes()
    heads_up = f"({saved} holds an earlier conversation (5 messages): your first turn replaces it; --load {saved} goes on with it)"
    quiet = nora("chat", *FAST, "--save", str(saved), stdin="", stub=keyed_stub)  # Ctrl-D at once: nothing lost
    assert heads_up in quiet.stdout.splitlines() and saved.read_bytes() == kept
    again = nora("chat", *FAST, "--save", str(saved), stdin="three\n", stub=keyed_stub)
    assert again.stdout.splitlines()[2] == heads_up and len(json.loads(saved.read_text())["messages"]) == 3
    resumed = nora("chat", *FAST, "--load", str(saved), "--save", str(saved), stdin="four\n", stub=keyed_stub)
    assert "earlier conversation" not in resumed.stdout  # going on with it: nothing is replaced
    empty = tmp_path / "empty.json"
    empty.write_text("")
    assert "earlier conversation" not in nora("chat", *FAST, "--save", str(empty), stdin="", stub=keyed_stub).stdout


BROKEN = {
    "not-json.json": b'{"messages": [',
    "wrong-role.json": json.dumps([{"role": "wizard", "content": "hi"}]).encode(),
    "not-a-string.json": json.dumps({"messages": [{"role": "user", "content": 42}]}).encode(),
    "latin1.json": '[{"role": "user", "content": "caf\xe9"}]'.encode("latin-1"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_load_file_is_refused_and_untouched(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(BROKEN[name])
    result = nora("chat", "--backend", "scripted", "--load", str(path), "--save", str(path), stdin="hi\n")
    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(f"nora: cannot load {path}:")
    assert path.read_bytes() == BROKEN[name]


MARKDOWN_EXPORT = "it is a Markdown export, for reading: load the conversation's .json transcript instead"


def test_a_md_file_gets_markdown_to_read_and_loading_it_is_one_line(tmp_path):
    """--save and /save to a .md name write a document to read; --load and /load of it are refused in one line
    (it was JSON under a .md name, and the next nora chat --load read it back)."""
    notes, copy = tmp_path / "notes.md", tmp_path / "copy.markdown"
    tricky = "# not a heading ``` <script>x()</script>"
    result = nora("chat", "--backend", "scripted", "--save", str(notes),
                  stdin=f"{tricky}\n/save {copy}\n/load {notes}\nagain\n")
    assert result.returncode == 0
    assert result.stderr == f"(cannot load {notes}: {MARKDOWN_EXPORT}; the conversation is unchanged)\n"
    assert result.stdout.splitlines()[4:] == [
        f"you: /save {copy}", f"(saved 3 messages to {copy})", f"you: /load {notes}",
        "you: again", "nora: [scripted reply 2] I was sent 4 messages; the last one says: 'again'"]
    document = notes.read_text(encoding="utf-8")
    assert document.startswith("# A conversation, saved by Nora\n") and notes.stat().st_mode & 0o777 == 0o600
    blocks = [html.unescape(b) for b in re.findall(r'<code class="language-text">(.*?)</code>',
                                                   markdown_to_html(document), re.DOTALL)]
    assert blocks == [SYSTEM_PROMPT + "\n", tricky + "\n",
                      f"[scripted reply 1] I was sent 2 messages; the last one says: {tricky!r}\n",
                      "again\n", "[scripted reply 2] I was sent 4 messages; the last one says: 'again'\n"]
    assert "## 0 · system (the persona)" in document and "Model `scripted`, temperature 0.7, 5 messages." in document
    loaded = nora("chat", "--backend", "scripted", "--load", str(copy), stdin="hi\n")
    assert (loaded.returncode, loaded.stdout) == (1, "")
    assert loaded.stderr == f"nora: cannot load {copy}: {MARKDOWN_EXPORT}\n"


def test_ask_refuses_a_md_history_file_before_anything_is_sent(keyed_stub, tmp_path):
    """nora ask reads its --history file back next time: a Markdown one could be written, never read."""
    for path in (tmp_path / "new.md", tmp_path / "old.md"):
        if path.name == "old.md":
            path.write_text(json.dumps({"messages": [SYSTEM, user("Hi"), assistant("Hello.")]}))
        before = path.read_bytes() if path.exists() else None
        result = nora("ask", *FAST, "--history", str(path), "Next?", stub=keyed_stub)
        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr == (f"nora: error: --history: {str(path)!r} would be saved as Markdown, which nora ask "
                                 "cannot read back: give a .json file (for Markdown, /save FILE.md in nora chat)\n")
        assert len(result.stderr.replace(str(path), "x.md")) <= 160  # read at a glance (it was 177)
        assert (path.read_bytes() if path.exists() else None) == before
    assert keyed_stub.chat_requests == []


def test_a_reader_that_leaves_is_not_a_server_error(tmp_path):
    # `... | nora chat | head -3`: the closed pipe was reported as "could not reach the server"
    err = tmp_path / "err.txt"
    script = (f"yes hello | head -2000 | {shlex.quote(sys.executable)} -m nora_widgets.cli chat --backend scripted "
              f"2>{shlex.quote(str(err))} | head -3")
    done = subprocess.run(["bash", "-c", script + "; echo ${PIPESTATUS[2]} >&2"], env=nora_env(),
                          capture_output=True, text=True, timeout=60)
    assert len(done.stdout.splitlines()) == 3
    assert err.read_text() == ""
    assert done.stderr == "0\n"  # nora's own exit status


def test_ask_with_a_history_file_whose_reader_leaves_says_the_turn_is_not_saved(keyed_stub, tmp_path):
    # `nora ask --history h.json ... | head -1`: the reader left mid-answer, the turn was rolled back and
    # the file not written, and nothing said so (exit 0): the next ask went on without that turn
    history = tmp_path / "h.json"
    keyed_stub.enqueue(ok("\n".join(f"line {i} of the answer" for i in range(300)), delay=0.002))
    script = (f"{shlex.quote(sys.executable)} -m nora_widgets.cli ask --max-retries 0 --history "
              f"{shlex.quote(str(history))} 'Tell me everything' | head -1; echo \"status ${{PIPESTATUS[0]}}\" >&2")
    done = subprocess.run(["bash", "-c", script], env=nora_env(keyed_stub), capture_output=True, text=True,
                          timeout=60)
    assert done.stdout == "line 0 of the answer\n"
    assert done.stderr == (f"(not saved to {history}: stdout's reader left before the whole answer was written; "
                           "this turn is not in it)\nstatus 0\n")
    assert not history.exists()


def until_waiting(proc: subprocess.Popen, timeout: float = 15) -> None:
    """Return once the child is asleep in a system call (waiting for a key or for the server).

    CPython checks for a pending signal just before it blocks in read()/select(); a SIGINT landing in
    the microseconds between that check and the block waits until the call returns.  A person never
    hits that window; a test that signals the instant the prompt appears can, so it waits until
    /proc shows the child asleep ("S") a few polls in a row.  Without /proc: a pause instead.
    """
    stat = Path(f"/proc/{proc.pid}/stat")
    if not stat.exists():
        time.sleep(0.3)
        return
    deadline, asleep = time.monotonic() + timeout, 0
    while asleep < 3:
        assert proc.poll() is None and time.monotonic() < deadline, "nora never sat waiting"
        state = stat.read_text().rsplit(")", 1)[1].split()[0]  # "pid (name) STATE ..."
        asleep = asleep + 1 if state == "S" else 0
        time.sleep(0.01)


def reading(proc: subprocess.Popen) -> tuple[bytearray, threading.Thread, Callable[[bytes], None]]:
    """(seen, reader, wait_for) for a running nora: everything it has written so far (a thread reads its
    stdout as it comes), and wait_for(text), which returns once text is in it (fails after 15 s, or as
    soon as the process has ended without writing it)."""
    seen = bytearray()
    reader = threading.Thread(target=lambda: [seen.extend(b) for b in iter(lambda: proc.stdout.read1(4096), b"")],
                              daemon=True)
    reader.start()

    def wait_for(text: bytes) -> None:
        deadline = time.monotonic() + 15
        while text not in seen:
            ended = proc.poll() is not None and not reader.is_alive()
            assert time.monotonic() < deadline and not ended, f"never saw {text!r} in {bytes(seen)!r}"
            time.sleep(0.01)
    return seen, reader, wait_for


def test_ctrl_c_at_the_prompt_and_mid_stream(keyed_stub):
    """SIGINT at the prompt keeps the session; SIGINT while a stream stalls drops the half
    reply, rolls the turn back, and the next turn goes out without it."""
    keyed_stub.enqueue(stall(20.0, after_pieces=2, text="one two three four"))
    proc = subprocess.Popen([sys.executable, "-m", "nora_widgets.cli", "chat", "--max-retries", "0"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=nora_env(keyed_stub), preexec_fn=helpers.sigint_as_in_a_terminal)
    seen, reader, wait_for = reading(proc)
    try:
        wait_for(b"Ctrl-D to leave)\n")
        until_waiting(proc)
        proc.send_signal(signal.SIGINT)  # at the prompt
        wait_for(b"(Ctrl-C: type quit or press Ctrl-D to leave)\n")
        proc.stdin.write(b"first\n")
        proc.stdin.flush()
        wait_for(b"nora: one two")
        until_waiting(proc)
        proc.send_signal(signal.SIGINT)  # mid-stream
        wait_for(b"rolled back")
        proc.stdin.write(b"second\nquit\n")
        proc.stdin.close()
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(5)
    assert bytes(seen).decode().splitlines() == header(keyed_stub) + [
        "(Ctrl-C: type quit or press Ctrl-D to leave)",
        "you: first",
        "nora: one two [reply dropped]",
        "(error talking to the model: cancelled - the turn was rolled back; send it again when ready)",
        "you: second",
        "nora: I got 2 messages; the last one says 'second'.",
        "you: quit",
    ]
    assert [r.messages for r in keyed_stub.chat_requests] == [[SYSTEM, user("first")], [SYSTEM, user("second")]]


class PtySession:
    """`nora ARGS` on a pseudo-terminal, read the way a person reads the screen.

    wait_for(text) waits until text shows up after what the previous wait_for matched,
    so each step needs new output; type(keys) presses keys; leaving the with-block kills
    nora if it is still running and closes the terminal.
    Example: with PtySession(["chat", "--backend", "scripted"], nora_env()) as term: term.wait_for(b"you: ")
    """

    def __init__(self, args: list[str], env: dict, stdout=None, program: list[str] | None = None,
                 stderr=None) -> None:
        """stdout, stderr: a file for nora's stdout (`nora chat > log.txt`) or stderr; by default the terminal.
        program: what runs instead of `python -m nora_widgets.cli` (args follow it)."""
        pty = pytest.importorskip("pty")
        import fcntl
        import termios

        try:
            self.master, self.slave = pty.openpty()
        except OSError as exc:
            pytest.skip(f"no pseudo-terminal here: {exc}")
        self.settings_before = termios.tcgetattr(self.slave)
        self.proc = subprocess.Popen(  # the pty becomes the child's controlling terminal, so ^C is a real SIGINT
            [*(program or [sys.executable, "-m", "nora_widgets.cli"]), *args],
            stdin=self.slave, stdout=self.slave if stdout is None else stdout,
            stderr=self.slave if stderr is None else stderr, env=env, close_fds=True,
            preexec_fn=lambda: (os.setsid(), fcntl.ioctl(0, termios.TIOCSCTTY, 0), helpers.sigint_as_in_a_terminal()),
        )
        self.screen = b""  # everything nora has written so far
        self.at = 0  # where the next wait_for starts looking

    def wait_for(self, text: bytes, timeout: float = 15) -> None:
        import select

        deadline = time.monotonic() + timeout
        while text not in self.screen[self.at:]:
            assert time.monotonic() < deadline, f"never saw {text!r} in {self.screen!r}"
            if select.select([self.master], [], [], 0.05)[0]:
                self.screen += os.read(self.master, 4096)
        self.at = self.screen.index(text, self.at) + len(text)

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def resize(self, rows: int, columns: int) -> None:
        """The window resized, as a terminal does it: the new size, and SIGWINCH to nora."""
        import fcntl
        import struct
        import termios

        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    def terminal_settings(self) -> list:
        import termios

        return termios.tcgetattr(self.slave)

    def __enter__(self) -> "PtySession":
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        os.close(self.slave)
        os.close(self.master)


def test_real_terminal_prompt_ctrl_c_and_ctrl_d():
    """On a TTY: a 'you: ' prompt, the reply, Ctrl-C at the prompt keeps the session, Ctrl-D leaves with 0."""
    with PtySession(["chat", "--backend", "scripted"], nora_env(TERM="dumb")) as term:
        term.wait_for(b"you: ")
        term.type(b"Do you have Dune?\r")
        term.wait_for(b"the last one says: 'Do you have Dune?'\r\nyou: ")
        until_waiting(term.proc)
        term.type(b"\x03")  # Ctrl-C at the prompt
        term.wait_for(b"(Ctrl-C: type quit or press Ctrl-D to leave)\r\nyou: ")
        term.type(b"\x04")  # Ctrl-D
        assert term.proc.wait(15) == 0
    assert term.screen.startswith(b"Nora chat: scripted stand-in")


def test_real_terminal_ctrl_c_mid_reply_rolls_back_and_restores_the_terminal(keyed_stub):
    """On a TTY, ^C while a reply streams in: the half reply is dropped, the turn rolled back, the
    prompt comes back with echo on, and when nora leaves the terminal settings are as they were."""
    keyed_stub.enqueue(stall(20.0, after_pieces=2, text="one two three four"), ok("Welcome back."))
    with PtySession(["chat", "--max-retries", "0"], nora_env(keyed_stub, TERM="dumb")) as term:
        term.wait_for(b"you: ")
        term.type(b"Tell me a story\r")
        term.wait_for(b"nora: one two")
        until_waiting(term.proc)
        term.type(b"\x03")  # Ctrl-C mid-reply: the terminal turns it into SIGINT
        term.wait_for(b" [reply dropped]\r\n(error talking to the model: cancelled - the turn was rolled back; "
                      b"send it again when ready)\r\nyou: ")
        term.type(b"hello\r")
        term.wait_for(b"hello")  # what is typed shows: echo is on
        term.wait_for(b"nora: Welcome back.\r\nyou: ")
        term.type(b"\x04")  # Ctrl-D
        assert term.proc.wait(15) == 0
        assert term.terminal_settings() == term.settings_before  # the terminal is left as nora found it
    assert [r.messages for r in keyed_stub.chat_requests] == [[SYSTEM, user("Tell me a story")],
                                                              [SYSTEM, user("hello")]]


def test_keys_typed_while_a_reply_streams_wait_for_the_next_prompt(keyed_stub):
    """Type-ahead: the terminal echoed keys typed mid-reply into the reply ('nora: one twoWhat about three'),
    and an Enter typed then sent a turn nobody saw.  Now the reply shows alone, and what was typed is the
    start of the next line, ready to edit; an Enter typed early is a space in it; only a new Enter sends."""
    pytest.importorskip("readline")
    keyed_stub.enqueue(ok("one two three four five six", delay=0.4), ok("Fine."))
    with PtySession(["chat", "--max-retries", "0"], nora_env(keyed_stub, TERM="dumb", INPUTRC="/dev/null")) as term:
        term.wait_for(b"you: ")
        term.type(b"Count to six\r")
        term.wait_for(b"nora: one two")
        term.type(b"What about\rseven?")  # mid-reply, with an Enter in it
        term.wait_for(b" six\r\nyou: ")
        reply = term.screen[term.screen.index(b"nora: one"):term.at]
        assert reply == b"nora: one two three four five six\r\nyou: "  # nothing typed inside the reply
        term.wait_for(b"What about seven?")  # at the prompt, to edit
        time.sleep(0.5)
        assert len(keyed_stub.chat_requests) == 1  # the Enter typed mid-reply sent nothing
        term.type(b"\x7f!\r")  # Backspace and a letter: the line is an ordinary one
        term.wait_for(b"nora: Fine.\r\nyou: ")
        term.type(b"\x04")
        assert term.proc.wait(15) == 0
        assert term.terminal_settings() == term.settings_before  # echo on again, as nora found it
    assert [r.messages[-1] for r in keyed_stub.chat_requests] == [user("Count to six"), user("What about seven!")]


@pytest.mark.parametrize("typed, line", [
    ("What abt\x7f\x7fbout\rseven?\x1b[A", "What about seven?"),  # Backspace, Enter, Up
    ("first line\nsecond line\n", "first line second line "),  # a paste: one line, sent by the next Enter
    ("oops\x15again", "again"),  # Ctrl-U
    ("\x1bOA\x04\x1b[1;5Ccafé", "café"),  # keys that are not text go
    ("\r\r", ""),
])
def test_type_ahead_reads_keys_as_a_line(typed, line):
    from nora_widgets._type_ahead import as_line

    assert as_line(typed) == line

def history_env(tmp_path: Path) -> dict:
    """nora_env with the input history kept where a person's would be, in tmp_path."""
    env = nora_env(TERM="dumb", INPUTRC="/dev/null", HOME=str(tmp_path / "home"), XDG_STATE_HOME=str(tmp_path / "state"))
    del env["NORA_HISTORY_FILE"]
    return env


def test_a_line_typed_in_one_session_is_recalled_with_up_in_the_next(tmp_path):
    # Up recalled only the lines of the session in progress: each nora chat started with an empty history
    pytest.importorskip("readline")
    kept = tmp_path / "state" / "nora" / "history"
    for typed in [b"Do you have Dune?\r", b"my key is sk-proj-" + b"A" * 24 + b"\r"]:  # two sessions of one line
        with PtySession(["chat", "--backend", "scripted"], history_env(tmp_path)) as term:
            term.wait_for(b"you: ")
            term.type(typed)
            term.wait_for(b"nora: ")
            term.wait_for(b"you: ")
            term.type(b"\x04")
            assert term.proc.wait(15) == 0
    assert kept.read_text() == "Do you have Dune?\n"  # the line like a key is not kept
    assert kept.stat().st_mode & 0o777 == 0o600 and kept.parent.stat().st_mode & 0o777 == 0o700
    with PtySession(["chat", "--backend", "scripted"], history_env(tmp_path)) as term:
        term.wait_for(b"you: ")
        term.type(b"\x1b[A")  # Up: the line of the first session (the key's line is this process's no more)
        term.wait_for(b"Do you have Dune?")
        term.type(b" Or Emma?\r")
        term.wait_for(b"the last one says: 'Do you have Dune? Or Emma?'\r\nyou: ")
        term.type(b"\x04")
        assert term.proc.wait(15) == 0
    assert kept.read_text().splitlines() == ["Do you have Dune?", "Do you have Dune? Or Emma?"]
    assert not (tmp_path / "home").exists()  # XDG_STATE_HOME chose the place


def test_a_piped_session_keeps_no_input_history(tmp_path):
    done = helpers.run_nora("chat", "--backend", "scripted", env=history_env(tmp_path), stdin="Do you have Dune?\n")
    assert done.returncode == 0 and "Do you have Dune?" in done.stdout
    assert not (tmp_path / "state").exists()


def test_the_input_history_file_keeps_its_last_lines(tmp_path):
    readline = pytest.importorskip("readline")
    from nora_widgets._input_history import HISTORY_LINES, load_history, save_history

    path = tmp_path / "history"
    path.write_text("".join(f"old {i}\n" for i in range(HISTORY_LINES)))
    readline.clear_history()
    try:
        start = load_history(path)
        assert start == HISTORY_LINES and readline.get_history_item(start) == f"old {HISTORY_LINES - 1}"
        for line in ["new 1", "sk-" + "k" * 40, "two\nlines", "new 2"]:
            readline.add_history(line)
        save_history(path, start)
    finally:
        readline.clear_history()
    lines = path.read_text().splitlines()
    assert len(lines) == HISTORY_LINES and lines[:1] == ["old 2"] and lines[-3:] == [f"old {HISTORY_LINES - 1}", "new 1", "new 2"]
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("env, where", [
    ({"HOME": "/home/ann"}, "/home/ann/.local/state/nora/history"),
    ({"HOME": "/home/ann", "XDG_STATE_HOME": "/var/ann"}, "/var/ann/nora/history"),
    ({"HOME": "/home/ann", "XDG_STATE_HOME": "relative"}, "/home/ann/.local/state/nora/history"),  # ignored, as the spec says
    ({"HOME": "/home/ann", "NORA_HISTORY_FILE": "~/nora.txt"}, "/home/ann/nora.txt"),
    ({"HOME": "/home/ann", "NORA_HISTORY_FILE": ""}, None),  # none kept
])
def test_where_the_input_history_is_kept(env, where, monkeypatch):
    from nora_widgets._input_history import history_path

    monkeypatch.setenv("HOME", env["HOME"])  # for the ~ of NORA_HISTORY_FILE
    assert history_path(env) == (None if where is None else Path(where))

def test_chat_with_stdout_in_a_file_keeps_line_editing_on_the_terminal_and_a_transcript_in_the_file(tmp_path):
    # `nora chat > log.txt`: input() gives up readline when stdout is not a terminal, so the prompt went
    # into the file, the screen showed none, Up sent the escape sequence '\x1b[A' to the model as a
    # message, and the file read 'you: nora: ...' without what was typed
    pytest.importorskip("readline")
    log = tmp_path / "log.txt"
    with open(log, "w") as file, PtySession(["chat", "--backend", "scripted"],
                                             nora_env(TERM="dumb", INPUTRC="/dev/null"), stdout=file) as term:
        term.wait_for(b"you: ")  # the prompt is on the terminal, where the typing is
        term.type(b"Helo\x1b[Dl\r")  # Left, then a letter: line editing
        term.wait_for(b"you: ")
        term.type(b"\x1b[A\r")  # Up: the line before, again
        term.wait_for(b"you: ")
        term.type(b"/nope\r")
        term.wait_for(b"(unknown command /nope: type /help for the list)\r\nyou: ")  # stderr: the terminal
        term.type(b"\x04")
        assert term.proc.wait(15) == 0
    assert b"nora:" not in term.screen  # the replies went to the file, as asked
    assert log.read_text().splitlines() == [
        "Nora chat: scripted stand-in (canned replies, no model)",
        "(type /help for commands; quit or Ctrl-D to leave)",
        "you: Hello", "nora: [scripted reply 1] I was sent 2 messages; the last one says: 'Hello'",
        "you: Hello", "nora: [scripted reply 2] I was sent 4 messages; the last one says: 'Hello'",
        "you: /nope",
    ]


@pytest.mark.parametrize("command", [["chat"], ["ask", "Any Le Guin?"]])
def test_ctrl_c_before_the_first_word_says_so_on_a_line_of_its_own(keyed_stub, command):
    # the terminal echoes ^C where the cursor is, and the line went on after it:
    # '^C(error talking to the model: cancelled - ...)'
    keyed_stub.enqueue(stall(20.0))
    with PtySession([*command, "--max-retries", "0"], nora_env(keyed_stub, TERM="dumb")) as term:
        if command == ["chat"]:
            term.wait_for(b"you: ")
            term.type(b"Any Le Guin?\r")
        keyed_stub.wait_for_requests(1)
        until_waiting(term.proc)
        term.type(b"\x03")  # within the first 2 s: no waiting note yet
        term.wait_for(b"(error talking to the model: cancelled - the turn was rolled back")
        if command == ["chat"]:
            term.wait_for(b"you: ")
            term.type(b"\x04")
        assert term.proc.wait(15) == (0 if command == ["chat"] else 130)
    line = term.screen.split(b"(error talking to the model: cancelled")[0].rsplit(b"\n", 1)[-1]
    assert line.rsplit(b"\r", 1)[-1] == b""  # back at the start of the line: the ^C is written over


READS_SLOWLY = '''
import hashlib, sys
from nora_widgets.cli import main


class ReadsSlowly:
    """The scripted stand-in behind one long C call that Ctrl-C cannot cut short, as llama.cpp
    reading 512 tokens of a long prompt on a slow machine."""

    def __init__(self, client):
        self.inner, self.chat, self.completions = client, self, self

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def create(self, **kwargs):
        hashlib.pbkdf2_hmac("sha256", b"key", b"salt", 10_000_000)  # seconds in C, the GIL let go
        return self.inner.chat.completions.create(**kwargs)


sys.exit(main(wrap=ReadsSlowly))
'''


def test_ctrl_c_during_a_long_c_call_is_answered_at_once_and_stops_the_turn_when_it_returns(tmp_path):
    # the embedded model reading a long prompt: Python acts on Ctrl-C only when llama.cpp's call returns,
    # seconds later on a slow machine (8.7 s measured for 1,800 tokens on 2 busy cores), and meanwhile
    # nothing showed that the key was heard; the note went on saying 'Ctrl-C gives up'
    script = tmp_path / "reads_slowly.py"
    script.write_text(READS_SLOWLY)
    with PtySession(["chat", "--backend", "scripted"], nora_env(TERM="dumb"),
                    program=[sys.executable, str(script)]) as term:
        term.wait_for(b"you: ")
        term.type(b"A long text to read\r")
        term.wait_for(b"A long text to read\r\n")
        time.sleep(0.3)
        term.type(b"\x03")
        term.wait_for(b"(Ctrl-C: stopping the model)")
        assert b"cancelled" not in term.screen  # said while the C call still runs
        term.wait_for(b"\r(error talking to the model: cancelled - the turn was rolled back; send it again when ready)"
                      b"\r\nyou: ")
        term.type(b"/history\r")
        term.wait_for(b"(next call sends this 1 message plus your new one)\r\nyou: ")  # rolled back
        term.type(b"\x04")
        assert term.proc.wait(15) == 0
    assert b"scripted reply" not in term.screen


def test_ctrl_c_at_the_prompt_with_stderr_in_a_file_starts_the_next_prompt_on_a_new_line(tmp_path):
    # `nora chat 2> err.txt`: the newline after the interrupted prompt went into the file with the line,
    # so the terminal showed 'you: you: ' and the file began with a blank line
    err = tmp_path / "err.txt"
    with open(err, "w") as file, PtySession(["chat", "--backend", "scripted"], nora_env(TERM="dumb"),
                                             stderr=file) as term:
        term.wait_for(b"you: ")
        until_waiting(term.proc)
        term.type(b"\x03")
        term.wait_for(b"\r\nyou: ")  # right after the first prompt: nothing else on the terminal
        term.type(b"\x04")
        assert term.proc.wait(15) == 0
    assert term.screen.endswith(b"leave)\r\nyou: \r\nyou: ")
    assert err.read_text() == "(Ctrl-C: type quit or press Ctrl-D to leave)\n"


def test_a_reply_slow_to_start_is_counted_on_the_terminal_then_the_line_is_cleared(keyed_stub):
    # a learner tenth in a shared server's queue saw a blank line for half a minute, as if nora had hung
    # the timeout leaves the 3.5 s wait 1.5 s of room: with none (--timeout 3.5) a busy machine timed it out
    keyed_stub.enqueue(ok("Yes, two.", wait=3.5), stall(6.0))
    with PtySession(["chat", "--max-retries", "0", "--timeout", "5"], nora_env(keyed_stub, TERM="dumb")) as term:
        term.wait_for(b"you: ")
        term.type(b"Any Le Guin?\r")
        note = b"(waiting 2 s: the server may be busy with others' replies. Ctrl-C gives up)"
        term.wait_for(b"\r" + note)
        term.wait_for(b"\r(waiting 3 s: ")  # counted on, on the same line
        blank = b"\r" + b" " * len(note) + b"\r"
        term.wait_for(blank + b"nora: Yes, two.\r\nyou: ")  # cleared before the reply
        term.type(b"Again?\r")  # a timeout: the line is cleared before the failure is said
        term.wait_for(blank + b"(error talking to the model: the request timed out")
        term.wait_for(b"you: ")
        until_waiting(term.proc)
        term.type(b"\x04")
        assert term.proc.wait(15) == 0
    with PtySession(["chat", "--backend", "scripted"], nora_env(TERM="dumb")) as term:  # a quick reply: no note
        term.wait_for(b"you: ")
        term.type(b"Hi\r")
        term.wait_for(b"you: ")
        term.type(b"\x04")
        assert term.proc.wait(15) == 0
    assert b"waiting" not in term.screen


@contextlib.contextmanager
def asked_with_a_slow_reply(stub, columns: int, wait: float):
    """`nora chat` on a pty `columns` wide, that has just asked 'Any Le Guin?' of a stub answering
    'Yes, two.' after `wait` seconds; on leaving the block: the reply is awaited, and Ctrl-D ends
    the session with status 0.  term.screen holds everything shown."""
    stub.enqueue(ok("Yes, two.", wait=wait))
    with PtySession(["chat", "--max-retries", "0", "--timeout", "8"], nora_env(stub, TERM="dumb")) as term:
        term.resize(24, columns)
        term.wait_for(b"you: ")
        term.type(b"Any Le Guin?\r")
        yield term
        term.wait_for(b"nora: Yes, two.\r\nyou: ")
        term.type(b"\x04")
        assert term.proc.wait(15) == 0


def test_a_window_made_narrow_while_waiting_keeps_the_waiting_note_on_one_line(keyed_stub):
    # the width was read once per turn: narrowed to 30 columns mid-wait, each second's 75-character note
    # wrapped over 3 rows, so '\\r' went back to the start of the last one and the screen filled with notes
    with asked_with_a_slow_reply(keyed_stub, columns=80, wait=4.5) as term:
        term.wait_for(b"\r(waiting 2 s: the server may be busy with others' replies. Ctrl-C gives up)")
        term.resize(24, 30)
        narrowed = len(term.screen)
    written = term.screen[narrowed:term.screen.index(b"nora: Yes, two.")]
    assert b"(waiting 3 s" in written or b"(waiting 4 s" in written
    assert all(len(piece) < 30 for piece in written.split(b"\r")), written  # each rewrite fits the new width


def test_at_40_columns_the_waiting_note_drops_its_reason_and_keeps_how_to_give_up(keyed_stub):
    # cut to the width, the note lost its end: '(waiting 2 s: the server may be busy wi', no 'Ctrl-C gives up'
    with asked_with_a_slow_reply(keyed_stub, columns=40, wait=3.5) as term:
        term.wait_for(b"\r(waiting 2 s. Ctrl-C gives up)")


@pytest.mark.parametrize("columns", [80, 40])
def test_help_fits_the_terminal_each_description_under_its_column(columns):
    # /help's lines ran to 111 characters: at 80 columns 12 of 15 wrapped mid-word back to the first column
    with PtySession(["chat", "--backend", "scripted"], nora_env(TERM="dumb")) as term:
        term.resize(24, columns)
        term.wait_for(b"you: ")
        term.type(b"/help\r")
        term.wait_for(b"/help\r\n")
        term.wait_for(b"message\r\nyou: ")
        term.type(b"\x04")
        assert term.proc.wait(15) == 0
    shown = term.screen.split(b"/help\r\n", 1)[1].rsplit(b"\r\nyou: ", 1)[0].decode().split("\r\n")
    assert shown[0] == "commands:" and all(len(line) < columns for line in shown)
    assert all(line.startswith(("  /", "  quit", '  """', " " * 18)) for line in shown[1:])
    assert " ".join(" ".join(shown).split()) == " ".join(cli.HELP_TEXT.split())  # the same words as through a pipe


def test_sigterm_at_the_prompt_and_mid_reply_leaves_the_terminal_as_it_was(keyed_stub, tmp_path):
    """SIGTERM (kill, a closing IDE, systemd) at the prompt killed nora inside readline, leaving the
    terminal without echo; now nora leaves as Ctrl-D does: the terminal restored, one line, exit 143.
    Mid-reply, the half reply is marked dropped and the --save file keeps the whole turns only."""
    saved = tmp_path / "chat.json"
    keyed_stub.enqueue("Yes, two.", stall(20.0, after_pieces=2, text="one two three four"))
    with PtySession(["chat", "--max-retries", "0", "--save", str(saved)], nora_env(keyed_stub, TERM="dumb")) as term:
        term.wait_for(b"you: ")
        term.type(b"Any Le Guin?\r")
        term.wait_for(b"nora: Yes, two.\r\nyou: ")
        term.type(b"Tell me a story\r")
        term.wait_for(b"nora: one two")
        until_waiting(term.proc)
        term.proc.send_signal(signal.SIGTERM)
        term.wait_for(b" [reply dropped]\r\n(nora chat stopped by SIGTERM; every whole turn is in ")
        assert term.proc.wait(15) == 128 + signal.SIGTERM
        assert term.terminal_settings() == term.settings_before
    assert json.loads(saved.read_text())["messages"] == [SYSTEM, user("Any Le Guin?"), assistant("Yes, two.")]
    with PtySession(["chat", "--backend", "scripted"], nora_env(TERM="dumb", INPUTRC="/dev/null")) as term:
        term.wait_for(b"Ctrl-D to leave)\r\n")
        until_waiting(term.proc)  # inside readline, which has turned echo off
        term.proc.send_signal(signal.SIGTERM)
        term.wait_for(b"you: \r\n(nora chat stopped by SIGTERM)\r\n")  # the shell's prompt starts a new line
        assert term.proc.wait(15) == 128 + signal.SIGTERM
        assert term.terminal_settings() == term.settings_before  # echo back on, as nora found it


@pytest.mark.parametrize("text,line,offered", [
    ("/hi", "/hi", ["/history"]),
    ("/s", "/s", ["/system", "/save", "/sent"]),
    ("/TE", "/TE", ["/temperature"]),  # commands are read in any case
    ("/mo", "/mo", ["/model"]),
    ("/x", "/x", []),
    ("//", "//", []),  # //text is a message
    ("hi", "hi", []),  # a message: nothing to complete
    ("/hi", "tell me /hi", []),  # a '/' inside a message is not a command
    ("/", "/history /", []),  # after a command that takes no file name
])
def test_tab_completes_slash_command_names(text, line, offered):
    from nora_widgets._chat_session import completions

    assert completions(text, line) == offered


def test_every_slash_command_is_offered_by_tab():
    from nora_widgets._chat_session import COMMANDS

    session = cli.ChatSession(ScriptedClient(), [SYSTEM], out=io.StringIO(), err=io.StringIO())
    assert set(COMMANDS) == set(session._handlers()) | {"/quit", "/exit"}
    assert all(f"  {name}" in cli.HELP_TEXT or name in ("/quit", "/exit") for name in COMMANDS)


def test_tab_after_save_or_load_completes_file_names_with_the_home_folder_as_typed(monkeypatch, tmp_path):
    from nora_widgets._chat_session import completions

    (tmp_path / "notes" / "chapters").mkdir(parents=True)
    for name in ("notes/chat.json", "notes/.hidden", "a.json", "my chat.json"):
        (tmp_path / name).write_text("{}")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert completions("notes/ch", "/save notes/ch") == ["notes/chapters/", "notes/chat.json"]  # a folder ends in /
    assert completions("", "/load ") == ["a.json", "my chat.json", "notes/"]  # no hidden files...
    assert completions("notes/.", "/LOAD notes/.") == ["notes/.hidden"]  # ...unless asked for
    assert completions("~/notes/c", "/save ~/notes/c") == ["~/notes/chapters/", "~/notes/chat.json"]  # ~ kept
    assert completions("~", "/load ~") == ["~/"]
    assert completions(f"{tmp_path}/a", f"/load {tmp_path}/a") == [f"{tmp_path}/a.json"]
    assert completions('"my', '/save "my') == ['"my chat.json"']  # a quote typed first stays, and is closed
    assert completions("x", "/save a x") == []  # one file name only
    assert completions("a", "/trim a") == []  # not a command that takes a file
    assert completions("missing/a", "/load missing/a") == completions("a.json/", "/load a.json/") == []


def test_tab_after_model_completes_the_names_given_and_default():
    from nora_widgets._chat_session import completions

    names = ["llama3.2:latest", "llava", "qwen2.5", "my model"]  # e.g. Ollama's tags
    assert completions("l", "/model l", names) == ["llama3.2:latest", "llava"]
    assert completions("", "/model ", names) == ["llama3.2:latest", "llava", "qwen2.5", "default"]  # no space in one
    assert completions("d", "/MODEL d", names) == completions("D", "/model D", names) == ["default"]
    assert completions("L", "/model L", names) == []  # a model's name is taken as typed
    assert completions("", "/model ", None) == completions("", "/model ", []) == ["default"]  # no list: default
    assert completions("d", "/model d", ["default", "deepseek"]) == ["default", "deepseek"]  # default once
    assert completions("q", "/model a q", names) == completions("q", "/trim q", names) == []  # one name, after /model
    assert completions("q", "tell me /model q", names) == []


def test_tab_after_model_asks_the_server_for_its_names_once_and_only_after_model():
    # the list comes from GET /models: asked on the first Tab after /model, not on any other Tab, and
    # kept for the session (/model NAME's note uses it too); --model given, so the start asked nothing
    from nora_widgets.clients import make_client
    from tests.servers.openai_stub import StubServer

    def asked(stub):
        return sum(1 for r in stub.requests if r.path.rstrip("/").endswith("/models"))

    with StubServer(listed=["llama3.2:latest", "llava", "qwen2.5"]) as stub:
        client = make_client("openai", base_url=stub.base_url, model="qwen2.5", max_retries=0)
        session = cli.ChatSession(client, [SYSTEM], model="qwen2.5", out=io.StringIO(), err=io.StringIO())
        assert session.tab("/mo", "/mo") == ["/model"] and session.tab("q", "Tell me about q") == []
        assert asked(stub) == 0
        assert session.tab("l", "/model l") == ["llama3.2:latest", "llava"] and asked(stub) == 1
        assert session.tab("", "/model ") == ["llama3.2:latest", "llava", "qwen2.5", "default"]
        session.command("/model llama3")
        assert "the server lists 3 models (llama3.2:latest, llava, qwen2.5), not 'llama3'" in session.out.getvalue()
        assert asked(stub) == 1 and stub.chat_requests == []
    with StubServer(listed=["llama3.2", "qwen2.5"]) as stub:  # no --model: the start asked, Tab reuses that list
        client = make_client("openai", base_url=stub.base_url, max_retries=0)
        session = cli.ChatSession(client, [SYSTEM], out=io.StringIO(), err=io.StringIO())
        assert asked(stub) == 1 and session.tab("", "/model ") == ["llama3.2", "qwen2.5", "default"]
        assert asked(stub) == 1
    scripted = cli.ChatSession(ScriptedClient(), [SYSTEM], out=io.StringIO(), err=io.StringIO())
    assert scripted.tab("", "/model ") == ["default"]  # no server to ask


def test_tab_on_a_real_terminal_completes_commands_and_file_names(tmp_path):
    """On a TTY with readline: Tab after '/' completes a slash command, after /save a file name."""
    pytest.importorskip("readline")
    (tmp_path / "notes").mkdir()
    with PtySession(["chat", "--backend", "scripted"], nora_env(TERM="dumb", INPUTRC="/dev/null",
                                                                HOME=str(tmp_path))) as term:
        term.wait_for(b"you: ")
        term.type(b"/hi\t")
        term.wait_for(b"/history")  # completed on the line, before Enter
        term.type(b"\r")
        term.wait_for(b'"role": "system"')  # and it ran
        term.wait_for(b"(next call sends this 1 message plus your new one)\r\nyou: ")
        term.type(b"/save ~/no\t")
        term.wait_for(b"~/notes/")
        term.type(b"chat.json\r")
        term.wait_for(b"(saved 1 message to ~/notes/chat.json)\r\nyou: ")
        term.type(b"\x04")
        assert term.proc.wait(15) == 0
    assert json.loads((tmp_path / "notes" / "chat.json").read_text())["messages"] == [SYSTEM]


@pytest.mark.parametrize("locale_env", [{"LC_ALL": "C"}, {"LANG": "C"}, {"LANG": "C.UTF-8"}])
def test_backspace_over_an_accented_letter_erases_it_whole_in_any_locale(locale_env):
    # under LC_ALL=C Python reads the terminal as UTF-8 but readline erased one byte: the screen showed
    # 'Café' and the model was sent 'Café\ufffd' (half an é, made a replacement character)
    pytest.importorskip("readline")
    env = {k: v for k, v in nora_env(TERM="dumb", INPUTRC="/dev/null").items() if not k.startswith(("LC_", "LANG"))}
    with PtySession(["chat", "--backend", "scripted"], {**env, **locale_env}) as term:
        term.wait_for(b"you: ")
        term.type("Café ☕é".encode())
        term.wait_for("☕é".encode())
        term.type(b"\x7f\r")  # Backspace: the last letter, all of it
        term.wait_for("the last one says: 'Café ☕'\r\nyou: ".encode())
        term.type(b"\x04")
        assert term.proc.wait(15) == 0


def test_tab_after_model_on_a_real_terminal_completes_a_name_the_server_lists(tmp_path):
    """nora chat hands readline the session's Tab: after '/model ' it offers the server's names."""
    pytest.importorskip("readline")
    from tests.servers.openai_stub import StubServer

    with StubServer(api_key=KEY, listed=["llama3.2:latest", "qwen2.5"]) as stub, \
            PtySession(["chat", "--model", "qwen2.5"], nora_env(stub, TERM="dumb", INPUTRC="/dev/null",
                                                                HOME=str(tmp_path))) as term:
        term.wait_for(b"you: ")
        term.type(b"/model ll\t")
        term.wait_for(b"/model llama3.2:latest")  # completed on the line, before Enter
        term.type(b"\r")
        term.wait_for(b"calls ask for llama3.2:latest and send it the same list: 1 message plus your new one)\r\nyou: ")
        term.type(b"\x04")  # at the prompt: a Ctrl-D typed before it can be lost
        assert term.proc.wait(15) == 0
        assert [r.path for r in stub.requests] == ["/v1/models"]  # asked once, on the Tab


# --------------------------------------------------------------------------- #
# nora ask


def test_ask_prints_only_the_answer(keyed_stub):
    keyed_stub.enqueue("We open at nine.")
    result = nora("ask", *FAST, "When", "do", "you", "open?", stub=keyed_stub)
    assert (result.returncode, result.stdout, result.stderr) == (0, "We open at nine.\n", "")
    assert keyed_stub.chat_requests[0].messages == [SYSTEM, user("When do you open?")]


def test_ask_reads_the_question_from_stdin(keyed_stub):
    result = nora("ask", *FAST, "--no-stream", "--system", "Be brief.", "-", stdin="Is it in stock?\n",
                  stub=keyed_stub)
    assert (result.returncode, result.stdout) == (0, "I got 2 messages; the last one says 'Is it in stock?'.\n")
    body = keyed_stub.chat_requests[0].body
    assert body["messages"][0] == {"role": "system", "content": "Be brief."} and "stream" not in body


def test_ask_reads_a_piped_question_when_given_none_and_puts_stdin_where_the_dash_is(keyed_stub):
    piped = nora("ask", *FAST, "--no-stream", stdin="Is it in stock?\n", stub=keyed_stub)
    around = nora("ask", *FAST, "--no-stream", "Summarise:", "-", "(briefly)", stdin="  a long note\n\n",
                  stub=keyed_stub)
    assert (piped.returncode, around.returncode, piped.stderr + around.stderr) == (0, 0, "")
    assert [r.messages[-1] for r in keyed_stub.chat_requests] == [user("Is it in stock?"),
                                                                  user("Summarise: a long note (briefly)")]


def test_ask_with_a_dash_and_an_empty_stdin_sends_nothing(keyed_stub):
    # `git log -1 | nora ask "Explain this commit:" -` outside a repository pipes in nothing: the
    # model was sent "Explain this commit:" alone, and made a commit up
    result = nora("ask", *FAST, "Explain this commit:", "-", stdin="\n  \n", stub=keyed_stub)
    assert (result.returncode, result.stdout, keyed_stub.chat_requests) == (2, "", [])
    assert result.stderr == ("nora: error: - stands for stdin, and stdin was empty: nothing sent (pipe the text in, "
                             "or leave - out)\n")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux): a disk that is always full")
@pytest.mark.parametrize("args", [["ask", "--backend", "scripted", "Hi"], ["chat", "--backend", "scripted"],
                                  ["models", "--backend", "scripted"]], ids=["ask", "chat", "models"])
def test_a_stdout_that_cannot_be_written_is_one_line_not_a_traceback(args, tmp_path):
    # `nora ask ... > answer.txt` on a full disk ended in a traceback (OSError: No space left on device)
    history = tmp_path / "h.json"
    history.write_text('[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]')
    before = history.read_bytes()
    extra = ["--history", str(history)] if args[0] == "ask" else []
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "nora_widgets.cli", *args, *extra], input="Hi\n", text=True,
                                stdout=full, stderr=subprocess.PIPE, env=nora_env(None), cwd=tmp_path, timeout=60)
    assert (result.returncode, result.stderr) == (1, "nora: could not write to stdout: No space left on device\n")
    assert history.read_bytes() == before  # the turn was rolled back: the file is as it was


def test_ask_with_no_question_at_a_keyboard_says_so_instead_of_waiting(tmp_path):
    pty = pytest.importorskip("pty")
    master, slave = pty.openpty()
    try:
        result = subprocess.run([sys.executable, "-m", "nora_widgets.cli", "ask", "--backend", "scripted"],
                                stdin=slave, capture_output=True, text=True, timeout=30, env=nora_env(None),
                                cwd=tmp_path)
    finally:
        os.close(master)
        os.close(slave)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "nora: error: nothing to ask: give a question, or pipe one in (- stands for stdin)\n"


def test_ask_dash_at_a_keyboard_says_how_to_end_the_question():
    # `nora ask -` on a terminal read the keyboard without a word: it looked stuck until Ctrl-D
    with PtySession(["ask", "--backend", "scripted", "Summarise:", "-"], nora_env(TERM="dumb")) as term:
        term.wait_for(b"(nora ask -: type the question, then press Ctrl-D on a line of its own)\r\n")
        term.type(b"Do you have Dune?\r")
        until_waiting(term.proc)
        term.type(b"\x04")  # Ctrl-D at the start of a line: the end of the question
        term.wait_for(b"the last one says: 'Summarise: Do you have Dune?'")
        assert term.proc.wait(15) == 0


@pytest.mark.parametrize("behaviour,words", [
    (server_error(), "the server had an internal error"),
    (error(400, f"Bad request from key {KEY}", "invalid_request_error"), "Bad request from key *** (HTTP 400)"),
], ids=["500", "400-echoing-the-key"])
def test_ask_failure_is_one_line_and_exit_1(keyed_stub, behaviour, words):
    keyed_stub.enqueue(behaviour)
    result = nora("ask", *FAST, "hello", stub=keyed_stub)
    assert (result.returncode, result.stdout) == (1, "")
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("(error talking to the model: ") and words in result.stderr
    assert_no_key(result.stderr)


def test_max_tokens_goes_into_every_call_of_chat_and_ask(keyed_stub):
    result = nora("chat", *FAST, "--max-tokens", "7", stdin="a\nb\n", stub=keyed_stub)
    assert (result.returncode, result.stderr) == (0, "")
    assert [r.body["max_tokens"] for r in keyed_stub.chat_requests] == [7, 7]
    result = nora("ask", *FAST, "--no-stream", "--max-tokens", "12", "hi", stub=keyed_stub)
    assert (result.returncode, result.stderr) == (0, "")
    assert keyed_stub.chat_requests[-1].body["max_tokens"] == 12
    nora("ask", *FAST, "hi", stub=keyed_stub)  # not given: not sent, the server decides
    assert "max_tokens" not in keyed_stub.chat_requests[-1].body


@pytest.mark.model
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="needs the embedded model ([local])")
def test_max_tokens_cuts_the_embedded_models_answer():
    result = nora("ask", "--backend", "local", "--temperature", "0", "--max-tokens", "5",
                  "Tell me a long story about a dragon who guards a library.")
    assert (result.returncode, result.stderr) == (0, "")
    from nora_widgets.local import LocalClient

    answer = result.stdout.rstrip("\n")
    tokens = LocalClient().load()._engine.llama.tokenize(answer.encode(), add_bos=False, special=False)
    assert answer.strip() and len(tokens) <= 5


@pytest.mark.model
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="needs the embedded model ([local])")
def test_a_max_tokens_the_window_cannot_hold_is_named_as_the_flag(tmp_path):
    # the line said "max_tokens=5,000 ... (max_tokens of 2,008 or less fits)": the code's argument, not the flag
    # typed, and a number with a comma no flag takes
    history = tmp_path / "chat.json"
    result = nora("ask", "--backend", "local", "--max-tokens", "5000", "--history", str(history), "hi")
    prompt = result.stderr.split("the prompt (")[1].split(" tokens)")[0] if "the prompt (" in result.stderr else "?"
    assert (result.returncode, result.stdout) == (1, ""), result.stderr
    assert result.stderr == (f"(error talking to the model: the prompt ({prompt} tokens) + --max-tokens 5000 is over the "
                             f"context window of 2,048 tokens - ask for a shorter reply: --max-tokens {2048 - int(prompt)} "
                             "or less)\n")
    assert not history.exists()  # nothing kept of the failed turn


# --------------------------------------------------------------------------- #
# the command line itself (in-process: fast)


def run_main(monkeypatch, capsys, argv: list[str], stdin: str = "") -> tuple[int, str, str]:
    """main(argv) with stdin from a string; returns (status, stdout, stderr)."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    for name in [k for k in os.environ if k.startswith(("OPENAI_", "NORA_"))]:
        monkeypatch.delenv(name)
    try:
        status = cli.main(argv)
    except SystemExit as exc:  # argparse: --help, --version, bad flags
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("argv,message", [
    (["chat", "--timeout", "-1"], "nora: error: --timeout must be more than 0 seconds (got -1)"),
    (["chat", "--max-retries", "-2"], "nora: error: --max-retries must be 0 or more (got -2)"),
    (["chat", "--temperature", "3"], "nora: error: --temperature must be a number from 0 to 2 (got 3)"),
    (["chat", "--keep-turns", "-1"], "nora: error: --keep-turns must be 0 or more (got -1)"),
    (["chat", "--max-tokens", "0"], "nora: error: --max-tokens must be a whole number of at least 1 (got 0)"),
    (["ask", "--backend", "scripted", "--max-tokens", "-3", "hi"],
     "nora: error: --max-tokens must be a whole number of at least 1 (got -3)"),
    (["ask", "--max-tokens", "1.5", "hi"], "nora ask: error: argument --max-tokens: invalid int value: '1.5' "
                                           "(see nora ask --help)"),
    (["chat", "--save", "/no/such/folder/x.json"], "nora: error: --save: folder '/no/such/folder' does not exist"),
    (["chat", "--save", "/"], "nora: error: --save: '/' is a folder: give a file name, e.g. --save chat.json"),
    (["chat", "--timeout", "nan"], "nora: error: --timeout must be more than 0 seconds (got nan)"),
    (["ask", "--timeout", "inf", "hi"], "nora: error: --timeout must be a finite number of seconds (got inf)"),
    (["chat", "--backend", "openai"], "nora: error: OPENAI_API_KEY is not set: export it, "
                                      "or set OPENAI_BASE_URL for a local server"),
    (["chat", "--backend", "nope"], "nora chat: error: argument --backend: invalid choice: 'nope' "),
    (["chat", "--timeout", "soon"], "nora chat: error: argument --timeout: invalid float value: 'soon' "
                                    "(see nora chat --help)"),
    (["ask", "--backend", "scripted", " ", ""], "nora: error: nothing to ask: give a question, or pipe one in "
                                                "(- stands for stdin)"),  # blank words: stdin is not read
    (["bogus"], "nora: error: argument "),
    (["ask", "--keep-turns", "2", "hi"], "nora ask: error: unrecognized arguments: --keep-turns "
                                         "(see nora ask --help)"),  # the command whose --help lists its flags
    (["--bogus"], "nora: error: unrecognized arguments: --bogus (see nora --help)"),
    # the flag given is named (it said "the base URL"); from the environment, OPENAI_BASE_URL is
    (["ask", "--base-url", "localhost:8000", "hi"], "nora: error: --base-url must start with http:// or https:// "
                                                    "and name a host, e.g. http://127.0.0.1:8000/v1 (got 'localhost:8000')"),
    (["ask", "--backend", "local", "--base-url", "http://127.0.0.1:9/v1", "hi"],
     "nora: error: --base-url names a server, and the 'local' backend has none: give one or the other "
     "(a server is the 'openai' backend)"),
])
def test_bad_settings_are_one_line_and_exit_2(monkeypatch, capsys, argv, message):
    """One line on stderr, exit 2 (argparse's own wording varies by Python version: prefix only)."""
    status, out, err = run_main(monkeypatch, capsys, argv, stdin="hi\n")
    assert (status, out) == (2, "")
    assert len(err.splitlines()) == 1
    assert err == message + "\n" if not message.endswith(" ") else err.startswith(message)


def test_bad_environment_setting_is_exit_2(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    monkeypatch.setenv("NORA_TIMEOUT", "abc")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert cli.main(["chat"]) == 2
    assert capsys.readouterr().err == "nora: error: NORA_TIMEOUT must be a number of seconds (got 'abc')\n"


def test_version_and_help(monkeypatch, capsys):
    assert run_main(monkeypatch, capsys, ["--version"]) == (0, "nora 0.1.0\n", "")
    status, out, _ = run_main(monkeypatch, capsys, ["chat", "--help"])
    assert status == 0 and "--keep-turns N" in out and "/history" in out
    status, out, _ = run_main(monkeypatch, capsys, [])
    assert status == 2 and out.startswith("usage: nora")


def test_slash_commands_whole_session(monkeypatch, capsys, tmp_path):
    saved = tmp_path / "s.json"
    script = ["Hello", "/system You are terse.", "/system", "/trim 0", "/trim", "Again?", "/history",
              "/trim off", "/trim many", "/save " + str(saved), "/clear", "/history", "/load " + str(saved),
              "/load " + str(tmp_path / "missing.json"), "/nope", "//etc/hosts?", "", "   ", "/help", "exit",
              "never read"]
    status, out, err = run_main(monkeypatch, capsys, ["chat", "--backend", "scripted"], "\n".join(script) + "\n")
    terse = {"role": "system", "content": "You are terse."}
    r1 = "[scripted reply 1] I was sent 2 messages; the last one says: 'Hello'"
    r2 = "[scripted reply 2] I was sent 2 messages; the last one says: 'Again?'"
    r3 = "[scripted reply 3] I was sent 6 messages; the last one says: '/etc/hosts?'"
    after_two = [terse, user("Hello"), assistant(r1), user("Again?"), assistant(r2)]
    assert status == 0
    assert out.splitlines() == [
        "Nora chat: scripted stand-in (canned replies, no model)",
        "(type /help for commands; quit or Ctrl-D to leave)",
        "you: Hello", f"nora: {r1}",
        "you: /system You are terse.", "(system prompt set: it goes first in every call from now on)",
        "you: /system", "(system prompt: 'You are terse.')",
        "you: /trim 0", "(from now on each call sends only the persona and your new message: "
                        "the model forgets everything; the transcript keeps it)",
        "you: /trim", "(sending the last 0 turns)",
        "you: Again?", f"nora: {r2}",
        "you: /history", *json.dumps([terse], indent=2).splitlines(),
        "(next call sends 1 of 5 messages plus your new one: /trim 0 keeps the last 0 turns)",
        "(/edit N counts all 5 messages from 0: these are 0)",
        "you: /trim off", "(trimming off: every call sends the whole conversation)",
        "you: /trim many",
        f"you: /save {saved}", f"(saved 5 messages to {saved})",
        "you: /clear", "(cleared 4 messages; the persona is kept)",
        "you: /history", *json.dumps([terse], indent=2).splitlines(),
        "(next call sends this 1 message plus your new one)",
        f"you: /load {saved}", f"(loaded 5 messages from {saved})",
        f"you: /load {tmp_path / 'missing.json'}",
        "you: /nope",
        "you: //etc/hosts?", f"nora: {r3}",
        "you: /help", *cli.HELP_TEXT.splitlines(),
        "you: exit",
    ]
    assert err.splitlines() == [
        "(/trim needs a whole number of turns or 'off', not 'many')",
        f"(cannot load {tmp_path / 'missing.json'}: no such file; the conversation is unchanged)",
        "(unknown command /nope: type /help for the list)",
    ]
    assert json.loads(saved.read_text())["messages"] == after_two


def test_undo_and_retry_whole_session(monkeypatch, capsys, tmp_path):
    saved = tmp_path / "s.json"
    script = ["/undo", "/retry", "Hello", "How much?", "/undo", "/retry", "/trim 0", "/retry", "/undo", "/undo"]
    status, out, err = run_main(monkeypatch, capsys, ["chat", "--backend", "scripted", "--save", str(saved)],
                                "\n".join(script) + "\n")
    r1 = "[scripted reply 1] I was sent 2 messages; the last one says: 'Hello'"
    r3 = "[scripted reply 3] I was sent 2 messages; the last one says: 'Hello'"  # the same list, a new call
    r4 = "[scripted reply 4] I was sent 2 messages; the last one says: 'Hello'"
    assert (status, err) == (0, "")
    assert out.splitlines()[2:] == [
        "you: /undo", "(nothing to undo: no message of yours in the conversation)",
        "you: /retry", "(nothing to retry: send a message first)",
        "you: Hello", f"nora: {r1}",
        "you: How much?", "nora: [scripted reply 2] I was sent 4 messages; the last one says: 'How much?'",
        "you: /undo", "(took back your last message and its reply: the next call sends 3 messages plus your new one)",
        "you: /retry", "(sending the same 2 messages again: the model has no memory of its last answer)",
        f"nora: {r3}",
        "you: /trim 0", "(from now on each call sends only the persona and your new message: "
                        "the model forgets everything; the transcript keeps it)",
        "you: /retry", "(sending the same 2 messages again: the model has no memory of its last answer)",
        f"nora: {r4}",
        "you: /undo", "(took back your last message and its reply: the next call sends 1 message plus your new one)",
        "you: /undo", "(nothing to undo: no message of yours in the conversation)",
    ]
    assert json.loads(saved.read_text())["messages"] == [SYSTEM]  # the --save file follows /undo too


def test_edit_rewrites_the_past_and_undo_retry_and_save_follow_the_edited_list(monkeypatch, capsys, tmp_path):
    saved = tmp_path / "s.json"
    script = ["Hello", "How much?", "/edit 2 We have nothing by Le Guin,   sorry.", "/edit 2", "/history",
              "/edit 3\tDo you have Tolkien?", "/retry", "/undo", "/edit 01 Hi,\tagain", "/edit 2 \"\"Quoted\" twice\""]
    status, out, err = run_main(monkeypatch, capsys, ["chat", "--backend", "scripted", "--save", str(saved)],
                                "\n".join(script) + "\n")
    r1 = "[scripted reply 1] I was sent 2 messages; the last one says: 'Hello'"
    r2 = "[scripted reply 2] I was sent 4 messages; the last one says: 'How much?'"
    r3 = "[scripted reply 3] I was sent 4 messages; the last one says: 'Do you have Tolkien?'"  # the edited one
    edited = [SYSTEM, user("Hello"), assistant("We have nothing by Le Guin,   sorry."), user("How much?"), assistant(r2)]
    assert (status, err) == (0, "")
    assert out.splitlines()[2:] == [
        "you: Hello", f"nora: {r1}",
        "you: How much?", f"nora: {r2}",
        "you: /edit 2 We have nothing by Le Guin,   sorry.",
        '(message 2 (assistant) now: "We have nothing by Le Guin, sorry.")',  # on one line, spaces as one
        "you: /edit 2", "(message 2, assistant: /edit 2 TEXT replaces it)", "We have nothing by Le Guin,   sorry.",
        "you: /history", *json.dumps(edited, indent=2).splitlines(), "(next call sends these 5 messages plus your new one)",
        "you: /edit 3\tDo you have Tolkien?", '(message 3 (user) now: "Do you have Tolkien?")',
        # /retry resends the list as it stands: your last message as edited
        # ... and says it is not the same list as the last call's (it said "sending the same 4 messages again")
        "you: /retry", "(sending the 4 messages again, as edited since the last call: the model has no memory of "
                       "its last answer)", f"nora: {r3}",
        "you: /undo", "(took back your last message and its reply: the next call sends 3 messages plus your new one)",
        "you: /edit 01 Hi,\tagain", '(message 1 (user) now: "Hi, again")',
        'you: /edit 2 ""Quoted" twice"', '(message 2 (assistant) now: ""Quoted" twice")',  # the outer quotes go
    ]
    # the --save file follows an edit as it follows a turn: the last thing done was an edit
    assert json.loads(saved.read_text())["messages"] == [
        SYSTEM, user("Hi,\tagain"), assistant('"Quoted" twice')]


def test_edit_refuses_bad_input_in_one_line_and_changes_nothing(monkeypatch, capsys, tmp_path):
    saved = tmp_path / "s.json"
    script = ["/edit 1 hi", "Hello", "/edit", "/edit two hi", "/edit 3 hi", "/edit -1 hi", '/edit 2 ""', "/edit 2    ",
              "/edit 9", "/history"]
    status, out, err = run_main(monkeypatch, capsys, ["chat", "--backend", "scripted", "--save", str(saved)],
                                "\n".join(script) + "\n")
    r1 = "[scripted reply 1] I was sent 2 messages; the last one says: 'Hello'"
    kept = [SYSTEM, user("Hello"), assistant(r1)]
    assert status == 0
    lines = out.splitlines()
    assert lines[lines.index("you: /edit 2    ") + 1] == "(message 2, assistant: /edit 2 TEXT replaces it)"  # shown
    assert lines[lines.index("you: /history") + 1:] == [*json.dumps(kept, indent=2).splitlines(),
                                                        "(next call sends these 3 messages plus your new one)"]
    assert err.splitlines() == [
        "(/edit: there is no message 1: the conversation has 1 message, numbered 0 to 0; nothing was changed)",
        "(/edit N TEXT gives message N the text TEXT (counted from 0, as /history lists them); /edit N \"\"\" takes "
        "several lines; /edit N shows it; nothing was changed)",
        "(/edit: the message number must be a whole number from 0 to 2 (got 'two'); nothing was changed)",
        "(/edit: there is no message 3: the conversation has 3 messages, numbered 0 to 2; nothing was changed)",
        "(/edit: the message number must be a whole number from 0 to 2 (got '-1'); nothing was changed)",
        "(/edit: the new text for message 2 is empty: a message needs some text; nothing was changed)",
        "(/edit: there is no message 9: the conversation has 3 messages, numbered 0 to 2; nothing was changed)",
    ]
    assert json.loads(saved.read_text())["messages"] == kept  # saved by the turn, untouched by the refusals


def test_edit_reaches_a_message_trim_leaves_out_and_the_persona_as_message_0(monkeypatch, capsys):
    script = ["a", "b", "/trim 1", "/history", "/edit 2 Edited early reply.", "/edit 0 Be brief.", "/system", "/trim off",
              "/history"]
    status, out, err = run_main(monkeypatch, capsys, ["chat", "--backend", "scripted"], "\n".join(script) + "\n")
    r1 = "[scripted reply 1] I was sent 2 messages; the last one says: 'a'"
    r2 = "[scripted reply 2] I was sent 4 messages; the last one says: 'b'"
    assert (status, err) == (0, "")
    lines = out.splitlines()
    start = lines.index("you: /history")
    assert lines[start:start + 1] + lines[lines.index("]", start) + 1:lines.index("you: /trim off")] == [
        "you: /history",
        "(next call sends 3 of 5 messages plus your new one: /trim 1 keeps the last 1 turn)",
        "(/edit N counts all 5 messages from 0: these are 0 and 3-4)",  # how /edit numbers what is not shown
        "you: /edit 2 Edited early reply.", '(message 2 (assistant) now: "Edited early reply."; '
                                            '/trim 1 leaves it out of the next call)',
        "you: /edit 0 Be brief.", '(message 0 (system) now: "Be brief.")',
        "you: /system", "(system prompt: 'Be brief.')",  # the same as /system Be brief.
    ]
    tail = out.split("you: /trim off\n", 1)[1]
    shown = json.loads(tail[tail.index("["): tail.rindex("]") + 1])
    assert shown == [{"role": "system", "content": "Be brief."}, user("a"), assistant("Edited early reply."),
                     user("b"), assistant(r2)]
    assert r1 not in out.split("you: /edit 2", 1)[1]


def test_the_call_after_an_edit_carries_the_edited_text_over_http(keyed_stub):
    # the real openai client, real HTTP: the server gets the list as edited, and nothing says it was
    keyed_stub.enqueue("Yes, two novels.")
    script = "Do you have Le Guin?\n/edit 2 No, we have nothing by Le Guin.\nWhy not?\nquit\n"
    result = nora("chat", *FAST, stdin=script, stub=keyed_stub)
    edited = [SYSTEM, user("Do you have Le Guin?"), assistant("No, we have nothing by Le Guin."), user("Why not?")]
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [*header(keyed_stub),
        "you: Do you have Le Guin?", "nora: Yes, two novels.",
        "you: /edit 2 No, we have nothing by Le Guin.", '(message 2 (assistant) now: "No, we have nothing by Le Guin.")',
        "you: Why not?", f"nora: {default_reply(edited)}",
        "you: quit",
    ]
    assert [r.messages for r in keyed_stub.chat_requests] == [edited[:2], edited]


def test_edit_with_a_block_takes_several_lines_and_the_next_call_carries_them_over_http(keyed_stub):
    # /edit N TEXT takes one line: the lines of a message /edit N showed, pasted after it, went as messages
    keyed_stub.enqueue("Yes, two novels.")
    text = ["We have none by Le Guin.", "", "    Try the library:", '    """ is not the end when indented']
    script = ["Do you have Le Guin?", "/edit 2", '/EDIT\t02 """', *text, '"""', "/edit 2", "Why not?", "quit"]
    result = nora("chat", *FAST, stdin="\n".join(script) + "\n", stub=keyed_stub)
    edited = [SYSTEM, user("Do you have Le Guin?"), assistant("\n".join(text)), user("Why not?")]
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [*header(keyed_stub),
        "you: Do you have Le Guin?", "nora: Yes, two novels.",
        "you: /edit 2", "(message 2, assistant: /edit 2 TEXT replaces it)", "Yes, two novels.",
        'you: /EDIT\t02 """', *[f"...: {line}" for line in text], '...: """',
        '(message 2 (assistant) now: "We have none by Le Guin. Try the library: \"\"\" is …")',
        # several lines: the hint names the form that takes them back
        "you: /edit 2", '(message 2, assistant, 4 lines: /edit 2 """ replaces it with the lines up to a """ line)',
        *text,
        "you: Why not?", f"nora: {default_reply(edited)}",
        "you: quit",
    ]
    assert [r.messages for r in keyed_stub.chat_requests] == [edited[:2], edited]  # the lines as typed, indents kept


def test_edit_with_an_empty_or_refused_or_unfinished_block_changes_nothing_and_sends_nothing(
        monkeypatch, capsys, tmp_path):
    saved = tmp_path / "s.json"
    script = ["Hello", '/edit 2 """', "  ", '"""', '/edit 9 """', "Not sent", '"""', '/edit 1 """ extra',
              "/history", '/edit 1 """', "unfinished"]
    status, out, err = run_main(monkeypatch, capsys, ["chat", "--backend", "scripted", "--save", str(saved)],
                                "\n".join(script) + "\n")
    r1 = "[scripted reply 1] I was sent 2 messages; the last one says: 'Hello'"
    kept = [SYSTEM, user("Hello"), assistant(r1)]
    assert status == 0
    lines = out.splitlines()
    # a refused number: the block's lines are read (piped, they are there) and not sent as messages
    assert lines[lines.index('you: /edit 9 """'):lines.index("you: /history")] == [
        'you: /edit 9 """', "...: Not sent", '...: """',
        'you: /edit 1 """ extra', '(message 1 (user) now: "\"\"\" extra")']  # not a block: text on one line, as before
    assert lines[-2:] == ['you: /edit 1 """', "...: unfinished"]
    assert err.splitlines() == [
        '(nothing between the """ lines: message 2 is unchanged)',
        "(/edit: there is no message 9: the conversation has 3 messages, numbered 0 to 2; nothing was changed)",
        '(input ended inside a """ block: message 1 was not changed)',
    ]
    kept[1] = user('""" extra')
    assert json.loads(saved.read_text())["messages"] == kept  # only the one-line edit reached the --save file


def test_a_command_that_takes_nothing_refuses_words_after_it_and_changes_nothing(monkeypatch, capsys, tmp_path):
    # `/clear please` cleared, `/undo 2` took back one turn, `/retry now` sent a call, and `/quit now`
    # said "unknown command /quit": each word after them was dropped without a word
    saved = tmp_path / "s.json"
    script = ["Hello", "/clear please", "/undo 2", "/retry now", "/history all", "/quit now", "/EXIT 1", "/history"]
    status, out, err = run_main(monkeypatch, capsys, ["chat", "--backend", "scripted", "--save", str(saved)],
                                "\n".join(script) + "\n")
    r1 = "[scripted reply 1] I was sent 2 messages; the last one says: 'Hello'"
    kept = [SYSTEM, user("Hello"), assistant(r1)]
    assert status == 0
    assert out.splitlines()[2:] == [
        "you: Hello", f"nora: {r1}",
        "you: /clear please", "you: /undo 2", "you: /retry now", "you: /history all", "you: /quit now", "you: /EXIT 1",
        "you: /history", *json.dumps(kept, indent=2).splitlines(), "(next call sends these 3 messages plus your new one)",
    ]
    assert err.splitlines() == [
        "(/clear takes nothing after it, not 'please': type /clear alone; nothing was done)",
        "(/undo takes nothing after it, not '2': type /undo alone; nothing was done)",
        "(/retry takes nothing after it, not 'now': type /retry alone; nothing was done)",
        "(/history takes nothing after it, not 'all': type /history alone; nothing was done)",
        "(/quit takes nothing after it, not 'now': type /quit alone; nothing was done)",
        "(/EXIT takes nothing after it, not '1': type /EXIT alone; nothing was done)",
    ]
    assert json.loads(saved.read_text())["messages"] == kept  # the --save file was not touched either


def test_undo_of_a_message_with_no_reply_says_so(monkeypatch, capsys, tmp_path):
    """A transcript that ends on your message: /undo said 'your last message and the 0 messages after it'."""
    path = tmp_path / "asked.json"
    path.write_text(json.dumps([SYSTEM, user("hello?")]))
    longer = tmp_path / "longer.json"
    longer.write_text(json.dumps([SYSTEM, user("hi"), assistant("Hello!"), assistant("Anything else?")]))
    status, out, err = run_main(monkeypatch, capsys, ["chat", "--backend", "scripted", "--load", str(path)],
                                f"/undo\n/load {longer}\n/undo\n")
    assert (status, err) == (0, "")
    assert out.splitlines()[3:] == [
        "you: /undo", "(took back your last message: the next call sends 1 message plus your new one)",
        f"you: /load {longer}", f"(loaded 4 messages from {longer})",
        "you: /undo", "(took back your last message and the 2 messages after it: the next call sends 1 message "
                      "plus your new one)",
    ]


def test_a_failed_retry_keeps_the_earlier_reply(keyed_stub):
    keyed_stub.enqueue("First answer.", server_error())
    result = nora("chat", *FAST, stdin="hello\n/retry\n/history\n", stub=keyed_stub)
    assert result.returncode == 0
    assert result.stdout.splitlines() == [*header(keyed_stub),
        "you: hello", "nora: First answer.",
        "you: /retry", "(sending the same 2 messages again: the model has no memory of its last answer)",
        "(the earlier reply is kept)",
        "you: /history", *json.dumps([SYSTEM, user("hello"), assistant("First answer.")], indent=2).splitlines(),
        "(next call sends these 3 messages plus your new one)",
    ]
    assert [r.messages for r in keyed_stub.chat_requests] == [[SYSTEM, user("hello")]] * 2
    assert result.stderr.startswith("(error talking to the model: the server had an internal error")


def test_system_takes_quotes_like_save_and_off_removes_the_persona(monkeypatch, capsys):
    # `/system ""` made the persona two quote characters, and nothing removed it
    script = ['/system "Be brief."', "/system", '/system ""', "/system", "/history", "/system Be kind.", "/system off",
              "/system", "/history", "hi", "/history"]
    status, out, err = run_main(monkeypatch, capsys, ["chat", "--backend", "scripted"], "\n".join(script) + "\n")
    assert (status, err) == (0, "")
    lines = out.splitlines()[2:]
    reply = "[scripted reply 1] I was sent 1 message; the last one says: 'hi'"
    assert lines == [
        "you: /system \"Be brief.\"", "(system prompt set: it goes first in every call from now on)",
        "you: /system", "(system prompt: 'Be brief.')",
        "you: /system \"\"", "(system prompt removed: calls go without one)",
        "you: /system", "(no system prompt)",
        "you: /history", "[]", "(next call sends only your new message)",  # was "these 0 messages"
        "you: /system Be kind.", "(system prompt set: it goes first in every call from now on)",
        "you: /system off", "(system prompt removed: calls go without one)",
        "you: /system", "(no system prompt)",
        "you: /history", "[]", "(next call sends only your new message)",
        "you: hi", f"nora: {reply}",
        "you: /history", *json.dumps([user("hi"), assistant(reply)], indent=2).splitlines(),
        "(next call sends these 2 messages plus your new one)",
    ]


def test_a_blank_system_flag_means_no_persona_with_or_without_load(monkeypatch, capsys, tmp_path):
    # --system "   " sent a persona of three spaces, while --load f --system "   " removed the file's
    status, out, _ = run_main(monkeypatch, capsys, ["chat", "--backend", "scripted", "--system", "   "], "/system\n")
    assert status == 0 and "(no system prompt)" in out.splitlines()


@pytest.mark.parametrize("off", ["off", "OFF", " off "])
def test_system_off_flag_means_no_persona_as_the_slash_command_and_the_magic(monkeypatch, capsys, tmp_path, off):
    status, out, _ = run_main(monkeypatch, capsys, ["chat", "--backend", "scripted", "--system", off], "hi\n/system\n")
    lines = out.splitlines()
    assert status == 0 and "(no system prompt)" in lines
    assert "I was sent 1 message" in out  # the call went without a persona, not with one saying 'off'
    path = tmp_path / "old.json"
    path.write_text(json.dumps([SYSTEM, user("hi"), assistant("hello")]))
    status, out, _ = run_main(monkeypatch, capsys, ["chat", "--backend", "scripted", "--load", str(path),
                                                    "--system", off], "/system\n")
    assert status == 0 and "(no system prompt)" in out.splitlines()


def test_load_with_system_replaces_the_files_persona(monkeypatch, capsys, tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps([SYSTEM, user("hi"), assistant("hello")]))
    status, out, err = run_main(monkeypatch, capsys, ["chat", "--backend", "scripted", "--load", str(path),
                                                      "--system", "Be brief."], "/history\n")
    assert (status, err) == (0, "")
    shown = out.split("you: /history\n", 1)[1]
    assert json.loads(shown[: shown.rindex("]") + 1]) == [
        {"role": "system", "content": "Be brief."}, user("hi"), assistant("hello")]
    assert json.loads(path.read_text())[0] == SYSTEM  # the file itself is not rewritten


def test_control_characters_in_a_reply_are_shown_not_obeyed():
    out, err = io.StringIO(), io.StringIO()
    session = cli.ChatSession(ScriptedClient(["red \x1b[31mALERT\x07 done"]), [SYSTEM], out=out, err=err)
    assert session.send("hi")
    assert out.getvalue() == "nora: red ^[[31mALERT^G done\n"
    assert session.history[-1]["content"] == "red \x1b[31mALERT\x07 done"  # the list keeps the real text


def test_save_failure_mid_session_is_one_line_and_keeps_going(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    target = tmp_path / "gone" / "chat.json"
    session = cli.ChatSession(ScriptedClient(["A", "B"]), [SYSTEM], save_path=str(target), out=out, err=err)
    assert session.send("one") and session.send("two")
    assert out.getvalue() == "nora: A\nnora: B\n"
    # in brackets, not "nora: ...", which is how the replies above start
    assert err.getvalue().splitlines() == [f"(not saved to {target}: folder {str(target.parent)!r} "
                                           f"does not exist)"] * 2
    assert len(session.history) == 5


def test_help_does_not_import_openai_or_llama_cpp():
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "nora_widgets.cli", "--help"],
                            capture_output=True, text=True, env=nora_env(), timeout=30)
    assert result.returncode == 0 and "chat" in result.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    heavy = {m for m in imported if m.split(".")[0] in ("openai", "llama_cpp", "httpx2", "nora_widgets.serve")}
    assert "nora_widgets.cli" in imported or "argparse" in imported
    assert heavy == set()


def test_serve_is_delegated_or_explained(monkeypatch, capsys):
    import importlib.util

    status, out, err = run_main(monkeypatch, capsys, ["serve", "--help"])
    if importlib.util.find_spec("nora_widgets.serve") is None:
        assert (status, out) == (2, "")
        assert err == "nora: error: nora serve is not available: this install has no nora_widgets/serve.py\n"
    else:
        assert status == 0 and out.startswith("usage: nora serve")


@pytest.mark.parametrize("arg", ["\u00b2", "\u0661", "-1", "1.5", "abc"],
                         ids=["superscript-2", "arabic-1", "minus", "dot", "word"])
def test_trim_with_a_number_that_is_not_ascii_digits_is_one_line(monkeypatch, capsys, arg):
    """'²' passes str.isdigit() but not int(): it must be refused like any other bad N, not crash."""
    status, out, err = run_main(monkeypatch, capsys, ["chat", "--backend", "scripted"], f"/trim {arg}\n/trim\n")
    assert status == 0
    assert out.splitlines()[-1] == "(trimming off: every call sends the whole conversation)"
    assert err == f"(/trim needs a whole number of turns or 'off', not {arg!r})\n"


def test_save_and_load_paths_typed_as_in_a_shell(monkeypatch, capsys, tmp_path):
    """'~/x.json' is the home folder and quotes are not part of the name, as in %chat save/load."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    script = ["Hello", "/save ~/chat.json", '/save "my chat.json"', "/clear", "/load '~/chat.json'",
              '/load "my chat.json"']
    status, out, err = run_main(monkeypatch, capsys, ["chat", "--backend", "scripted"], "\n".join(script) + "\n")
    assert (status, err) == (0, "")
    assert out.splitlines()[4:] == [
        "you: /save ~/chat.json", "(saved 3 messages to ~/chat.json)",
        'you: /save "my chat.json"', "(saved 3 messages to my chat.json)",
        "you: /clear", "(cleared 2 messages; the persona is kept)",
        "you: /load '~/chat.json'", "(loaded 3 messages from ~/chat.json)",
        'you: /load "my chat.json"', "(loaded 3 messages from my chat.json)",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat.json", "my chat.json"]


def test_save_flag_with_a_tilde_left_unexpanded_by_the_shell(monkeypatch, capsys, tmp_path):
    """--save=~/chat.json (bash leaves that ~ alone) was refused: "folder '~' does not exist",
    though /save ~/chat.json and --load ~/chat.json read ~ as the home folder."""
    monkeypatch.setenv("HOME", str(tmp_path))
    status, out, err = run_main(monkeypatch, capsys, ["chat", "--backend", "scripted", "--save=~/chat.json"], "Hello\n")
    assert (status, err) == (0, "")
    assert [m["content"] for m in json.loads((tmp_path / "chat.json").read_text())["messages"]][1] == "Hello"
    status, out, err = run_main(monkeypatch, capsys, ["chat", "--backend", "scripted", "--save=~/gone/chat.json"])
    assert (status, out, err) == (2, "", f"nora: error: --save: folder {str(tmp_path / 'gone')!r} does not exist\n")


def test_a_file_name_with_a_nul_byte_is_one_line_and_the_session_goes_on(monkeypatch, capsys, tmp_path):
    """A NUL read from a pipe ended nora chat with ValueError: embedded null byte."""
    monkeypatch.chdir(tmp_path)
    status, out, err = run_main(monkeypatch, capsys, ["chat", "--backend", "scripted"],
                                "Hello\n/save a\x00b.json\n/load a\x00b.json\n/history\n")
    assert status == 0
    assert err.splitlines() == ["(not saved to a^@b.json: the file name contains a NUL character)",
                                "(cannot load a^@b.json: the file name contains a NUL character; "
                                "the conversation is unchanged)"]
    assert out.splitlines()[-1] == "(next call sends these 3 messages plus your new one)"
    assert os.listdir(tmp_path) == []


def test_a_password_in_the_server_url_is_not_shown(stub_server):
    """http://user:password@host/v1 (a proxy with basic auth): the banner names the server, not the password."""
    url = stub_server.base_url.replace("http://", "http://bob:hunter2pass@")
    result = helpers.run_nora("chat", "--base-url", url, "--max-retries", "0", env=helpers.nora_env(), stdin="hi\n")
    assert result.returncode == 0
    assert result.stdout.splitlines()[0] == (f"Nora chat: OpenAI-compatible server "
                                             f"{url.replace('hunter2pass', '***')}, model {stub_server.model}")
    assert "hunter2pass" not in result.stdout + result.stderr


def test_system_replaces_only_the_leading_persona_and_keeps_later_system_messages(monkeypatch, capsys, tmp_path):
    # a transcript can hold a system message further down (e.g. "from now on answer in French"):
    # /system and --system change the persona, as the panel and %chat --system do, and keep that one
    note = {"role": "system", "content": "From now on, answer in French."}
    path = tmp_path / "old.json"
    path.write_text(json.dumps([SYSTEM, user("hi"), assistant("hello"), note, user("ok"), assistant("d'accord")]))
    status, out, err = run_main(monkeypatch, capsys, ["chat", "--backend", "scripted", "--load", str(path),
                                                      "--system", "Be brief."], "/system\n/system Be kind.\n/history\n")
    assert (status, err) == (0, "")
    assert "(system prompt: 'Be brief.')" in out
    shown = out.split("you: /history\n", 1)[1]
    assert json.loads(shown[: shown.rindex("]") + 1]) == [
        {"role": "system", "content": "Be kind."}, user("hi"), assistant("hello"), note, user("ok"),
        assistant("d'accord")]


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="needs the embedded model ([local])")
def test_a_model_name_the_embedded_model_ignores_gets_one_line(monkeypatch, capsys):
    monkeypatch.delenv("NORA_MODEL", raising=False)
    status, out, err = run_main(monkeypatch, capsys, ["chat", "--backend", "local", "--model", "gpt-4o"], "quit\n")
    assert (status, err) == (0, "")
    assert out.splitlines()[1] == "(model 'gpt-4o' is not used: the embedded model answers as itself)"
    status, out, err = run_main(monkeypatch, capsys, ["chat", "--backend", "scripted", "--model", "gpt-4o"], "quit\n")
    assert status == 0 and "is not used" not in out
    result = nora("chat", "--backend", "local", stdin="quit\n", NORA_MODEL="gpt-4o")  # it said nothing
    assert result.stdout.splitlines()[1] == \
        "(model 'gpt-4o' (NORA_MODEL) is not used: the embedded model answers as itself)"


def test_model_switched_mid_conversation_is_sent_the_same_list():
    """The conversation is the list: after /model, the other model gets every earlier message.
    A name the server does not list gets start-up's note but is still set; /temperature goes
    into the next call; a bad value is one line on stderr and changes nothing."""
    with StubServer(listed=["llama3.2:latest", "qwen2.5"]) as stub:  # e.g. Ollama
        script = ["Do you have Dune?", "/model", "/model llama3", "/model llama3.2", "/model",
                  "/temperature 3", "/temperature 0", "/temperature", "How much is it?", "/model default",
                  "Thanks", "quit"]
        result = helpers.run_nora("chat", "--base-url", stub.base_url, "--model", "qwen2.5", *FAST,
                                  env=helpers.nora_env(), stdin="\n".join(script) + "\n")
        first = [SYSTEM, user("Do you have Dune?")]
        second = first + [assistant(default_reply(first)), user("How much is it?")]
        third = second + [assistant(default_reply(second)), user("Thanks")]
        assert result.returncode == 0
        assert result.stdout.splitlines() == [
            *header(stub, "qwen2.5"),
            "you: Do you have Dune?", f"nora: {default_reply(first)}",
            "you: /model", "(model: qwen2.5, the default; /model NAME asks for another from the next call on)",
            "you: /model llama3",
            "(from the next call on, calls ask for llama3 and send it the same list: 3 messages plus your new one)",
            "(the server lists 2 models (llama3.2:latest, qwen2.5), not 'llama3': choose one with /model NAME; "
            "set anyway: a server may take names it does not list)",
            "you: /model llama3.2",  # Ollama's llama3.2:latest: no note
            "(from the next call on, calls ask for llama3.2 and send it the same list: 3 messages plus your new one)",
            "you: /model", "(model: llama3.2; /model default goes back to qwen2.5)",
            "you: /temperature 3",
            "you: /temperature 0", "(temperature: 0 from the next call on)",
            "you: /temperature", "(temperature: 0; 0 = repeatable, higher = more varied, up to 2)",
            "you: How much is it?", f"nora: {default_reply(second)}",
            "you: /model default",
            "(from the next call on, calls ask for the default, qwen2.5, and send it the same list: "
            "5 messages plus your new one)",
            "you: Thanks", f"nora: {default_reply(third)}",
            "you: quit",
        ]
        assert result.stderr == "(/temperature must be a number from 0 to 2 (got 3))\n"
        sent = [(r.body["model"], r.body["temperature"], r.body["messages"]) for r in stub.chat_requests]
        assert sent == [("qwen2.5", 0.7, first), ("llama3.2", 0, second), ("qwen2.5", 0, third)]
        # --model was given, so the start asked the server nothing; /model asked for its list once
        assert [r.path for r in stub.requests] == ["/v1/chat/completions", "/v1/models",
                                                   "/v1/chat/completions", "/v1/chat/completions"]


@pytest.mark.parametrize("command", ["/model gpt-4o", "/model", "/model default", '/model "default"', "/model a b",
                                     "/model ''", "/temperature 0.2", "/temperature", "/temperature -0.1",
                                     "/temperature warm", "/temperature nan", "/temperature inf", "/temperature 2"])
def test_model_and_temperature_send_nothing_and_leave_the_history_alone(command):
    history = [SYSTEM, user("Hi"), assistant("Hello."), user("Still there?")]  # ends unanswered, as a loaded file may
    client = ScriptedClient()
    out, err = io.StringIO(), io.StringIO()
    session = cli.ChatSession(client, history, model="first", temperature=0.7, out=out, err=err)
    session.command(command)
    assert client.calls == [] and client.wire.last is None  # nothing sent
    assert history == [SYSTEM, user("Hi"), assistant("Hello."), user("Still there?")]
    lines = (out.getvalue() + err.getvalue()).splitlines()
    assert len(lines) == 1, lines
    bad = {"/model a b": ("first", "(/model takes one model name, or default; not 'a b')"),
           "/temperature -0.1": (0.7, "(/temperature must be a number from 0 to 2 (got -0.1))"),
           "/temperature warm": (0.7, "(/temperature must be a number from 0 to 2 (got 'warm'))"),
           "/temperature nan": (0.7, "(/temperature must be a number from 0 to 2 (got nan))"),
           "/temperature inf": (0.7, "(/temperature must be a number from 0 to 2 (got inf))")}
    if command in bad:  # one line on stderr, the setting unchanged
        setting, line = bad[command]
        assert err.getvalue() == line + "\n" and out.getvalue() == ""
        assert (session.model if command.startswith("/model") else session.temperature) == setting
        return
    assert err.getvalue() == ""
    expected = {"/model gpt-4o": ("gpt-4o", 0.7), "/model default": (None, 0.7), '/model "default"': ("default", 0.7),
                "/model ''": (None, 0.7), "/temperature 0.2": ("first", 0.2), "/temperature 2": ("first", 2.0)}
    assert (session.model, session.temperature) == expected.get(command, ("first", 0.7))
    session.send("Next")  # the next call: the whole list, with the new settings
    assert client.calls[0]["messages"][:-1] == [SYSTEM, user("Hi"), assistant("Hello."), user("Still there?")]
    assert (client.calls[0]["model"], client.calls[0]["temperature"]) == (session.model or "scripted",
                                                                          session.temperature)


def test_temperature_flag_and_slash_command_share_one_check(monkeypatch, capsys):
    for value in ["2.5", "-1", "nan"]:
        status, out, err = run_main(monkeypatch, capsys, ["chat", "--backend", "scripted", "--temperature", value])
        session_err = io.StringIO()
        cli.ChatSession(ScriptedClient(), [SYSTEM], err=session_err, out=io.StringIO()).command(f"/temperature {value}")
        assert status == 2
        assert err.removeprefix("nora: error: --") == session_err.getvalue().removeprefix("(/").replace("))", ")")


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="needs the embedded model ([local])")
def test_model_on_the_embedded_model_says_it_answers_as_itself(monkeypatch, capsys):
    status, out, err = run_main(monkeypatch, capsys, ["chat", "--backend", "local"],
                                "/model\n/model gpt-4o\n/model\n")
    assert (status, err) == (0, "")
    assert out.splitlines()[2:] == [
        "you: /model", "(model: SmolLM2-135M-Instruct, the embedded model: it answers as itself whatever name is sent)",
        "you: /model gpt-4o",
        "(from the next call on, calls ask for gpt-4o and send it the same list: 1 message plus your new one)",
        "(model 'gpt-4o' is not used: the embedded model answers as itself)",  # as at the start
        "you: /model", "(model: SmolLM2-135M-Instruct, the embedded model: it answers as itself whatever name is sent)",
    ]


@pytest.mark.model
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="needs the embedded model ([local])")
def test_nora_ask_says_on_stderr_when_the_embedded_model_ignores_the_model_name():
    result = nora("ask", "--backend", "local", "--model", "gpt-4o", "--max-tokens", "3", "Hello")
    assert result.returncode == 0 and result.stdout.strip()
    assert result.stderr == "(model 'gpt-4o' is not used: the embedded model answers as itself)\n"


def test_a_model_path_that_is_not_a_model_is_refused_at_start(tmp_path):
    # nora chat started ("local model notes") and then failed every turn, exit 0
    fake = tmp_path / "notes.gguf"
    fake.write_text("shopping list")
    result = nora("chat", stdin="hi\nquit\n", NORA_MODEL_PATH=str(fake))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "nora: error: could not load notes.gguf: not a GGUF model file (check NORA_MODEL_PATH)\n"


def test_a_server_with_several_models_and_no_name_given_gets_one_line():
    # e.g. Ollama: gpt-4o-mini would be refused on the first turn; say so at the start, with the names
    from tests.servers.openai_stub import StubServer

    with StubServer(listed=["llama3.2", "qwen2.5"]) as stub:
        result = helpers.run_nora("chat", "--base-url", stub.base_url, env=helpers.nora_env(), stdin="quit\n")
        assert result.returncode == 0
        assert result.stdout.splitlines()[:2] == [
            f"Nora chat: OpenAI-compatible server {stub.base_url}, model gpt-4o-mini",
            "(the server lists 2 models (llama3.2, qwen2.5), not 'gpt-4o-mini': choose one with --model or NORA_MODEL)"]
        result = helpers.run_nora("chat", "--base-url", stub.base_url, "--model", "qwen2.5", env=helpers.nora_env(),
                                  stdin="quit\n")
        assert "the server lists" not in result.stdout


# --------------------------------------------------------------------------- #
# nora models


def test_models_lists_the_servers_names_on_stdout_and_what_they_are_on_stderr():
    from tests.servers.openai_stub import StubServer

    with StubServer(listed=["qwen2.5:latest", "llama3.2:latest"]) as stub:  # e.g. Ollama
        result = helpers.run_nora("models", "--base-url", stub.base_url, env=helpers.nora_env())
        assert result.returncode == 0
        assert result.stdout == "llama3.2:latest\nqwen2.5:latest\n"  # sorted, one per line: a script can read it
        # with no name given, every call would ask for gpt-4o-mini, which is not there: said here too
        assert result.stderr == (f"(2 models at {stub.base_url}; nora asks for 'gpt-4o-mini' unless told otherwise, "
                                 "and this server does not list it; choose with --model or NORA_MODEL)\n")
        assert [r.path for r in stub.requests] == ["/v1/models"]  # asked once, nothing else sent
        typo = helpers.run_nora("models", "--base-url", stub.base_url, env=helpers.nora_env(NORA_MODEL="llama3"))
        assert (typo.returncode, typo.stdout) == (0, result.stdout)
        assert "nora asks for 'llama3' (NORA_MODEL) unless told otherwise, and this server does not list it" in typo.stderr
        ollama = helpers.run_nora("models", "--base-url", stub.base_url, env=helpers.nora_env(NORA_MODEL="qwen2.5"))
        assert "nora uses qwen2.5 unless told otherwise" in ollama.stderr  # qwen2.5 is qwen2.5:latest
    with StubServer(model="served-one") as stub:  # e.g. nora serve, llama.cpp's server: that one is the default
        result = helpers.run_nora("models", env=helpers.nora_env(stub.base_url))
        assert (result.returncode, result.stdout) == (0, "served-one\n")
        assert "nora uses served-one unless told otherwise" in result.stderr


def test_models_failure_is_one_line_exit_1_and_never_shows_the_key(keyed_stub):
    wrong = "sk-wrong-" + "Zz9" * 8
    result = helpers.run_nora("models", "--max-retries", "0", env=helpers.nora_env(keyed_stub.base_url, wrong))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith("nora: could not list the server's models: ")
    assert "401" in result.stderr and len(result.stderr.splitlines()) == 1
    assert wrong not in result.stderr and wrong[9:21] not in result.stderr
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    result = helpers.run_nora("models", "--base-url", url, "--max-retries", "0", env=helpers.nora_env())
    assert result.returncode == 1
    assert result.stderr == ("nora: could not list the server's models: could not reach the server: nothing is "
                             f"listening at {url[7:-3]} - check --base-url and your network\n")


def test_models_asks_the_server_once_whatever_it_answers(keyed_stub):
    # make_client asks GET /models (no --model given); an error answer was asked for again by nora models to
    # get the exception it reports: two requests for one line.  The line is the same with one.
    from tests.servers.openai_stub import StubServer

    with StubServer() as stub:  # nora serve at a URL without /v1: 404 at /models
        stub.enqueue_models(*[error(404, "Not Found", "invalid_request_error", "not_found")] * 2)
        root = stub.base_url.removesuffix("/v1")
        result = helpers.run_nora("models", env=helpers.nora_env(root))
        assert (result.returncode, result.stdout) == (1, "")
        assert result.stderr == (f"nora: could not list the server's models: nothing at {root}/models (HTTP 404) "
                                 "- check OPENAI_BASE_URL: an OpenAI-compatible API's URL usually ends in /v1\n")
        assert [(r.method, r.path) for r in stub.requests] == [("GET", "/models")]
    with StubServer(listed=[]) as stub:  # a list with nothing in it is an answer too
        result = helpers.run_nora("models", env=helpers.nora_env(stub.base_url))
        assert (result.returncode, result.stdout) == (0, "")
        assert result.stderr.startswith(f"(the server at {stub.base_url} lists no models")
        assert [r.path for r in stub.requests] == ["/v1/models"]
    wrong = "sk-wrong-" + "Zz7" * 8
    result = helpers.run_nora("models", env=helpers.nora_env(keyed_stub.base_url, wrong))  # retries left: a 401 has none
    assert result.returncode == 1 and "(HTTP 401)" in result.stderr and wrong not in result.stderr
    assert [r.path for r in keyed_stub.requests] == ["/v1/models"]
    with StubServer(model="served-one") as stub:  # an error the client retries is asked again, as before
        stub.enqueue_models(error(500, "try later", "server_error"))
        result = helpers.run_nora("models", "--max-retries", "1", env=helpers.nora_env(stub.base_url))
        assert (result.returncode, result.stdout) == (0, "served-one\n"), result.stderr
        assert [r.path for r in stub.requests] == ["/v1/models", "/v1/models"]


def test_models_on_the_embedded_and_scripted_backends(tmp_path):
    pytest.importorskip("llama_cpp")
    result = helpers.run_nora("models", env=helpers.nora_env())
    assert (result.returncode, result.stdout) == (0, "SmolLM2-135M-Instruct\n")
    assert "context window 2,048 tokens" in result.stderr and ".gguf" in result.stderr
    result = helpers.run_nora("models", "--backend", "scripted", env=helpers.nora_env())
    assert (result.returncode, result.stdout) == (0, "scripted\n")
    result = helpers.run_nora("models", "--timeout", "0", env=helpers.nora_env())  # the flags are checked as chat's
    assert result.returncode == 2 and result.stderr.startswith("nora: error: --timeout must be more than 0")


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="needs the embedded model ([local])")
@pytest.mark.parametrize("cut", ["metadata", "weights"])
def test_models_refuses_a_gguf_file_cut_short_as_nora_ask_does(tmp_path, cut):
    # it printed 'cut' (the file's name) and exit 0: the four bytes of GGUF's magic were all it read
    from nora_widgets.local import find_model_path

    whole = find_model_path().read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(whole[:1_000_000] if cut == "metadata" else whole[:-1_000_000])
    models = nora("models", NORA_MODEL_PATH=str(path))
    ask = nora("ask", "Hi", NORA_MODEL_PATH=str(path))
    why = f"could not load cut.gguf: Failed to load model from file: {path}; is it a chat GGUF file?"
    assert (ask.returncode, ask.stderr) == (1, f"(error talking to the model: {why})\n")  # what ask says
    assert (models.returncode, models.stdout, models.stderr) == (1, "", f"nora: {why}\n")


def test_a_model_the_server_does_not_know_points_to_nora_models(keyed_stub, tmp_path):
    keyed_stub.enqueue(error(404, "The model 'lama3' does not exist", "invalid_request_error", "model_not_found"))
    result = nora("ask", "--model", "lama3", "Hi", stub=keyed_stub)
    assert result.returncode == 1
    assert result.stderr == ("(error talking to the model: the server does not know this model or URL: The model "
                             "'lama3' does not exist (HTTP 404) - check --model (nora models lists them) and "
                             "OPENAI_BASE_URL)\n")
    # a server with no GET /models at all (a web server that is not the API): nora models says what to do
    server = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
                               "--directory", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True)
    try:
        port = int(server.stdout.readline().split("port ")[1].split()[0])
        result = helpers.run_nora("models", "--base-url", f"http://127.0.0.1:{port}/v1", "--max-retries", "0",
                                  env=helpers.nora_env())
        # a URL without /v1 (vLLM, Ollama and nora serve answer 404 there): not 'it has no list'
        no_v1 = helpers.run_nora("models", "--max-retries", "0", env=helpers.nora_env(f"http://127.0.0.1:{port}"))
    finally:
        server.terminate()
        server.wait()
    assert result.returncode == 1
    assert result.stderr == ("nora: could not list the server's models: it has no list of models (HTTP 404) - "
                             "ask for one by name with --model or NORA_MODEL\n")
    assert no_v1.returncode == 1
    assert no_v1.stderr == (f"nora: could not list the server's models: nothing at http://127.0.0.1:{port}/models "
                            "(HTTP 404) - check OPENAI_BASE_URL: an OpenAI-compatible API's URL usually ends in /v1\n")


def test_a_name_set_with_slash_model_that_the_server_does_not_know_points_to_slash_model(keyed_stub):
    """In nora chat, a name chosen with /model NAME is changed with /model, not with --model (which
    gave a name the server knows); /model default puts the --model advice back."""
    not_found = error(404, "The model 'lama3' does not exist", "invalid_request_error", "model_not_found")
    keyed_stub.enqueue(not_found, not_found)
    result = nora("chat", "--model", "test-model", *FAST, stub=keyed_stub,
                  stdin="/model lama3\nHi\n/model default\n/model other\n/model default\nHi\n")
    assert result.returncode == 0
    line = "(error talking to the model: the server does not know this model or URL: The model 'lama3' does not exist " \
           "(HTTP 404) - check {} (nora models lists them) and OPENAI_BASE_URL)"
    assert result.stderr.splitlines() == [line.format("/model"), line.format("--model")]
    assert [r.body["model"] for r in keyed_stub.chat_requests] == ["lama3", "test-model"]


def test_ask_with_a_history_too_long_for_the_model_says_what_ask_can_do(keyed_stub, tmp_path):
    """nora ask has no /trim: its advice names a new --history file, or nora chat, which can trim."""
    history = tmp_path / "long.json"
    history.write_text(json.dumps([SYSTEM, user("a"), assistant("b")]))
    before = history.read_bytes()
    keyed_stub.enqueue(context_length_exceeded())
    result = nora("ask", "--history", str(history), *FAST, "Hi", stub=keyed_stub)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith("(error talking to the model: the conversation is longer than the model's "
                                    "context window: ")
    assert result.stderr.endswith(" - start a new --history file, or go on in nora chat --load FILE "
                                  "--keep-turns N)\n")
    assert "/trim" not in result.stderr
    assert history.read_bytes() == before


# --------------------------------------------------------------------------- #
# --show-sent and /sent: what each call sent, a line per turn


def test_show_sent_says_what_each_call_sent_and_sent_turns_it_on_and_off(monkeypatch, capsys):
    from nora_widgets.tokens import count_tokens

    script = ["Hi", "How much?", "/trim 1", "And now?", "/sent off", "Bye", "/sent", "Again", "/sent maybe"]
    status, out, err = run_main(monkeypatch, capsys, ["chat", "--backend", "scripted", "--show-sent"],
                                "\n".join(script) + "\n")
    assert status == 0 and err == "(/sent takes on or off, not 'maybe')\n"
    lines = out.splitlines()
    said = [line for line in lines if line.startswith("(this call sent")]
    # what went out, rebuilt by hand: the persona, the turns kept, the new message
    scripted = ScriptedClient(model="scripted")

    def tokens(*messages):
        return f"~{count_tokens([SYSTEM, *messages], scripted).total:,} tokens"  # an estimate: not the local model

    r = [f"[scripted reply {n}] I was sent {k} messages; the last one says: {q!r}"
         for n, k, q in [(1, 2, "Hi"), (2, 4, "How much?"), (3, 4, "And now?"), (4, 4, "Bye"), (5, 4, "Again")]]
    assert said == [
        f"(this call sent 2 messages: the persona and your message; {tokens(user('Hi'))})",
        f"(this call sent 4 messages: the persona, 1 earlier turn and your message; "
        f"{tokens(user('Hi'), assistant(r[0]), user('How much?'))})",
        f"(this call sent 4 messages: the persona, 1 earlier turn and your message; "
        f"{tokens(user('How much?'), assistant(r[1]), user('And now?'))}; /trim 1 left out 2 older messages)",
        # /sent off: "Bye" has no line; /sent alone turns it back on for "Again"
        f"(this call sent 4 messages: the persona, 1 earlier turn and your message; "
        f"{tokens(user('Bye'), assistant(r[3]), user('Again'))}; /trim 1 left out 6 older messages)",
    ]
    assert lines[lines.index("you: /sent off") + 1] == "(/sent is off)"
    assert lines[lines.index("you: /sent") + 1] == "(after each reply: what that call sent)"
    # a failed turn has no such line (nothing of it was kept); the next good one has
    out, err = io.StringIO(), io.StringIO()
    session = cli.ChatSession(ScriptedClient([TimeoutError("timed out"), "Fine."]), [SYSTEM], show_sent=True,
                              stream=False, out=out, err=err)
    assert not session.send("Hi") and "this call sent" not in out.getvalue() + err.getvalue()
    assert session.send("Hi") and out.getvalue().splitlines()[-1].startswith("(this call sent 2 messages: ")


def test_show_sent_counts_exactly_on_the_embedded_model(monkeypatch, capsys):
    pytest.importorskip("llama_cpp")
    from nora_widgets.local import LocalClient
    from nora_widgets.tokens import count_tokens

    status, out, err = run_main(monkeypatch, capsys, ["chat", "--show-sent", "--temperature", "0", "--max-tokens",
                                                      "8", "--system", "Be brief."], "Hi\n")
    assert status == 0, err
    reply = out.splitlines()[-2].removeprefix("nora: ")
    exact = count_tokens([{"role": "system", "content": "Be brief."}, user("Hi")], LocalClient()).total
    share = 100 * exact / 2048  # the embedded model's window, which the line now names
    said = "under 1%" if share < 1 else f"{share:.0f}%"  # 18 tokens: under 1%
    assert out.splitlines()[-1] == (f"(this call sent 2 messages: the persona and your message; {exact} tokens, "
                                    f"{said} of the 2,048-token window)")
    assert reply and "~" not in out.splitlines()[-1]  # the model's own tokenizer: no "~"


def test_show_sent_gives_the_share_of_the_window_when_the_window_is_known():
    # a server that states its window (vLLM, nora serve): the share grows every turn; none stated: no share
    with StubServer(model="served", window=1024, speaks_like="vllm") as stub:
        result = nora("chat", *FAST, "--show-sent", stdin="Hi\nAnd again\n", stub=stub)
    said = [line for line in result.stdout.splitlines() if line.startswith("(this call sent")]
    shares = [int(re.search(r"tokens, (\d+)% of the 1,024-token window\)$", line).group(1)) for line in said]
    tokens = [int(re.search(r"; ~(\d+) tokens", line).group(1)) for line in said]
    assert len(shares) == 2 and shares == [round(100 * t / 1024) for t in tokens] and shares[1] > shares[0]
    with StubServer(model="gpt-4o-mini") as stub:  # no window stated; a well-known name: the table's 128,000
        line = nora("chat", *FAST, "--show-sent", stdin="Hi\n", stub=stub).stdout.splitlines()[-1]
    assert line.endswith(" tokens, under 1% of the 128,000-token window)"), line
    with StubServer(model="unknown-model") as stub:
        line = nora("chat", *FAST, "--show-sent", stdin="Hi\n", stub=stub).stdout.splitlines()[-1]
    assert re.search(r"; ~\d+ tokens\)$", line), line  # the window is unknown: no share


def test_show_sent_calls_a_loaded_message_with_no_reply_what_it_is(monkeypatch, capsys, tmp_path):
    # a transcript saved after a failed turn ends on a message with no reply; it is sent too, and the
    # line said "1 earlier turn" for it (a turn is a message and its reply)
    from nora_widgets._sent_line import describe_sent
    from nora_widgets.transcript import save_transcript

    path = tmp_path / "t.json"
    save_transcript(str(path), [SYSTEM, user("Hi"), assistant("Hello."), user("Still there?")])
    status, out, err = run_main(monkeypatch, capsys, ["chat", "--backend", "scripted", "--show-sent", "--load",
                                                      str(path)], "And now?\nAgain\n")
    said = [line.split(";")[0] for line in out.splitlines() if line.startswith("(this call sent")]
    assert (status, err) == (0, "")
    assert said == ["(this call sent 5 messages: the persona, 1 earlier turn, 1 earlier message with no reply and "
                    "your message",
                    "(this call sent 7 messages: the persona, 2 earlier turns, 1 earlier message with no reply and "
                    "your message"]
    status, out, err = run_main(monkeypatch, capsys, ["chat", "--backend", "scripted", "--show-sent", "--keep-turns",
                                                      "1", "--load", str(path)], "And now?\n")
    assert out.splitlines()[-1].startswith("(this call sent 3 messages: the persona, 1 earlier message with no reply "
                                           "and your message; ~")  # /trim 1 kept that message: it is a turn there
    assert out.splitlines()[-1].endswith("; /trim 1 left out 2 older messages)")
    two = [SYSTEM, user("a"), user("b"), assistant("B"), user("c")]  # two in a row: the first has no reply
    assert describe_sent(two, two[:-1], None, "/trim {n}").startswith(
        "this call sent 5 messages: the persona, 1 earlier turn, 1 earlier message with no reply and your message;")


def test_show_sent_names_a_greeting_before_the_first_message(monkeypatch, capsys, tmp_path):
    # a transcript may start with the persona and a greeting the program put there; the greeting is
    # sent with every call, and the line left it out ("3 messages: the persona and your message")
    from nora_widgets._sent_line import describe_sent
    from nora_widgets.transcript import save_transcript

    path = tmp_path / "t.json"
    save_transcript(str(path), [SYSTEM, assistant("Welcome to the shop. What are you looking for?")])
    status, out, err = run_main(monkeypatch, capsys, ["chat", "--backend", "scripted", "--show-sent", "--load",
                                                      str(path)], "Hi\nAgain\n")
    said = [line.split(";")[0] for line in out.splitlines() if line.startswith("(this call sent")]
    assert (status, err) == (0, "")
    assert said == ["(this call sent 3 messages: the persona, a greeting and your message",
                    "(this call sent 5 messages: the persona, a greeting, 1 earlier turn and your message"]
    status, out, err = run_main(monkeypatch, capsys, ["chat", "--backend", "scripted", "--show-sent", "--keep-turns",
                                                      "1", "--load", str(path)], "Hi\nAgain\n")
    said = [line for line in out.splitlines() if line.startswith("(this call sent")]
    assert said[0].startswith("(this call sent 3 messages: the persona, a greeting and your message; ~")
    assert said[1].startswith("(this call sent 4 messages: the persona, 1 earlier turn and your message; ~")
    assert said[1].endswith("; /trim 1 left out 1 older message)")  # /trim 1: the greeting is a turn, left out
    two = [assistant("Hello."), assistant("Ask me anything."), user("c")]  # no persona, two greetings
    assert describe_sent(two, two[:-1], None, "/trim {n}").startswith(
        "this call sent 3 messages: 2 greetings and your message;")
    # no persona, and a system message further down (a loaded transcript, --system off): not "the persona"
    later = [user("Hi"), assistant("Hello."), {"role": "system", "content": "Answer in French."}, user("c")]
    assert describe_sent(later, later[:-1], None, "/trim {n}").startswith(
        "this call sent 4 messages: a system message, 1 earlier turn and your message;")


@pytest.mark.parametrize("flags, commands, kept, line", [
    ([], "/clear", [], "(cleared 5 messages; there is no persona, so nothing is kept)"),
    ([], "/system off\n/clear", [], "(cleared 5 messages; there is no persona, so nothing is kept)"),
    (["--system", "Be Nora."], "/clear", [{"role": "system", "content": "Be Nora."}],
     "(cleared 5 messages; the persona is kept)"),
], ids=["no-persona", "after-system-off", "with-a-persona"])
def test_clear_keeps_the_persona_only_never_a_system_message_further_down(monkeypatch, capsys, tmp_path, flags,
                                                                            commands, kept, line):
    # a transcript whose only system message is further down: /clear said 'the persona is kept' and that
    # message became the persona (or, with a persona, was kept beside it): trim_history keeps every system message
    from nora_widgets.transcript import load_transcript, save_transcript

    path, saved = tmp_path / "t.json", tmp_path / "after.json"
    save_transcript(str(path), [user("Hi"), assistant("Hello."), {"role": "system", "content": "Be brief."},
                                user("Dune?"), assistant("Yes.")])
    status, out, err = run_main(monkeypatch, capsys, ["chat", "--backend", "scripted", "--load", str(path), *flags],
                                f"{commands}\n/system\n/save {saved}\n")
    lines = out.splitlines()
    assert (status, err) == (0, "")
    assert lines[lines.index("you: /clear") + 1] == line
    assert lines[lines.index("you: /system") + 1] == ("(system prompt: 'Be Nora.')" if kept else "(no system prompt)")
    assert load_transcript(str(saved))[0] == kept


def test_retry_of_a_message_with_no_reply_and_clear_with_no_persona_say_what_is_so(monkeypatch, capsys, tmp_path):
    from nora_widgets.transcript import save_transcript

    path = tmp_path / "t.json"
    save_transcript(str(path), [SYSTEM, user("Hi"), assistant("Hello."), user("Still there?")])  # ends unanswered
    status, out, err = run_main(monkeypatch, capsys, ["chat", "--backend", "scripted", "--load", str(path)],
                                "/retry\n/system off\n/clear\n")
    lines = out.splitlines()
    assert lines[lines.index("you: /retry") + 1] == ("(sending the same 4 messages again: "
                                                     "your last message has no reply yet)")
    assert lines[lines.index("you: /clear") + 1] == "(cleared 4 messages; there is no persona, so nothing is kept)"
    # the same retry failing: the unanswered message stays, and the line says the conversation is as it was
    out, err = io.StringIO(), io.StringIO()
    history = [SYSTEM, user("Hi"), assistant("Hello."), user("Still there?")]
    session = cli.ChatSession(ScriptedClient([TimeoutError("timed out")]), history, stream=False, out=out, err=err)
    session.command("/retry")
    assert history == [SYSTEM, user("Hi"), assistant("Hello."), user("Still there?")]
    assert out.getvalue().splitlines()[-1] == "(the conversation is as it was)"


# --------------------------------------------------------------------------- #
# nora ask --history FILE: each ask is a new process; the file is the memory


def test_ask_with_a_history_file_remembers_across_processes_and_a_failure_changes_nothing(keyed_stub, tmp_path):
    path = tmp_path / "ada.json"
    keyed_stub.enqueue("Nice to meet you, Ada.", "Your name is Ada.", server_error())
    first = nora("ask", *FAST, "--history", str(path), "My name is Ada.", stub=keyed_stub)
    assert (first.returncode, first.stdout, first.stderr) == (0, "Nice to meet you, Ada.\n", "")
    second = nora("ask", *FAST, "--history", str(path), "--show-sent", "What is my name?", stub=keyed_stub)
    assert (second.returncode, second.stdout) == (0, "Your name is Ada.\n")
    # the second process knew nothing: the file was resent, whole, before the question
    turn1 = [SYSTEM, user("My name is Ada."), assistant("Nice to meet you, Ada.")]
    assert keyed_stub.chat_requests[1].messages == [*turn1, user("What is my name?")]
    assert second.stderr.startswith("(this call sent 4 messages: the persona, 1 earlier turn and your message; ~")
    saved = path.read_bytes()
    assert json.loads(saved)["messages"] == [*turn1, user("What is my name?"), assistant("Your name is Ada.")]
    failed = nora("ask", *FAST, "--history", str(path), "And my age?", stub=keyed_stub)
    assert failed.returncode == 1 and len(failed.stderr.splitlines()) == 1
    assert path.read_bytes() == saved  # the failed turn is not in the file
    assert_no_key(first.stderr, second.stderr, failed.stderr, saved.decode())


def test_ask_history_file_refusals_are_one_line(keyed_stub, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"messages": [{"role": "bot", "content": "hi"}]}')
    result = nora("ask", *FAST, "--history", str(broken), "Hi", stub=keyed_stub)
    assert result.returncode == 1 and result.stderr.startswith("nora: ") and len(result.stderr.splitlines()) == 1
    assert keyed_stub.chat_requests == []  # nothing was sent
    assert broken.read_text() == '{"messages": [{"role": "bot", "content": "hi"}]}'
    result = nora("ask", *FAST, "--history", str(tmp_path / "no" / "such.json"), "Hi", stub=keyed_stub)
    assert result.returncode == 2
    assert result.stderr == f"nora: error: --history: folder {str(tmp_path / 'no')!r} does not exist\n"


# --------------------------------------------------------------------------- #
# a message of several lines between """ lines


def test_a_block_between_triple_quote_lines_is_one_message(keyed_stub):
    keyed_stub.enqueue("Add the missing operand.")
    script = ['"""', "Fix this:", "    x = 1 +", '"""  ', '"""', "  ", '"""', '"""', "unfinished"]
    result = nora("chat", *FAST, stdin="\n".join(script) + "\n", stub=keyed_stub)
    assert result.returncode == 0
    assert keyed_stub.chat_requests[0].messages == [SYSTEM, user("Fix this:\n    x = 1 +")]  # indents kept
    assert len(keyed_stub.chat_requests) == 1  # the blank block and the unfinished one sent nothing
    assert result.stdout.splitlines()[2:] == ['you: """', "...: Fix this:", "...:     x = 1 +", '...: """  ',
                                              "nora: Add the missing operand.", 'you: """', "...:   ", '...: """',
                                              'you: """',
                                              "...: unfinished"]
    assert result.stderr == ('(nothing between the """ lines: nothing sent)\n'
                             '(input ended inside a """ block: that message was not sent)\n')


def test_a_block_on_a_real_terminal_and_ctrl_c_inside_it():
    with PtySession(["chat", "--backend", "scripted"], nora_env(TERM="dumb")) as term:
        term.wait_for(b"you: ")
        term.type(b'"""\r')
        term.wait_for(b"...: ")
        term.type(b"one\r")
        term.wait_for(b"...: ")
        until_waiting(term.proc)
        term.type(b"\x03")  # Ctrl-C inside the block: the block is dropped, the session goes on
        term.wait_for(b"(Ctrl-C: the message of several lines was not sent)\r\nyou: ")
        term.type(b'"""\rtwo\rlines\r"""\r')
        term.wait_for(b"I was sent 2 messages; the last one says: 'two\\nlines'\r\nyou: ")
        term.type(b"\x04")
        assert term.proc.wait(15) == 0


def test_ctrl_d_inside_a_block_on_a_terminal_sends_it_as_nora_ask_dash_does():
    # Ctrl-D on a line of its own ends `nora ask -`'s question, as its own hint says; inside a block of
    # nora chat the same key dropped the lines typed and left the session
    with PtySession(["chat", "--backend", "scripted"], nora_env(TERM="dumb")) as term:
        term.wait_for(b"you: ")
        term.type(b'"""\r')
        term.wait_for(b"...: ")
        term.type(b"two\r")
        term.wait_for(b"...: ")
        term.type(b"lines\r")
        term.wait_for(b"...: ")
        term.type(b"\x04")
        term.wait_for(b"I was sent 2 messages; the last one says: 'two\\nlines'\r\nyou: ")
        term.type(b'"""\r')
        term.wait_for(b"...: ")
        term.type(b"\x04")  # nothing typed: nothing sent, and the session goes on
        term.wait_for(b'(nothing between the """ lines: nothing sent)\r\nyou: ')
        term.type(b"\x04")  # at the prompt: leave
        assert term.proc.wait(15) == 0


def test_a_pasted_block_is_one_message_without_its_quote_lines():
    """A paste reaches readline as one piece with its newlines in it (bracketed paste): a pasted
    opening line starts the block, a pasted closing line ends it, and the quote lines are not sent."""
    paste = b"\x1b[200~%s\x1b[201~"  # how a terminal wraps what is pasted
    with PtySession(["chat", "--backend", "scripted"], nora_env(TERM="xterm")) as term:
        term.wait_for(b"you: ")
        term.type(paste % b'"""\rdef f():\r    return 1\r"""\r')  # the whole block, closing line and all
        term.type(b"\r")
        term.wait_for(b"I was sent 2 messages; the last one says: 'def f():\\n    return 1'\r\n")
        term.wait_for(b"you: ")
        term.type(paste % b'"""\rpasted line\r')  # only the opening line and one more: typing goes on
        term.type(b"\r")
        term.wait_for(b"...: ")
        term.type(b'typed line\r"""\r')
        term.wait_for(b"I was sent 4 messages; the last one says: 'pasted line\\ntyped line'\r\n")
        term.wait_for(b"you: ")
        term.type(paste % b'"""\rone\r"""\rquit')  # what follows the closing line is the next input
        term.type(b"\r")
        term.wait_for(b"I was sent 6 messages; the last one says: 'one'\r\n")
        assert term.proc.wait(15) == 0


def test_edit_with_a_block_on_a_real_terminal_ctrl_c_a_refusal_and_a_paste():
    """Ctrl-C inside /edit N's block changes nothing; a number that names no message is refused before
    a line is typed (no '...: '); a pasted block, closing line and all, becomes the message's text."""
    paste = b"\x1b[200~%s\x1b[201~"
    with PtySession(["chat", "--backend", "scripted"], nora_env(TERM="xterm")) as term:
        term.wait_for(b"you: ")
        term.type(b"Hello\r")
        term.wait_for(b"the last one says: 'Hello'\r\nyou: ")
        term.type(b'/edit 2 """\r')
        term.wait_for(b"...: ")
        term.type(b"half typed\r")
        term.wait_for(b"...: ")
        until_waiting(term.proc)
        term.type(b"\x03")  # Ctrl-C inside the block
        term.wait_for(b"(Ctrl-C: message 2 was not changed)\r\nyou: ")
        term.type(b'/edit 9 """\r')
        term.wait_for(b"(/edit: there is no message 9: the conversation has 3 messages, numbered 0 to 2; "
                      b"nothing was changed)\r\nyou: ")
        term.type(paste % b'/edit 2 """\rfirst line\r  second line\r"""\r')
        term.type(b"\r")
        term.wait_for(b'(message 2 (assistant) now: "first line second line")\r\nyou: ')
        term.type(b"/history\r")
        term.wait_for(b'"content": "first line\\n  second line"')
        term.wait_for(b"you: ")
        term.type(b"\x04")
        assert term.proc.wait(15) == 0
    assert b"half typed" not in term.screen.split(b"/history")[1]  # the dropped line is in no message


def test_a_read_only_history_or_save_file_is_refused_before_anything_is_sent(keyed_stub, tmp_path):
    """The save renames a new file over the old one, which a file's read-only mode does not stop:
    without the check the file was silently rewritten (ask, and chat --save after every turn)."""
    path = tmp_path / "starter.json"
    path.write_text(json.dumps({"messages": [SYSTEM, user("Hi"), assistant("Hello.")]}))
    path.chmod(0o444)
    before = path.read_bytes()
    asked = nora("ask", *FAST, "--history", str(path), "Next?", stub=keyed_stub)
    chatted = nora("chat", *FAST, "--load", str(path), "--save", str(path), stdin="Next?\n", stub=keyed_stub)
    for result, flag in ((asked, "--history"), (chatted, "--save")):
        assert result.returncode == 2
        assert result.stderr == (f"nora: error: {flag}: {str(path)!r} is read-only and each new turn is written "
                                 "to it: make it writable (chmod u+w) or give another file\n")
    assert keyed_stub.chat_requests == [] and path.read_bytes() == before


def test_a_save_file_that_is_not_a_saved_conversation_is_refused_before_anything_is_sent(keyed_stub, tmp_path):
    """--save notes.md over one's own notes wrote the conversation over them after the first turn; /save did too."""
    notes = tmp_path / "notes.md"
    notes.write_text("my notes\n")
    chatted = nora("chat", *FAST, "--save", str(notes), stdin="Hi\n", stub=keyed_stub)
    assert (chatted.returncode, chatted.stdout) == (2, "")
    assert chatted.stderr == (f"nora: error: --save: {str(notes)!r} holds something other than a conversation "
                              "saved by Nora, which saving would replace: choose another name (or delete it first)\n")
    assert len(chatted.stderr.replace(str(notes), "notes.md")) <= 160  # read at a glance (it was 173)
    assert keyed_stub.chat_requests == []
    slashed = nora("chat", *FAST, stdin=f"Hi\n/save {notes}\n", stub=keyed_stub)
    assert slashed.returncode == 0 and "holds something other than a conversation saved by Nora" in slashed.stderr
    assert notes.read_text() == "my notes\n"


def test_a_notebook_name_for_save_or_history_is_refused_before_anything_is_sent(keyed_stub, tmp_path):
    """--save lesson.ipynb started the chat and then failed to save every turn (exit 0, nothing kept);
    nora ask --history lesson.ipynb made the call, printed the answer and only then refused the file."""
    for name in ("lesson.ipynb", "Lesson.IPYNB"):
        path = tmp_path / name
        chatted = nora("chat", *FAST, "--save", str(path), stdin="Hi\n", stub=keyed_stub)
        asked = nora("ask", *FAST, "--history", str(path), "Hi", stub=keyed_stub)
        assert (chatted.returncode, chatted.stdout) == (2, "")
        assert chatted.stderr == (f"nora: error: --save: {str(path)!r} is a notebook's name: save the conversation "
                                  "to a .json name (or .md, to read)\n")
        assert (asked.returncode, asked.stdout) == (2, "")
        assert asked.stderr == f"nora: error: --history: {str(path)!r} is a notebook's name: give a .json file\n"
        assert not path.exists()
    assert keyed_stub.chat_requests == []


def test_a_history_file_in_a_folder_nora_cannot_write_in_is_refused_before_the_call(keyed_stub, tmp_path):
    """Else the call is made, the answer printed, and only then the file cannot take it."""
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / "chat.json").write_text(json.dumps({"messages": [SYSTEM]}))
    command = [sys.executable, "-m", "nora_widgets.cli", "ask", *FAST, "--history", str(folder / "chat.json"), "Hi"]
    if os.geteuid() == 0:  # root writes anywhere: drop that power, as an ordinary user has none of it
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv to drop the override")
        drop = "-dac_override,-dac_read_search"
        command = ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}", *command]
    folder.chmod(0o555)
    try:
        result = subprocess.run(command, env=nora_env(keyed_stub), stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, timeout=45)
    finally:
        folder.chmod(0o755)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"nora: error: --history: cannot write in folder {str(folder)!r} (permission denied)\n"
    assert keyed_stub.chat_requests == []


def test_two_asks_on_one_history_file_at_once_the_later_save_says_it_is_not_saved(keyed_stub, tmp_path):
    """Each process sent the file as it read it; writing the slower one's turn would drop the faster
    one's without a word (it did: both exited 0).  The file keeps what really happened, the slower one says so."""
    path = tmp_path / "shared.json"
    # the slow one's reply is held until the quick one is done: a fixed 2.8 s of pieces was less than a second
    # nora process took to start and finish with both cores busy, and the "quick" one came second
    quick_done = threading.Event()
    keyed_stub.enqueue(ok("one two three four five six seven eight", until=quick_done), ok("Quick answer."))
    slow = subprocess.Popen([sys.executable, "-m", "nora_widgets.cli", "ask", *FAST, "--timeout", "30",
                             "--history", str(path), "Slow question"], env=nora_env(keyed_stub),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not keyed_stub.chat_requests:  # the slow one has read the file (none yet) and is waiting for its answer
        assert time.monotonic() < deadline and slow.poll() is None
        time.sleep(0.05)
    quick = nora("ask", *FAST, "--history", str(path), "Quick question", stub=keyed_stub)
    quick_done.set()
    assert (quick.returncode, quick.stdout, quick.stderr) == (0, "Quick answer.\n", "")
    out, err = slow.communicate(timeout=30)
    assert slow.returncode == 1 and out == "one two three four five six seven eight\n"
    assert err == (f"(not saved to {path}: it changed while this question was asked, e.g. by another nora ask "
                   "on the same file; this turn is not in it)\n")
    assert json.loads(path.read_text())["messages"] == [SYSTEM, user("Quick question"), assistant("Quick answer.")]


def test_show_sent_says_when_trim_was_halved_because_the_list_did_not_fit(keyed_stub):
    """With /trim on, a list too long for the model is sent again with half the turns: the line
    said '/trim 2 left out ...' as if /trim 2 had sent 1 turn."""
    keyed_stub.enqueue("A1", "A2", "A3", context_length_exceeded(), "A4")
    result = nora("chat", *FAST, "--keep-turns", "2", "--show-sent", stdin="q1\nq2\nq3\nq4\n", stub=keyed_stub)
    assert result.returncode == 0 and result.stderr == ""
    assert [len(r.messages) for r in keyed_stub.chat_requests] == [2, 4, 6, 6, 4]  # the retry: 1 turn
    said = [line for line in result.stdout.splitlines() if line.startswith("(this call sent")]
    assert said[2].endswith(" tokens)")  # q3: both earlier turns went, nothing left out
    assert said[3].startswith("(this call sent 4 messages: the persona, 1 earlier turn and your message; ~")
    assert said[3].split("; ", 2)[-1] == ("with /trim 2 it did not fit the model's context window, so it went again "
                                          "with the last 1 turn: 4 older messages left out)")


def test_a_blank_line_inside_a_piped_block_is_echoed_as_it_is_sent():
    """The echo makes a piped session's stdout read like the screen: a blank line inside a block is
    part of the message, so it shows as '...: ' (it was left out, and the transcript hid it)."""
    script = ['"""', "Dear shop,", "", "two paragraphs.", '"""', "", "quit"]
    result = nora("chat", "--backend", "scripted", stdin="\n".join(script) + "\n")
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.splitlines()[2:] == [
        'you: """', "...: Dear shop,", "...: ", "...: two paragraphs.", '...: """',
        "nora: [scripted reply 1] I was sent 2 messages; the last one says: 'Dear shop,\\n\\ntwo paragraphs.'",
        "you: quit"]  # the blank line at the prompt is ignored, and not echoed


def test_pasted_code_with_an_indented_docstring_stays_inside_the_block(keyed_stub):
    """Only a line that is three double quotes from its first column ends a block: code pasted in one
    has docstrings whose quote lines are indented (the block ended there, and the rest went as
    messages of their own)."""
    code = ["def area(r):", '    """', "    The area of a circle.", '    """', "    return 3.14 * r * r"]
    result = nora("chat", *FAST, stdin="\n".join(['"""', *code, '"""', "quit"]) + "\n", stub=keyed_stub)
    assert result.returncode == 0 and result.stderr == ""
    assert [r.messages for r in keyed_stub.chat_requests] == [[SYSTEM, user("\n".join(code))]]


def test_a_server_that_wants_a_key_when_none_is_set_says_so(keyed_stub):
    # no OPENAI_API_KEY: Nora sends a placeholder (local servers take any); this one wants its key
    result = helpers.run_nora("ask", *FAST, "Hi", env=helpers.nora_env(keyed_stub.base_url))
    assert result.returncode == 1
    assert result.stderr == ("(error talking to the model: the server wants an API key and none is set (HTTP 401)"
                             " - export OPENAI_API_KEY=<the key this server expects>)\n")
    wrong = "sk-wrong-" + "Qq7" * 8  # a key that is set but wrong keeps the usual line
    result = helpers.run_nora("ask", *FAST, "Hi", env=helpers.nora_env(keyed_stub.base_url, wrong))
    assert "the server refused the API key" in result.stderr and wrong not in result.stderr


def test_a_long_server_error_is_cut_at_a_word_with_an_ellipsis_and_keeps_its_status(keyed_stub):
    words = ("Invalid 'max_tokens': 4096 is too large: the context window is 2048 tokens, shared by the prompt "
             "and the reply, so max_tokens must be less than 2048 (and leave room for the prompt), and this "
             "sentence goes on for a while longer so that it is well past two hundred characters in all")
    keyed_stub.enqueue(error(400, words, "invalid_request_error", None))
    result = nora("ask", *FAST, "Hi", stub=keyed_stub)
    line = result.stderr.strip()
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1
    shown = line.split("the server rejected the request: ", 1)[1].split("\u2026 (HTTP 400)")[0]
    assert words.startswith(shown) and words[len(shown)] == " "  # cut between two words, not inside one
    assert "\u2026 (HTTP 400) - " in line  # the status and the hint survive the cut


# --------------------------------------------------------------------------- #
# odd terminals: an encoding that is not UTF-8, escape sequences from the server


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_a_terminal_that_is_not_utf8_gets_escapes_not_a_traceback(keyed_stub, encoding):
    # PYTHONIOENCODING=ascii (or an old locale): a reply or a line of Nora's with a character the
    # terminal cannot show was a UnicodeEncodeError traceback; it is written as \u26a0 instead
    reply = "Caf\u00e9 \u26a0 \u2026 \U0001f4da \u05e9\u05dc\u05d5\u05dd done"
    shown = reply.encode(encoding, "backslashreplace").decode(encoding)
    keyed_stub.enqueue(reply, reply, reply, error(400, "x " * 150, "invalid_request_error"))

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess:  # read back in the terminal's encoding
        return subprocess.run([sys.executable, "-m", "nora_widgets.cli", *args], input=stdin, capture_output=True,
                              encoding=encoding, env=nora_env(keyed_stub, PYTHONIOENCODING=encoding), timeout=45)

    streamed, whole = run("ask", *FAST, "hi"), run("ask", *FAST, "--no-stream", "hi")
    chat = run("chat", *FAST, stdin="hi\n")
    cut = run("ask", *FAST, "hi")  # Nora's own line: a long error ends with '\u2026'
    assert [streamed.stdout, whole.stdout] == [shown + "\n"] * 2
    assert chat.stdout.splitlines()[-1] == f"nora: {shown}"
    assert [streamed.stderr, whole.stderr, chat.stderr] == [""] * 3
    assert [streamed.returncode, whole.returncode, chat.returncode, cut.returncode] == [0, 0, 0, 1]
    assert "x x\\u2026 (HTTP 400)" in cut.stderr and "Traceback" not in cut.stderr


HOSTILE = "ok \x1b]0;pwned\x07 \x1b]52;c;cm0gLXJm\x07 \x1b[2J\rX\b."  # title, clipboard, clear, overwrite
HOSTILE_SHOWN = "ok ^[]0;pwned^G ^[]52;c;cm0gLXJm^G ^[[2J^MX^H."


def test_every_face_shows_a_servers_escape_sequences_instead_of_obeying_them(keyed_stub):
    # a reply, a server's error message, the model names nora models prints: shown as cat -v shows
    # them (nora models printed its line about the default model, and a failure's message, raw)
    from tests.servers.openai_stub import StubServer

    keyed_stub.enqueue(HOSTILE, HOSTILE, error(400, HOSTILE, "invalid_request_error"))
    streamed, whole = nora("ask", *FAST, "hi", stub=keyed_stub), nora("ask", *FAST, "--no-stream", "hi", stub=keyed_stub)
    failed = nora("ask", *FAST, "hi", stub=keyed_stub)
    assert [streamed.stdout, whole.stdout] == [HOSTILE_SHOWN + "\n"] * 2
    one_line = HOSTILE_SHOWN.replace("^M", " ")  # an error message is one line: its \r became a space
    assert failed.stderr == (f"(error talking to the model: the server rejected the request: {one_line} (HTTP 400)"
                             " - check the model name and settings)\n")
    with StubServer(model=HOSTILE) as stub:  # the one name listed: nora's default
        listed = helpers.run_nora("models", "--base-url", stub.base_url, env=helpers.nora_env())
        stub.enqueue_models(error(500, HOSTILE), error(500, HOSTILE))  # asked at the start, then for the list
        refused = helpers.run_nora("models", "--base-url", stub.base_url, "--max-retries", "0", env=helpers.nora_env())
    assert (listed.returncode, listed.stdout) == (0, HOSTILE_SHOWN + "\n")
    assert listed.stderr == (f"(1 model at {stub.base_url}; nora uses {HOSTILE_SHOWN} unless told otherwise; "
                             "choose with --model or NORA_MODEL)\n")
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"nora: could not list the server's models: the server had an internal error: "
                                     f"{one_line} (HTTP 500)")
    for text in (streamed.stdout, whole.stdout, failed.stderr, listed.stdout, listed.stderr, refused.stderr):
        assert "\x1b" not in text and "\x07" not in text and "\r" not in text
    assert keyed_stub.chat_requests[0].messages == [SYSTEM, user("hi")]



def test_a_model_list_the_server_could_not_give_is_asked_for_again_by_the_next_model_command():
    # the server down when /model (or Tab) asked: the empty answer was kept for the session, so a
    # later /model NAME or Tab never asked again; now each such command asks once until a list comes
    from nora_widgets.clients import make_client
    from tests.servers.openai_stub import StubServer, drop

    def asked(stub):
        return sum(1 for r in stub.requests if r.path.rstrip("/").endswith("/models"))

    with StubServer(listed=["llama3.2", "qwen2.5"]) as stub:
        stub.enqueue_models(drop(), drop())
        client = make_client("openai", base_url=stub.base_url, model="qwen2.5", max_retries=0)
        session = cli.ChatSession(client, [SYSTEM], model="qwen2.5", out=io.StringIO(), err=io.StringIO())
        assert session.tab("", "/model ") == ["default"] and asked(stub) == 1  # down: no names
        session.command("/model llama3")
        assert asked(stub) == 2 and "the server lists" not in session.out.getvalue()  # down again: no note
        assert session.tab("", "/model ") == ["llama3.2", "qwen2.5", "default"] and asked(stub) == 3  # back
        session.command("/model llama3")
        assert "the server lists 2 models (llama3.2, qwen2.5), not 'llama3'" in session.out.getvalue()
        assert session.tab("q", "/model q") == ["qwen2.5"] and asked(stub) == 3  # the list is kept
        assert stub.chat_requests == []


def test_stdin_stdout_or_stderr_closed_at_the_start_is_read_as_dev_null_not_a_traceback():
    # `nora ask hi >&-`: Python gives sys.stdout = None, and nora ended in an AttributeError traceback
    def run(redirect: str, args: str, stdin: int | None = subprocess.DEVNULL) -> subprocess.CompletedProcess:
        script = f"exec {shlex.quote(sys.executable)} -m nora_widgets.cli {args} {redirect}"
        return subprocess.run(["bash", "-c", script], env=nora_env(), capture_output=True, text=True, timeout=45,
                              stdin=stdin)

    answer = run(">&-", "ask --backend scripted hi")
    chat = run("<&-", "chat --backend scripted")
    question = run("<&-", "ask --backend scripted -")
    assert (answer.returncode, answer.stderr) == (0, "")  # the answer went where > /dev/null sends it
    assert (chat.returncode, chat.stderr) == (0, "") and chat.stdout.endswith("quit or Ctrl-D to leave)\n")
    assert (question.returncode, question.stderr) == (2, f"nora: error: {cli.NOTHING_TO_ASK}\n")


# --------------------------------------------------------------------------- #
# a server that was not up yet when nora started

NOT_KNOWN = ("model not known yet: the server did not answer when asked for its models (the next call asks again "
             "and sends its model if it lists one, else gpt-4o-mini)")


def test_nora_chat_started_before_the_server_sends_its_model_once_it_answers():
    # `nora chat` typed before `nora serve` (vLLM, llama.cpp's server) was up: every turn asked for
    # gpt-4o-mini for the whole session, and a server that serves only its own model refused each one
    port = helpers.free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nora_widgets.cli", "chat", *FAST],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=helpers.nora_env(f"http://127.0.0.1:{port}/v1", KEY))
    seen, reader, wait_for = reading(proc)

    def type_line(line: str) -> None:
        proc.stdin.write(line.encode() + b"\n")
        proc.stdin.flush()

    stub = StubServer(port=port, model="SmolLM2-135M-Instruct", strict=True)  # refuses gpt-4o-mini, as vLLM would
    try:
        wait_for(b"Ctrl-D to leave)\n")
        type_line("/model")
        wait_for(b"asks for one by name)\n")
        type_line("hi")
        wait_for(b"your network)\n")
        stub.start()
        type_line("hi again")
        wait_for(b"the one the server lists)\n")
        type_line("/model")
        type_line("quit")
        proc.stdin.close()
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        stub.stop()
    reader.join(5)
    out = bytes(seen).decode()
    assert out.splitlines() == [
        f"Nora chat: OpenAI-compatible server http://127.0.0.1:{port}/v1, {NOT_KNOWN}",
        "(type /help for commands; quit or Ctrl-D to leave)",
        "you: /model",
        "(model: not known yet: the server did not answer when asked for its models; the next call asks again and "
        "sends its model if it lists one, else gpt-4o-mini; /model NAME asks for one by name)",
        "you: hi",
        f"(error talking to the model: could not reach the server: nothing is listening at 127.0.0.1:{port} - check "
        "OPENAI_BASE_URL and your network)",
        "you: hi again",
        "nora: I got 2 messages; the last one says 'hi again'.",
        "(model: SmolLM2-135M-Instruct, the one the server lists)",
        "you: /model",
        "(model: SmolLM2-135M-Instruct, the default; /model NAME asks for another from the next call on)",
        "you: quit",
    ]
    assert [(r.method, r.path, (r.body or {}).get("model")) for r in stub.requests] == [
        ("GET", "/v1/models", None), ("POST", "/v1/chat/completions", "SmolLM2-135M-Instruct")]
    assert_no_key(out)


def test_nora_ask_asks_for_the_models_at_its_turn_and_keeps_stdout_the_answer_alone():
    # nora ask asks GET /models once, just before its one turn (not also when the client is built):
    # one model is sent without a word; several get the line nora chat's start gives, on stderr
    # after the failure
    with StubServer(api_key=KEY, model="SmolLM2-135M-Instruct", strict=True) as one:
        done = nora("ask", *FAST, "Hi", stub=one)
        assert (done.returncode, done.stdout, done.stderr) == (0, "I got 2 messages; the last one says 'Hi'.\n", "")
        assert [(r.method, (r.body or {}).get("model")) for r in one.requests] == [
            ("GET", None), ("POST", "SmolLM2-135M-Instruct")]
    with StubServer(api_key=KEY, listed=["llama3.2", "qwen2.5"], strict=True) as several:
        done = nora("ask", *FAST, "Hi", stub=several)
        assert (done.returncode, done.stdout) == (1, "")
        assert done.stderr.splitlines() == [
            "(error talking to the model: the server does not know this model or URL: The model `gpt-4o-mini` "
            "does not exist. (HTTP 404) - check --model (nora models lists them) and OPENAI_BASE_URL)",
            "(the server lists 2 models (llama3.2, qwen2.5), not 'gpt-4o-mini': choose one with --model or NORA_MODEL)",
        ]


def test_nora_models_while_the_server_starts_names_the_model_a_chat_would_send():
    # a 503 to make_client's question (llama.cpp's server loading its model): the last line said "nora asks
    # for 'gpt-4o-mini' ... and this server does not list it", though a chat would send the one model listed
    from tests.servers.openai_stub import StubServer

    starting = error(503, "Loading model", "unavailable_error")
    for answers_at, retries in (("the hook", "0"), ("a retry", "1")):
        with StubServer(model="served-one") as stub:
            stub.enqueue_models(*[starting] * (1 if answers_at == "the hook" else 3))
            result = helpers.run_nora("models", "--max-retries", retries, env=helpers.nora_env(stub.base_url))
            assert (result.returncode, result.stdout) == (0, "served-one\n"), result.stderr
            assert result.stderr == (f"(1 model at {stub.base_url}; nora uses served-one unless told otherwise; "
                                     "choose with --model or NORA_MODEL)\n"), answers_at


def test_nora_chat_with_a_wrong_key_says_at_the_start_that_the_server_refused_it(keyed_stub):
    # the opening line said "model gpt-4o-mini" as if all were well: its GET /models had got a 401
    wrong = "sk-wrong-" + "Zz4" * 8
    for key, said in ((wrong, "refused the key (HTTP 401) - check OPENAI_API_KEY"),
                      (None, "wants a key (HTTP 401) - set OPENAI_API_KEY")):
        env = helpers.nora_env(keyed_stub.base_url, key)
        result = helpers.run_nora("chat", *FAST, env=env, stdin="quit\n")
        first = result.stdout.splitlines()[0]
        assert first == f"Nora chat: OpenAI-compatible server {keyed_stub.base_url}, which {said}", first
        assert len(first) < 120 and wrong not in result.stdout + result.stderr
        named = helpers.run_nora("chat", *FAST, "--model", "stub-model", env=env, stdin="quit\n")  # nothing asked
        assert named.stdout.splitlines()[0] == f"Nora chat: OpenAI-compatible server {keyed_stub.base_url}, " \
                                               "model stub-model"


def test_nora_ask_with_a_wrong_key_says_it_once(keyed_stub):
    wrong = "sk-wrong-" + "Zz4" * 8
    before = len(keyed_stub.requests)
    result = helpers.run_nora("ask", *FAST, "Hi", env=helpers.nora_env(keyed_stub.base_url, wrong))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == ("(error talking to the model: the server refused the API key (HTTP 401) "
                             "- check OPENAI_API_KEY)\n")
    assert [(r.method, r.path) for r in keyed_stub.requests[before:]] == [
        ("GET", "/v1/models"), ("POST", "/v1/chat/completions")]


@pytest.mark.parametrize("down", ["503", "drop"])
def test_nora_ask_against_a_server_that_is_down_asks_for_its_models_once(down):
    # make_client asked GET /models, and the turn asked again at once: two waits for one question
    with StubServer(api_key=KEY) as stub:
        stub.enqueue_models(*[error(503, "no server behind me", "unavailable_error") if down == "503" else drop()] * 2)
        result = nora("ask", *FAST, "Hi", stub=stub)
        assert (result.returncode, result.stdout, result.stderr) == (0, "I got 2 messages; the last one says 'Hi'.\n", "")
        assert [(r.method, (r.body or {}).get("model")) for r in stub.requests] == [("GET", None), ("POST", "gpt-4o-mini")]


def test_piped_nora_chat_before_a_server_that_never_answers_waits_once_before_its_first_turn():
    # GET /models at the start (5 s without an answer), then the first turn asked again at once (5 s more):
    # with stdin a pipe nothing can have been typed in between, so the second ask only doubled the wait
    with StubServer(api_key=KEY) as stub:
        stub.enqueue_models(stall(8), stall(8))  # no answer within the 5 s nora waits for the list
        result = nora("chat", *FAST, stdin="hi\nquit\n", stub=stub)
        assert (result.returncode, result.stderr) == (0, "")
        assert result.stdout.splitlines() == [f"Nora chat: OpenAI-compatible server {stub.base_url}, {NOT_KNOWN}",
                                              "(type /help for commands; quit or Ctrl-D to leave)",
                                              "you: hi", "nora: I got 2 messages; the last one says 'hi'.",
                                              "you: quit"]
        assert [(r.method, r.path, (r.body or {}).get("model")) for r in stub.requests] == [
            ("GET", "/v1/models", None), ("POST", "/v1/chat/completions", "gpt-4o-mini")]
        # one wait of 5 s between the list's ask and the turn, as the server saw them (two before: 10.3 s).  Not the
        # process's whole run: starting Python and importing openai took 3-5 s more with both cores busy
        waited = stub.requests[1].at - stub.requests[0].at
        assert 4.5 <= waited < 9, waited


def test_a_piped_first_turn_after_the_hold_asks_for_the_models_again(monkeypatch, capsys):
    # the hold is for a first turn that comes at once: a pipe whose first line comes later (the server
    # may be up by then) asks as before, and so does every later turn
    monkeypatch.setattr(cli, "PIPED_FIRST_ASK", 0.0)
    with StubServer(model="served-one", strict=True) as stub:
        stub.enqueue_models(drop())  # down at the start, up at the first turn
        status, out, err = run_main(monkeypatch, capsys, ["chat", *FAST, "--base-url", stub.base_url],
                                    stdin="hi\nquit\n")
        assert (status, err) == (0, "") and "(model: served-one, the one the server lists)" in out
        assert [(r.method, (r.body or {}).get("model")) for r in stub.requests] == [
            ("GET", None), ("GET", None), ("POST", "served-one")]


def test_a_persona_too_long_for_the_window_is_advised_as_such_in_chat_and_ask(keyed_stub):
    # the persona overflowed the window and the advice was "shorten them, or send the message in parts"
    persona = "Be a librarian. " * 2500  # 40,000 characters
    said = "(error talking to the model: the persona and your message (40,000 + 2 characters) overflow the 2,048-token " \
           "context window - "
    keyed_stub.enqueue(context_length_exceeded())
    chat = nora("chat", *FAST, "--system", persona, stdin="Hi\nquit\n", stub=keyed_stub)
    assert said + "shorten the persona: /system TEXT (or --system TEXT at the start))" in chat.stderr.splitlines()
    keyed_stub.enqueue(context_length_exceeded())
    ask = nora("ask", *FAST, "--system", persona, "Hi", stub=keyed_stub)
    assert (ask.returncode, ask.stdout) == (1, "")
    assert ask.stderr == said + "shorten the persona: --system TEXT)\n"


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_an_empty_reply_is_said_so_not_a_bare_prefix(stream):
    # a server can send a reply with no text (seen once through llama-cpp-python's server): nora chat
    # printed a bare 'nora: ' line, which read as a fault of nora's
    out, err = io.StringIO(), io.StringIO()
    session = cli.ChatSession(ScriptedClient(["", "Hi!"]), [SYSTEM], out=out, err=err, stream=stream)
    assert session.send("hello")
    assert out.getvalue() == "nora: \n"
    assert err.getvalue() == ("(the reply was empty: the model sent no text; it is in the history as it came; "
                              "/retry asks again)\n")
    assert session.history[-1] == {"role": "assistant", "content": ""}
    assert session.send("again") and err.getvalue().count("empty") == 1  # a reply with text: no note


def test_nora_ask_says_an_empty_reply_on_stderr(keyed_stub):
    keyed_stub.enqueue("")
    result = nora("ask", *FAST, "Any Le Guin?", stub=keyed_stub)
    assert (result.returncode, result.stdout) == (0, "\n")  # stdout: the answer alone, as it came
    assert result.stderr == ("(the reply was empty: the model sent no text; it is in the history as it came; "
                             "run the command again)\n")


def test_retry_after_system_says_the_persona_changed_and_after_model_or_temperature_the_same_list(monkeypatch, capsys):
    # /system changes message 0 of every call: /retry must not call the list "the same"; /model and
    # /temperature change how it is asked, not the messages; /system back to what the last call sent is the same
    script = ["Hello", "/system Be very brief.", "/retry", "/model other", "/retry", "/temperature 0", "/retry",
              "/system off", "/retry", "/edit 1 Hi", "/system Pirate.", "/retry", "/system Pirate.", "/retry"]
    status, out, err = run_main(monkeypatch, capsys, ["chat", "--backend", "scripted"], "\n".join(script) + "\n")
    lines = out.splitlines()
    assert (status, err) == (0, "")
    why = "the model has no memory of its last answer"
    retries = [lines[i + 1] for i, line in enumerate(lines) if line == "you: /retry"]
    assert retries == [f"(sending the 2 messages again, with the system prompt changed since the last call: {why})",
                       f"(sending the same 2 messages again: {why})",
                       f"(sending the same 2 messages again: {why})",
                       f"(sending the 1 message again, with the system prompt changed since the last call: {why})",
                       # /edit 1 rewrote the reply /retry drops (message 2 once the persona is back): not an edit it sends
                       f"(sending the 2 messages again, with the system prompt changed since the last call: {why})",
                       f"(sending the same 2 messages again: {why})"]
    assert lines[-1] == "nora: [scripted reply 7] I was sent 2 messages; the last one says: 'Hello'"


def test_retry_after_an_edit_of_the_reply_it_retries_sends_the_same_list_and_says_so(monkeypatch, capsys):
    # the edited reply is the one /retry drops: what goes out is what the last call sent
    script = ["Hello", "/edit 2 We have none.", "/retry", "/edit 1 Hi", "/retry"]
    status, out, err = run_main(monkeypatch, capsys, ["chat", "--backend", "scripted"], "\n".join(script) + "\n")
    lines = out.splitlines()
    assert (status, err) == (0, "")
    retries = [lines[i + 1] for i, line in enumerate(lines) if line == "you: /retry"]
    assert retries == ["(sending the same 2 messages again: the model has no memory of its last answer)",
                       "(sending the 2 messages again, as edited since the last call: the model has no memory of "
                       "its last answer)"]
    assert lines[-1] == "nora: [scripted reply 3] I was sent 2 messages; the last one says: 'Hi'"


def test_retry_after_trim_changed_says_what_is_sent_now_not_the_same(monkeypatch, capsys):
    # /trim between the call and /retry changes what goes out: 'the same 4 messages' was said when the last
    # call had sent 6.  A /trim that leaves the list as it was (more turns than there are) is still the same.
    script = ["One", "Two", "Three", "/trim 1", "/retry", "/retry", "/trim off", "/retry", "/trim 9", "/retry",
              "/trim 0", "/edit 5 Three?", "/retry"]
    status, out, err = run_main(monkeypatch, capsys, ["chat", "--backend", "scripted", "--show-sent"],
                                "\n".join(script) + "\n")
    lines = out.splitlines()
    assert (status, err) == (0, "")
    why = "the model has no memory of its last answer"
    retries = [lines[i + 1] for i, line in enumerate(lines) if line == "you: /retry"]
    assert retries == [f"(sending 4 messages, with /trim changed since the last call (/trim 1 sends 1 earlier "
                       f"turn, not 2): {why})",
                       f"(sending the same 4 messages again: {why})",
                       f"(sending 6 messages, with /trim changed since the last call (trimming off sends 2 "
                       f"earlier turns, not 1): {why})",
                       f"(sending the same 6 messages again: {why})",
                       f"(sending 2 messages, as edited and with /trim changed since the last call (/trim 0 sends "
                       f"no earlier turn, not 2): {why})"]
    sent = [line for line in lines if line.startswith("(this call sent")]
    assert sent[3].startswith("(this call sent 4 messages: the persona, 1 earlier turn and your message; ")
    assert sent[3].endswith("; /trim 1 left out 2 older messages)")  # --show-sent: what this retry sent
    assert lines[-2] == "nora: [scripted reply 8] I was sent 2 messages; the last one says: 'Three?'"
