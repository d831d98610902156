"""ChatPanel driven from Python the way a user drives it: type, click, wait, read.

No browser and no kernel here: ipywidgets runs its click and observe handlers in
plain Python.  The stand-ins are small real classes (ScriptedClient, SlowClient
below); the wire test uses the real openai client over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import copy
import json
import re
from html import unescape
import sys
import threading
import time

import pytest

from nora_widgets.clients import ScriptedClient, make_chunk, make_client
from nora_widgets.conversation import SYSTEM_PROMPT, new_history
from nora_widgets import panel as panel_module
from nora_widgets.panel import ChatPanel
from nora_widgets.render import markdown_to_html
from nora_widgets.tokens import count_tokens
from nora_widgets.transcript import load_transcript, save_transcript
from tests.helpers import ManualClock, panel_send, thread_exceptions
from tests.servers.openai_stub import ok
from tests.page_input import PageInput
from tests.page_key_box import PageKeyBox

pytestmark = pytest.mark.timeout(30)


class SlowClient:
    """Streams a reply word by word with a pause between words (a slow model).

    Records every call's kwargs in .calls, how many pieces it produced in .yielded,
    and whether the consumer closed the stream before the end in .closed_early.
    """

    default_model = "slow"

    def __init__(self, text: str = "one two three four five six seven eight nine ten", delay: float = 0.05):
        self.words = text.split(" ")
        self.delay = delay
        self.calls: list[dict] = []
        self.yielded = 0
        self.closed_early = False
        self.first_piece = threading.Event()
        completions = type("Completions", (), {"create": staticmethod(self._create)})()
        self.chat = type("Chat", (), {"completions": completions})()

    def _create(self, **kwargs):
        self.calls.append(copy.deepcopy(kwargs))
        return self._stream(kwargs.get("model") or self.default_model)

    def _stream(self, model):
        finished = False
        try:
            for i, word in enumerate(self.words):
                yield make_chunk("c1", 0, model, content=word if i == 0 else " " + word)
                self.yielded += 1
                self.first_piece.set()
                time.sleep(self.delay)
            yield make_chunk("c1", 0, model, finish_reason="stop")
            finished = True
        finally:
            self.closed_early = not finished


def test_a_turn_adds_two_messages_clears_the_input_and_shows_the_reply():
    client = ScriptedClient(["Hello **Ada**!"])
    panel = ChatPanel(client)
    result = panel_send(panel, "My name is Ada.")
    assert result == "Hello **Ada**!" and result.ok
    assert panel.history == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello **Ada**!"},
    ]
    sent = client.calls[-1]
    assert sent["messages"] == panel.history[:2] and sent["stream"] is True and sent["temperature"] == 0.7
    assert panel.prompt.value == "" and not panel.prompt.disabled and panel.stop.disabled
    assert panel.stop.button_style == ""  # idle Stop is plain grey: disabled orange looked live in the dark theme
    assert "Hello <strong>Ada</strong>!" in panel.transcript.value  # markdown rendered
    assert panel.error.value == ""


def test_the_list_grows_by_two_each_turn_and_the_inspector_shows_it():
    client = ScriptedClient()  # echoes how many messages it was sent
    panel = ChatPanel(client)
    for i, question in enumerate(["Do you have Le Guin?", "How much is it?", "Hold a copy?"]):
        panel_send(panel, question)
        assert len(client.calls[-1]["messages"]) == 2 + 2 * i
        assert len(panel.history) == 3 + 2 * i
    assert [len(c["messages"]) for c in client.calls] == [2, 4, 6]
    # last call: 6 messages, the previous reply and the new question are new
    last = panel.inspector.last_rows
    assert [r["content"] for r in last] == [m["content"] for m in client.calls[-1]["messages"]]
    assert [r["new"] for r in last] == [False, False, False, False, True, True]
    # next call: the whole list (7), the last turn's two rows highlighted
    nxt = panel.inspector.next_rows
    assert [r["role"] for r in nxt] == ["system"] + ["user", "assistant"] * 3
    assert [r["new"] for r in nxt] == [False] * 5 + [True, True]
    assert all(isinstance(r["tokens"], int) and r["tokens"] > 0 for r in nxt)
    assert panel.inspector.next_html.value.count("nora-row-new") == 2
    assert "Last call sent 6 messages" in panel.inspector.last_html.value


def test_amnesia_sends_only_the_persona_and_the_latest_message():
    client = ScriptedClient()
    panel = ChatPanel(client, views=("inspector", "gauge"))
    panel_send(panel, "My name is Ada.")
    panel.amnesia.value = True
    assert panel.keep_last_n_turns == 0
    panel_send(panel, "What's my name?")
    assert client.calls[-1]["messages"] == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "What's my name?"},
    ]
    assert len(panel.history) == 5  # the list keeps everything; only the call forgets
    assert [r["dropped"] for r in panel.inspector.next_rows] == [False, True, True, True, True]
    assert panel.gauge.dropped_messages == 4
    whole = count_tokens(panel.history, client)
    assert panel.gauge.total == whole.total
    assert panel.gauge.used == count_tokens(panel.history[:1], client).total  # just the persona
    assert panel.gauge.dropped_tokens == sum(whole.per_message[1:])
    assert "amnesia" in panel.header.value
    panel.amnesia.value = False
    panel_send(panel, "And now?")
    assert len(client.calls[-1]["messages"]) == 6


def test_keep_last_n_turns_trims_what_is_sent():
    client = ScriptedClient()
    panel = ChatPanel(client, keep_last_n_turns=1)
    assert panel.trim.value is True and panel.keep_n.value == 1
    for q in ["one", "two", "three"]:
        panel_send(panel, q)
    assert len(panel.history) == 7  # 0 system, then (user, reply) for one, two, three
    h = panel.history
    assert client.calls[-1]["messages"] == [h[0], h[3], h[4], h[5]]  # persona + last turn + new question
    panel.trim.value = False
    panel_send(panel, "four")
    assert len(client.calls[-1]["messages"]) == 8


class NoWireClient:
    """A client that keeps no WireLog (as a third-party client would): ScriptedClient's replies
    and call log behind a bare .chat.completions.create."""

    default_model = "no-wire"

    def __init__(self, replies: list):
        self.inner = ScriptedClient(replies)
        self.calls = self.inner.calls
        self.chat = self
        self.completions = self

    def create(self, **kwargs):
        return self.inner.chat.completions.create(**kwargs)


def test_after_an_overflow_retry_the_panel_shows_the_shorter_list_it_really_sent():
    from nora_widgets.errors import ContextWindowError

    client = NoWireClient([ContextWindowError("3,000 tokens > 2,048", prompt_tokens=3000, limit=2048), "Fits now."])
    assert not hasattr(client, "wire")
    earlier = [{"role": "system", "content": SYSTEM_PROMPT}]
    for i in range(6):
        earlier += [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]
    panel = ChatPanel(client, history=earlier, keep_last_n_turns=4, views=("inspector", "wire", "cost"))
    assert panel_send(panel, "latest") == "Fits now." and len(panel.history) == 15
    first, second = (c["messages"] for c in client.calls)
    assert len(first) == 10 and len(second) == 6  # 4 earlier turns tried, then 2
    assert panel.last_sent == second  # what really went out, after the retry
    assert [r["content"] for r in panel.inspector.last_rows] == [m["content"] for m in second]
    assert "Last call sent 6 messages" in panel.inspector.last_html.value
    assert panel.cost.per_call == [count_tokens(second, client).total]
    assert panel.wire_view.data["body"]["messages"] == second  # the in-process view: no WireLog to read


def test_a_failure_shows_one_line_and_changes_nothing():
    client = ScriptedClient(["First reply.", TimeoutError("read timed out")])
    panel = ChatPanel(client)
    panel_send(panel, "hello")
    before = copy.deepcopy(panel.history)
    result = panel_send(panel, "this one fails")
    assert not result.ok and result.failure.kind == "timeout"
    assert panel.history == before
    assert panel.prompt.value == "this one fails"  # nothing typed is lost
    assert not panel.prompt.disabled and not panel.send.disabled
    assert "the request timed out" in panel.error.value and panel.error.value.count("<div") == 1
    client.enqueue("Works again.")
    assert panel_send(panel, panel.prompt.value) == "Works again."
    assert panel.error.value == "" and panel.prompt.value == ""


def test_an_empty_message_is_refused_without_a_call():
    client = ScriptedClient(["unused"])
    panel = ChatPanel(client)
    panel.prompt.value = "   "
    panel.send.click()
    assert panel.wait(1) is None
    assert client.calls == [] and len(panel.history) == 1
    assert "nothing to send" in panel.error.value


def test_the_reply_runs_on_a_worker_thread_and_stop_rolls_back():
    client = SlowClient(" ".join(["one", "two"] + ["more"] * 48), delay=0.1)  # 50 words, ~5 s
    panel = ChatPanel(client, flush_interval=0.0)
    before = copy.deepcopy(panel.history)
    panel.prompt.value = "Tell me a long story"
    t0 = time.monotonic()
    panel.send.click()
    assert time.monotonic() - t0 < 2.5  # the click returns at once, not after the reply: the kernel stays free
    assert client.first_piece.wait(5)
    # while it streams: the input open and emptied of the message (it shows in the live area), Send
    # disabled, Stop live, history untouched, partial text shown
    assert panel.busy and not panel.prompt.disabled and panel.prompt.value == ""
    assert panel.send.disabled and not panel.stop.disabled
    assert panel.stop.button_style == "warning"
    assert panel.history == before
    assert "one" in panel.live.value and "Tell me a long story" in panel.live.value
    # the reply being written is inside the transcript's one region and Tab stop, whose keys scroll it: the
    # live part was a second region named "conversation", then a scrolling box of its own under the region
    whole = panel.transcript.value
    assert panel.live is panel.transcript.blocks[-1] and panel.live.value in whole
    assert whole.count('role="region"') == 1 and whole.count("tabindex") == 1
    assert 'aria-label="conversation" tabindex="0"' in whole
    panel.send.click()  # a second click while busy is ignored
    panel.stop.click()
    result = panel.wait(5)
    assert result.failure.kind == "cancelled"
    assert panel.history == before  # no half reply kept
    panel._worker.join(10)  # wait() gives a stopped call a moment only; its next piece closes the stream
    assert client.closed_early and client.yielded < len(client.words)
    assert panel.prompt.value == "Tell me a long story" and not panel.prompt.disabled
    assert "Stopped" in panel.error.value and panel.live.value == ""
    assert len(client.calls) == 1


class HeldReply:
    """Streams the first word of each reply at once, then holds the rest until .release(): a test
    types into the panel while a reply runs, with no sleeping.  Each call ends as outcomes say: a
    reply text (sent word by word), or an exception raised mid-stream (a dropped connection)."""

    default_model = "held"

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.calls: list[dict] = []
        self.streaming = threading.Event()  # the current call's first word is out
        self._gate = threading.Event()
        completions = type("Completions", (), {"create": staticmethod(self._create)})()
        self.chat = type("Chat", (), {"completions": completions})()

    def _create(self, **kwargs):
        self.calls.append(copy.deepcopy(kwargs))
        self.streaming.clear()
        self._gate = threading.Event()
        return self._stream(self.outcomes.pop(0), self._gate)

    def _stream(self, outcome, gate):
        words = (outcome if isinstance(outcome, str) else "Well, let me see").split(" ")
        yield make_chunk("h", 0, "held", content=words[0])
        self.streaming.set()
        gate.wait(10)
        if isinstance(outcome, BaseException):
            raise outcome
        for word in words[1:]:
            yield make_chunk("h", 0, "held", content=" " + word)
        yield make_chunk("h", 0, "held", finish_reason="stop")

    def release(self) -> None:
        """Let the current reply go on; .streaming then waits for the next call's first word."""
        self.streaming.clear()
        self._gate.set()


def held_send(panel: ChatPanel, client: HeldReply, text: str):
    """Type text, click Send, let the reply come, wait for it."""
    panel.prompt.value = text
    panel.send.click()
    assert client.streaming.wait(5)
    client.release()
    return panel.wait(5)


def type_keys(panel: ChatPanel, text: str) -> None:
    """The input's text as the browser sends it (set_state: what a message from the page does)."""
    panel.prompt.set_state({"value": text})


class ExitsOnce(ScriptedClient):
    """Calls sys.exit(3) on its call number exit_on (1: the first), in create() or after the stream's
    first piece; every other call is scripted as usual."""

    def __init__(self, replies, exit_on: int = 1, where: str = "create"):
        super().__init__(replies)
        self.exit_on, self.where, self.made = exit_on, where, 0

    def _create(self, **kwargs):
        self.made += 1
        if self.made != self.exit_on:
            return super()._create(**kwargs)
        if self.where == "create":
            sys.exit(3)
        stream = super()._create(**kwargs)

        def breaks_off():
            yield next(stream)
            sys.exit(3)

        return breaks_off()


@pytest.mark.parametrize("where", ["create", "stream"])
def test_sys_exit_in_the_client_ends_the_turn_like_any_failure(where):
    """SystemExit is no Exception: it went past the turn's except, the turn never ended, and the panel
    stayed busy for good (Send, Undo, Clear and Load disabled, Stop live, the message gone from the input)."""
    broken_off = ["Hello there, Ada."] if where == "stream" else []  # the reply the stream began
    client = ExitsOnce(broken_off + ["Hello again."], where=where)
    panel = ChatPanel(client, flush_interval=0.0)
    with thread_exceptions() as ended:
        result = panel_send(panel, "My name is Ada.")
    assert ended == [SystemExit]  # it went on, after the turn ended: only the worker thread ended
    assert not result.ok and result.failure.kind == "exit"
    assert not panel.busy and panel.stop.disabled and panel.stop.button_style == ""
    assert not any(b.disabled for b in (panel.send, panel.clear, panel.undo, panel.load))
    assert panel.history == new_history(SYSTEM_PROMPT) and panel.live.value == "" and panel.status.value == ""
    assert panel.prompt.value == "My name is Ada."  # back in the input: Enter sends it again
    assert panel._error_text == ("(error talking to the model: the client called sys.exit() during the call - "
                                 "the turn was rolled back; fix the client, then send again)")
    press_enter(panel)
    assert panel.wait(5) == "Hello again." and len(panel.history) == 3


def test_sys_exit_in_the_side_by_side_call_keeps_the_turn_and_frees_the_panel():
    client = ExitsOnce(["Hello Ada!"], exit_on=2)
    panel = ChatPanel(client, views=("compare",), flush_interval=0.0)
    panel.side_by_side.value = True
    with thread_exceptions() as ended:
        result = panel_send(panel, "My name is Ada.")
    assert ended == [SystemExit] and result == "Hello Ada!" and len(panel.history) == 3
    assert panel.twin_history == new_history(SYSTEM_PROMPT) and not panel.busy and not panel.send.disabled
    assert panel._error_text == ("(the reply was kept, but a view or the side-by-side call failed: "
                                 "the client called sys.exit() during the call)")


def press_enter(panel: ChatPanel, text: str | None = None) -> None:
    """What the page sends on Enter: the box's text (default: what the kernel has) with the key."""
    text = panel.prompt.value if text is None else text
    panel.prompt._handle_custom_msg({"event": "submit", "text": text, "emptied": not panel.busy}, [])


def test_enter_sends_the_text_it_carries_even_before_the_text_itself_arrives():
    """The page sends the text with the Enter; its value (held back by ipywidgets while an earlier one
    is unanswered) may come after it.  The stock Text sent Enter alone, and the panel guessed."""
    client = ScriptedClient(["Hi", "Hi again"])
    panel = ChatPanel(client)
    page = PageInput(panel.prompt)
    page.type("Hello")
    page.enter()
    assert page.box == ""  # the page empties the box at once
    page.to_kernel(enter_first=True)  # the kernel has no key of it yet
    assert panel.wait(5) == "Hi" and client.calls[0]["messages"][-1] == {"role": "user", "content": "Hello"}
    page.settle()
    assert page.box == panel.prompt.value == ""
    # a message put back (Undo) and sent as it is: no key typed, Enter sends it at once
    panel.undo.click()
    page.settle()
    assert page.box == panel.prompt.value == "Hello"
    page.enter()
    page.settle()
    assert panel.wait(5) == "Hi again" and client.calls[-1]["messages"][-1]["content"] == "Hello"
    # keys typed with no Enter send nothing
    page.type("just typing")
    page.settle()
    assert panel.wait(1) == "Hi again" and len(client.calls) == 2 and panel.prompt.value == "just typing"


# Keys typed right after Enter, in every order the messages can take: with the stock Text the kernel's
# emptying of the box redrew the box from the kernel's value, and the keys it did not have were lost.
AFTER_ENTER = {
    "typed before the kernel has the Enter":
        lambda page: (page.enter(), page.type("next"), page.to_kernel(), page.to_page()),
    "typed before the Enter's text arrives":
        lambda page: (page.enter(), page.type("next"), page.to_kernel(enter_first=True), page.to_page()),
    "typed while the kernel's emptying is on its way":
        lambda page: (page.enter(), page.to_kernel(), page.type("ne"), page.to_page(), page.type("xt")),
    "typed once the page has the kernel's emptying":
        lambda page: (page.enter(), page.to_kernel(), page.to_page(), page.type("next")),
}


