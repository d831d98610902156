"""The API key goes to the server and nowhere else.

One test runs a real CLI session, a panel session and a magics session against a
stub server that requires a fresh random key (from OPENAI_API_KEY, the only
place Nora reads it) and that echoes the key back in its error messages, as real
servers do for a wrong key.  Everything a person or a file could see afterwards
is collected and scanned: stdout, stderr, debug logs, saved transcripts, the
state of every widget in the panel, what the magics displayed, the wire views,
the failure lines, every file under the test's tmp dir, and every lesson notebook
in the repository.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import re
import secrets
from pathlib import Path

import pytest

from nora_widgets.clients import make_client
from nora_widgets.conversation import new_history, safe_run_turn
from tests.helpers import nora_env, run_nora
from tests.servers.openai_stub import StubServer, error, ok

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def key() -> str:
    return "sk-test-" + secrets.token_hex(20)


def echo_400(key: str):
    return error(400, f"Incorrect API key provided: {key}. You can find your API key at the dashboard.",
                 "invalid_request_error", "invalid_api_key")


def echo_401(key: str):
    return error(401, f"Incorrect API key provided: {key}.", "invalid_request_error", "invalid_api_key")


def fragments(key: str) -> list[str]:
    """The key and long pieces of it: a truncated key is still a leak."""
    secret = key[len("sk-test-"):]
    return [key, secret[:16], secret[-16:]]


def assert_clean(key: str, where: str, text: str | bytes) -> None:
    data = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    for piece in fragments(key):
        assert piece not in data, f"the key (or part of it) is in {where}"


def widget_tree_states(root) -> list[dict]:
    """get_state() of root and of every widget reachable from it (children, layouts, styles...)."""
    from ipywidgets import Widget

    states, seen, todo = [], set(), [root]
    while todo:
        widget = todo.pop()
        if id(widget) in seen:
            continue
        seen.add(id(widget))
        states.append(widget.get_state())
        for name in widget.keys:
            value = getattr(widget, name, None)
            for item in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(item, Widget):
                    todo.append(item)
    return states


def run_cli_session(stub: StubServer, key: str, tmp_path: Path) -> dict[str, str]:
    env = nora_env(stub.base_url, key, OPENAI_LOG="debug")  # OPENAI_LOG: openai's own debug log, on stderr
    stub.enqueue(ok("Yes, two novels."), echo_400(key), ok("14.50 euros."), echo_401(key))
    lines = ["Do you have Le Guin?", "bad one", "How much is it?", "bad two", "/history", "/save cli-copy.json"]
    chat = run_nora("chat", "--max-retries", "0", "--timeout", "5", "--save", "cli.json",
                    stdin="\n".join(lines) + "\n", env=env, cwd=tmp_path)
    assert chat.returncode == 0, chat.stderr
    assert "Incorrect API key provided: ***" in chat.stderr  # the echo came through, masked
    stub.enqueue(echo_400(key))
    ask = run_nora("ask", "--max-retries", "0", "hello", stdin=None, env=env, cwd=tmp_path)
    assert ask.returncode == 1 and "Incorrect API key provided: ***" in ask.stderr
    return {"cli stdout": chat.stdout, "cli stderr": chat.stderr, "ask stdout": ask.stdout, "ask stderr": ask.stderr}


def run_panel_session(stub: StubServer, key: str, tmp_path: Path) -> dict[str, str]:
    from nora_widgets.panel import VIEWS, ChatPanel

    stub.enqueue(ok("Yes, two novels."), echo_400(key))
    views = tuple(v for v in VIEWS if v != "compare")  # side by side (a second call per question) comes later
    panel = ChatPanel(views=views, flush_interval=0.0)  # the client is built from the environment
    seen = {}
    assert panel.ask("Do you have Le Guin?", timeout=20).ok
    failed = panel.ask("bad one", timeout=20)
    assert not failed.ok and "Incorrect API key provided: ***" in panel.error.value
    seen["panel failure"] = f"{failed} {failed.failure!r} {panel.error.value}"
    panel.toggles["compare"].value = True
    assert panel.ask("How much is it?", timeout=20).ok
    panel.save_to(str(tmp_path / "panel.json"))
    assert panel.wire_view.data["headers"]["authorization"] == "Bearer ***"
    seen["panel wire"] = json.dumps(panel.wire_view.data) + panel.wire_view.body.value
    seen["panel widget state"] = json.dumps(widget_tree_states(panel), default=repr)
    seen["panel header"] = panel.header.value + panel.status.value + panel.file_note.value
    assert stub.chat_requests[-1].headers["authorization"] == f"Bearer {key}"  # it did go to the server
    return seen


def run_magics_session(stub: StubServer, key: str, tmp_path: Path) -> dict[str, str]:
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    from nora_widgets import magics

    stub.enqueue(ok("Yes, two novels."), echo_400(key))
    saved, magics._SESSION = magics._SESSION, magics.NotebookSession()
    ip = InteractiveShell.instance()
    shown = []
    try:
        ip.run_line_magic("load_ext", "nora_widgets")
        cells = ["%chat --backend openai --max-retries 0 --timeout 5", "%%chat\nDo you have Le Guin?",
                 "%%chat\nbad one", "%chat wire", "%chat history", f"%chat save {tmp_path / 'magics.json'}",
                 "%chat", "nora_history"]
        for cell in cells:
            with capture_output() as cap:
                result = ip.run_cell(cell, store_history=False)
            assert result.success, (cell, result.error_in_exec)
            shown.append(cap.stdout + cap.stderr + json.dumps([o.data for o in cap.outputs], default=repr))
        shown.append(repr(magics.session()))
    finally:
        ip.run_line_magic("unload_ext", "nora_widgets")
        magics._SESSION = saved
    text = "\n".join(shown)
    assert "Incorrect API key provided: ***" in text and "authorization: Bearer ***" in text
    return {"magics outputs": text}


def test_the_key_is_in_no_output_log_file_widget_or_lesson(key, tmp_path, monkeypatch, caplog, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", key)  # from the environment only, as a learner would set it
    for name in ("OPENAI_BASE_URL", "NORA_MODEL", "NORA_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NORA_MAX_RETRIES", "0")
    caplog.set_level(logging.DEBUG)  # every library's log records, in this process
    with StubServer(api_key=key) as stub:
        monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
        seen = run_cli_session(stub, key, tmp_path)
        seen.update(run_panel_session(stub, key, tmp_path))
        seen.update(run_magics_session(stub, key, tmp_path))
        assert all(r.headers.get("authorization") == f"Bearer {key}" for r in stub.requests)
    out, err = capsys.readouterr()
    seen["this process's stdout"], seen["stderr"] = out, err
    seen["log records"] = "\n".join(f"{r.name} {r.getMessage()} {r.args!r}" for r in caplog.records)
    assert len(caplog.records) > 10  # the logs were really captured

    for where, text in seen.items():
        assert_clean(key, where, text)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {"cli.json", "cli-copy.json", "panel.json", "magics.json"} <= {p.name for p in files}
    for path in files:
        assert_clean(key, str(path), path.read_bytes())


# A real key in a lesson would be one of these; fakes for demos start with sk-test-.
REAL_LOOKING = re.compile(r"\bsk-(?!test-)[A-Za-z0-9_\-]{16,}")
UNMASKED_BEARER = re.compile(r"Bearer (?!\*\*\*)[A-Za-z0-9_\-]{8,}")
KEY_IN_SOURCE = re.compile(r"""(%env\s+OPENAI_API_KEY\s*=\s*\S|environ\[["']OPENAI_API_KEY["']\]\s*=)""")


def test_no_lesson_notebook_holds_a_key(key):
    notebooks = sorted(ROOT.glob("notebooks/**/*.ipynb"))
    assert notebooks, "no lesson notebooks found"
    for path in notebooks:
        text = path.read_text(encoding="utf-8")
        assert_clean(key, str(path), text)
        for pattern in (REAL_LOOKING, UNMASKED_BEARER, KEY_IN_SOURCE):
            found = pattern.search(text)
            assert found is None, f"{path.relative_to(ROOT)}: {found.group(0)[:24]}..."


def test_an_echoed_key_is_masked_even_from_code_and_without_the_sk_prefix(stub_server, monkeypatch):
    """A key handed to make_client in code (not the environment), of another provider's shape."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    other = "gsk_" + secrets.token_hex(16)
    stub_server.enqueue(echo_400(other), error(500, f"upstream rejected {other}"))
    client = make_client("openai", api_key=other, base_url=stub_server.base_url, max_retries=0, timeout=5)
    for _ in range(2):
        result = safe_run_turn(client, new_history(), "hi")
        assert not result.ok and "***" in result
        assert other not in result and other[4:20] not in result
        assert other not in repr(result.failure)
    assert stub_server.requests[0].headers["authorization"] == f"Bearer {other}"


def test_a_key_echoed_where_a_long_server_message_is_cut_is_masked_whole(stub_server, monkeypatch):
    """A server's message is shortened for the line; a key it echoes across the cut was masked only
    after the cut, so the key's first half, no longer the whole key, got through."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    other = "gsk_" + secrets.token_hex(16)  # 36 characters: a step of 8 puts some cut inside it
    pads = range(60, 260, 8)
    for pad in pads:
        stub_server.enqueue(error(400, f"{'x' * pad}key={other}", "invalid_request_error"))  # no space to cut at
    client = make_client("openai", api_key=other, base_url=stub_server.base_url, max_retries=0, timeout=5)
    for pad in pads:
        result = safe_run_turn(client, new_history(), "hi")
        assert not result.ok and result.failure.kind == "bad_request"
        assert other[:12] not in str(result) and other[-12:] not in str(result), (pad, str(result))


# --------------------------------------------------------------------------- #
# the exception a turn raises: what a notebook's traceback and a web app's log show

CANARIES = {  # keys of the shapes people have: OpenAI's project keys, a 40-hex gateway key, a base64-ish one
    "sk-proj": lambda: "sk-proj-" + secrets.token_hex(24),
    "hex40": lambda: secrets.token_hex(20),
    "base64": lambda: "Zq9" + secrets.token_urlsafe(16)[:21],
}


def _sync_turn(client, stream):
    from nora_widgets.conversation import run_turn, stream_turn

    return (lambda: list(stream_turn(client, new_history(), "hi"))) if stream else (
        lambda: run_turn(client, new_history(), "hi"))


def _async_turn(client, stream, loop):
    from nora_widgets.aio import arun_turn, astream_turn

    async def streamed():
        return [piece async for piece in astream_turn(client, new_history(), "hi")]

    # one loop for all the calls (an AsyncOpenAI's connections belong to the loop that opened them), run on a
    # thread of its own: after the browser tests Playwright keeps a loop running on the main thread
    def on_its_thread(coroutine):
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(loop.run_until_complete, coroutine).result()

    return (lambda: on_its_thread(streamed())) if stream else (
        lambda: on_its_thread(arun_turn(client, new_history(), "hi")))


@pytest.mark.parametrize("shape", sorted(CANARIES))
@pytest.mark.parametrize("face", ["run_turn", "stream_turn", "arun_turn", "astream_turn"])
def test_a_turns_exception_holds_no_echoed_key_in_its_text_body_or_traceback(stub_server, monkeypatch, shape, face):
    """run_turn and its kin re-raise the client's exception; a server echoing the key in its 401 put the key,
    whole, in str(exc), repr(exc), exc.body and the traceback a notebook keeps in its output."""
    import traceback

    import openai

    from nora_widgets.clients import make_async_client

    other = CANARIES[shape]()
    from_env = shape != "hex40"  # from the environment, or given in code (masked by what the request carried)
    if from_env:
        monkeypatch.setenv("OPENAI_API_KEY", other)
    else:
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    build = make_async_client if face.startswith("a") else make_client
    client = build("openai", api_key=None if from_env else other, base_url=stub_server.base_url, model="m",
                   max_retries=0, timeout=5)
    loop = asyncio.new_event_loop()
    turn = (_async_turn(client, face == "astream_turn", loop) if face.startswith("a")
            else _sync_turn(client, face == "stream_turn"))
    stub_server.enqueue(echo_401(other), error(500, f"upstream rejected key={other}"),
                        error(400, f"{'x' * 100}{other}", "invalid_request_error"))
    try:
        for expected in (openai.AuthenticationError, openai.InternalServerError, openai.BadRequestError):
            with pytest.raises(expected) as caught:  # the class is kept: code that catches it still does
                turn()
            exc = caught.value
            shown = "\n".join([str(exc), repr(exc), json.dumps(exc.body), exc.message,
                               "".join(traceback.format_exception(exc))])
            assert "***" in str(exc)
            for piece in (other, other[:8] if shape != "sk-proj" else other[8:16], other[-12:]):
                assert piece not in shown, (face, shape, expected.__name__)
    finally:
        loop.close()
    assert all(r.headers["authorization"] == f"Bearer {other}" for r in stub_server.requests)  # it did go out


def test_nora_serves_lines_and_access_log_mask_a_key_in_the_url(capsys, monkeypatch):
    """uvicorn's access log names the path with its query: a client sending its key as ?api-key=... (a
    gateway's way), or the server's own key anywhere in the path, put it in the terminal and in a log file."""
    from nora_widgets.serve import _Lines

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    required, other = secrets.token_hex(20), "Zq9" + secrets.token_urlsafe(16)[:21]
    logger = logging.getLogger("nora-test.access")
    monkeypatch.setattr(logger, "handlers", [logging.StreamHandler()])  # stderr, as captured here
    monkeypatch.setattr(logger, "filters", [])
    monkeypatch.setattr(logger, "propagate", False)
    lines = _Lines(required)
    lines.take_access_log("nora-test.access")
    for path in (f"/v1/models?api-key={other}", f"/v1/chat/completions?api-version=1&token={other}",
                 f"/v1/{required}", f"/v1/chat/completions?key={required}"):
        logger.warning('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", path, "1.1", 200)
    lines.say(f"nora serve: refused a call from the web page at http://{required}.example")
    out, err = capsys.readouterr()
    assert err.count("127.0.0.1:5000") == 4 and "?api-key=*** HTTP/1.1" in err and "/v1/*** HTTP" in err
    for piece in (required, required[:8], other, other[:8]):
        assert piece not in out + err


@pytest.mark.parametrize("shape", sorted(CANARIES))
def test_the_input_history_file_keeps_no_line_with_a_key_of_any_shape(shape, tmp_path, monkeypatch):
    """nora chat's history file skipped a line errors.redact would mask, which is all of an sk- key but only
    the whole of OPENAI_API_KEY: part of a 40-hex or base64 key, and any such key not the one set, were kept."""
    readline = pytest.importorskip("readline")
    from nora_widgets._input_history import load_history, save_history

    key = CANARIES[shape]()
    monkeypatch.setenv("OPENAI_API_KEY", key)
    other_hex, other_b64 = secrets.token_hex(20), "Zq9" + secrets.token_urlsafe(16)[:21].replace("-", "x").replace("_", "y")
    with_key = [f"/model {key}", f"my key is {key}, is that right?", key, key[:20], key[-14:], f"export OPENAI_API_KEY={key}",
                f"here is the other one {other_hex}", f"Bearer {other_b64}", f"OPENAI_API_KEY='{other_hex}'"]
    ordinary = ["Do you have Le Guin?", "/model SmolLM2-135M-Instruct", "/model Meta-Llama-3.1-8B-Instruct-Q4_K_M",
                "/model gpt-4o-mini-2024-07-18", "/save my_chat_2024_05_01.json", "what is 12345678901234567890?",
                "/trim 2", "http://127.0.0.1:8000/v1"]
    path = tmp_path / "history"
    readline.clear_history()
    try:
        start = load_history(path)
        for line in with_key + ordinary:
            readline.add_history(line)
        save_history(path, start)
    finally:
        readline.clear_history()
    kept = path.read_text(encoding="utf-8")
    assert kept.splitlines() == ordinary
    for piece in (key, key[:8] if shape != "sk-proj" else key[8:16], key[-12:], other_hex[:12], other_b64[:12]):
        assert piece not in kept


@pytest.mark.parametrize("shape", ["sk-proj", "hex40"])
def test_a_key_given_to_slash_model_is_refused_not_echoed_nor_sent_as_the_models_name(shape, tmp_path):
    """`/model KEY` (the key pasted where the name goes) was taken as the model's name: said back twice
    ("calls ask for KEY", "model: KEY"), shown by /wire and sent to the server in every request's body."""
    key = CANARIES[shape]()
    with StubServer(api_key=key) as stub:
        lines = [f"/model {key}", "/model", "Do you have Le Guin?", "/wire"]
        chat = run_nora("chat", "--max-retries", "0", "--timeout", "5", stdin="\n".join(lines) + "\n",
                        env=nora_env(stub.base_url, key), cwd=tmp_path)
        assert chat.returncode == 0, chat.stderr
        assert stub.chat_requests[-1].body["model"] == "stub-model"  # the default, unchanged
    assert "(that looks like an API key, not a model name: the model is unchanged; " in chat.stderr
    # every line but the echo of a piped line, which is the person's own words
    shown = [line for line in (chat.stdout + chat.stderr).splitlines() if not line.startswith("you: ")]
    for piece in (key, key[8:20], key[-12:]):
        assert piece not in "\n".join(shown)


def test_a_key_pasted_in_the_panels_model_box_is_emptied_not_sent_shown_or_kept(stub_server, monkeypatch):
    """The panel's model box holding the key (pasted in the wrong box): it went out as the model's name, the
    header and the token count's note showed it, and the box's state (saved with a notebook) kept it."""
    from nora_widgets.panel import VIEWS, ChatPanel

    key = CANARIES["hex40"]()
    monkeypatch.setenv("OPENAI_API_KEY", key)
    monkeypatch.setenv("OPENAI_BASE_URL", stub_server.base_url)
    monkeypatch.setenv("NORA_MAX_RETRIES", "0")
    for given in (None, key):  # typed in the box, or passed as ChatPanel(model=...)
        panel = ChatPanel(model=given, views=tuple(v for v in VIEWS if v != "compare"), flush_interval=0.0)
        if given is None:
            panel.model.value = f" {key} "
        assert panel.model.value == "" and "looks like an API key, not a model name" in panel.error.value
        assert panel.ask("Do you have Le Guin?", timeout=20).ok
        assert stub_server.chat_requests[-1].body["model"] == "stub-model"  # the client's default
        state = json.dumps(widget_tree_states(panel), default=repr)
        for piece in (key, key[:8], key[-12:]):
            assert piece not in state
    panel.model.value = "gpt-4o-mini"  # a name stays
    assert panel.model.value == "gpt-4o-mini"


def test_a_key_given_to_the_magics_model_option_is_refused_and_nothing_changes(stub_server, monkeypatch):
    """`%chat --model KEY`: the key went out as the model's name and `%chat` showed it back."""
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    from nora_widgets import magics

    key = CANARIES["hex40"]()
    monkeypatch.setenv("OPENAI_API_KEY", key)
    monkeypatch.setenv("OPENAI_BASE_URL", stub_server.base_url)
    saved, magics._SESSION = magics._SESSION, magics.NotebookSession()
    ip = InteractiveShell.instance()
    shown = []
    try:
        ip.run_line_magic("load_ext", "nora_widgets")
        for cell in ["%chat --backend openai --max-retries 0 --model gpt-4o-mini", f"%chat --model {key}",
                     "%%chat\nDo you have Le Guin?", "%chat"]:
            with capture_output() as cap:
                ip.run_cell(cell, store_history=False)
            shown.append(cap.stdout + cap.stderr + json.dumps([o.data for o in cap.outputs], default=repr))
    finally:
        ip.run_line_magic("unload_ext", "nora_widgets")
        magics._SESSION = saved
    assert "--model got what looks like an API key, not a model name: nothing was changed" in shown[1]
    assert stub_server.chat_requests[-1].body["model"] == "gpt-4o-mini"  # as before the refused line
    for piece in (key, key[:8], key[-12:]):
        assert piece not in "\n".join(shown)


@pytest.mark.parametrize("how", ["--model", "NORA_MODEL"])
def test_a_key_given_as_the_model_on_the_command_line_or_in_nora_model_is_refused(how, tmp_path):
    """nora chat --model KEY (or NORA_MODEL=KEY) opened with "..., model KEY" and sent the key as every
    request's model name."""
    key = CANARIES["hex40"]()
    with StubServer(api_key=key) as stub:
        env = nora_env(stub.base_url, key, **({"NORA_MODEL": key} if how == "NORA_MODEL" else {}))
        flags = ("--model", key) if how == "--model" else ()
        for command in (["chat", *flags], ["ask", *flags, "hi"]):
            done = run_nora(*command, stdin="hello\n" if command[0] == "chat" else None, env=env, cwd=tmp_path)
            where = "NORA_MODEL" if how == "NORA_MODEL" else "the model name"
            assert (done.returncode, done.stdout, done.stderr) == (
                2, "", f"nora: error: {where} looks like an API key, not a model name: a key goes in OPENAI_API_KEY only\n")
        assert stub.chat_requests == []
