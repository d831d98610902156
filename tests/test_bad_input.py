"""Bad input: empty text, a 1 MB paste, control characters and NUL bytes.

The promises: one clear line (never a traceback), nothing lost (the history is as
before, the typed text is still there to edit), and text is data: what the
terminal shows is harmless, what the list and the transcript keep is exact.
Remote paths use the real openai client against the loopback stub server.
"""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import threading

import pytest

from nora_widgets import cli
from nora_widgets.clients import ScriptedClient, make_client
from nora_widgets.conversation import SYSTEM_PROMPT, new_history, safe_run_turn
from nora_widgets.transcript import load_transcript, save_transcript
from tests.helpers import nora_env, panel_for, panel_send, run_nora
from tests.servers.openai_stub import StubServer, context_length_exceeded, default_reply, ok

pytestmark = pytest.mark.timeout(60)

KEY = "sk-test-badinput-3f8a1b2c9d"
SYSTEM = {"role": "system", "content": SYSTEM_PROMPT}
MEGABYTE = "0123456789abcdef" * 65536  # 1,048,576 characters, one line
# Terminal commands and other troublemakers: NUL, an SGR colour, a window-title OSC, BEL, CR, BS,
# DEL, the one-byte CSI (U+009B) and a right-to-left override that would reorder what follows.
CONTROL = "nul\x00 red\x1b[31m!\x1b[0m title\x1b]0;pwned\x07 cr\r bs\x08 del\x7f csi\x9b2J rlo\u202eevil.exe"


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def client_for(stub: StubServer, **kw):
    return make_client("openai", api_key=KEY, base_url=stub.base_url, max_retries=0, timeout=5, **kw)


def nora(stub: StubServer, *args: str, stdin: str) -> subprocess.CompletedProcess:
    return run_nora(*args, env=nora_env(stub.base_url, KEY), stdin=stdin)


# --------------------------------------------------------------------------- #
# empty text: refused before anything is sent