@pytest.mark.parametrize("order", AFTER_ENTER.values(), ids=AFTER_ENTER.keys())
def test_keys_typed_right_after_enter_are_the_next_message(order):
    client = HeldReply("Hi!", "Hi again!")
    panel = ChatPanel(client, flush_interval=0.0)
    page = PageInput(panel.prompt)
    page.type("Hello")
    order(page)
    assert client.streaming.wait(5) and client.calls[-1]["messages"][-1]["content"] == "Hello"
    page.settle()
    assert page.box == panel.prompt.value == "next"
    client.release()
    assert panel.wait(5) == "Hi!" and page.box == panel.prompt.value == "next"
    page.enter()
    page.settle()
    assert client.streaming.wait(5)
    client.release()
    assert panel.wait(5) == "Hi again!"
    assert [m["content"] for m in panel.history if m["role"] == "user"] == ["Hello", "next"]
    assert page.box == panel.prompt.value == ""


def test_keys_typed_right_after_a_click_on_send_stay_without_the_message_sent():
    """Send (not Enter): the kernel empties the box of the message; keys typed after it stay."""
    client = ScriptedClient(["Hi!"])
    panel = ChatPanel(client)
    page = PageInput(panel.prompt)
    page.type("Hello")
    page.settle()
    panel.send.click()
    page.type(" and")  # before the emptying reaches the page
    page.settle()
    assert panel.wait(5) == "Hi!" and client.calls[-1]["messages"][-1]["content"] == "Hello"
    assert page.box == panel.prompt.value == " and"


def test_the_next_message_can_be_typed_while_a_reply_runs_and_is_sent_after_it(monkeypatch):
    """The input stays open during a reply, emptied of the message being sent; Enter and Send meanwhile
    send nothing and say why, and the text stays in the box; what was typed survives the reply's end,
    and Enter sends it then."""
    client = HeldReply("The Dispossessed.", "12 euros.")
    panel = ChatPanel(client, flush_interval=0.0)
    page = PageInput(panel.prompt)
    focused = []
    monkeypatch.setattr(panel.prompt, "focus", lambda: focused.append("input"))
    monkeypatch.setattr(panel.prompt, "focus_if_lost", lambda: focused.append("input"))  # a turn's start
    monkeypatch.setattr(panel.stop, "focus", lambda: focused.append("stop"))
    page.type("Do you have Le Guin?")
    page.settle()
    panel.send.click()
    assert client.streaming.wait(5) and panel.busy and panel.prompt.busy
    page.settle()
    assert not panel.prompt.disabled and page.box == panel.prompt.value == ""  # the message left the input...
    assert "Do you have Le Guin?" in panel.live.value  # ...for the live area
    assert focused == ["input"]  # the focus stays in the input
    page.type("How much is it?")
    page.enter()  # Enter during the reply: the page keeps the text
    page.settle()
    assert panel.busy and len(client.calls) == 1 and page.box == panel.prompt.value == "How much is it?"
    assert panel_module.BUSY_NOTE in panel.status.value and panel_module.BUSY_NOTE in panel.announce.value
    panel.send.click()  # Send (disabled in the page) from code: the same
    assert len(client.calls) == 1 and panel.prompt.value == "How much is it?"
    client.release()
    assert panel.wait(5) == "The Dispossessed." and len(panel.history) == 3 and not panel.prompt.busy
    assert page.box == panel.prompt.value == "How much is it?"  # the reply's end does not clear what was typed
    assert "Nora replied:" in panel.announce.value and panel.status.value == ""
    assert focused == ["input", "input"]
    page.enter()
    page.settle()
    assert client.streaming.wait(5) and client.calls[-1]["messages"][-1]["content"] == "How much is it?"
    client.release()
    assert panel.wait(5) == "12 euros." and page.box == ""
    assert "stop" not in focused


def test_enter_the_page_sent_before_it_heard_of_a_reply_running_gives_the_text_back():
    """The page empties the box on Enter unless it knows a reply runs; if a reply had just started
    (from Send or code), the kernel gives the text back, in front of anything typed since."""
    client = HeldReply("The Dispossessed.")
    panel = ChatPanel(client, flush_interval=0.0)
    page = PageInput(panel.prompt)
    page.busy = False  # the page has not heard of the reply yet
    panel.prompt.value = "Do you have Le Guin?"
    panel.send.click()
    assert client.streaming.wait(5)
    page.to_page()
    page.type("How much?")
    page.enter()
    page.type("In paperback")
    page.settle()
    assert page.box == panel.prompt.value == "How much? In paperback" and len(client.calls) == 1
    assert panel_module.BUSY_NOTE in panel.status.value
    client.release()
    assert panel.wait(5).ok and panel.prompt.value == "How much? In paperback"


def test_enter_on_a_message_that_cannot_be_sent_gives_it_back(monkeypatch):
    """No client can be built (the model is not installed, say): one red line, and the text Enter
    took from the box goes back into it."""
    def no_model():
        raise ImportError("No module named 'llama_cpp'")

    monkeypatch.setattr(panel_module, "make_client", no_model)
    panel = ChatPanel()
    page = PageInput(panel.prompt)
    page.type("Hello")
    page.enter()
    page.settle()
    assert page.box == panel.prompt.value == "Hello" and panel._error_text and len(panel.history) == 1


def test_escape_stops_a_reply_and_does_nothing_otherwise():
    client = HeldReply("Once upon a time there was a bookshop.", "Fine.")
    panel = ChatPanel(client, flush_interval=0.0)
    page = PageInput(panel.prompt)
    page.escape()  # no reply: nothing happens
    page.settle()
    assert not panel.busy and panel._error_text == "" and panel.status.value == ""
    before = copy.deepcopy(panel.history)
    page.type("Tell me a story")
    page.enter()
    page.settle()
    assert client.streaming.wait(5) and panel.busy
    page.escape()
    page.settle()
    assert not panel.busy and panel.history == before and panel.live.value == ""
    assert panel.last_result.failure.kind == "cancelled"
    assert page.box == panel.prompt.value == "Tell me a story"  # back into the empty box
    assert panel._error_text == "Stopped: the turn was rolled back; your message is back in the input."
    client.release()  # the stopped call's next piece sees the Stop
    panel._worker.join(5)
    page.enter()
    page.settle()
    assert client.streaming.wait(5)
    client.release()
    assert panel.wait(5) == "Fine." and client.calls[-1]["messages"][-1]["content"] == "Tell me a story"


def test_a_message_put_back_is_kept_aside_when_the_page_has_keys_the_kernel_had_not():
    """The turn fails while "Thanks" is on its way to the kernel: the kernel sees an empty box and puts the
    message back, the page refuses to write over its text and says so; the message is kept aside, the
    error line says it, and Undo puts it back in front of the text."""
    client = HeldReply(ConnectionResetError("connection reset by peer"), "Fine.")
    panel = ChatPanel(client, flush_interval=0.0)
    page = PageInput(panel.prompt)
    page.type("How much is it?")
    page.enter()
    page.settle()
    assert client.streaming.wait(5)
    page.type("Thanks")  # not at the kernel yet
    client.release()
    assert not panel.wait(5).ok and panel.prompt.value == "How much is it?"  # the kernel's write
    page.to_page()
    page.to_kernel()  # "kept", then the page's text
    assert page.box == panel.prompt.value == "Thanks" and panel._input.held == "How much is it?"
    assert panel._error_text.endswith(
        "Your message \u201cHow much is it?\u201d is kept aside, so what you typed stays: Undo puts it back.")
    panel.undo.click()
    page.settle()
    assert page.box == panel.prompt.value == "How much is it? Thanks" and len(panel.history) == 1
    assert panel._error_text == "" and "in front of what you typed" in panel.status.value


def test_text_set_from_code_never_wipes_keys_the_kernel_has_not_had():
    client = ScriptedClient(["Hi"])
    panel = ChatPanel(client)
    page = PageInput(panel.prompt)
    panel.prompt.value = "Hello again"  # nothing typed: the page shows it
    page.settle()
    assert page.box == "Hello again"
    page.type("!")
    panel.prompt.value = "Something else"  # written over "Hello again", but the page has "Hello again!"
    page.settle()
    assert page.box == panel.prompt.value == "Hello again!" and panel._input.held is None
    page.enter()
    page.settle()
    assert panel.wait(5) == "Hi" and client.calls[-1]["messages"][-1]["content"] == "Hello again!"


def test_ctrl_enter_in_a_text_area_sends_the_lines():
    """In a text area Enter is a new line (the page's part); Ctrl/Cmd+Enter sends, as Enter does in one line."""
    client = ScriptedClient(["Two lines."])
    panel = ChatPanel(client, multiline=True)
    assert panel.prompt.multiline and "Ctrl+Enter" in panel.prompt.placeholder
    page = PageInput(panel.prompt)
    page.type("Line one\nline two")
    page.enter()
    page.type("Next")
    page.settle()
    assert panel.wait(5) == "Two lines." and client.calls[-1]["messages"][-1]["content"] == "Line one\nline two"
    assert page.box == panel.prompt.value == "Next"


def test_a_failed_or_stopped_message_never_overwrites_what_was_typed_meanwhile():
    """A failed or stopped turn's message went back into the input.  With text typed during the reply
    it is kept aside instead (the error line says so); Undo puts it back in front of the typed text."""
    client = HeldReply("The Dispossessed.", ConnectionResetError("connection reset by peer"), "Fine.",
                       "Once upon a time", "Short one.", "Ok.")
    panel = ChatPanel(client, flush_interval=0.0)
    assert held_send(panel, client, "Do you have Le Guin?") == "The Dispossessed."
    before = copy.deepcopy(panel.history)
    panel.prompt.value = "Recommend a book."
    panel.send.click()
    assert client.streaming.wait(5)
    type_keys(panel, "What about Tolkien?")
    client.release()
    result = panel.wait(5)
    assert not result.ok and panel.history == before
    assert panel.prompt.value == "What about Tolkien?"  # what was typed stays
    error = panel._error_text
    assert error.startswith(result.failure.in_words_of(panel_module.PANEL_TRIM).line())
    assert error.endswith(" Your message \u201cRecommend a book.\u201d is kept aside, so what you typed stays: "
                          "Undo puts it back.")
    panel.undo.click()  # the kept message back, in front; no turn is taken back
    assert panel.prompt.value == "Recommend a book. What about Tolkien?" and panel.history == before
    assert panel.error.value == "" and "in front of what you typed" in panel.status.value
    press_enter(panel)
    assert client.streaming.wait(5)
    client.release()
    assert panel.wait(5) == "Fine." and client.calls[-1]["messages"][-1]["content"] == "Recommend a book. What about Tolkien?"
    # Stop with text typed: the same
    panel.prompt.value = "Tell me a story."
    panel.send.click()
    assert client.streaming.wait(5)
    type_keys(panel, "A short one")
    panel.stop.click()
    client.release()  # the stopped call's next piece sees the Stop
    assert panel.prompt.value == "A short one" and len(panel.history) == 5
    assert panel._error_text == ("Stopped: the turn was rolled back. Your message \u201cTell me a story.\u201d is "
                                 "kept aside, so what you typed stays: Undo puts it back.")
    # the next message sent forgets the kept one: Undo then takes back that turn, as always
    press_enter(panel, "A short one, please.")
    assert client.streaming.wait(5)
    client.release()
    assert panel.wait(5) == "Short one." and len(panel.history) == 7
    panel.undo.click()
    assert panel.prompt.value == "A short one, please." and len(panel.history) == 5
    # Stop with nothing typed: the message goes back into the input, as before
    panel.prompt.value = "Hello?"
    panel.send.click()
    assert client.streaming.wait(5)
    panel.stop.click()
    client.release()
    assert panel.prompt.value == "Hello?" and panel._error_text == (
        "Stopped: the turn was rolled back; your message is back in the input.")


def test_text_typed_during_the_side_by_side_call_survives_it():
    # the kept reply cleared the input while the side-by-side call ran: typed text went with it
    client, panel = side_by_side_started()
    type_keys(panel, "What's")
    assert client.twin_started.wait(10)
    deadline = time.monotonic() + 5
    while "side by side" not in panel.status.value and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "side by side" in panel.status.value  # the kept reply is drawn done
    type_keys(panel, "What's my name?")
    client.gate.set()
    assert panel.wait(10).ok and len(panel.twin_history) == 3
    assert panel.prompt.value == "What's my name?"


def test_a_text_area_keeps_what_was_typed_during_a_reply_too():
    client = HeldReply(TimeoutError("read timed out"))
    panel = ChatPanel(client, multiline=True, flush_interval=0.0)
    panel.prompt.value = "Line one\nline two"
    panel.send.click()
    assert client.streaming.wait(5)
    assert not panel.prompt.disabled and panel.prompt.value == ""
    type_keys(panel, "Next\nmessage")
    client.release()
    assert not panel.wait(5).ok and panel.prompt.value == "Next\nmessage"
    panel.undo.click()
    assert panel.prompt.value == "Line one\nline two\nNext\nmessage"
    panel.prompt.value = ""
    client.outcomes.append(ConnectionResetError("connection reset by peer"))
    assert not held_send(panel, client, "Only this").ok  # nothing typed: the message goes back
    assert panel.prompt.value == "Only this"


def test_ask_while_a_reply_runs_is_refused_and_leaves_the_input_alone():
    client = HeldReply("The Dispossessed.")
    panel = ChatPanel(client, flush_interval=0.0)
    panel.prompt.value = "Do you have Le Guin?"
    panel.send.click()
    assert client.streaming.wait(5)
    type_keys(panel, "How much")
    with pytest.raises(RuntimeError, match="a reply is still running: panel.wait"):
        panel.ask("Something else")
    assert panel.prompt.value == "How much" and len(client.calls) == 1
    client.release()
    assert panel.wait(5).ok and panel.prompt.value == "How much"


def test_amnesia_and_keep_last_can_change_while_a_reply_runs():
    client = HeldReply("Hello Ada!", "Who?")
    panel = ChatPanel(client, views=("inspector",), flush_interval=0.0)
    panel.prompt.value = "My name is Ada."
    panel.send.click()
    assert client.streaming.wait(5)
    type_keys(panel, "What's my name?")
    panel.amnesia.value = True  # applies from the next call; the running one keeps its list
    assert "amnesia" in panel.header.value and panel.prompt.value == "What's my name?"
    client.release()
    assert panel.wait(5).ok and len(client.calls[0]["messages"]) == 2
    press_enter(panel)
    assert client.streaming.wait(5)
    client.release()
    assert panel.wait(5) == "Who?" and [m["role"] for m in client.calls[1]["messages"]] == ["system", "user"]


def test_a_long_streaming_reply_scrolls_in_a_box_and_does_not_push_stop_off_screen():
    # 500 words, a paragraph every 12: drawn unbounded, the reply grew the panel by thousands of
    # pixels while it streamed, carrying the input row and Stop below the bottom of the screen
    client = SlowClient(" ".join(f"w{i}" + ("\n\n" if i % 12 == 11 else "") for i in range(500)), delay=0.002)
    panel = ChatPanel(client, flush_interval=0.0)
    seen = []
    panel.live.observe(lambda change: seen.append(change["new"]), names="value")
    panel_send(panel, "a long story")
    streamed = [html for html in seen if "w0" in html]
    # the reply streams into the transcript's last block, inside its scrolling box: the messages give way
    # as it grows, in a box at most as high as the transcript alone (two boxes of 45% each pushed the input
    # row off a projector's screen; tests/browser checks the pixels)
    assert streamed and all("max-height" not in html for html in streamed)
    assert list(panel.chat_box.children) == [panel.transcript] and panel.live is panel.transcript.blocks[-1]
    assert "max-height:min(420px, 45vh)" in panel.transcript.frame and "overflow-y:auto" in panel.transcript.frame
    assert "nora-chat-box" in panel.chat_box._dom_classes
    assert ".nora-panel .nora-chat-box{max-height:min(420px, 45vh);overflow:hidden}" in panel._focus_style.value


def test_the_reply_moves_into_the_transcript_before_the_live_area_is_cleared():
    # cleared first, the reply vanished from the screen while the views recounted tokens,
    # then came back: a visible blink (and a jump of the input row) at the end of every turn
    panel = ChatPanel(ScriptedClient(["Hello Ada!"]))
    events = []
    panel.live.observe(lambda change: events.append(("live", change["new"])), names="value")
    # the transcript is drawn in blocks (_transcript_box.py): each redraw of it, read whole
    panel.transcript.observe(lambda _change: events.append(("transcript", panel.transcript.value)), names="redrawn")
    panel_send(panel, "hi")
    cleared = events.index(("live", ""))
    assert any(name == "transcript" and "Hello Ada!" in html for name, html in events[:cleared]), events


class PausesAfterOnce(ScriptedClient):
    """A ScriptedClient whose reply "Once upon a time" waits after its first piece until .go_on is
    set (the piece's draw can then be held with the reply still running); every other reply streams
    at once."""

    def __init__(self, replies):
        super().__init__(replies)
        self.go_on = threading.Event()

    def _create(self, **kwargs):
        response = super()._create(**kwargs)
        if not kwargs.get("stream") or kwargs["messages"][-1]["content"] != "Tell me a story":
            return response

        def paused():
            for chunk in response:
                yield chunk
                if chunk.choices and chunk.choices[0].delta.content == "Once":  # it has been drawn
                    self.go_on.wait(10)
        return paused()


@pytest.mark.parametrize("then", ["nothing", "clear", "undo", "load", "send"])
def test_a_piece_drawn_at_the_moment_of_stop_never_lands_after_the_reply_area_is_cleared(then, tmp_path):
    # The worker checked that the turn was not stopped, then drew its piece: a Stop that came in between
    # cleared the reply area first, and the piece landed after it, a piece of a reply that is not in the
    # history (under Clear, Undo, Load or the next turn's message too).  Here the worker's draw of the
    # first piece waits until Stop (and what follows it) is done, or 1 s: the piece must be drawn before
    # Stop clears the area, or not at all.
    client = PausesAfterOnce(["Earlier reply.", "Once upon a time", "Hi again"])
    panel = ChatPanel(client, flush_interval=0.0, views=())
    panel_send(panel, "Earlier question")  # a turn for Undo to take back
    saved = save_transcript(str(tmp_path / "t.json"), panel.history)
    drawing, pressed, done = threading.Event(), threading.Event(), threading.Event()
    real_show_live = panel.transcript.show_live

    def show_live(pending=None, streaming=None):
        if streaming == "Once" and not drawing.is_set():  # the first piece, on the worker thread
            drawing.set()
            pressed.wait(5)
            done.wait(1.0)  # a Stop that waits for this draw to end is waited for 1 s, then the draw goes on
        return real_show_live(pending, streaming)

    panel.transcript.show_live = show_live
    panel.prompt.value = "Tell me a story"
    panel.send.click()
    worker = panel._worker
    assert drawing.wait(5)

    def press():
        pressed.set()
        panel.stop.click()
        if then == "clear":
            panel.clear.click()
        elif then == "undo":
            panel.undo.click()
        elif then == "load":
            panel.load_from(saved)
        elif then == "send":
            panel.prompt.value = "Next question"
            panel.send.click()
            panel.wait(5)
        done.set()
        client.go_on.set()  # the stopped reply's next piece: the worker sees the Stop and closes the stream

    presser = threading.Thread(target=press)
    presser.start()
    presser.join(10)
    worker.join(10)
    assert not presser.is_alive() and not worker.is_alive() and not panel.busy
    assert panel.live.value == "", re.sub("<[^>]+>", "", panel.live.value)  # no stale piece of the stopped reply
    assert "Once" not in panel.transcript.value and all("Once" not in m["content"] for m in panel.history)
    assert "replying" not in panel.status.value
    if then == "send":
        assert panel.history[-1] == {"role": "assistant", "content": "Hi again"}
    else:
        assert panel.last_result.failure.kind == "cancelled"


def test_streamed_text_is_batched_into_few_widget_updates():
    client = SlowClient(" ".join(f"w{i}" for i in range(30)), delay=0.01)  # ~0.3 s of pieces
    panel = ChatPanel(client, flush_interval=0.05)
    updates = []
    panel.live.observe(lambda change: updates.append(change["new"]), names="value")
    panel_send(panel, "go")
    streamed = [u for u in updates if "w0" in u]
    assert 2 <= len(streamed) < 30  # batched: far fewer redraws than pieces
    assert panel.history[-1]["content"] == " ".join(f"w{i}" for i in range(30))


def test_a_new_persona_applies_from_the_next_call():
    client = ScriptedClient(["Ahoy?", "Arr."])
    panel = ChatPanel(client)
    panel_send(panel, "hi")
    panel.persona.value = "You are a pirate."
    assert panel.history[0] == {"role": "system", "content": "You are a pirate."}
    assert panel.inspector.next_rows[0]["content"] == "You are a pirate."
    assert client.calls[0]["messages"][0]["content"] == SYSTEM_PROMPT  # the past call is the past
    panel_send(panel, "again")
    assert client.calls[1]["messages"][0] == {"role": "system", "content": "You are a pirate."}
    # an empty persona removes the system message
    panel.persona.value = ""
    assert panel.history[0]["role"] == "user"


def test_the_persona_box_is_three_to_eight_lines_tall():
    # 2 rows cut the default persona's third line in half; the browser test measures the real box
    panel = ChatPanel(ScriptedClient())
    assert panel.persona.rows == 3  # what a browser without field-sizing shows (then it scrolls)
    assert "nora-persona" in panel.persona._dom_classes
    css = panel_module.FOCUS_CSS
    assert ".nora-persona textarea{field-sizing:content;" in css
    assert "min-height:calc(3lh + " in css and "max-height:calc(8lh + " in css

def test_temperature_and_model_reach_the_call():
    client = ScriptedClient(["ok"])
    panel = ChatPanel(client, temperature=0.3, model="tiny")
    panel.temperature.value = 0.0
    panel_send(panel, "x")
    assert client.calls[-1]["temperature"] == 0.0 and client.calls[-1]["model"] == "tiny"
    panel.model.value = ""
    client.enqueue("ok")
    panel_send(panel, "y")
    assert client.calls[-1]["model"] == "scripted"  # the client's own default


def test_save_clear_and_load_use_the_cli_transcript_format(tmp_path):
    client = ScriptedClient(["Yes, two novels.", "14.50 euros."])
    panel = ChatPanel(client, views=("cost",))
    panel_send(panel, "Do you have Le Guin?")
    panel_send(panel, "How much is it?")
    path = tmp_path / "chat.json"
    panel.path.value = str(path)
    panel.save.click()
    messages, meta = load_transcript(path)
    assert messages == panel.history and meta["temperature"] == 0.7
    assert panel._file_text == f"saved 5 messages to {path}" and panel.status.value == ""
    saved = list(panel.history)
    panel.clear.click()
    assert panel.history == [{"role": "system", "content": SYSTEM_PROMPT}]
    assert panel.cost.per_call == [] and panel.inspector.last_rows == []
    panel.load.click()
    assert panel.history == saved and panel.persona.value == SYSTEM_PROMPT
    # a bad file: one line, nothing changed
    (tmp_path / "bad.json").write_text('[{"role": "wizard", "content": "x"}]')
    panel.path.value = str(tmp_path / "bad.json")
    panel.load.click()
    assert panel.history == saved
    assert "cannot load" in panel.file_note.value and "role must be one of" in panel.file_note.value
    assert panel.error.value == ""  # the note is beside Load; the chat's error line is for turns
    panel.path.value = str(tmp_path / "no-such-folder" / "x.json")
    panel.save.click()
    assert panel._file_text.startswith("not saved") and "#c0392b" in panel.file_note.value
    panel_send(panel, "And in paperback?")  # a new turn: the old note no longer describes the conversation
    assert panel.file_note.value == ""


def test_save_to_a_md_name_writes_markdown_to_read_and_load_refuses_it(tmp_path):
    client = ScriptedClient(["Yes:\n```\n# two novels\n```", "<script>alert(1)</script>"])
    panel = ChatPanel(client)
    panel_send(panel, "Do you have Le Guin?")
    panel_send(panel, "How much is it?")
    path = tmp_path / "handout.md"
    panel.path.value = str(path)
    panel.save.click()
    assert panel._file_text == f"saved 5 messages to {path}"
    document = path.read_text(encoding="utf-8")
    html = markdown_to_html(document)
    blocks = [unescape(b) for b in re.findall(r'<code class="language-text">(.*?)</code>', html, re.DOTALL)]
    assert blocks == [m["content"] + "\n" for m in panel.history]  # each message one block, intact
    assert re.findall(r"<h2>(.*?)</h2>", html) == ["0 · system (the persona)", "1 · user", "2 · assistant",
                                                   "3 · user", "4 · assistant"]  # as the inspector numbers them
    saved = list(panel.history)
    panel.load.click()  # the export is for reading: the conversation stays as it is
    assert panel.history == saved
    assert panel._file_text == (f"cannot load {path}: it is a Markdown export, for reading: "
                                "load the conversation's .json transcript instead")
    assert "#c0392b" in panel.file_note.value and path.read_text(encoding="utf-8") == document


@pytest.mark.parametrize("name, says", [
    ("", "not saved: type a file name in the file box"),
    ("   ", "not saved: type a file name in the file box"),
    ("{folder}", "not saved: {folder} is a folder"),
])
def test_saving_to_no_name_or_a_folder_is_one_plain_line(tmp_path, monkeypatch, name, says):
    monkeypatch.chdir(tmp_path)
    panel = ChatPanel(ScriptedClient(["ok"]))
    panel_send(panel, "hi")
    panel.path.value = str(tmp_path / "first.json")
    panel.save.click()
    assert panel._file_text.startswith("saved 3 messages")
    panel.path.value = name.format(folder=tmp_path)
    panel.save.click()
    assert panel._file_text == says.format(folder=tmp_path)  # and the earlier "saved ..." is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.json"]  # no temp file left behind
    panel.load.click()
    assert panel._file_text.startswith("cannot load") and len(panel.history) == 3


def test_save_and_load_read_a_tilde_as_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    panel = ChatPanel(ScriptedClient(["ok"]))
    panel_send(panel, "hi")
    panel.path.value = "~/chat.json"
    panel.save.click()
    assert panel._file_text.startswith("saved 3 messages to ") and load_transcript(tmp_path / "chat.json")[0] == panel.history
    panel.clear.click()
    panel.load.click()
    assert panel._file_text == "loaded 3 messages from ~/chat.json" and len(panel.history) == 3


def test_a_loaded_transcript_keeps_the_history_object():
    history = [{"role": "system", "content": "Be brief."}]
    panel = ChatPanel(ScriptedClient(["ok"]), history=history)
    assert panel.history is history and panel.persona.value == "Be brief."
    panel_send(panel, "hi")
    assert len(history) == 3  # the lesson's own list is the panel's conversation


def test_a_persona_given_with_a_list_of_ones_own_becomes_its_persona():
    history = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
               {"role": "assistant", "content": "Hello."}]
    client = ScriptedClient(["ok"])
    panel = ChatPanel(client, system_prompt="Talk like a pirate.", history=history)
    assert panel.history is history and panel.persona.value == "Talk like a pirate."
    panel_send(panel, "again")
    assert client.calls[-1]["messages"][0] == {"role": "system", "content": "Talk like a pirate."}
    assert [m["role"] for m in history] == ["system", "user", "assistant", "user", "assistant"]
    bare = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert ChatPanel(ScriptedClient(), system_prompt=None, history=bare).history == [{"role": "user", "content": "hi"}]
    kept = [{"role": "system", "content": "Be brief."}]
    assert ChatPanel(ScriptedClient(), history=kept).history[0]["content"] == "Be brief."  # no persona given


def test_the_cost_view_counts_tokens_sent_per_call_and_in_total():
    client = ScriptedClient()
    panel = ChatPanel(client, views=("cost",))
    for q in ["a question", "another question", "a third question"]:
        panel_send(panel, q)
    expected = [count_tokens(call["messages"], client).total for call in client.calls]
    assert panel.cost.per_call == expected
    assert panel.cost.per_call[0] < panel.cost.per_call[1] < panel.cost.per_call[2]
    assert panel.cost.cumulative == [expected[0], expected[0] + expected[1], sum(expected)]
    assert sum(panel.cost.new_per_call) < sum(panel.cost.per_call)
    assert panel.cost.body.value.count("<rect") == 6  # 3 bars per chart, 2 charts
    assert f"sent <b>{sum(expected):,}</b> in all" in panel.cost.body.value


def test_undo_keeps_the_undone_calls_bar_in_the_cost_view_and_says_so():
    # after Undo the Cost view still drew the undone call's bar with nothing said: the tokens were spent, so
    # the bar stays, and now it is marked (paler, "undone" in its title and to a screen reader) with a line
    client = ScriptedClient()
    panel = ChatPanel(client, views=("cost",))
    for q in ["a question", "another question", "a third question"]:
        panel_send(panel, q)
    spent = list(panel.cost.per_call)
    assert "undone" not in panel.cost.body.value and panel.cost.undone == set()
    panel.undo.click()  # the third turn: its message goes back into the input
    html = panel.cost.body.value
    assert panel.cost.per_call == spent and panel.cost.undone == {2}
    assert f"<title>call 3: {spent[2]:,} (undone)</title>" in html and html.count('fill-opacity="0.35"') == 1
    assert f"tokens sent per call: {spent[0]:,}, {spent[1]:,}, {spent[2]:,} (undone)" in html  # the chart's name
    assert (f"Call 3 was undone (the pale bar): its {spent[2]:,} tokens were sent and still count; "
            "the next call does not send that turn.") in html
    assert f"sent <b>{sum(spent):,}</b> in all" in html  # the total keeps them
    panel.undo.click()  # the input holds the message put back: the second turn goes, the input keeps it
    assert panel.cost.undone == {1, 2} and panel.prompt.value == "a third question"
    assert f"Calls 2 and 3 were undone (the pale bars): their {spent[1] + spent[2]:,} tokens" in panel.cost.body.value
    panel_send(panel, "a new second question")  # a new call: a bar of its own, not undone
    assert len(panel.cost.per_call) == 4 and panel.cost.undone == {1, 2}
    panel.clear.click()
    assert panel.cost.per_call == [] and panel.cost.undone == set() and "undone" not in panel.cost.body.value

    # a turn given in history= (or loaded from a file) has no bar: Undo marks none for it
    earlier = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
               {"role": "assistant", "content": "Hello."}]
    panel = ChatPanel(ScriptedClient(), history=earlier, views=("cost",))
    panel_send(panel, "again")
    panel.undo.click()
    panel.undo.click()  # the input holds "again": the turn given in history= goes
    assert len(panel.history) == 1 and panel.cost.undone == {0} and len(panel.cost.per_call) == 1


def test_the_cost_line_after_one_call_says_call_not_calls():
    panel = ChatPanel(ScriptedClient(), views=("cost",))
    panel_send(panel, "a question")
    assert "1 call sent <b>" in panel.cost.body.value and "1 calls" not in panel.cost.body.value


def test_one_message_is_counted_in_the_singular():
    panel = ChatPanel(ScriptedClient(), system_prompt=None, keep_last_n_turns=0)
    panel_send(panel, "hi")  # amnesia, no persona: the call sent 1 message
    assert "2 messages in the list" in panel.header.value
    assert "Last call sent 1 message (" in panel.inspector.last_html.value
    panel.clear.click()
    panel.persona.value = "Be brief."
    assert "1 message in the list" in panel.header.value
    assert "send this 1 message + your new one" in panel.inspector.next_html.value
    assert "1 messages" not in panel.header.value + panel.inspector.last_html.value + panel.inspector.next_html.value


def test_keep_last_1_turn_is_said_in_the_singular():
    panel = ChatPanel(ScriptedClient(), keep_last_n_turns=1, views=("inspector", "gauge"))
    panel_send(panel, "one")
    panel_send(panel, "two")
    shown = panel.header.value + panel.inspector.next_html.value + panel.gauge.body.value
    assert "the last 1 turn " in panel.header.value and "keep last 1 turn:" in panel.gauge.body.value
    assert "1 turns" not in shown


def test_the_header_and_the_error_line_wrap_with_normal_line_spacing():
    # ipywidgets' HTML widget sets a one-line label's line-height (28 px): on a narrow screen
    # or a zoomed projector a wrapped header or error line got a blank-looking gap between lines
    panel = ChatPanel(ScriptedClient())
    panel.ask("   ")
    assert "line-height:1.4" in panel.header.value and "line-height:1.4" in panel.error.value


def test_the_gauge_tracks_the_next_call():
    client = ScriptedClient()
    panel = ChatPanel(client, views=("gauge",))
    panel_send(panel, "hello")
    counted = count_tokens(panel.history, client)
    assert panel.gauge.used == counted.total == panel.gauge.total
    assert panel.gauge.dropped_messages == 0 and panel.gauge.exact == counted.exact
    assert panel.gauge.window is None  # the scripted stand-in has no window
    assert "nothing left out" in panel.gauge.body.value


def test_side_by_side_feeds_the_same_questions_to_a_conversation_without_memory():
    client = ScriptedClient()
    panel = ChatPanel(client)
    panel.side_by_side.value = True
    for q in ["My name is Ada.", "What's my name?"]:
        panel_send(panel, q)
    # each question: one call with memory, then one without
    assert [len(c["messages"]) for c in client.calls] == [2, 2, 4, 2]
    assert [m["content"] for m in panel.twin_history if m["role"] == "user"] == ["My name is Ada.", "What's my name?"]
    assert len(panel.twin_history) == len(panel.history) == 5
    assert "I was sent 2 messages" in panel.compare.body.value
    assert panel.compare.layout.display == ""


def test_with_side_by_side_on_the_wire_view_still_shows_the_call_with_memory():
    # the twin's call (without memory) comes last; the wire view showed it, so the inspector
    # said "last call sent 4 messages" while the wire beside it showed a request with 2
    client = ScriptedClient()
    panel = ChatPanel(client, views=("inspector", "wire", "compare"))
    panel.side_by_side.value = True
    for q in ["My name is Ada.", "What's my name?"]:
        panel_send(panel, q)
    assert client.wire.last["body"]["messages"] == client.calls[-1]["messages"]  # the twin's, 2 messages
    assert panel.wire_view.data["body"]["messages"] == panel.last_sent == client.calls[-2]["messages"]
    assert len(panel.last_sent) == 4


def test_when_the_side_by_side_call_fails_the_compare_view_says_why():
    # the error line was drawn, then wiped by the redraw at the end of the turn: the question
    # was missing on the right with no word of explanation
    client = ScriptedClient(["Hello Ada!", TimeoutError("no answer in time"), "Ada.", "I do not know."])
    panel = ChatPanel(client, views=("compare",))
    panel.side_by_side.value = True
    assert panel.ask("My name is Ada.").ok
    assert len(panel.history) == 3 and len(panel.twin_history) == 1  # the twin's turn rolled back
    assert "the request timed out" in panel.compare.error.value
    panel.ask("What's my name?")  # the next question: both answer, the old error is gone
    assert len(panel.twin_history) == 3 and panel.compare.error.value == ""