@pytest.mark.parametrize("text", ["", "   ", "\n\t ", "\u3000\u00a0", None, 42, b"bytes"],
                         ids=["empty", "spaces", "newline-tab", "unicode-spaces", "None", "int", "bytes"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_core_refuses_empty_or_non_text_without_a_request(stub_server, text, stream):
    history = new_history()
    result = safe_run_turn(client_for(stub_server), history, text, on_text=(lambda p: None) if stream else None)
    assert result.failure.kind == "bad_input" and history == new_history()
    # no model was talked to: the line says it was not sent, not "error talking to the model"
    assert str(result) in ("(not sent: nothing to send: the message is empty)",
                           f"(not sent: the message must be text, not {type(text).__name__})")
    assert stub_server.chat_requests == []  # (make_client asked for the model list: not a turn)


def test_cli_skips_blank_lines_and_refuses_an_empty_question(stub_server):
    result = nora(stub_server, "chat", stdin="\n   \n\t\nhi\n")
    assert (result.returncode, result.stderr) == (0, "")
    assert [r.messages for r in stub_server.chat_requests] == [[SYSTEM, user("hi")]]
    for args, stdin in ((["ask", "-"], "  \n\t\n"), (["ask", "", " "], ""), (["ask"], "\n")):
        result = nora(stub_server, *args, stdin=stdin)
        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr == "nora: error: nothing to ask: give a question, or pipe one in (- stands for stdin)\n"
    assert len(stub_server.chat_requests) == 1


def test_panel_refuses_whitespace_without_a_request(stub_server):
    panel = panel_for(client_for(stub_server))
    assert panel_send(panel, "\n\t ") is None
    assert "nothing to send: the message is empty" in panel.error.value and len(panel.history) == 1
    assert stub_server.chat_requests == []


# --------------------------------------------------------------------------- #
# a 1 MB paste: sent whole if the server takes it, one clear line if it does not


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_core_sends_a_megabyte_exactly_or_says_it_is_too_long(stub_server, stream):
    client = client_for(stub_server)
    on_text = (lambda p: None) if stream else None
    history = new_history()
    stub_server.enqueue(context_length_exceeded())
    result = safe_run_turn(client, history, MEGABYTE, on_text=on_text)
    assert result.failure.kind == "too_long" and history == new_history()
    assert str(result) == ("(error talking to the model: your message and persona (1,048,576 + 108 characters) overflow "
                           "the 2,048-token context window - shorten them, or send the message in parts)")
    assert len(str(result)) <= 170  # it was 209
    result = safe_run_turn(client, history, MEGABYTE, on_text=on_text)  # a server with room takes it whole
    assert result.ok and history[1] == user(MEGABYTE)
    assert stub_server.chat_requests[-1].messages[-1]["content"] == MEGABYTE
    stub_server.enqueue(context_length_exceeded())  # amnesia: nothing earlier is sent, so trimming cannot help
    result = safe_run_turn(client, history, MEGABYTE, keep_last_n_turns=0, on_text=on_text)
    assert result.failure.kind == "too_long" and len(history) == 3


def test_a_paste_over_the_window_after_earlier_turns_says_the_message_is_too_long(stub_server):
    # OpenAI's 400 names the window ("maximum context length is 2048 tokens"); the persona and the
    # paste alone are counted (an estimate for a server: it must be over by a quarter): the line said
    # "trim it", and after a trim the same paste failed again
    client = client_for(stub_server)
    history = new_history()
    assert safe_run_turn(client, history, "hello").ok
    before = list(history)
    stub_server.enqueue(context_length_exceeded())
    result = safe_run_turn(client, history, "Le Guin's novels, one by one. " * 400)  # ~2,800 tokens
    assert history == before and result.failure.kind == "too_long"
    assert "overflow the 2,048-token context window" in str(result)
    stub_server.enqueue(context_length_exceeded())  # alone it fits: trimming the earlier turns would help
    result = safe_run_turn(client, history, "Le Guin's novels, one by one. " * 200)  # ~1,400 tokens
    assert history == before and result.failure.kind == "context_length" and "trim it" in str(result)


def test_cli_megabyte_paste_over_a_pipe(stub_server, tmp_path):
    saved = tmp_path / "big.json"
    stub_server.enqueue(context_length_exceeded())
    result = nora(stub_server, "chat", "--save", str(saved), stdin=f"{MEGABYTE}\nhello\n{MEGABYTE}\n")
    assert result.returncode == 0
    assert result.stderr.splitlines() == [
        "(error talking to the model: your message and persona (1,048,576 + 108 characters) overflow the 2,048-token "
        "context window - shorten them, or send the message in parts)"]
    out = result.stdout.splitlines()
    assert out[2:5] == [f"you: {MEGABYTE}", "you: hello", f"nora: {default_reply([SYSTEM, user('hello')])}"]
    assert stub_server.chat_requests[1].messages == [SYSTEM, user("hello")]  # the refused paste left no trace
    assert stub_server.chat_requests[2].messages[-1] == user(MEGABYTE)  # the second time, the server took it
    messages, _ = load_transcript(saved)
    assert messages[-2] == user(MEGABYTE) and len(messages) == 5

    asked = nora(stub_server, "ask", "-", stdin=MEGABYTE + "\n")
    assert asked.returncode == 0 and asked.stdout.startswith("I got 2 messages; the last one says '0123")
    assert stub_server.chat_requests[-1].messages == [SYSTEM, user(MEGABYTE)]


def test_panel_megabyte_paste_is_refused_in_one_line_and_kept_in_the_input(stub_server):
    panel = panel_for(client_for(stub_server), views=("inspector", "gauge", "cost"))
    stub_server.enqueue(context_length_exceeded())
    result = panel_send(panel, MEGABYTE)
    assert result.failure.kind == "too_long" and len(panel.history) == 1
    assert "shorten them" in panel.error.value and panel.prompt.value == MEGABYTE  # nothing lost: edit and resend
    assert panel_send(panel, MEGABYTE).ok and panel.history[1] == user(MEGABYTE)
    assert panel_send(panel, "next").ok and len(panel.history) == 5


@pytest.mark.model
def test_the_embedded_model_refuses_a_megabyte_with_its_window_size():
    pytest.importorskip("llama_cpp", reason="the embedded model needs llama-cpp-python ('.[local]')")
    from nora_widgets.local import LocalClient

    history = new_history()
    result = safe_run_turn(LocalClient(), history, MEGABYTE, max_tokens=8)
    assert result.failure.kind == "too_long" and history == new_history()
    assert "2,048-token context window" in result and "shorten them" in result


# --------------------------------------------------------------------------- #
# control characters and NUL bytes: shown harmlessly, kept exactly


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_core_keeps_control_characters_exactly_both_ways(stub_server, tmp_path, stream):
    stub_server.enqueue(ok(CONTROL))
    history = new_history()
    result = safe_run_turn(client_for(stub_server), history, CONTROL, on_text=(lambda p: None) if stream else None)
    assert result == CONTROL and history == [SYSTEM, user(CONTROL), assistant(CONTROL)]
    assert stub_server.chat_requests[-1].messages[-1]["content"] == CONTROL  # sent byte for byte
    path = save_transcript(tmp_path / "c.json", history)
    assert load_transcript(path)[0] == history
    assert "\x00" not in path.read_text() and "\\u0000" in path.read_text()  # JSON escapes what is unsafe


def visible(text: str) -> bool:
    """True if text holds nothing a terminal would act on: only printable characters and newlines."""
    return all(ch == "\n" or (ch.isprintable() and ord(ch) not in cli._SHOW_AS_CODE) for ch in text)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_cli_shows_control_characters_harmlessly_and_saves_them_exactly(stub_server, tmp_path, stream):
    saved = tmp_path / "c.json"
    stub_server.enqueue(ok(CONTROL))
    flags = [] if stream else ["--no-stream"]
    result = nora(stub_server, "chat", *flags, "--save", str(saved), stdin=CONTROL + "\n")
    assert (result.returncode, result.stderr) == (0, "")
    shown = cli._printable(CONTROL)
    assert shown == ("nul^@ red^[[31m!^[[0m title^[]0;pwned^G cr^M bs^H del\\x7f csi\\x9b2J "
                     "rlo<U+202E>evil.exe")
    assert result.stdout.splitlines()[2:] == [f"you: {shown}", f"nora: {shown}"]
    assert visible(result.stdout)
    assert stub_server.chat_requests[0].messages == [SYSTEM, user(CONTROL)]
    history = [SYSTEM, user(CONTROL), assistant(CONTROL)]
    assert load_transcript(saved)[0] == history
    again = nora(stub_server, "chat", "--load", str(saved), stdin="and then?\n")  # the round trip goes on
    assert again.returncode == 0
    assert stub_server.chat_requests[-1].messages == history + [user("and then?")]


def test_cli_survives_half_an_emoji_from_the_server(stub_server, tmp_path):
    """A server may escape text as UTF-16 and split a pair across chunks: Python then holds lone
    surrogates, which cannot be written as UTF-8.  Shown as <U+D83D>, saved escaped, loaded back exactly."""
    reply = "a broken \ud83d emoji and \ude00 its other half"
    saved = tmp_path / "s.json"
    stub_server.enqueue(ok(reply))
    result = nora(stub_server, "chat", "--save", str(saved), stdin="hi\n")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines()[-1] == "nora: a broken <U+D83D> emoji and <U+DE00> its other half"
    assert load_transcript(saved)[0][-1] == assistant(reply)


def test_panel_keeps_control_characters_exactly(stub_server, tmp_path):
    stub_server.enqueue(ok(CONTROL))
    panel = panel_for(client_for(stub_server))
    assert panel_send(panel, CONTROL) == CONTROL
    assert panel.history == [SYSTEM, user(CONTROL), assistant(CONTROL)]
    panel.save_to(str(tmp_path / "p.json"))
    before = copy.deepcopy(panel.history)
    panel.clear_history()
    panel.load_from(str(tmp_path / "p.json"))
    assert panel.history == before
    assert json.loads((tmp_path / "p.json").read_text())["messages"] == before


# --------------------------------------------------------------------------- #
# files that are not regular files: a device with no end, a pipe


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_cli_load_of_an_endless_file_is_one_line_and_changes_nothing():
    """/dev/zero reports a size of 0, so a size check alone lets it through: reading stops at the limit."""
    out, err = io.StringIO(), io.StringIO()
    history = [SYSTEM, user("hi"), assistant("hello")]
    session = cli.ChatSession(ScriptedClient(), history, out=out, err=err)
    session.command("/load /dev/zero")
    assert out.getvalue() == ""
    assert err.getvalue() == ("(cannot load /dev/zero: over the 20,971,520-byte limit; "
                              "the conversation is unchanged)\n")
    assert session.history == [SYSTEM, user("hi"), assistant("hello")]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_transcript_loads_from_a_pipe(tmp_path):
    """`nora chat --load <(cat chat.json)`: a pipe has no size, and is still read to the end."""
    fifo = tmp_path / "chat.fifo"
    os.mkfifo(fifo)
    document = json.dumps([SYSTEM, user("hi"), assistant("hello")])
    writer = threading.Thread(target=fifo.write_text, args=(document,))
    writer.start()
    try:
        assert load_transcript(fifo)[0] == [SYSTEM, user("hi"), assistant("hello")]
    finally:
        writer.join(5)