def test_loading_a_transcript_forgets_the_side_by_side_error(tmp_path):
    # the twin's conversation was reset on load, but its old error stayed under the fresh one
    client = ScriptedClient(["Hello Ada!", TimeoutError("no answer in time")])
    panel = ChatPanel(client, views=("compare",))
    panel.side_by_side.value = True
    assert panel.ask("My name is Ada.").ok and "timed out" in panel.compare.error.value
    saved = tmp_path / "one.json"
    save_transcript(saved, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                            {"role": "assistant", "content": "Hello."}])
    panel.path.value = str(saved)
    panel.load.click()
    assert panel._file_text == f"loaded 3 messages from {saved}"
    assert len(panel.twin_history) == 1 and panel.compare.error.value == ""
    save_transcript(saved, [{"role": "user", "content": "hi"}])
    panel.load.click()
    assert panel._file_text.startswith("loaded 1 message from")


class GatedTwin:
    """Streams the first call's reply at once; every later call (the side-by-side one) waits for
    .gate before it streams, so a test can look at the panel in between."""

    default_model = "gated"

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.gate = threading.Event()
        self.twin_started = threading.Event()
        completions = type("Completions", (), {"create": staticmethod(self._create)})()
        self.chat = type("Chat", (), {"completions": completions})()

    def _create(self, **kwargs):
        self.calls.append(copy.deepcopy(kwargs))
        return self._stream(len(self.calls))

    def _stream(self, n):
        if n > 1:
            self.twin_started.set()
            self.gate.wait(10)
        for word in (["Hello", " Ada!"] if n == 1 else ["I", " do", " not", " know."]):
            yield make_chunk("c", 0, "gated", content=word)
        yield make_chunk("c", 0, "gated", finish_reason="stop")


def side_by_side_started(views=("compare",)) -> tuple["GatedTwin", ChatPanel]:
    """A side-by-side panel over a GatedTwin that has sent "My name is Ada.": the kept reply is in,
    the second (memoryless) call is still to come, waiting for client.gate."""
    client = GatedTwin()
    panel = ChatPanel(client, views=views, flush_interval=0.0)
    panel.side_by_side.value = True
    panel.prompt.value = "My name is Ada."
    panel.send.click()
    return client, panel


def test_with_side_by_side_the_kept_reply_is_drawn_done_before_the_second_call_ends():
    # the main reply kept its streaming cursor, the header said "1 message" and the inspector
    # "no call yet" until the side-by-side reply had finished too
    client, panel = side_by_side_started(("inspector", "compare"))
    assert client.twin_started.wait(10)
    deadline = time.monotonic() + 5
    while "3 messages in the list" not in panel.header.value and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "3 messages in the list" in panel.header.value
    assert "Hello Ada!" in panel.transcript.value and panel.live.value == "" and panel.prompt.value == ""
    assert "Last call sent 2 messages" in panel.inspector.last_html.value
    assert panel.busy and "side by side" in panel.status.value
    client.gate.set()
    assert panel.wait(10).ok and not panel.busy and len(panel.twin_history) == 3


def test_stopping_only_the_side_by_side_call_is_not_an_error():
    client, panel = side_by_side_started()
    assert client.twin_started.wait(10)
    time.sleep(0.2)
    panel.stop.click()
    client.gate.set()
    panel._worker.join(10)
    assert len(panel.history) == 3 and len(panel.twin_history) == 1  # the kept turn stays, the twin's is dropped
    shown = panel.compare.error.value
    assert "error talking to the model" not in shown and "stopped" in shown, shown


def test_views_read_right_on_a_first_call_an_empty_list_and_a_dark_theme(tmp_path):
    client = ScriptedClient()
    panel = ChatPanel(client, views=("inspector", "cost", "gauge"))
    panel_send(panel, "hi")
    # call 1: the persona was new too; "only 6 of those were new: the rest is the same conversation
    # sent again" was wrong before anything had been sent
    assert "The first call sends the persona and your first message" in panel.cost.body.value
    assert "were new" not in panel.cost.body.value
    panel_send(panel, "again")
    assert "of those were new text (your messages)" in panel.cost.body.value
    # the charts take the theme's colours (a fixed #fafafa box stayed light in JupyterLab Dark)
    assert "background:var(--jp-layout-color2" in panel.cost.body.value and 'fill="currentColor"' in panel.cost.body.value
    # both inspector tables scroll in boxes of their own: 35 turns made the panel ~6,000 px tall
    for table in (panel.inspector.last_html, panel.inspector.next_html):
        assert (table.layout.max_height, table.layout.overflow) == ("360px", "auto")
    saved = tmp_path / "no-persona.json"
    save_transcript(saved, [{"role": "user", "content": "hi"}])
    panel.path.value = str(saved)
    panel.load.click()
    panel.clear.click()  # no persona, no turns: "these 0 messages + your new one"
    assert "Next call will send only your new message (the list is empty)" in panel.inspector.next_html.value
    # "the whole conversation (3 tokens) is resent", with no conversation at all
    assert "the list is empty: only your new message is sent" in panel.gauge.body.value
    assert "is resent" not in panel.gauge.body.value


def test_undo_takes_back_the_last_turn_and_puts_the_message_back_in_the_input():
    client = ScriptedClient(["Two novels.", "14.50 euros.", "What is 'it'?", "Fifteen euros."])
    panel = ChatPanel(client, views=("inspector",))
    panel_send(panel, "Do you have Le Guin?")
    after_one = list(panel.history)
    panel.side_by_side.value = True
    panel_send(panel, "How much is it?")
    assert [m["content"] for m in panel.twin_history[1:]] == ["How much is it?", "What is 'it'?"]
    panel.undo.click()
    assert panel.history == after_one and panel.prompt.value == "How much is it?"
    assert panel.twin_history == new_history()  # the twin was asked the same: it takes it back too
    assert "took back your last message and its reply: the next call will not send it" in panel.status.value
    assert [r["content"] for r in panel.inspector.next_rows] == [m["content"] for m in after_one]
    # the rows left are the first turn's, not "added by the last turn" (that turn is gone): none highlighted
    assert [r["new"] for r in panel.inspector.next_rows] == [False] * 3
    assert "nora-row-new" not in panel.inspector.next_html.value
    panel.side_by_side.value = False
    panel.send.click()  # the message is still there: Send asks again, with the same list as before
    panel.wait(15)
    assert client.calls[-1]["messages"] == client.calls[1]["messages"]
    panel.undo.click()
    panel.prompt.value = "something else"
    panel.undo.click()  # a message being typed is not replaced
    assert panel.prompt.value == "something else" and panel.history == new_history()
    panel.history.append({"role": "user", "content": "hello?"})  # e.g. a loaded transcript that ends so
    panel.undo.click()
    assert ("took back your last message \u201chello?\u201d: the next call will not send it (the input keeps what "
            "you typed)") in unescape(panel.status.value) and panel.history == new_history()
    panel.undo.click()
    assert "nothing to undo" in panel.status.value and panel.history == new_history()


def test_views_toggle():
    panel = ChatPanel(ScriptedClient(), views=("inspector",))
    assert all(toggle.tooltip for toggle in panel.toggles.values())  # hovering showed "null"
    assert panel.inspector.layout.display == "" and panel.wire_view.layout.display == "none"
    panel.toggles["wire"].value = True
    panel.toggles["inspector"].value = False
    assert panel.inspector.layout.display == "none" and panel.wire_view.layout.display == ""
    # which views are on shows as a check mark, not only as the toggle's faint pressed shade
    assert {name for name, toggle in panel.toggles.items() if toggle.icon == "check"} == {"wire"}
    assert panel.amnesia.button_style == ""
    panel.amnesia.value = True
    assert panel.amnesia.button_style == "danger"
    assert ChatPanel(ScriptedClient(), keep_last_n_turns=0).amnesia.button_style == "danger"
    with pytest.raises(ValueError, match="unknown view"):
        ChatPanel(ScriptedClient(), views=("nonsense",))


def test_states_and_failures_are_told_in_words_not_only_in_colour(tmp_path):
    """What a screen reader (or a colour-blind reader) gets: toggles say on/off in their description,
    error lines carry a sign and role="alert", a complete reply is announced, charts have a text."""
    client = ScriptedClient(["Hello **Ada**!", TimeoutError("read timed out"), "Again."])
    panel = ChatPanel(client, views=("inspector", "cost"))
    assert panel.toggles["wire"].tooltip.startswith("off - ") and panel.toggles["cost"].tooltip.startswith("on - ")
    panel.toggles["wire"].value = True
    assert panel.toggles["wire"].tooltip == "on - show the last request exactly as it went out (key masked)"
    assert panel.amnesia.tooltip.startswith("off - ")
    panel.amnesia.value = True
    assert panel.amnesia.tooltip.startswith("on - ")
    panel.amnesia.value = False
    # every input has a name of its own (the turns box was read as "null", the message box as nothing)
    assert panel.prompt.aria_label == "your message" and panel.keep_n.tooltip and panel.stop.tooltip and panel.load.tooltip
    assert panel.announce.value == ""
    panel_send(panel, "My name is Ada.")
    said = panel.announce.value
    assert 'role="alert"' in said and "Nora replied:" in said and "Hello <strong>Ada</strong>!" in said
    assert 'aria-label="tokens sent per call: ' in panel.cost.body.value
    assert 'role="heading"' in panel.cost.children[0].value
    panel_send(panel, "and now?")
    assert 'role="alert"' in panel.error.value and "\u26a0 (error talking to the model: the request timed out" in panel.error.value
    assert panel.announce.value == ""  # no old reply announced beside the failure
    panel.path.value = ""
    panel.save.click()
    assert 'role="alert"' in panel.file_note.value and "\u26a0 not saved" in panel.file_note.value
    panel.path.value = str(tmp_path / "chat.json")
    panel.save.click()
    assert 'role="status"' in panel.file_note.value and "\u2713 saved 3 messages" in panel.file_note.value
    panel_send(panel, "Once more.")
    assert "Nora replied:" in panel.announce.value
    panel.undo.click()
    assert 'role="status"' in panel.status.value and "took back" in panel.status.value
    assert panel.announce.value == ""  # the reply it announced was taken back


def test_every_icon_the_panel_draws_keeps_out_of_its_buttons_name():
    """Each icon a button shows (the view toggles' check mark too) has its glyph redrawn with an empty
    alternative text in the panel's stylesheet: a new icon missing there would put its font character
    back in front of the button's words (the browser test reads the names in Chromium)."""
    panel = ChatPanel(ScriptedClient(), views=tuple(panel_module.VIEWS))  # every toggle on: check marks
    buttons = [w for w in _all_widgets(panel) if getattr(w, "icon", "")]
    icons = {b.icon for b in buttons}
    assert icons == {"paper-plane", "stop", "eraser", "trash", "undo", "pencil", "save", "folder-open", "check"}
    assert icons <= set(panel_module.ICON_GLYPHS), icons - set(panel_module.ICON_GLYPHS)
    css = panel._focus_style.value
    for icon in icons:
        code = panel_module.ICON_GLYPHS[icon]
        assert f'i.fa-{icon}::before{{content:"\\{code}" / ""}}' in css, icon


def _all_widgets(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _all_widgets(child)


def test_model_output_is_rendered_inert():
    payload = '<img src=x onerror="alert(1)"> <script>alert(2)</script> [x](javascript:alert(3))'
    panel = ChatPanel(ScriptedClient([payload]), views=("inspector", "wire", "compare"))
    panel_send(panel, "<b>user html</b>")
    shown = panel.transcript.value + panel.inspector.last_html.value + panel.inspector.next_html.value
    shown += panel.wire_view.body.value
    for bad in ("<img", "<script", 'href="javascript', "<b>user"):
        assert bad not in shown
    assert "&lt;img src=x" in panel.transcript.value and "&lt;b&gt;user html" in panel.transcript.value


def test_a_link_in_a_reply_looks_like_a_link():
    # JupyterLab resets <a> to the text colour with no underline: a link looked like plain text
    panel = ChatPanel(ScriptedClient(["See [the shop](https://example.org)."]))
    panel_send(panel, "where?")
    link = panel.transcript.value.split("<a ", 1)[1].split(">", 1)[0]
    assert "text-decoration:underline" in link and "color:" in link


def test_the_scripted_wire_view_shows_the_in_process_call():
    client = ScriptedClient(["ok"])
    panel = ChatPanel(client, views=("wire",))
    panel_send(panel, "hi")
    assert panel.wire_view.data["transport"] == "in-process"
    assert panel.wire_view.data["body"]["messages"] == client.calls[-1]["messages"]
    assert "client.chat.completions.create(**body)" in panel.wire_view.body.value


def test_the_wire_view_draws_each_request_once_and_every_new_one(monkeypatch):
    """The wire view's JSON is the whole conversation: redraws that bring no new request (the second
    redraw of a side-by-side turn, a control changed) keep what is drawn; a new request is drawn."""
    from nora_widgets import views

    drawn = []
    real = views.wire_sections
    monkeypatch.setattr(views, "wire_sections", lambda last: drawn.append(last) or real(last))
    client = ScriptedClient(["Hello Ada!", "(no memory) who?", "Your name is Ada."])
    panel = ChatPanel(client, views=("wire", "compare"))
    panel_send(panel, "My name is Ada.")  # side by side: the turn's end redraws twice
    first = panel.wire_view.body.value
    assert len(drawn) == 1 and drawn[0]["body"]["messages"] == client.calls[0]["messages"]
    panel.temperature.value = 0.2  # refresh(): the same request
    panel.refresh()
    assert len(drawn) == 1 and panel.wire_view.body.value == first
    panel.side_by_side.value = False
    panel_send(panel, "What is my name?")
    assert len(drawn) == 2 and drawn[1]["body"]["messages"] == client.calls[-1]["messages"]
    assert "What is my name?" in panel.wire_view.body.value
    panel.wire_view.update(panel.wire_view.data, note="another note")  # the same record, a new note
    assert len(drawn) == 3 and "another note" in panel.wire_view.body.value
    panel.wire_view.update(None)
    assert "No request yet" in panel.wire_view.body.value


def test_constructing_without_a_client_is_cheap_and_a_missing_model_is_one_line(monkeypatch):
    try:
        import llama_cpp  # noqa: F401
        pytest.skip("llama-cpp-python is installed here, so the embedded model would load")
    except ImportError:
        pass
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "NORA_MODEL_PATH"):
        monkeypatch.delenv(name, raising=False)
    panel = ChatPanel()
    assert panel._client is None  # nothing built yet
    assert "loads on the first message" in panel.header.value
    panel.prompt.value = "hello"
    panel.send.click()
    assert panel.wait(1) is None
    assert "nora-widgets[local]" in panel.error.value and panel.error.value.count("<div") == 1
    assert panel.prompt.value == "hello" and len(panel.history) == 1 and not panel.busy


def test_before_the_first_message_the_gauge_knows_the_window_the_default_client_will_have(monkeypatch):
    pytest.importorskip("llama_cpp", reason="the embedded model needs llama-cpp-python ('.[local]')")
    from nora_widgets.local import LocalClient

    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "NORA_MODEL_PATH"):
        monkeypatch.delenv(name, raising=False)
    panel = ChatPanel(views=("gauge",))
    assert panel._client is None  # nothing built or loaded yet
    assert panel.gauge.window == LocalClient().n_ctx == 2048  # the window the first message's client has
    assert "of 2,048 tokens" in panel.gauge.body.value and "unknown" not in panel.gauge.body.value
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # a server: its model is not known yet
    assert ChatPanel(views=("gauge",)).gauge.window is None


def _all_widget_state() -> str:
    from ipywidgets.widgets.widget import _instances

    return json.dumps([w.get_state() for w in list(_instances.values())], default=str)


def test_hidden_views_draw_nothing_and_show_the_latest_call_when_opened(monkeypatch):
    """The wire view's JSON and the inspector's tables hold the whole conversation: hidden (their toggles
    off), a turn does not draw them at all; opened, they show exactly what they would have shown open."""
    from nora_widgets import views

    drawn = []
    real = views.wire_sections
    monkeypatch.setattr(views, "wire_sections", lambda last: drawn.append(last) or real(last))
    shown = ChatPanel(ScriptedClient(), history=chat_of(40), views=("inspector", "wire"))
    hidden = ChatPanel(ScriptedClient(), history=chat_of(40), views=())
    tables = hidden.inspector.last_html.redrawn, hidden.inspector.next_html.redrawn
    for q in ("My name is Ada.", "What is my name?", "And my age?"):
        for panel in (shown, hidden):
            panel_send(panel, q)
    hidden.temperature.value = 0.3  # a control changed: refresh() with the views still hidden
    shown.temperature.value = 0.3
    assert len(drawn) == 3  # the panel with the views open: once a call; the hidden one never
    assert (hidden.inspector.last_html.redrawn, hidden.inspector.next_html.redrawn) == tables
    assert "No request yet" in hidden.wire_view.body.value and "No call yet" in hidden.inspector.last_html.value
    assert hidden.wire_view.data is hidden.client.wire.last  # the record is kept, to draw when shown
    assert [r["content"] for r in hidden.inspector.last_rows] == [m["content"] for m in hidden.last_sent]

    hidden.toggles["wire"].value = True
    hidden.toggles["inspector"].value = True
    assert len(drawn) == 4 and drawn[-1] is hidden.client.wire.last  # opened: the latest call, drawn once
    assert hidden.wire_view.body.value == shown.wire_view.body.value  # exactly what the open view shows
    assert "And my age?" in hidden.wire_view.body.value
    assert hidden.inspector.last_html.value == shown.inspector.last_html.value
    assert hidden.inspector.next_html.value == shown.inspector.next_html.value
    assert hidden.inspector.last_rows == shown.inspector.last_rows and hidden.inspector.next_rows == shown.inspector.next_rows
    hidden.refresh()  # open, the same call: not drawn again
    assert len(drawn) == 4

    hidden.toggles["wire"].value = False  # closed again, a turn, opened: that turn's call
    panel_send(hidden, "One more?")
    panel_send(shown, "One more?")
    assert len(drawn) == 5  # the open panel's new call only
    hidden.toggles["wire"].value = True
    assert len(drawn) == 6 and hidden.wire_view.body.value == shown.wire_view.body.value
    assert '"One more?"' in unescape(re.sub(r"</?span>", "", hidden.wire_view.body.value))


def test_wire_view_with_the_real_openai_client_over_http(stub_server):
    secret = "sk-test-panel-0123456789abcdef"
    stub_server.enqueue("Yes, two novels.")
    client = make_client("openai", api_key=secret, base_url=stub_server.base_url, max_retries=0, timeout=5)
    panel = ChatPanel(client, views=("wire", "inspector"))
    assert panel_send(panel, "Do you have Le Guin?") == "Yes, two novels."
    received = stub_server.requests[-1]
    assert received.headers["authorization"] == f"Bearer {secret}"  # the server got the real key...
    data = panel.wire_view.data
    assert data["transport"] == "http" and data["method"] == "POST"
    assert data["body"] == received.body  # ...and the view shows exactly what it received
    assert data["headers"]["authorization"] == "Bearer ***"  # ...with the key masked
    assert received.body["messages"] == panel.history[:2] and received.body["stream"] is True
    assert "Bearer ***" in panel.wire_view.body.value
    assert "127.0.0.1" in panel.wire_view.body.value
    assert secret not in _all_widget_state()  # not in any widget on the page
    assert secret[3:12] not in panel.header.value


def test_wire_view_shows_the_url_sent_for_a_base_url_with_a_query(stub_server):
    # an Azure-style ?api-version=... in the base URL: openai's client put the path after it (a 404), and the
    # view showed that URL as sent; make_client now sends the query with every request, after the path
    query = "api-version=2024-02-01"
    client = make_client("openai", api_key="sk-test-x0123456789", base_url=f"{stub_server.base_url}?{query}",
                         max_retries=0, timeout=5)
    panel = ChatPanel(client, views=("wire",))
    assert f"OpenAI-compatible server {stub_server.base_url}?{query}," in panel.header.value  # the URL as given
    assert panel_send(panel, "hi").startswith("I got 2 messages")
    assert stub_server.requests[-1].path == f"/v1/chat/completions?{query}"
    assert panel.wire_view.data["url"] == f"{stub_server.base_url}/chat/completions?{query}"
    assert f"POST {stub_server.base_url}/chat/completions?{query}" in unescape(panel.wire_view.body.value)


def test_real_http_failure_is_one_line_and_rolls_back(stub_server):
    from tests.servers.openai_stub import rate_limit

    stub_server.enqueue(rate_limit(retry_after=0))
    client = make_client("openai", api_key="sk-test-x0123456789", base_url=stub_server.base_url,
                         max_retries=0, timeout=5)
    panel = ChatPanel(client)
    result = panel_send(panel, "hello")
    assert result.failure.kind == "rate_limit" and len(panel.history) == 1
    assert "rate limit" in panel.error.value and panel.prompt.value == "hello"


def test_while_no_word_has_come_the_status_line_counts_the_seconds(stub_server):
    # a learner queued behind a class's replies saw "replying…" unchanged for half a minute: frozen?
    counted = threading.Event()  # the reply's first words are held back until the count has said 2 s and 3 s
    held = threading.Event()  # the second reply's first words: never, before the end (Stop comes first)
    stub_server.enqueue(ok("Yes, two.", until=counted), ok("Hi.", until=held))
    client = make_client("openai", api_key="sk-test-x0123456789", base_url=stub_server.base_url,
                         max_retries=0, timeout=10)
    panel = ChatPanel(client, flush_interval=0.0)
    seen = []

    def note(change) -> None:
        seen.append(unescape(re.sub("<[^>]+>", "", change["new"])))
        if sum("waiting" in line for line in seen) == 2:
            counted.set()

    panel.status.observe(note, "value")
    assert panel_send(panel, "Any Le Guin?").ok
    assert seen == ["replying\u2026",
                    "replying\u2026 waiting 2 s: the server may be busy with others' replies. Stop gives up",
                    "replying\u2026 waiting 3 s: the server may be busy with others' replies. Stop gives up",
                    "replying\u2026", ""]  # the first words came; then the reply was done
    # Send while it waits: the note on why nothing was sent stays BUSY_NOTE_STAYS (2 s), then the count comes
    # back.  The panel's clock is moved on by the test, tick by tick (was: sleep(1.5) and sleep(1.0) against
    # ticks 1 s apart and a 2 s stay, 0.5 s margins on a machine that may be busy)
    clock = panel.clock = ManualClock()
    waiting = "replying\u2026 waiting {} s: the server may be busy with others' replies. Stop gives up"
    seen.clear()
    try:
        panel.prompt.value = "Hello?"
        panel.send.click()
        clock.until_waited_on()
        clock.advance(2.0)
        clock.advance(1.0)
        assert seen == ["replying\u2026", waiting.format(2), waiting.format(3)]
        panel.prompt.value = "And Dune?"
        panel.send.click()  # at 3 s
        clock.advance(1.0)  # the tick at 4 s, 1 s after the note: the note is not written over
        assert seen[3:] == [panel_module.BUSY_NOTE]
        clock.advance(1.0)  # at 5 s the note has stayed 2 s: the count comes back
        assert seen[3:] == [panel_module.BUSY_NOTE, waiting.format(5)]
        panel.cancel()  # Stop while waiting: the count ends with the turn
        clock.advance(3.0)  # a count still running would say 6, 7 and 8 s
        assert not seen[-1] and "waiting" not in "".join(seen[5:]), seen
        assert len(panel.history) == 3
    finally:
        held.set()


def test_a_cell_that_waits_too_long_is_told_what_to_call_next(stub_server):
    # panel.ask() in a lesson cell behind a class's queue: the message named cancel(), not the panel's
    # wait(), and not why it could take so long
    stub_server.enqueue(ok("Yes, two.", wait=2.0))
    panel = ChatPanel(make_client("openai", api_key="sk-test-x0123456789", base_url=stub_server.base_url,
                                  max_retries=0, timeout=10), flush_interval=0.0)
    with pytest.raises(TimeoutError) as err:
        panel.ask("Any Le Guin?", timeout=0.5)
    assert str(err.value) == ("the reply is still running after 0.5 s (a shared server may be writing others' "
                              "replies first): panel.wait() waits on, panel.cancel() stops it")
    assert panel.wait(10).ok and len(panel.history) == 3  # waiting on gets the reply


def test_the_gauge_knows_the_window_of_a_known_model_and_max_tokens_reaches_the_call():
    client = ScriptedClient(["ok"], model="gpt-4o-mini")
    panel = ChatPanel(client, views=("gauge",), max_tokens=64)
    panel_send(panel, "hello")
    assert client.calls[-1]["max_tokens"] == 64
    assert panel.gauge.window == 128_000
    assert panel.gauge.fraction == pytest.approx(panel.gauge.used / 128_000)
    assert "nora-gauge-fill" in panel.gauge.body.value and "of 128,000 tokens" in panel.gauge.body.value


@pytest.mark.model
@pytest.mark.timeout(120)
def test_the_embedded_model_in_the_panel():
    pytest.importorskip("llama_cpp", reason="the embedded model needs llama-cpp-python ('.[local]')")
    from nora_widgets.local import LocalClient

    client = LocalClient(seed=0)
    panel = ChatPanel(client, temperature=0.0, max_tokens=24, views=("wire", "gauge"))
    result = panel_send(panel, "My name is Ada.", timeout=90)
    assert result.ok and panel.history[-1] == {"role": "assistant", "content": str(result)}
    wire = panel.wire_view.data
    assert wire["transport"] == "in-process"
    assert wire["body"]["messages"] == panel.history[:2]
    assert "<|im_start|>user\nMy name is Ada.<|im_end|>" in wire["prompt"]  # what the model really read
    assert panel.gauge.window == 2048 and panel.gauge.exact
    assert panel.gauge.used == count_tokens(panel.history, client).total


@pytest.mark.timeout(90)
def test_the_key_never_lands_in_a_saved_notebook(stub_server, tmp_path, monkeypatch):
    """Execute a notebook that shows the panel over the real openai client (key from the
    environment, as a learner would set it), store the widget state, save it, grep it."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    secret = "sk-test-notebook-5f3a9c0d1e2b4a68"
    monkeypatch.setenv("OPENAI_API_KEY", secret)  # the kernel inherits the environment
    monkeypatch.setenv("OPENAI_BASE_URL", stub_server.base_url)
    monkeypatch.setenv("NORA_MAX_RETRIES", "0")
    stub_server.enqueue("Yes, two novels.", "14.50 euros.")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from nora_widgets import ChatPanel\n"
            "panel = ChatPanel(views=('inspector', 'wire', 'gauge', 'cost'))\n"
            "print(panel.ask('Do you have Le Guin?'))\n"
            "panel.toggles['compare'].value = True\n"
            "print(panel.ask('How much?'))\n"
            "panel"),
        nbformat.v4.new_code_cell("panel.wire_view.data['headers']['authorization']"),
    ]
    nbclient.NotebookClient(nb, timeout=60, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    path = tmp_path / "panel.ipynb"
    nbformat.write(nb, str(path))
    saved = path.read_text()
    assert "Yes, two novels." in saved  # the reply is there...
    assert "application/vnd.jupyter.widget-state+json" in saved  # ...and so is the widget state
    assert "'Bearer ***'" in saved
    assert stub_server.requests[0].headers["authorization"] == f"Bearer {secret}"
    assert secret not in saved and secret[8:] not in saved  # ...but never the key, whole or in part


@pytest.mark.model
def test_a_model_name_the_embedded_model_would_ignore_is_said_in_the_header():
    pytest.importorskip("llama_cpp", reason="the embedded model needs llama-cpp-python ('.[local]')")
    from nora_widgets.local import LocalClient

    client = LocalClient()
    panel = ChatPanel(client, views=())
    assert "is not used" not in panel.header.value
    panel.model.value = "gpt-4o"  # SmolLM2 would answer all the same: say so
    assert "model &#x27;gpt-4o&#x27; is not used: the embedded model answers as itself" in panel.header.value
    panel.model.value = client.default_model
    assert "is not used" not in panel.header.value
    scripted = ChatPanel(ScriptedClient(), model="gpt-4o", views=())  # not the embedded model: nothing to say
    assert "is not used" not in scripted.header.value


def test_the_header_names_the_models_a_server_lists_when_the_one_asked_for_is_not_among_them(monkeypatch):
    from tests.servers.openai_stub import StubServer

    for name in ("NORA_MODEL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    with StubServer(listed=["llama3.2", "qwen2.5"]) as stub:
        panel = ChatPanel(make_client(base_url=stub.base_url), views=())
        assert ("the server lists 2 models (llama3.2, qwen2.5), not &#x27;gpt-4o-mini&#x27;: choose one with the "
                "model box") in panel.header.value
        panel.model.value = "qwen2.5"
        assert "the server lists" not in panel.header.value


def test_the_gauge_shows_the_window_the_server_states_for_the_model_in_the_box(monkeypatch):
    # vLLM (and nora serve) state each model's window: the gauge showed "this model's window is unknown";
    # with several models and gpt-4o-mini not among them, it showed gpt-4o-mini's 128,000
    from tests.servers.openai_stub import StubServer

    for name in ("NORA_MODEL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    with StubServer(listed=["small", "large"], window=1024, speaks_like="vllm") as stub:
        panel = ChatPanel(make_client(base_url=stub.base_url), views=("gauge",))
        assert panel.gauge.window is None and "window is unknown" in panel.gauge.body.value
        panel.model.value = "small"
        assert panel.gauge.window == 1024 and "of 1,024 tokens" in panel.gauge.body.value
        assert "context window 1,024 tokens" in panel.header.value
        panel_send(panel, "hello")
        assert stub.requests[-1].body["model"] == "small" and panel.gauge.window == 1024


def test_an_overflow_says_what_to_do_in_the_panels_own_words():
    # the line said "trim it (/trim N or keep fewer turns)": /trim N is nora chat's command
    from nora_widgets.errors import ContextWindowError

    overflow = ContextWindowError("the prompt (300 tokens) + 16 for the reply is over the context window of 256 tokens",
                                  prompt_tokens=300, limit=256)
    panel = ChatPanel(ScriptedClient(["ok", overflow]))
    panel_send(panel, "first")
    result = panel_send(panel, "second")
    assert result.failure.kind == "context_length"
    assert panel._error_text.endswith("- tick 'keep last' N turns, or Amnesia, or Clear)")
    assert len(panel._error_text) <= 165, len(panel._error_text)  # it was 186
    assert "/trim" not in panel._error_text and panel.prompt.value == "second"


def test_a_long_list_draws_its_first_message_and_its_last_rows_and_says_what_is_between():
    from nora_widgets import views

    history = new_history("Be brief.")
    for i in range(300):  # 601 messages
        history += [{"role": "user", "content": f"Question {i}"}, {"role": "assistant", "content": f"Answer {i}"}]
    client = ScriptedClient(["Answer 300"])
    panel = ChatPanel(client, history=history, views=("inspector",), keep_last_n_turns=250)
    assert panel_send(panel, "Question 300") == "Answer 300"
    assert len(panel.inspector.last_rows) == 502 and len(panel.inspector.next_rows) == 603  # the data: whole
    for html in (panel.inspector.last_html.value, panel.inspector.next_html.value):
        assert html.count('<tr class="nora-row') == views.INSPECTOR_ROWS  # drawn: the first and the last 199
    drawn = panel.inspector.next_html.value
    numbers = [int(n) for n in re.findall(r'<tr class="nora-row[^"]*"[^>]*><td[^>]*>(\d+)</td>', drawn)]
    assert numbers == [0, *range(404, 603)]  # places in the whole list, not rows
    between = sum(count_tokens(panel.history, client).per_message[1:404])
    assert (f"(messages 1-403 are not drawn here, {between:,} tokens; 102 of them are left out by trimming, "
            "the other 301 will be sent)") in drawn
    assert "(messages 1-302 are not drawn here, " in panel.inspector.last_html.value
    assert "; all of them were sent)" in panel.inspector.last_html.value
    # what trimming leaves out is still struck through where it is drawn: 603 - 1 - 500 = 102 rows dropped,
    # none of them among the last 199; the new pair is highlighted
    assert drawn.count("nora-row-dropped") == 0 and drawn.count("nora-row-new") == 2
    short = ChatPanel(ScriptedClient(["ok"]), views=("inspector",))
    panel_send(short, "hi")
    assert "not drawn here" not in short.inspector.next_html.value  # a short list is drawn whole


def test_before_the_first_message_the_header_names_what_the_first_message_will_use(monkeypatch):
    # The client is built on the first message; until then the header said "default model (loads on
    # the first message)" even when OPENAI_BASE_URL named a server, where nothing loads.
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    panel = ChatPanel()
    assert panel._client is None
    assert "the embedded model (loads on the first message)" in panel.header.value
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    panel = ChatPanel()
    assert panel._client is None  # nothing connects before the first message
    assert "the server at http://127.0.0.1:9/v1 (connects on the first message)" in panel.header.value
    assert "loads" not in panel.header.value
    monkeypatch.delenv("OPENAI_BASE_URL")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-header-0123456789")
    panel = ChatPanel()
    assert "OpenAI (connects on the first message)" in panel.header.value
    assert "sk-test-header" not in panel.header.value


def test_before_the_first_message_the_header_hides_a_password_in_the_base_url(monkeypatch):
    # The header named OPENAI_BASE_URL as it was set, password and all, where the header once the
    # client is built (describe_client) and every error line show it redacted.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://ada:hunter2-secret@127.0.0.1:9/v1")
    panel = ChatPanel()
    assert panel._client is None
    assert "hunter2-secret" not in panel.header.value
    assert "the server at http://ada:***@127.0.0.1:9/v1 (connects on the first message)" in panel.header.value


def test_the_header_names_the_model_the_next_call_sends(monkeypatch):
    # the header named the client's default ("model gpt-4o-mini") whatever the model box said, while
    # the calls sent the box's name: a server that knows only "llama3.2" refused a model it never saw
    from tests.servers.openai_stub import StubServer

    for name in ("NORA_MODEL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    import openai

    with StubServer(listed=["llama3.2"]) as stub:  # an openai client of one's own: its default is gpt-4o-mini
        client = openai.OpenAI(base_url=stub.base_url, api_key="sk-test-x", max_retries=0)
        panel = ChatPanel(client, views=())
        assert ", model gpt-4o-mini \u00b7" in unescape(panel.header.value)  # the client's default
        panel.model.value = "llama3.2"
        header = unescape(panel.header.value)
        assert ", model llama3.2 \u00b7" in header and "gpt-4o-mini" not in header
        assert panel_send(panel, "Hi").ok
        assert stub.requests[-1].body["model"] == "llama3.2"  # what the header said
        panel.model.value = "  "  # empty again: the client's default
        assert ", model gpt-4o-mini \u00b7" in unescape(panel.header.value)


def test_clear_and_load_clear_the_status_line_that_spoke_of_the_old_conversation(tmp_path, monkeypatch):
    # "took back your last message and its reply" stayed under the input after Clear and after Load,
    # about a conversation no longer there; and "... is kept aside ...: Undo puts it back" stayed after
    # Clear had forgotten the message, so Undo then took back nothing of the kind.  Other controls keep
    # it: it is still true after Amnesia, a persona or a Save.
    monkeypatch.chdir(tmp_path)  # Save below writes the file box's nora-transcript.json: here, not in the checkout
    client = ScriptedClient(["Two novels.", "Yes.", "Hello."])
    panel = ChatPanel(client, views=())
    panel_send(panel, "Do you have Le Guin?")
    panel.save_to(str(tmp_path / "chat.json"))
    panel_send(panel, "In paperback?")
    panel.undo.click()
    took_back = "took back your last message and its reply"
    assert took_back in panel.status.value
    panel.amnesia.value = True
    panel.amnesia.value = False
    panel.persona.value = "Answer like a pirate."
    panel.save.click()
    assert took_back in panel.status.value and "saved 3 messages" in panel._file_text
    panel.clear.click()
    assert panel.status.value == "" and panel.history == new_history("Answer like a pirate.")

    panel_send(panel, "Hi")
    panel.prompt.value = ""
    panel.undo.click()
    assert took_back in panel.status.value
    panel.path.value = str(tmp_path / "chat.json")
    panel.load.click()
    assert panel.status.value == "" and len(panel.history) == 3 and "loaded 3 messages" in panel._file_text

    # a message Undo could not put back (the page had keys the kernel had not had) is kept aside
    panel.prompt.value = ""
    page = PageInput(panel.prompt)
    page.type("Thanks")  # not at the kernel yet
    panel.undo.click()
    page.to_page()
    page.to_kernel()  # "kept": the message is kept aside, and the status line says Undo puts it back
    assert panel._input.held == "Do you have Le Guin?" and "Undo puts it back" in unescape(panel.status.value)
    panel.clear.click()
    assert panel._input.held is None and panel.status.value == ""


def test_clear_from_its_button_gives_the_input_the_focus_even_with_nothing_to_clear(monkeypatch):
    # Clear on a conversation with nothing in it left the focus on the button: the letters typed next
    # went to JupyterLab's command shortcuts (in a browser, "b" added a cell below), not to the input
    panel = ChatPanel(ScriptedClient(["Two novels."]), views=())
    focused = []
    monkeypatch.setattr(panel.prompt, "focus", lambda: focused.append("input"))
    panel.clear.click()
    assert focused == ["input"] and panel.history == new_history()
    panel_send(panel, "Do you have Le Guin?")
    focused.clear()
    panel.clear.click()
    assert focused == ["input"] and panel.history == new_history()
    focused.clear()
    panel.undo.click()  # nothing to undo: the focus stays on Undo, whose status line says so
    assert focused == [] and "nothing to undo" in panel.status.value
    panel.clear_history()  # from code: the cursor stays where it is (in the cell)
    assert focused == []


def test_undo_right_after_stop_says_which_message_it_took_back():
    # Stop puts its message back in the input; Undo then takes back the turn before it, and that
    # message cannot go back into the input: the status line said only "took back your last message
    # and its reply", and what was asked left the screen without a word of which message it was
    client = SlowClient(" ".join(["word"] * 200), delay=0.05)
    panel = ChatPanel(client, views=())
    client.words = ["Two", "novels."]
    panel_send(panel, "Do you have Le Guin?")
    client.words = ["word"] * 200
    panel.prompt.value = "How much is it?"
    panel.send.click()
    assert client.first_piece.wait(5)
    panel.stop.click()
    assert panel.prompt.value == "How much is it?" and len(panel.history) == 3
    panel.undo.click()
    assert panel.history == new_history() and panel.prompt.value == "How much is it?"  # kept as it was
    status = unescape(panel.status.value)
    assert ("took back your last message \u201cDo you have Le Guin?\u201d and its reply: the next call will not "
            "send it (the input keeps what you typed)") in status, status


def test_a_reply_that_ends_leaves_the_focus_where_the_person_went_meanwhile(monkeypatch):
    # Enter in one panel, then the person went on: sent from a second panel, or ran a cell.  When the
    # first reply ended, its input took the focus back, and the keys typed in the other panel or the
    # cell went into it.  The focus goes back only to the panel the person used last.
    from IPython.core.interactiveshell import InteractiveShell

    first_client, second_client = HeldReply("Two novels.", "Yes."), HeldReply("Hello.")
    first, second = ChatPanel(first_client, views=()), ChatPanel(second_client, views=())
    focused = []
    for name, panel in (("first", first), ("second", second)):
        monkeypatch.setattr(panel.prompt, "focus", lambda name=name: focused.append(name))
        monkeypatch.setattr(panel.prompt, "focus_if_lost", lambda name=name: focused.append(name))
    first.prompt.value = "Do you have Le Guin?"
    first.send.click()
    assert first_client.streaming.wait(5)
    second.prompt.value = "Hi"
    second.send.click()
    assert second_client.streaming.wait(5)
    second_client.release()
    assert second.wait(5) == "Hello."
    focused.clear()
    first_client.release()
    assert first.wait(5) == "Two novels." and focused == []  # the focus stays in the second panel
    # on its own, a panel still gives its input the focus back after a reply
    first.prompt.value = "In paperback?"
    first.send.click()
    assert first_client.streaming.wait(5)
    first_client.release()
    assert first.wait(5) == "Yes." and focused == ["first", "first"]  # when Send was disabled, and after
    # a cell run while the reply streams is a move too (the panel watches the shell it was made in)
    shell = InteractiveShell.instance()
    monkeypatch.setattr(panel_module, "_WATCHED_SHELLS", set())
    third_client = HeldReply("Ten euros.")
    third = ChatPanel(third_client, views=())
    try:
        monkeypatch.setattr(third.prompt, "focus", lambda: focused.append("third"))
        third.prompt.value = "How much?"
        third.send.click()
        assert third_client.streaming.wait(5)
        shell.run_cell("1 + 1", store_history=False)
        focused.clear()
        third_client.release()
        assert third.wait(5) == "Ten euros." and focused == []
    finally:
        shell.events.unregister("pre_run_cell", panel_module._moved)


def test_a_message_in_a_right_to_left_script_is_drawn_right_to_left():
    # each message's text takes its direction from its first letters: an Arabic or Hebrew reply was
    # laid out left to right, from the left edge, its final "!" or "?" on the wrong side
    panel = ChatPanel(ScriptedClient(["\u0645\u0631\u062d\u0628\u0627!", "Hello."]), views=("inspector",))
    panel_send(panel, "\u05e9\u05dc\u05d5\u05dd?")
    panel_send(panel, "Hi")
    contents = re.findall(r'<div class="nora-content"( dir="auto")?', panel.transcript.value)
    assert len(contents) == 5 and all(contents), contents  # persona, two questions, two replies
    for table in (panel.inspector.last_html.value, panel.inspector.next_html.value):
        cells = re.findall(r'<td( dir="auto")? style="[^"]*">([^<]*)</td></tr>', table)  # the content column
        assert cells and all(d for d, _text in cells), cells
        assert 'dir="auto" style="text-align:left;' in table and "width:100%;text-align:start" in table


def test_a_server_started_after_the_panel_gets_its_model_asked_again_and_named(tmp_path, monkeypatch):
    # the panel made while `nora serve` (or vLLM) was still starting: its header said "model gpt-4o-mini",
    # and every message asked for that name, which a server serving only its own model refuses
    from tests.helpers import free_port
    from tests.servers.openai_stub import StubServer

    for name in ("NORA_MODEL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    port = free_port()
    client = make_client("openai", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0, timeout=5)
    panel = ChatPanel(client, views=("wire", "inspector"))
    header = unescape(panel.header.value)
    assert "model not known yet: the server did not answer when asked for its models (the next call asks again " \
           "and sends its model if it lists one, else gpt-4o-mini)" in header
    assert panel_send(panel, "hello").failure.kind == "connection" and len(panel.history) == 1
    assert "model not known yet" in unescape(panel.header.value)  # still no answer: still not known
    with StubServer(port=port, model="SmolLM2-135M-Instruct", strict=True) as stub:
        assert panel_send(panel, "hello") == "I got 2 messages; the last one says 'hello'."
        assert [(r.method, (r.body or {}).get("model")) for r in stub.requests] == [
            ("GET", None), ("POST", "SmolLM2-135M-Instruct")]
        header = unescape(panel.header.value)
        assert f"OpenAI-compatible server http://127.0.0.1:{port}/v1, model SmolLM2-135M-Instruct \u00b7" in header
        assert "not known" not in header
        assert panel.wire_view.data["body"]["model"] == "SmolLM2-135M-Instruct"
        panel.save_to(str(tmp_path / "chat.json"))
        assert load_transcript(tmp_path / "chat.json")[1]["model"] == "SmolLM2-135M-Instruct"


def test_the_input_box_needs_nothing_from_the_network():
    """Its JavaScript and CSS are strings in the package, with no import or URL: a classroom may be
    offline.  It answers ipywidgets' focus message, and names the box for a screen reader."""
    from nora_widgets._prompt_box import PromptBox

    box = PromptBox()
    code = box._esm + box._css
    assert not re.search(r"\bimport\b|https?:|//cdn|@import|url\(", code), "the input box loads something"
    assert 'msg.do === "focus"' in box._esm and box.aria_label == "your message"
    assert "nora-prompt" in box._dom_classes  # what the panel's CSS and the browser tests find it by


def test_the_temperature_round_trips_between_code_the_page_and_the_call(tmp_path):
    """panel.temperature.value is a float that code sets (the page shows it), the page sets (the person let
    go of the handle), and the next call and the saved transcript use."""
    client = ScriptedClient(["one", "two"])
    panel = ChatPanel(client, temperature=0.3)
    assert panel.temperature.value == 0.3 and type(panel.temperature.value) is float
    assert panel.temperature.get_state()["value"] == 0.3  # what the page is told
    panel.temperature.value = 1  # a whole number is a number
    assert panel.temperature.get_state()["value"] == 1.0 and type(panel.temperature.value) is float
    panel.temperature.set_state({"value": 1.5})  # from the page: the handle let go at 1.5
    panel_send(panel, "hi")
    assert client.calls[-1]["temperature"] == 1.5
    panel.save_to(str(tmp_path / "chat.json"))
    assert load_transcript(tmp_path / "chat.json")[1]["temperature"] == 1.5


@pytest.mark.parametrize("given, kept", [(3, 2.0), (-1, 0.0), (2.0000001, 2.0), (0.35, 0.35)])
def test_a_temperature_outside_0_to_2_is_clamped_as_the_slider_did(given, kept):
    panel = ChatPanel(ScriptedClient(), temperature=0.7)
    panel.temperature.value = given
    assert panel.temperature.value == kept
    assert ChatPanel(ScriptedClient(), temperature=given).temperature.value == kept


@pytest.mark.parametrize("bad", ["warm", "0.5", None, True, float("nan"), [1]])
def test_a_temperature_that_is_not_a_number_is_refused_with_one_line(bad):
    import traitlets

    client = ScriptedClient(["ok"])
    panel = ChatPanel(client, temperature=0.4)
    with pytest.raises(traitlets.TraitError) as refused:
        panel.temperature.value = bad
    assert str(refused.value) == f"temperature must be a number from 0 to 2 (got {bad!r})"
    assert panel.temperature.value == 0.4  # nothing lost
    panel_send(panel, "hi")
    assert client.calls[-1]["temperature"] == 0.4
    with pytest.raises(traitlets.TraitError, match="temperature must be a number from 0 to 2"):
        ChatPanel(client, temperature=bad)


def test_the_panel_redraws_once_per_temperature_value(monkeypatch):
    """The page sends a value once, when the handle is let go (not per tick): one redraw (one recount of
    tokens) per value; the same value again is no change."""
    panel = ChatPanel(ScriptedClient(), views=("gauge",))
    redraws, seen = [], []
    monkeypatch.setattr(panel, "refresh", lambda: redraws.append(panel.temperature.value))
    panel.temperature.observe(lambda change: seen.append(change["new"]), names="value")
    panel.temperature.set_state({"value": 0.8})
    panel.temperature.set_state({"value": 0.8})
    panel.temperature.value = 0.9
    assert redraws == [0.8, 0.9] and seen == [0.8, 0.9]


def test_the_temperature_control_is_named_and_needs_nothing_from_the_network():
    """A native range input named "temperature" (FloatSlider's handle had no name), which tells the kernel
    on "change" (let go, or a key) and not on "input" (every tick); no import or URL (offline classrooms)."""
    panel = ChatPanel(ScriptedClient())
    box = panel.temperature
    code = box._esm + box._css
    assert not re.search(r"\bimport\b|https?:|//cdn|@import|url\(", code), "the range box loads something"
    assert 'range.type = "range"' in box._esm and 'setAttribute("aria-label", model.get("description"))' in box._esm
    assert "aria-valuetext" in box._esm and box.description == "temperature"
    saving = re.findall(r'addEventListener\("(\w+)".*\n\s*model\.set\("value"', box._esm)
    assert saving == ["change"] and box._esm.count('model.set("value"') == 1, saving  # the one place it is set
    assert (box.min, box.max, box.step, box.decimals) == (0.0, 2.0, 0.1, 1)
    assert "nora-range" in box._dom_classes and box.layout.width == "260px"
    box.disabled = True  # as any ipywidgets control
    assert box.get_state()["disabled"] is True


# --------------------------------------------------------------------------- #
# the transcript in blocks: a turn sends the page what changed, not the whole chat


class PageWire:
    """Every widget message that would reach the page (no kernel here): ipywidgets' comms, recorded.
    .messages: (comm id, "comm_open" | "comm_msg" | "comm_close", data) in the order they went out."""

    def __init__(self, monkeypatch):
        import comm
        self.messages: list[tuple[str, str, dict]] = []
        wire = self

        class RecordingComm(comm.DummyComm):
            def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
                wire.messages.append((self.comm_id, msg_type, copy.deepcopy(data)))

        monkeypatch.setattr(comm, "create_comm", RecordingComm)

    def about(self, panel) -> list[tuple[str, str, dict]]:
        """The messages about the transcript: its box and its blocks (a block closed is still named)."""
        ids = {panel.transcript.model_id} | {b.model_id for b in panel.transcript.blocks} | self.closed
        return [m for m in self.messages if m[0] in ids]

    @property
    def closed(self) -> set[str]:
        return {cid for cid, kind, _ in self.messages if kind == "comm_close"}


def chat_of(n: int) -> list[dict]:
    """The persona, then n - 1 alternating questions and markdown replies, all different."""
    history = [{"role": "system", "content": "You are a helpful assistant."}]
    while len(history) < n:
        k = len(history)
        history.append({"role": "user", "content": f"question {k}?"} if k % 2 else
                       {"role": "assistant", "content": f"**reply {k}**: see [the docs](https://example.org/{k})"})
    return history


def shows_the_history(panel) -> bool:
    """What the page draws (the blocks, in order, in the transcript's box) is a fresh render of the history."""
    from nora_widgets.views import transcript_frame, transcript_html
    whole = transcript_frame("".join(b.value for b in panel.transcript.blocks))
    return whole == panel.transcript.value == transcript_html(panel.history)


def message_blocks(panel) -> list:
    """The transcript's blocks of messages: all but the last, the turn in progress (panel.live)."""
    assert panel.transcript.blocks[-1] is panel.live
    return list(panel.transcript.blocks)[:-1]


def test_a_turn_at_120_messages_sends_the_page_only_the_last_block(monkeypatch):
    # the transcript was one HTML widget, sent whole after every turn: 735 kB at 1,000 messages
    from nora_widgets._transcript_box import BLOCK
    from nora_widgets.views import live_html
    wire = PageWire(monkeypatch)
    panel = ChatPanel(ScriptedClient(["**Done.**"] * 3), history=chat_of(120))
    blocks = message_blocks(panel)
    assert BLOCK == 50 and len(blocks) == 3 and shows_the_history(panel)
    wire.messages.clear()
    panel_send(panel, "one more?")
    assert len(panel.history) == 122 and shows_the_history(panel)
    # the turn in progress went in its own block (the message on its way, the reply as it came, then nothing)
    live = [data["state"]["value"] for cid, kind, data in wire.about(panel) if cid == panel.live.model_id]
    assert live[0] == live_html("one more?") and live[-1] == "" and len(live) >= 2
    sent = [m for m in wire.about(panel) if m[0] != panel.live.model_id]
    # one message: the last block's new value (messages 100-121); blocks 1 and 2 and the box untouched
    assert [(cid, kind) for cid, kind, _ in sent] == [(blocks[2].model_id, "comm_msg")], sent
    assert sent[0][2]["state"] == {"value": blocks[2].value} and "<strong>Done.</strong>" in blocks[2].value
    assert message_blocks(panel) == blocks
    assert len(json.dumps(sent[0][2])) < len(panel.transcript.value) / 2  # the block, not the chat

    # a full last block: the next turn opens a new one, with its two messages, and names it in the box
    panel.history[:] = chat_of(150)  # (as Load would; refresh() redraws the blocks that changed)
    panel.refresh()
    wire.messages.clear()
    panel_send(panel, "and another?")
    sent = [m for m in wire.about(panel) if m[0] != panel.live.model_id]
    new = panel.transcript.blocks[3]
    assert [(cid, kind) for cid, kind, _ in sent] == [(new.model_id, "comm_open"),
                                                     (panel.transcript.model_id, "comm_msg")], sent
    assert sent[0][2]["state"]["value"] == new.value and new.value.count('class="nora-msg ') == 2
    assert sent[1][2]["state"] == {"blocks": [f"IPY_MODEL_{b.model_id}" for b in panel.transcript.blocks]}
    assert shows_the_history(panel)


def test_clear_undo_load_persona_and_trimming_redraw_only_the_blocks_that_changed(monkeypatch, tmp_path):
    wire = PageWire(monkeypatch)
    panel = ChatPanel(ScriptedClient(["Ahoy."] * 5), history=chat_of(120))
    first = [b.model_id for b in panel.transcript.blocks]

    def changed() -> list[int]:  # the blocks of messages that got a new value since the last look, by place
        ids = [b.model_id for b in message_blocks(panel)]
        out = sorted({ids.index(cid) for cid, kind, _ in wire.messages if kind == "comm_msg" and cid in ids})
        wire.messages.clear()
        return out

    wire.messages.clear()
    panel.refresh()  # nothing changed: nothing sent
    assert wire.about(panel) == []
    panel.persona.value = "You are a pirate."  # the persona is message 0: the first block alone
    assert changed() == [0] and shows_the_history(panel)
    panel.trim.value = True  # trimming changes what is sent, not what the transcript shows
    panel.amnesia.value = True
    assert changed() == [] and shows_the_history(panel)
    panel.amnesia.value = panel.trim.value = False
    panel_send(panel, "hi")
    assert changed() == [2]
    panel.undo.click()  # the last turn goes: the last block alone
    assert changed() == [2] and shows_the_history(panel) and len(panel.history) == 120

    save_transcript(str(tmp_path / "c.json"), chat_of(60))  # the same first 50 messages, but the persona
    panel.load_from(str(tmp_path / "c.json"))  # 60 messages: the first block (persona), the second; one closed
    assert wire.closed & set(first) == {first[2]} and len(message_blocks(panel)) == 2
    assert changed() == [0, 1] and shows_the_history(panel)

    panel.clear.click()  # one block of the persona; every other block closed, in the page too
    assert shows_the_history(panel) and len(message_blocks(panel)) == 1 and wire.closed & set(first) == {first[1]}
    panel.persona.value = ""  # no message at all: the empty-conversation text, as before
    assert panel.history == [] and shows_the_history(panel) and "(empty conversation)" in panel.transcript.value
    assert panel.transcript.value.startswith('<div class="nora-transcript" role="region" aria-label="conversation"')


def test_the_first_message_to_a_server_that_is_down_asks_for_its_models_once(monkeypatch):
    # the panel built its client on the first Send (GET /models, in the page's own thread) and the turn
    # asked again at once: a server that was down cost two waits, the first one with the page frozen
    from tests.servers.openai_stub import StubServer, error

    for name in ("NORA_MODEL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with StubServer() as stub:
        stub.enqueue_models(*[error(503, "no server behind me", "unavailable_error")] * 2)
        monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
        monkeypatch.setenv("NORA_MAX_RETRIES", "0")
        panel = ChatPanel()
        assert panel_send(panel, "hello") == "I got 2 messages; the last one says 'hello'."
        assert [(r.method, (r.body or {}).get("model")) for r in stub.requests] == [
            ("GET", None), ("POST", "gpt-4o-mini")]
        assert "the server did not answer when asked for its models" in unescape(panel.header.value)


def test_a_persona_too_long_for_the_window_is_advised_in_the_panels_words(stub_server):
    from tests.servers.openai_stub import context_length_exceeded

    client = make_client("openai", api_key="sk-test-panel", base_url=stub_server.base_url, max_retries=0, timeout=5)
    panel = ChatPanel(client)
    panel.persona.value = "Be a librarian. " * 2500
    stub_server.enqueue(context_length_exceeded())
    result = panel_send(panel, "Hi")
    assert result.failure.kind == "too_long" and len(panel.history) == 1
    assert panel._error_text == ("(error talking to the model: the persona and your message (40,000 + 2 characters) "
                                 "overflow the 2,048-token context window - shorten the text in the persona box)")


# --------------------------------------------------------------------------- #
# the inspector's tables and the wire view in blocks too (_blocks.py)


def sent_about(wire: PageWire, box) -> list[tuple[str, str, dict]]:
    """The messages about one BlockBox: the box and its blocks (those closed are still named)."""
    ids = {box.model_id} | {b.model_id for b in box.blocks} | wire.closed
    return [m for m in wire.messages if m[0] in ids]


def as_the_page_draws(box) -> str:
    """What the page shows: the frame with each block, in its element, where PLACE is."""
    from nora_widgets._blocks import PLACE
    tag = box.block_tag
    return box.frame.replace(PLACE, "".join(f"<{tag}>{b.value}</{tag}>" for b in box.blocks))


def test_a_turn_at_300_messages_sends_the_inspector_the_rows_that_changed_not_the_tables(monkeypatch):
    # both tables were HTML widgets sent whole after every turn: ~250 kB each at 200 rows drawn
    from nora_widgets.views import INSPECTOR_ROWS, TABLE_BLOCK
    wire = PageWire(monkeypatch)
    panel = ChatPanel(ScriptedClient(["**Done.**"] * 3), history=chat_of(300), views=("inspector",))
    panel_send(panel, "warm?")  # the first call in a panel finds every row new
    panel_send(panel, "again?")
    tables = (panel.inspector.last_html, panel.inspector.next_html)
    before = [{b.model_id: b.value for b in t.blocks} for t in tables]
    wire.messages.clear()
    panel_send(panel, "one more?")
    assert len(panel.history) == 306
    for table, was in zip(tables, before):
        sent = sent_about(wire, table)
        html = table.value
        assert html == as_the_page_draws(table)  # .value is what is drawn: one table, rows in blocks
        assert html.count('<tr class="nora-row') == INSPECTOR_ROWS and html.count("<tbody>") == len(table.blocks)
        assert html.count("<table") == 1 and html.count("<caption") == 1 and html.count("<thead>") == 1
        # sent: the block of the new rows and the one that lost its highlight; the first block of the last
        # rows (two rows scrolled out of it); the caption.  The persona's block and the middle: untouched.
        changed = [b for b in table.blocks if was.get(b.model_id) != b.value]
        assert 1 <= len(changed) <= 3 and table.blocks[0].model_id in was and table.blocks[0] not in changed
        assert sum(len(json.dumps(data)) for _, _, data in sent) < len(html) / 4, (len(html), len(sent))
        numbers = [int(n) for n in re.findall(r'<tr class="nora-row[^"]*"[^>]*><td[^>]*>(\d+)</td>', html)]
        assert numbers == [0, *range(306 - INSPECTOR_ROWS + 1, 306)] if table is tables[1] else numbers[0] == 0
        # a block holds the rows of TABLE_BLOCK places (0-9, 10-19, ...): it keeps them from turn to turn
        for block in table.blocks:
            places = {int(n) // TABLE_BLOCK for n in re.findall(r'<tr[^>]*><td[^>]*>(\d+)</td>', block.value)}
            assert len(places) == 1, places
    assert panel.inspector.next_html.value.count("nora-row-new") == 2


def test_a_table_that_shrinks_grows_or_empties_is_drawn_whole_and_the_closed_blocks_leave(monkeypatch):
    wire = PageWire(monkeypatch)
    panel = ChatPanel(ScriptedClient(["ok"] * 3), history=chat_of(45), views=("inspector",))
    table = panel.inspector.next_html
    assert len(table.blocks) == 5 and table.value == as_the_page_draws(table)
    panel.clear.click()  # the persona alone: one block; the four others closed, in the page too
    assert len(table.blocks) == 1 and table.value == as_the_page_draws(table)
    assert table.value.count('<tr class="nora-row') == 1 and len(wire.closed) >= 4
    panel.persona.value = ""  # an empty list: the caption says so, no block at all
    assert table.blocks == [] and "Next call will send only your new message (the list is empty)" in table.value
    last = panel.inspector.last_html
    assert "No call yet" in last.value and last.blocks == [] and last.value == as_the_page_draws(last)


def test_a_new_call_sends_the_wire_view_the_end_of_its_json_not_all_of_it(monkeypatch):
    # the wire view's JSON is the whole conversation: 404 kB at 1,000 messages, sent whole each call
    wire = PageWire(monkeypatch)
    client = ScriptedClient(["Noted."] * 3)
    panel = ChatPanel(client, history=chat_of(300), views=("wire",))
    panel_send(panel, "first?")
    body = panel.wire_view.body
    first = [b.model_id for b in body.blocks]
    wire.messages.clear()
    panel_send(panel, "second?")
    sent = sent_about(wire, body)
    assert body.value == as_the_page_draws(body)
    text = json.dumps(client.calls[-1], indent=2, ensure_ascii=False)
    assert unescape(re.sub(r"</?span>", "", body.value)).count(text) == 1  # the JSON, whole, in one <pre>
    assert [b.model_id for b in body.blocks][:len(first) - 1] == first[:-1]  # the first blocks: the same ones
    assert 0 < sum(len(json.dumps(data)) for _, _, data in sent) < len(body.value) / 3
    assert "second?" in body.value and "second?" in "".join(data["state"].get("value", "") for _, _, data in sent)


def test_a_side_by_side_turn_sends_the_twins_last_block_and_the_reply_on_its_way_not_its_whole_chat(monkeypatch):
    # the memory-less twin's transcript was one HTML widget, sent whole at each redraw of a turn (the question
    # on its way, each piece of the reply, its end): ~56 kB a turn over 50 turns, ~110 kB at the 50th
    from nora_widgets.views import TWIN_BLOCK, live_html, transcript_html
    wire = PageWire(monkeypatch)
    panel = ChatPanel(ScriptedClient(), views=("compare",), flush_interval=0.0)
    panel.side_by_side.value = True
    for i in range(30):
        panel.ask(f"question {i}?")
    box = panel.compare.body
    blocks = list(box.blocks)  # 61 messages in blocks of 10, then the (empty) block of the turn in progress
    assert TWIN_BLOCK == 10 and len(blocks) == 8 and blocks[-1].value == ""
    seen = []  # each value of the last block while the turn runs
    blocks[-1].observe(lambda change: seen.append(change["new"]), names="value")
    wire.messages.clear()
    panel.ask("one more?")
    assert len(panel.twin_history) == 63
    # the page shows what it showed before: the twin's messages in the same named, shorter scrolling box
    assert box.value == transcript_html(
        panel.twin_history, max_height="min(300px, 40vh)", label="conversation without memory")
    # sent: the block of messages 60-62 and the turn in progress (the question, the reply as it came,
    # then nothing); the other blocks, the list of them and the box itself: untouched
    sent = sent_about(wire, box)
    assert {(cid, kind) for cid, kind, _ in sent} == {(blocks[-2].model_id, "comm_msg"),
                                                      (blocks[-1].model_id, "comm_msg")}, sent
    assert box.blocks == blocks and blocks[-1].value == "" and "one more?" in blocks[-2].value
    reply = panel.twin_history[-1]["content"]
    so_far = [live_html("one more?", reply[:k]) for k in range(len(reply) + 1)]
    assert len(seen) > 2 and all(value in so_far for value in seen[:-1]) and seen[-2:] == [so_far[-1], ""]
    assert [kind for cid, kind, _ in sent if cid == blocks[-2].model_id] == ["comm_msg"]  # once, at the end
    assert all(len(json.dumps(data)) < len(box.value) / 10 for _, _, data in sent)  # a block, never the chat


def test_a_block_box_names_its_blocks_by_anchor_so_a_window_that_scrolls_resends_only_its_ends():
    from nora_widgets._blocks import PLACE, BlockBox
    box = BlockBox(block_tag="div")
    drawn: list[int] = []

    def show(first: int, last: int) -> int:  # rows first..last-1, in blocks of 10 by place
        anchors = sorted({p // 10 for p in range(first, last)})
        keys = [tuple(p for p in range(first, last) if p // 10 == a) for a in anchors]
        return box.draw(f"<section>{PLACE}</section>", keys, lambda i: drawn.append(i) or str(keys[i]),
                        anchors=anchors)

    assert show(5, 45) == 5  # blocks 0 (5-9), 1, 2, 3, 4 (40-44)
    middle = box.blocks[1:4]
    drawn.clear()
    assert show(7, 47) == 2 and drawn == [0, 4]  # the two ends; the middle blocks are the same ones
    assert box.blocks[1:4] == middle
    # block 0 closed, block 5 opened, blocks 1 and 4 changed: the same objects, none moved up a place
    assert show(12, 52) == 3 and box.blocks[:3] == middle and len(box.blocks) == 5
    assert box.value.startswith("<section><div>(12,") and box.value.endswith("(50, 51)</div></section>")


def test_ask_with_a_number_or_nothing_is_a_failure_in_one_line():
    # panel.ask(42) raised the widget's TraitError ("expected a unicode string, not the int 42"), and
    # panel.ask("   ") gave the right line with .ok True, so `if result.ok:` took it for a reply
    client = ScriptedClient(["never"])
    panel = ChatPanel(client)
    for text, says in [(42, "the message must be text, not int"), ("   ", "nothing to send: the message is empty")]:
        result = panel.ask(text)
        assert result == says and not result.ok and result.failure.kind == "bad_input"
        assert says in panel.error.value
    assert client.calls == [] and panel.history == new_history() and not panel._busy


def test_a_list_edited_in_code_is_refused_before_the_turn_and_the_panel_stays_usable():
    # the reply object appended by hand: the turn refused it, then drawing the list met the non-dict on the
    # worker thread (AttributeError: 'ChatCompletionMessage' object has no attribute 'get'), and the panel
    # stayed "replying", Send disabled, for good
    client = ScriptedClient(["Yes, two.", "12 euros."])
    panel = ChatPanel(client)
    panel.ask("Any Le Guin?")
    response = ScriptedClient(["x"]).chat.completions.create(model="m", messages=panel.history)
    panel.history.append(response.choices[0].message)
    before = list(panel.history)
    with thread_exceptions() as raised:
        result = panel.ask("How much is it?")
    assert raised == []
    assert not result.ok and result.startswith("message 3: must be a dict with 'role' and 'content', not "
                                               "ChatCompletionMessage: append {'role': 'assistant'")
    assert result in unescape(panel.error.value) and "\n" not in result
    assert panel.history == before and len(client.calls) == 1
    assert not panel._busy and not panel.send.disabled
    panel.history.pop()  # mended: the panel goes on
    assert panel.ask("How much is it?") == "12 euros."


@pytest.mark.parametrize("given, says", [
    (ScriptedClient, "not type (that is the class ScriptedClient: make one, ScriptedClient())"),
    ([{"role": "system", "content": "Be brief."}], "not list (make one with make_client()); a list of messages goes "
                                                   "in history=[...]"),
])
def test_a_panel_given_something_that_is_not_a_client_says_so_at_once(given, says):
    # it was taken, and the header read "type, model gpt-4o-mini"; the first message then failed
    with pytest.raises(TypeError) as caught:
        ChatPanel(given)
    assert str(caught.value) == ("ChatPanel: the client must be an OpenAI-style client with .chat.completions.create(), "
                                 + says)



def test_an_async_client_is_refused_at_once_in_the_panels_words():
    # it was taken, and every message then failed with stream_turn's line for code:
    # "stream_turn got an async client (AsyncOpenAI): async for piece in astream_turn(client, history, text) instead"
    import openai

    client = openai.AsyncOpenAI(api_key="sk-test-0123456789", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(TypeError) as caught:
        ChatPanel(client)
    assert str(caught.value) == ("ChatPanel needs a sync client, not AsyncOpenAI: make_client(), or openai.OpenAI(...) "
                                 "(an async client is for arun_turn and astream_turn)")
    assert "\n" not in str(caught.value)

def test_the_scrolling_boxes_are_regions_named_for_what_they_hold():
    # Chromium's Tab stops on a box that scrolls: each must say what it is (tests/browser checks the keys)
    from nora_widgets.views import WireView

    panel = ChatPanel(ScriptedClient(["Two novels."]), views=("inspector", "wire"))
    panel_send(panel, "Do you have Le Guin?")
    assert (panel.inspector.last_html.region_label, panel.inspector.next_html.region_label) == ("last call sent", "next call will send")
    labels = re.findall(r'<pre role="region" aria-label="([^"]*)"', panel.wire_view.body.value)
    assert labels == ["the last request"], labels  # in-process: the body only
    wire = WireView()
    wire.update({"transport": "http", "method": "POST", "url": "http://127.0.0.1:8080/v1/chat/completions",
                 "headers": {"authorization": "Bearer sk-...abcd"}, "body": {"model": "m", "messages": []}})
    assert [unescape(x) for x in re.findall(r'<pre role="region" aria-label="([^"]*)"', wire.body.value)] == [
        "the last request's headers", "the last request"]
    wire.update({"transport": "in-process", "body": {"model": "m"}, "prompt": "<|im_start|>system", "prompt_tokens": 3})
    assert [unescape(x) for x in re.findall(r'<pre role="region" aria-label="([^"]*)"', wire.body.value)] == [
        "the last request", "the prompt the model reads (3 tokens)"]


def test_the_error_line_sits_under_the_input_in_the_status_lines_room():
    # above the input it pushed the input row 18 px down when it came; the status line gives up its
    # kept room to it (LINE_CSS), which works because an error empties the status line
    panel = ChatPanel(ScriptedClient([]))
    column = next(child for child in panel.children[1].children if panel.chat_box in child.children).children
    row = next(child for child in column if panel.prompt in getattr(child, "children", ()))
    assert column.index(panel.error) == column.index(row) + 1 and column.index(panel.status) == column.index(row) + 2
    assert "nora-error-line" in panel.error._dom_classes
    assert ".nora-error-line:has(.nora-error)+.nora-status{min-height:0}" in panel_module.FOCUS_CSS
    panel._say("replying\u2026")
    panel._show_error("Stopped: the turn was rolled back")
    assert panel.status.value == "" and 'class="nora-error" role="alert"' in panel.error.value


def test_edit_rewrites_a_message_and_the_next_call_sends_the_edited_list():
    """Edit (the number as the inspector's # column), Save edit: the list holds the new text, role kept;
    nothing is sent until the next message, which sends the edited list; the inspector marks the row."""
    client = ScriptedClient(["Dune is a fantasy novel.", "12 euros.", "Ahoy."])
    panel = ChatPanel(client, views=("inspector",))
    panel_send(panel, "Do you have Dune?")
    panel.editor.number.value = "2"
    panel.editor.open.click()
    assert panel.editor.box.layout.display == "" and panel.editor.text.value == "Dune is a fantasy novel."
    assert panel.editor.text.description == "message 2"
    panel.editor.text.value = "Yes: three copies of Dune, at 12 euros each."
    panel.editor.save.click()
    assert panel.history[2] == {"role": "assistant", "content": "Yes: three copies of Dune, at 12 euros each."}
    assert len(client.calls) == 1  # nothing sent at the edit
    assert panel.editor.box.layout.display == "none" and panel.error.value == ""
    assert ("message 2 (assistant) now: \u201cYes: three copies of Dune, at 12 euros each.\u201d; the next call "
            "sends it") in unescape(panel.status.value)
    # the transcript shows the new text; the "last call" table still shows what that call sent
    assert "three copies of Dune" in panel.transcript.value and "fantasy" not in panel.transcript.value
    assert [r["content"] for r in panel.inspector.last_rows][1:] == ["Do you have Dune?"]
    assert panel.inspector.next_rows[2]["content"].startswith("Yes: three copies")
    panel.editor.number.value = "1"  # an earlier message: new since the last call, marked so
    panel.editor.open.click()
    panel.editor.text.value = "Do you have Dune, by Frank Herbert?"
    panel.editor.save.click()
    assert [r["new"] for r in panel.inspector.next_rows] == [False, True, True]
    panel_send(panel, "How much is one copy?")
    assert [m["content"] for m in client.calls[-1]["messages"]] == [
        SYSTEM_PROMPT, "Do you have Dune, by Frank Herbert?", "Yes: three copies of Dune, at 12 euros each.",
        "How much is one copy?"]
    # after the call, only what that turn added is new: the edits were sent
    assert [r["new"] for r in panel.inspector.next_rows] == [False, False, False, True, True]
    # message 0, the persona: its box follows; trimming that leaves a message out says so
    panel.start_edit(0)
    panel.editor.text.value = "Answer like a pirate."
    panel.editor.save.click()
    assert panel.persona.value == "Answer like a pirate." and panel.history[0]["role"] == "system"
    panel.trim.value, panel.keep_n.value = True, 1
    assert panel.edit_message(1, "Do you have Dune?")
    assert "keep last 1 turn leaves it out of the next call" in unescape(panel.status.value)
    panel_send(panel, "Thanks.")
    assert client.calls[-1]["messages"][0] == {"role": "system", "content": "Answer like a pirate."}


@pytest.mark.parametrize("number, text, error", [
    ("9", "x", "edit: there is no message 9: the conversation has 3 messages, numbered 0 to 2; nothing was changed"),
    ("two", "x", "edit: the message number must be a whole number from 0 to 2 (got 'two'); nothing was changed"),
    ("", "x", "edit: the message number must be a whole number from 0 to 2 (got ''); nothing was changed"),
    ("2", "  \n", "edit: the new text for message 2 is empty: a message needs some text; nothing was changed"),
])
def test_an_edit_refused_is_one_red_line_and_changes_nothing(number, text, error):
    client = ScriptedClient(["Two novels.", "Next."])
    panel = ChatPanel(client, views=("inspector",))
    panel_send(panel, "Do you have Le Guin?")
    before, rows = copy.deepcopy(panel.history), panel.inspector.next_html.value
    panel.editor.number.value = number
    panel.editor.open.click()
    if panel.editor.index is not None:  # the number was good: the refusal comes at Save edit
        panel.editor.text.value = text
        panel.editor.save.click()
        assert panel.editor.box.layout.display == "" and panel.editor.text.value == text  # what was typed stays
    else:
        assert panel.editor.box.layout.display == "none"
    assert unescape(re.sub("<[^>]+>", "", panel.error.value)) == f"\u26a0 {error}"
    assert panel.history == before and panel.inspector.next_html.value == rows
    panel_send(panel, "And Dune?")
    assert client.calls[-1]["messages"][:3] == before


def test_a_key_pasted_in_the_edit_number_box_is_emptied_and_not_quoted_in_the_red_line(monkeypatch):
    # the refusal said "(got 'sk-proj-...')" on the page, and the box kept the key in the widget state
    # a notebook saves, as the model box would have before it emptied what looks like a key
    env_key = "CANARY" + "1234567890abcdefXY"  # fakes, put together so no key-shaped string is in the source
    monkeypatch.setenv("OPENAI_API_KEY", env_key)
    panel = ChatPanel(ScriptedClient(["Two novels."]))
    panel_send(panel, "Do you have Le Guin?")
    before = copy.deepcopy(panel.history)
    for pasted in ("sk-" + "proj-" + "CANARY1234567890abcdef", env_key):
        panel.editor.number.value = pasted
        panel.editor.open.click()
        said = unescape(re.sub("<[^>]+>", "", panel.error.value))
        assert said.startswith("\u26a0 edit: ") and said.endswith("nothing was changed") and "\n" not in said
        assert "CANARY" not in said and "CANARY" not in panel.editor.number.value
        assert not any("CANARY" in str(w.get_state()) for w in _all_widgets(panel))
        assert panel.editor.box.layout.display == "none" and panel.history == before
    panel.editor.number.value = "2"  # the box still works
    assert panel.editor.open.click() is None and panel.editor.text.value == "Two novels."


def _all_widgets(root):
    seen, todo = [], [root]
    while todo:
        w = todo.pop()
        seen.append(w)
        todo.extend(c for c in getattr(w, "children", ()) if hasattr(c, "get_state"))
    return seen


def test_an_edit_while_a_reply_runs_is_refused_and_cancel_changes_nothing():
    client = SlowClient(delay=0.2)
    panel = ChatPanel(client)
    panel.start_edit(0)
    panel.editor.text.value = "Be brief."
    panel.prompt.value = "Tell me a story."
    panel.send.click()
    assert client.first_piece.wait(10)
    assert panel.editor.save.disabled and panel.editor.open.disabled
    assert not panel.edit_message(0, "Be brief.")  # from code too
    assert "edit: a reply is running: edit once it is done, or Stop it; nothing was changed" in unescape(panel.error.value)
    assert panel.history[0]["content"] == SYSTEM_PROMPT
    panel.cancel()
    assert not panel.editor.save.disabled
    panel.editor.cancel.click()  # the box closes; the persona is as it was
    assert panel.editor.box.layout.display == "none" and panel.editor.index is None
    assert panel.history == new_history() and panel.persona.value == SYSTEM_PROMPT


def test_side_by_side_an_edit_of_the_persona_or_a_question_edits_the_twins_copy_too():
    client = ScriptedClient(["Hi Ada.", "What name?", "Hello."])
    panel = ChatPanel(client)
    panel.side_by_side.value = True
    panel_send(panel, "My name is Ada.")
    assert panel.edit_message(1, "My name is Bea.") and panel.edit_message(0, "Be brief.")
    assert panel.edit_message(2, "Hi Bea.")
    assert panel.twin_history == [{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": "My name is Bea."},
                                  {"role": "assistant", "content": "What name?"}]  # its own reply stays
    panel_send(panel, "Who am I?")
    assert [m["content"] for m in client.calls[-2]["messages"]] == ["Be brief.", "My name is Bea.", "Hi Bea.",
                                                                    "Who am I?"]
    assert [m["content"] for m in client.calls[-1]["messages"]] == ["Be brief.", "Who am I?"]  # no memory


def test_undo_and_clear_close_the_editing_box_of_a_message_they_take_away():
    panel = ChatPanel(ScriptedClient(["One.", "Two."]))
    panel_send(panel, "a")
    panel_send(panel, "b")
    panel.start_edit(4)
    panel.undo.click()
    assert panel.editor.box.layout.display == "none"
    panel.prompt.value = ""
    panel.start_edit(0)
    panel.undo.click()  # the persona stays: so does the box on it
    assert panel.editor.index == 0 and panel.history == new_history()
    panel.clear.click()
    assert panel.editor.box.layout.display == "none" and panel.editor.index is None


EDITED = "Yes: we have three copies of Dune, at 12 euros each."


def test_ctrl_enter_in_the_edit_box_saves_the_whole_text_it_carries_even_ahead_of_the_text_itself(monkeypatch):
    """Enter in the number box opens the message; Ctrl+Enter in the box saves it.  The box's value goes to
    the kernel as it is left, and ipywidgets may hold it back behind an earlier one: the key carries the
    text, so what is saved is all that was typed, not the text as the kernel last had it."""
    client = ScriptedClient(["Dune is a fantasy novel.", "12 euros."])
    panel = ChatPanel(client, views=("inspector",))
    panel_send(panel, "Do you have Dune?")
    focused = []
    monkeypatch.setattr(panel.prompt, "focus", lambda: focused.append("input"))
    number, text = PageKeyBox(panel.editor.number), PageKeyBox(panel.editor.text)
    number.replace("2")
    number.enter()
    number.to_kernel(key_first=True)  # the number the key carried: the kernel's copy was still ""
    text.to_page()
    assert panel.editor.index == 2 and text.box == "Dune is a fantasy novel." and text.focused
    text.replace(EDITED)
    text.enter()
    text.to_kernel(key_first=True)  # the value arrives after the key (and after the box closed)
    assert panel.history[2] == {"role": "assistant", "content": EDITED}
    assert panel.editor.box.layout.display == "none" and panel.error.value == "" and focused == ["input"]
    assert f"message 2 (assistant) now: \u201c{EDITED[:49]}\u2026\u201d" in unescape(panel.status.value)
    assert len(client.calls) == 1  # nothing sent at the edit
    text.to_page()
    assert text.box == ""
    # the late value left the kernel's copy at EDITED: opening message 2 again still shows it in the page
    number.replace("2")
    number.enter()
    number.to_kernel()
    text.to_page()
    assert text.box == EDITED and not panel.editor.unsaved()
    panel_send(panel, "How much is one copy?")
    assert client.calls[-1]["messages"][2]["content"] == EDITED


def _one_turn_with_edit_focus_seen(monkeypatch):
    """A panel after one turn, the list as it stood then, and a list that records each focus() on Edit."""
    client = ScriptedClient(["Two novels."])
    panel = ChatPanel(client)
    panel_send(panel, "Do you have Le Guin?")
    focused: list[str] = []
    monkeypatch.setattr(panel.editor.open, "focus", lambda: focused.append("Edit"))
    return client, panel, copy.deepcopy(panel.history), focused


def test_escape_in_the_edit_box_cancels_and_the_focus_goes_back_to_edit(monkeypatch):
    client, panel, before, focused = _one_turn_with_edit_focus_seen(monkeypatch)
    text = PageKeyBox(panel.editor.text)
    panel.start_edit(1)
    text.to_page()
    text.replace("Do you have Dune?")
    text.escape()
    text.to_kernel()
    assert panel.editor.index is None and panel.editor.box.layout.display == "none" and focused == ["Edit"]
    assert panel.history == before and panel.error.value == ""
    text.to_page()
    assert text.box == ""
    panel.start_edit(1)  # the message as it was, not what was typed before Escape
    text.to_page()
    assert text.box == "Do you have Le Guin?"
    panel.clear.click()  # closes the box; an Escape on its way then does nothing
    focused.clear()
    text.escape()
    text.to_kernel()
    assert focused == [] and panel.editor.index is None


def test_save_edit_trims_the_text_as_edit_and_chat_edit_do_and_blank_text_is_still_refused():
    """One rule for an edit's text in every face (conversation.edit_message): the white space around it goes,
    the white space inside stays; the status line, the persona box and the next call all show the trimmed text."""
    client = ScriptedClient(["Two novels.", "Next."])
    panel = ChatPanel(client)
    panel_send(panel, "Do you have Le Guin?")
    text = PageKeyBox(panel.editor.text)
    panel.start_edit(2)
    text.to_page()
    text.replace("\n  We have none.\n\n  Try the library.  \n")
    text.enter()
    text.to_kernel()
    assert panel.history[2] == {"role": "assistant", "content": "We have none.\n\n  Try the library."}
    assert "now: \u201cWe have none. Try the library.\u201d" in unescape(panel.status.value)
    assert panel.edit_message(" 0 ", "  Answer like a pirate.\n")
    assert panel.history[0]["content"] == panel.persona.value == "Answer like a pirate."
    before = copy.deepcopy(panel.history)
    assert not panel.edit_message(1, " \n\t ")
    assert unescape(re.sub("<[^>]+>", "", panel.error.value)) == (
        "\u26a0 edit: the new text for message 1 is empty: a message needs some text; nothing was changed")
    assert panel.history == before
    panel_send(panel, "Why not?")
    assert client.calls[-1]["messages"][:3] == before


def test_escape_in_the_number_box_empties_it_and_closes_an_unchanged_box_but_keeps_changes(monkeypatch):
    """Escape in the number box: the number goes, in the page too, and so does a red line about it; an
    editing box open without changes closes, as Cancel; one holding changes stays open with them."""
    client, panel, before, focused = _one_turn_with_edit_focus_seen(monkeypatch)
    number, text = PageKeyBox(panel.editor.number), PageKeyBox(panel.editor.text)
    number.replace("9")
    number.enter()
    number.to_kernel()
    assert "edit: there is no message 9" in unescape(panel.error.value)
    number.escape()
    number.to_kernel()
    number.to_page()
    assert number.box == "" and panel.editor.number.value == "" and panel.error.value == ""
    number.replace("2")  # typed, not left: the kernel's copy is still empty, the page's box is emptied
    number.enter()
    number.to_kernel()
    text.to_page()
    assert panel.editor.index == 2 and text.box == "Two novels."
    number.escape()
    number.to_kernel()
    number.to_page()
    assert number.box == "" and panel.editor.index is None and panel.editor.box.layout.display == "none"
    assert focused == []  # the focus stays in the number box (Cancel would move it to Edit)
    number.replace("1")
    number.enter()
    number.to_kernel()
    text.to_page()
    text.replace("Do you have Dune?")
    text.leave()  # to the number box: the text reaches the kernel
    text.to_kernel()
    number.escape()
    number.to_kernel()
    number.to_page()
    text.to_page()
    assert number.box == "" and panel.editor.index == 1 and text.box == "Do you have Dune?"  # never dropped unsaid
    assert panel.history == before
    panel._show_error("a failure that is not the editor's")
    number.escape()
    number.to_kernel()
    assert panel.error.value != ""  # Escape there clears only an edit's own red line


def test_enter_in_the_number_box_is_edit_refusals_and_all():
    panel = ChatPanel(SlowClient(delay=0.2))
    number = PageKeyBox(panel.editor.number)
    number.replace("9")
    number.enter()
    number.to_kernel()
    assert unescape(re.sub("<[^>]+>", "", panel.error.value)) == (
        "\u26a0 edit: there is no message 9: the conversation has 1 message, numbered 0 to 0; nothing was changed")
    assert panel.editor.index is None
    panel.prompt.value = "Tell me a story."
    panel.send.click()
    assert panel.busy
    number.replace("0")
    number.enter()  # Edit is disabled while a reply runs; Enter says why
    number.to_kernel()
    assert "edit: a reply is running" in unescape(panel.error.value) and panel.editor.index is None
    panel.cancel()
    number.enter()
    number.to_kernel()
    assert panel.editor.index == 0 and panel.editor.text.value == SYSTEM_PROMPT and panel.error.value == ""


def test_edit_on_another_message_refuses_while_the_box_holds_changes_not_saved(monkeypatch):
    """Edit never drops typed text unsaid: with changes in the box, another number is one red line (Save
    edit or Cancel first) and the box keeps them; the same number puts the focus back in the box.  With
    no changes, Edit simply opens the other message."""
    client = ScriptedClient(["Dune is a fantasy novel."])
    panel = ChatPanel(client)
    panel_send(panel, "Do you have Dune?")
    before = copy.deepcopy(panel.history)
    text = PageKeyBox(panel.editor.text)
    panel.start_edit(2)
    assert panel.start_edit(1) and panel.editor.index == 1  # nothing typed: it just moves on
    panel.start_edit(2)
    text.to_page()
    text.replace(EDITED)
    text.leave()  # Tab to the number box: the text reaches the kernel
    text.to_kernel()
    panel.editor.number.value = "1"
    panel.editor.open.click()
    assert unescape(re.sub("<[^>]+>", "", panel.error.value)) == (
        "\u26a0 edit: the box holds changes to message 2 not saved: Save edit or Cancel them first; "
        "nothing was changed")
    text.to_page()
    assert panel.editor.index == 2 and panel.editor.text.value == EDITED and text.box == EDITED
    assert panel.history == before
    assert not panel.start_edit(0)  # from code too
    assert panel.start_edit(2) and panel.error.value == ""  # the message in the box: back into it, as typed
    text.to_page()
    assert text.focused and text.box == EDITED and panel.editor.unsaved()
    panel.editor.cancel.click()
    assert panel.start_edit(1) and panel.editor.text.value == "Do you have Dune?" and panel.history == before
