"""ChatPanel: a JupyterLab chat that shows the model remembers nothing.

    from nora_widgets import ChatPanel, ScriptedClient
    panel = ChatPanel(ScriptedClient())       # or ChatPanel() for the embedded model
    panel                                     # last expression of a cell: shows it

A thin shell over ``conversation.py``: the Send button runs ``safe_run_turn``,
the same function the terminal client uses, then renders.  The conversation is
``panel.history``, a plain list of {"role", "content"} dicts, system first.

Driving it from code (lessons, tests) is the same as clicking:

    panel.prompt.value = "My name is Ada."
    panel.send.click()
    panel.wait()                              # the reply runs on a worker thread
    len(panel.history)                        # -> 3

How a turn runs (``_background.py``, which imports no widgets): a worker thread
streams the reply into a *copy* of the history and, only when the reply is
complete, appends the user message and the reply to ``panel.history``.  Stop,
an error, or a dropped connection therefore leave the history exactly as it was,
and code reading ``panel.history`` meanwhile never sees half a turn.  This
module only reads the widgets, starts the turn, and draws what its callbacks
report.  Keyboard: Enter in the one-line input sends (with ``multiline=True``
the input is a text area: Enter is a new line, Ctrl/Cmd+Enter or Send sends);
Escape stops a reply.  The input stays open while a reply runs, so the next
message can be typed meanwhile; it is sent after the reply (Enter and Send send
nothing while one runs).  The input is ``_prompt_box.PromptBox``, a box with
JavaScript of its own: keys typed right after Enter are kept.  Edit's boxes
(``_key_box.KeyBox``): Enter in the number box is Edit; in the message's box,
Ctrl/Cmd+Enter is Save edit and Escape is Cancel.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from typing import Any, Callable, Sequence

import ipywidgets as widgets

from . import views as v
from ._background import BackgroundTurn
from ._message_editor import MessageEditor
from ._panel_input import PanelInput
from ._prompt_box import PromptBox
from ._range_box import RangeBox
from ._transcript_box import TranscriptBox
from ._waiting import Clock, Ticker, waiting_words
from .conversation import _is_async
from .clients import choose_backend, describe_client, make_client, model_note, model_used
from .conversation import (
    DEFAULT_TEMPERATURE,
    ChatClient,
    SYSTEM_PROMPT,
    TurnResult,
    dropped_indexes,
    edit_message,
    is_client,
    message_number,
    new_history,
    not_a_client,
    set_persona,
    trim_history,
    undo_turn,
    validate_history,
    validate_user_text,
)
from .errors import Failure, NoraError, count_of, describe_failure, looks_like_a_key, redact
from .render import DONE_COLOUR, ERROR_COLOUR, MUTED, SR_ONLY, escape, markdown_to_html
from .tokens import TokenCount, context_window, count_tokens
from .transcript import load_transcript, save_transcript

__all__ = ["ChatPanel", "VIEWS"]

# view name -> toggle button label
VIEWS = {"inspector": "Inspector", "wire": "Wire", "gauge": "Context", "cost": "Cost", "compare": "Side by side"}
VIEW_TIPS = {  # shown on hover (a toggle without one showed "null"), after "on - " or "off - "
    "inspector": "show the list the last call sent and the one the next call will send",
    "wire": "show the last request exactly as it went out (key masked)",
    "gauge": "show how much of the model's context window the next call uses",
    "cost": "show the tokens sent per call and in total",
    "compare": "also send every question to a conversation without memory, side by side",
}
PANEL_TRIM = "tick 'keep last' N turns, or Amnesia, or Clear"  # not nora chat's /trim N
PANEL_PERSONA = "shorten the text in the persona box"  # when the persona alone overflows the window
PANEL_NOT_FOUND = "check the model box (empty: the client's default) and OPENAI_BASE_URL"  # the panel has no --model
BUSY_NOTE = "still replying: send your message when the reply is done, or Stop it"  # Enter while a reply runs
STOPPED = "Stopped: the turn was rolled back"  # then "." or "; your message is back in the input."
BUSY_NOTE_STAYS = 2.0  # seconds the busy note stays before the count of seconds waited comes back
AMNESIA_TIPS = {True: "on - each call sends only the persona and the latest message",
                False: "off - press to send only the persona and the latest message"}
# The columns' least widths, or the whole width when there is less (see ChatPanel.__init__)
NARROW_CHAT, NARROW_VIEWS = "min(320px, 100%)", "min(300px, 100%)"
# A keyboard focus ring that can be seen: JupyterLab's is 1 px of light blue (about 2:1 against
# white, next to nothing on the blue Send button, and none at all on text boxes).  Plain CSS, scoped
# to the panel; three classes' weight, to win over ipywidgets' "outline: none" on its text boxes.
# Stop while a reply runs (orange) and Amnesia on (red) in shades their words can be read on, in either
# theme: ipywidgets' own were white on #f57c00 in JupyterLab Light (2.7:1) and black on #d32f2f in Dark (4.2:1).
LIVE_COLOURS = {"warning": ("#b45309", "#92400e"), "danger": ("#c62828", "#a51d1d")}  # background, on hover
# The buttons' icons (`icon=` draws <i class="fa fa-NAME">, its ::before holds a Font Awesome 5 glyph from
# Unicode's private use area).  Chromium put that glyph into each button's name ("\uf1d8 Send"), a character
# screen readers skip or spell out.  FOCUS_CSS draws the same glyph again with an empty alternative text
# after the "/" (CSS generated content): still drawn, no longer named, so the name is the words ("Send").
# A browser without alternative text ignores the rule and keeps Font Awesome's.  Every icon the panel uses
# is here (tests/test_panel.py checks).
ICON_GLYPHS = {"paper-plane": "f1d8", "stop": "f04d", "eraser": "f12d", "trash": "f2ed", "undo": "f0e2",
               "pencil": "f303", "save": "f0c7", "folder-open": "f07c", "check": "f00c"}  # check: a view toggle that is on
# The transcript and the reply that streams share one scrolling box, the region "conversation" (at most
# v.TRANSCRIPT_HEIGHT high): the reply is drawn in its last block (TranscriptBox(live=True)), so the earlier
# messages give way (they scroll, newest at the bottom) as the reply grows, and the input row and Stop stay
# where they are.  Each in a box of its own at most 45% high, a long chat and a long reply made 90% of the
# window: on a projector (1280x720 at 150%) the input row went down 121 px at each reply's start.  Then the
# reply had a scrolling part of its own under the region (at most min(280px, 30vh)): its start scrolled
# out of that part, and the keys that scroll the conversation could not reach it.
CHAT_BOX_CSS = (f".nora-panel .nora-chat-box{{max-height:{v.TRANSCRIPT_HEIGHT};overflow:hidden}}"
                ".nora-panel .nora-chat-box>*"
                "{display:flex;flex-direction:column;flex:0 1 auto;min-height:0;margin:0}"
                ".nora-panel .nora-chat-box .nora-transcript{min-height:0;flex:0 1 auto}"
                # the transcript is a Tab stop: its focus ring inside its edge, where the box's
                # overflow:hidden does not cut it off
                ".nora-panel .jupyter-widgets .nora-transcript:focus-visible{outline-offset:-2px}")
# The status line under the input and the note beside Save / Load keep one line's room when empty: they
# came and went ("replying…" at every turn, "took back…", "saved 11 messages"), and everything below them
# moved 18 CSS px each time (27 px on a 1280x720 projector at 150%).  A longer text still wraps, on more
# lines.  The note takes at least 16em of its row: where that is not left beside the buttons (a narrow or
# zoomed window), it has a row of its own, empty or not, as high as a line of it (a button's height), so
# Save and Load move nothing either (the views went 32 px down at "saved 11 messages").
# The error line sits under the input, in the status line's room: above the input it pushed the input
# row 18 CSS px down when it came (Stop, a failure, a refused message; 27 px on that projector).  An error
# empties the status line (_show_error), which then gives its room up, so nothing below moves either.
LINE_CSS = (".nora-panel .jupyter-widgets.nora-status{min-height:1.4em}"
            ".nora-panel .nora-error-line:has(.nora-error)+.nora-status{min-height:0}"
            ".nora-panel .jupyter-widgets.nora-file-note{flex:1 1 16em;min-width:0;"
            "min-height:var(--jp-widgets-inline-height, 28px)}")
# The persona box is as tall as its text, 3 to 8 lines (the padding and border on top), then it scrolls:
# 2 rows high, the default persona (3 lines at 1280x720, 4 on a 1280x720 projector at 150%) showed its
# third line cut in half and scrolled inside the box, so a learner read a clipped persona.  3 lines: the
# default persona fits at common widths and a short one keeps the same box, so the rows under it stay
# put; it grows only as the persona does (typed, loaded), never during a turn.  A browser without
# field-sizing keeps the 3 rows the Textarea asks for (rows=3) and scrolls past them.
PERSONA_LINES = (3, 8)
_EDGES = "2 * var(--jp-widgets-input-padding, 4px) + 2 * var(--jp-widgets-input-border-width, 1px)"
PERSONA_CSS = (".nora-panel .nora-persona textarea{field-sizing:content;resize:vertical;"
               f"min-height:calc({PERSONA_LINES[0]}lh + {_EDGES});max-height:calc({PERSONA_LINES[1]}lh + {_EDGES})}}")
FOCUS_CSS = ("<style>.nora-panel .jupyter-widgets :focus-visible{outline:2px solid var(--jp-brand-color1, #1976d2)"
             " !important;outline-offset:1px}"
             + "".join(f".nora-panel .jupyter-widgets.jupyter-button.mod-{style}{{background-color:{back};color:#fff}}"
                       f".nora-panel .jupyter-widgets.jupyter-button.mod-{style}:hover:enabled{{background-color:{hover}}}"
                       for style, (back, hover) in LIVE_COLOURS.items())
             + "".join(f'.nora-panel .jupyter-button > i.fa-{name}::before{{content:"\\{code}" / ""}}'
                       for name, code in ICON_GLYPHS.items())
             + CHAT_BOX_CSS + LINE_CSS + PERSONA_CSS
             + "</style>")


# Where the person is.  A reply that ends gives its input the focus back (the next message is typed
# there), unless the person went on meanwhile: sent from another panel, used its buttons, or ran a
# cell.  Each of those takes the next number, and a reply refocuses only if its panel's number is still
# the latest: the focus jumped back into the first panel, and keys meant for the other panel or for a
# cell went into its input.
_MOVES = itertools.count(1)
_LATEST_MOVE = [0]
_WATCHED_SHELLS: set[int] = set()


def _moved(_info: Any = None) -> int:
    """The person acted somewhere (a panel's Send, Enter or button; a cell run): its number."""
    _LATEST_MOVE[0] = number = next(_MOVES)
    return number


def _watch_cells() -> None:
    """Count a cell run as a move (IPython's pre_run_cell), once per shell; nothing outside IPython."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - ipywidgets depends on IPython
        return
    shell = get_ipython()
    if shell is not None and id(shell) not in _WATCHED_SHELLS:
        shell.events.register("pre_run_cell", _moved)
        _WATCHED_SHELLS.add(id(shell))


def _window_before_client() -> int | None:
    """The context window of the client the first message will build (make_client()), without
    building it: the embedded model's n_ctx when no server is configured, else None (a server's
    model is known only once it is asked).  Example: no OPENAI_* variables -> 2048"""
    try:
        if choose_backend("auto") != "local":
            return None
        from .local import DEFAULT_N_CTX  # no model is loaded by this
    except (ImportError, NoraError):
        return None
    return DEFAULT_N_CTX


def _who_before_client() -> str:
    """The header's name for the client the first message will build (make_client()), without
    building it.  Examples: no OPENAI_* variables -> 'the embedded model (loads on the first message)';
    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 -> 'the server at http://127.0.0.1:8000/v1 (connects on
    the first message)' (a password in the URL shown as ***, as describe_client shows it); only
    OPENAI_API_KEY -> 'OpenAI (connects on the first message)'"""
    try:
        backend = choose_backend("auto")
    except NoraError:
        backend = "local"
    if backend == "local":
        return "the embedded model (loads on the first message)"
    base_url = (os.environ.get("OPENAI_BASE_URL") or "").strip()
    return f"the server at {redact(base_url)} (connects on the first message)" if base_url else \
        "OpenAI (connects on the first message)"


def _count(messages: Sequence[dict], client: Any, model: str | None) -> TokenCount:
    """Tokens of a messages list as a prompt: .total, .per_message, .exact, .method (see tokens.py)."""
    return count_tokens(list(messages), client=client, model=model)


def _quote(text: str, limit: int = 40) -> str:
    """A message named in a status line: quoted, on one line, cut short.  Example: 'Hi' -> '“Hi”'"""
    text = " ".join(text.split())
    return f"\u201c{text if len(text) <= limit else text[:limit - 1] + chr(0x2026)}\u201d"


def _new_rows(sent: Sequence[dict], before: Sequence[dict]) -> list[int]:
    """Indexes of the messages in sent that the previous call did not send (compared by value).

    Example: before [s, u1], sent [s, u1, a1, u2] -> [2, 3]: the list grew by two.
    """
    seen: dict[tuple, int] = {}
    for m in before:
        key = (m["role"], m["content"])
        seen[key] = seen.get(key, 0) + 1
    new = []
    for i, m in enumerate(sent):
        key = (m["role"], m["content"])
        if seen.get(key):
            seen[key] -= 1
        else:
            new.append(i)
    return new


class ChatPanel(widgets.VBox):
    """A chat panel of ipywidgets (its input box has a few lines of JavaScript of its own), with the
    teaching views beside it.

    client: anything with .chat.completions.create (None: make_client() on the first send,
        i.e. the embedded model unless OPENAI_API_KEY / OPENAI_BASE_URL are set).
    keep_last_n_turns: None sends the whole history; N trims to the last N turns.
    max_tokens: cap on each reply's length (None: the client's default).
    views: which views start open, from VIEWS ("inspector", "wire", "gauge", "cost", "compare").
    clock: the time the count of seconds waited reads (a _waiting.Clock; a test passes one it moves on itself).
    Example: ChatPanel(ScriptedClient(["Hi Ada!"]), views=("inspector", "cost"))
    """

    def __init__(
        self,
        client: ChatClient | None = None,
        system_prompt: str | None = SYSTEM_PROMPT,
        model: str | None = None,
        temperature: float = DEFAULT_TEMPERATURE,
        keep_last_n_turns: int | None = None,
        *,
        max_tokens: int | None = None,
        history: list[dict] | None = None,
        multiline: bool = False,
        views: Sequence[str] = ("inspector",),
        flush_interval: float = 0.05,
        title: str = "Nora",
        clock: Clock | None = None,
    ) -> None:
        if client is not None and not is_client(client):  # ChatPanel(ScriptedClient), ChatPanel(history): said now,
            raise TypeError(f"ChatPanel: {not_a_client(client)}"  # not at the first message
                            + ("; a list of messages goes in history=[...]" if isinstance(client, list) else ""))
        if client is not None and _is_async(client.chat.completions.create):  # every message failed with a line
            raise TypeError(f"ChatPanel needs a sync client, not {type(client).__name__}: "  # for code, not here
                            "make_client(), or openai.OpenAI(...) (an async client is for arun_turn and astream_turn)")
        unknown = set(views) - set(VIEWS)
        if unknown:
            raise ValueError(f"unknown view(s) {sorted(unknown)}: choose from {', '.join(VIEWS)}")
        if keep_last_n_turns is not None and (not isinstance(keep_last_n_turns, int) or keep_last_n_turns < 0):
            raise ValueError(f"keep_last_n_turns must be None or a whole number >= 0 (got {keep_last_n_turns!r})")
        if history is not None:
            validate_history(history)
            if system_prompt is not SYSTEM_PROMPT:  # given with a list of one's own: it is that list's persona
                set_persona(history, system_prompt)  # (as nora chat --load with --system); None removes it
        # the conversation: [{"role": "system", ...}, {"role": "user", ...}, {"role": "assistant", ...}, ...]
        self.history: list[dict] = history if history is not None else new_history(system_prompt)
        self.twin_history: list[dict] = new_history(self._system_text())  # side-by-side, no memory
        self.max_tokens = max_tokens
        self.title = title
        self.last_result: TurnResult | None = None
        self.last_sent: list[dict] | None = None  # exactly what the last successful call sent
        self._prev_sent: list[dict] | None = None
        self._last_wire: dict | None = None  # the request of the call last_sent came from
        # refresh()'s work kept until what it came from changes (ids; the objects are kept too, so an id
        # is not reused meanwhile): the rows last_sent added, and the request shown for a client with no WireLog
        self._new_of: tuple = (None, None, [])
        self._made_wire: tuple = (None, None)
        self._twin_error = ""  # why the last side-by-side call failed ("" if it did not)
        # messages Edit rewrote since the last call: place -> the message as it was (the inspector marks them)
        self._edited: dict[int, dict] = {}
        self._client = client
        # The turn runner commits under this lock, and refresh() reads under it: a redraw
        # sees the history and last_sent change together, never one without the other.
        self._lock = threading.RLock()
        self._runner = BackgroundTurn(self._lock, flush_interval)
        self._busy = False
        self._ticker: Ticker | None = None  # counts the seconds until the first words of a reply
        self._busy_noted = float("-inf")  # when BUSY_NOTE was last said
        self.clock = clock or Clock()  # the time the count of seconds waited and the busy note's stay are read in
        self._loading = False

        # --- the chat column
        self.header = widgets.HTML()
        # the conversation, in blocks of messages: a turn sends the page only the block it changed
        # (_transcript_box.py); self.transcript.value is the whole HTML, views.transcript_html(history)
        # live=True: the turn in progress (the message on its way, the reply so far) is its last block, in the
        # same region, so the keys that scroll the conversation reach the reply being written too
        self.transcript = TranscriptBox(live=True)
        self.live = self.transcript.live_block  # that block: .value is the turn in progress's HTML ("" between)
        self.chat_box = widgets.VBox([self.transcript])  # (CHAT_BOX_CSS)
        self.chat_box.add_class("nora-chat-box")
        self.error = widgets.HTML()  # under the input, in the status line's room (LINE_CSS)
        self.error.add_class("nora-error-line")
        self.status = widgets.HTML()  # what the panel is doing, or did ("replying…"): one line kept (LINE_CSS)
        self.status.add_class("nora-status")
        # what a screen reader says when a reply is complete (drawn nowhere; see _announce)
        self.announce = widgets.HTML(layout=widgets.Layout(height="0px", min_height="0px", margin="0",
                                                           overflow="hidden"))  # takes no room
        self.announce.add_class("nora-announce")
        # The input box (_prompt_box.py), named "your message" for a screen reader (aria-label): Enter
        # (Ctrl/Cmd+Enter in a text area) sends the text with the key, and the page empties it at once;
        # a click on Send (send_button: its class) does the same in the page, with the text of the click
        self.prompt = PromptBox(multiline=multiline, send_button="nora-send",
                                placeholder=("Type a message, then press Ctrl+Enter or click Send" if multiline
                                             else "Type a message and press Enter"),
                                layout=widgets.Layout(flex="1 1 auto", width="auto", min_width="0", margin="2px"))
        self._focus_move = 0  # this panel's latest move (_moved): only the latest takes the focus back
        _watch_cells()
        self._refocus = False  # the turn came from Send / Enter: give the input its focus back after
        self._submit_lock = threading.Lock()  # two sends at once (code on a thread, a click) start one turn
        self._failed_line = ""  # the error line of the last failed turn, before what it says of the input
        # Enter, Escape, type-ahead and what the box holds around a turn (_panel_input.py)
        self._input = PanelInput(self.prompt, busy=lambda: self._busy, send=self._submit_typed,
                                 stop=lambda: self._here_then(self.cancel), note_busy=self._note_busy,
                                 kept=self._kept_aside)
        self.prompt.on_msg(self._input.on_msg)
        self.send = widgets.Button(description="Send", button_style="primary", icon="paper-plane",
                                   tooltip="send your message", layout=widgets.Layout(width="90px", flex="0 0 auto"))
        self.stop = widgets.Button(description="Stop", icon="stop", disabled=True,  # orange while a reply runs
                                   tooltip="stop the reply (or Escape in the input); your message goes back "
                                           "into the input (if it is empty)",
                                   layout=widgets.Layout(width="80px", flex="0 0 auto"))  # the input gives way
        # CSS classes: stable handles for styling and for the browser test (the input has "nora-prompt")
        self.send.add_class("nora-send")
        self.stop.add_class("nora-stop")
        self.send.on_click(lambda _b: self._submit_typed())  # send.click() in code (the page's is the box's)
        self.stop.on_click(lambda _b: self._here_then(self.cancel))

        # --- controls
        self.amnesia = widgets.ToggleButton(value=keep_last_n_turns == 0, description="Amnesia",
                                            icon="eraser", tooltip=AMNESIA_TIPS[keep_last_n_turns == 0],
                                            layout=widgets.Layout(width="110px"))
        self.trim = widgets.Checkbox(value=bool(keep_last_n_turns), description="keep last",
                                     indent=False, layout=widgets.Layout(width="80px"))
        # "keep last [N] turns": the word after the box (a description before it read "keep last turns N")
        self.keep_n = widgets.BoundedIntText(value=keep_last_n_turns or 3, min=1, max=1000,
                                             tooltip="how many of the last turns to send",  # its name ("null")
                                             layout=widgets.Layout(width="70px"))
        # A native range input named "temperature" for a screen reader (_range_box.py; FloatSlider's handle
        # had no name).  Its value is set when the handle is let go: the views recount once per value
        self.temperature = RangeBox(value=temperature, min=0.0, max=2.0, step=0.1, description="temperature",
                                    layout=widgets.Layout(width="260px"))
        self.model = widgets.Text(value=model or "", description="model", placeholder="(client default)",
                                  continuous_update=False,
                                  style={"description_width": "45px"}, layout=widgets.Layout(width="230px"))
        self.persona = widgets.Textarea(value=self._system_text(), description="persona", rows=PERSONA_LINES[0],
                                        continuous_update=False, style={"description_width": "60px"},
                                        layout=widgets.Layout(width="98%"))
        self.clear = widgets.Button(description="Clear", icon="trash", tooltip="start a new conversation",
                                    layout=widgets.Layout(width="80px"))
        self.undo = widgets.Button(description="Undo", icon="undo", layout=widgets.Layout(width="80px"),
                                   tooltip="take back your last message and its reply (the message goes back "
                                           "into the input, to edit and send again)")
        self.path = widgets.Text(value="nora-transcript.json", description="file",
                                 style={"description_width": "30px"}, layout=widgets.Layout(width="260px"))
        self.save = widgets.Button(description="Save", icon="save",
                                   tooltip="save the conversation to the file (a .md name: Markdown, to read)",
                                   layout=widgets.Layout(width="80px"))
        self.load = widgets.Button(description="Load", icon="folder-open",
                                   tooltip="replace the conversation with the one in the file",
                                   layout=widgets.Layout(width="80px"))
        # Edit: message [N] [Edit], then a box with its text, Save edit and Cancel (_message_editor.py)
        self.editor = MessageEditor()
        self.editor.open.on_click(lambda _b: self._here_then(self._edit_clicked))
        self.editor.save.on_click(lambda _b: self._here_then(self._save_edit_clicked))
        self.editor.cancel.on_click(lambda _b: self._here_then(self._cancel_edit_clicked))
        # the keys: Enter in the number box is Edit, Escape empties it; Ctrl/Cmd+Enter in the box is Save
        # edit, Escape Cancel.  Each acts on the text the key carries (the box's own value comes when it is left)
        self.editor.number.on_key("enter", lambda text: self._here_then(lambda: self.start_edit(text)))
        self.editor.number.on_key("escape", lambda _text: self._here_then(self._escape_number))
        self.editor.text.on_key("enter", lambda text: self._here_then(lambda: self._save_edit(text)))
        self.editor.text.on_key("escape", lambda _text: self._here_then(self._cancel_edit_clicked))
        self.file_note = widgets.HTML()  # what Save / Load did, beside them (the chat's status is far up)
        self.file_note.add_class("nora-file-note")
        self.clear.on_click(lambda _b: self._clicked(self.clear_history, always=True))
        self.undo.on_click(lambda _b: self._clicked(self.undo_last))
        self.save.on_click(lambda _b: self._here_then(self.save_to))
        self.load.on_click(lambda _b: self._here_then(self.load_from))
        self.model.observe(self._on_model, names="value")  # first: a key pasted there is gone before anything shows it
        self._on_model({"new": self.model.value})  # ChatPanel(model=...) too
        for control in (self.amnesia, self.trim, self.keep_n, self.temperature, self.model):
            control.observe(lambda _change: self.refresh(), names="value")
        self.persona.add_class("nora-persona")  # PERSONA_CSS: as tall as its text, 3 to 8 lines
        self.persona.observe(self._on_persona, names="value")
        self.amnesia.observe(lambda change: self._mark_amnesia(change["new"]), names="value")
        self._mark_amnesia(self.amnesia.value)

        # --- the views, each behind a toggle button
        self.inspector = v.InspectorView()
        self.wire_view = v.WireView()
        self.gauge = v.GaugeView()
        self.cost = v.CostView()
        self.compare = v.CompareView()
        self.views: dict[str, widgets.VBox] = {"inspector": self.inspector, "wire": self.wire_view, "gauge": self.gauge,
                                               "cost": self.cost, "compare": self.compare}
        self.toggles: dict[str, widgets.ToggleButton] = {}
        for name, label in VIEWS.items():
            toggle = widgets.ToggleButton(value=name in views, description=label,
                                          layout=widgets.Layout(width="auto"))
            toggle.observe(lambda change, n=name: self._show_view(n, change["new"]), names="value")
            self.toggles[name] = toggle
            self._show_view(name, name in views)
        self.side_by_side = self.toggles["compare"]  # on: every question also goes to a memory-less twin

        # The controls sit right under the input: with the views below the chat (a narrow or zoomed
        # window, as on a projector) they were under every open view, screens away from the input.
        controls = widgets.VBox([
            widgets.HBox([self.amnesia, self.trim, self.keep_n,
                          widgets.Label("turns", layout=widgets.Layout(margin="0 16px 0 4px")),  # apart from "temperature"
                          self.temperature, self.model],
                         layout=widgets.Layout(flex_flow="row wrap", align_items="center")),
            self.persona,
            widgets.HBox([self.clear, self.undo, self.editor.number, self.editor.open,
                          self.path, self.save, self.load, self.file_note],
                         layout=widgets.Layout(flex_flow="row wrap", align_items="center")),
            self.editor.box,  # shown while a message is being edited
        ], layout=widgets.Layout(border_top="1px solid #ddd", padding="4px 0 0 0"))
        chat = widgets.VBox(
            [self.chat_box,
             widgets.HBox([self.prompt, self.send, self.stop]), self.error, self.status, self.announce, controls],
            # min(..., 100%): in an area narrower than 320 px (a side panel, a zoomed window) the column
            # takes the width there is; a fixed 320 px hid Stop and the ends of lines past the edge
            layout=widgets.Layout(flex="1 1 55%", min_width=NARROW_CHAT, padding="0 8px 0 0"),
        )
        side = widgets.VBox([widgets.HBox(list(self.toggles.values()), layout=widgets.Layout(flex_flow="row wrap")),
                             *self.views.values()],
                            layout=widgets.Layout(flex="1 1 45%", min_width=NARROW_VIEWS))
        self._focus_style = widgets.HTML(FOCUS_CSS, layout=widgets.Layout(display="none"))
        super().__init__(
            [self.header, widgets.HBox([chat, side], layout=widgets.Layout(flex_flow="row wrap")),
             self._focus_style],  # last: the panel's text repr still starts with the header
            layout=widgets.Layout(border="1px solid #ccc", padding="6px", width="100%"),
        )
        self.add_class("nora-panel")
        self.header.add_class("nora-header")
        self.wire_view.add_class("nora-wire")
        self.refresh()

    # ------------------------------------------------------------------ #
    # settings as the core wants them

    @property
    def keep_last_n_turns(self) -> int | None:
        """0 with amnesia on, N with "keep last N turns" ticked, else None (send everything)."""
        if self.amnesia.value:
            return 0
        return int(self.keep_n.value) if self.trim.value else None

    @property
    def model_name(self) -> str | None:
        return self.model.value.strip() or None

    @property
    def busy(self) -> bool:
        return self._busy

    @property
    def flush_interval(self) -> float:
        """Seconds between two redraws of the streamed reply (0: every piece)."""
        return self._runner.flush_interval

    @flush_interval.setter
    def flush_interval(self, seconds: float) -> None:
        self._runner.flush_interval = seconds

    @property
    def _worker(self) -> threading.Thread | None:
        """The latest turn's thread (tests join it to see a stopped call wind down)."""
        return self._runner.worker

    @property
    def client(self) -> Any:
        """The client; built by make_client() the first time it is needed (the first message: that
        turn asks a server for its models, in the background, so a server that is down costs one wait)."""
        if self._client is None:
            self._client = make_client(ask_models=False)
        return self._client

    def _system_text(self) -> str:
        return self.history[0]["content"] if self.history and self.history[0]["role"] == "system" else ""

    # ------------------------------------------------------------------ #
    # sending

    # Enter, type-ahead and the text put back after a failure: _panel_input.py says how they work.

    def _submit_typed(self, text: str | None = None) -> bool:
        """Send and Enter (text: what the page sent with the Enter): the input keeps (or takes) the
        focus while the reply runs, and gets it back after it, so the next message can be typed at once."""
        self._focus_move = _moved()  # the person is here now (set first, as _refocus)
        was, self._refocus = self._refocus, True  # set first: a fast reply may end before submit() returns
        started = self.submit(text)
        if not started:  # nothing started (empty, or busy: the turn running keeps its own)
            self._refocus = was
        return started

    def submit(self, text: str | None = None) -> bool:
        """Send text (None: what is in the input; what Send and Enter do). Returns False if nothing
        started; while a reply runs nothing starts, and the text stays in the input."""
        with self._submit_lock:
            busy = self._busy
            started = False if busy else self._start_turn(self.prompt.value if text is None else text)
        if busy:
            self._note_busy()
        return started

    def _note_busy(self) -> None:
        """Enter or Send while a reply runs: say why nothing happened, on the status line and to a
        screen reader (the key seemed to do nothing)."""
        self._busy_noted = self.clock.now()  # the count of seconds waits, so that this can be read
        self._say(BUSY_NOTE)
        self._announce(BUSY_NOTE)

    def _count_wait(self, client: Any, seconds: float) -> None:
        """The status line while no word of the reply has come (unless the busy note was just said)."""
        if self.clock.now() - self._busy_noted >= BUSY_NOTE_STAYS:
            self._say(f"replying\u2026 {waiting_words(client, seconds, 'Stop')}")

    def _start_turn(self, text: str) -> bool:
        self._refusal = None  # why the turn did not start, for ask(): a Failure
        try:
            validate_user_text(text)
            # a list edited in code since (panel.history.append(response)...): said here, in one line, before
            # the worker starts; it drew the list, met a non-dict and stopped with the panel stuck "replying"
            validate_history(self.history)
        except NoraError as exc:
            self._refusal = Failure(kind="bad_input", status=None, message=str(exc), hint="")
            self._show_error(str(exc))
            return False
        try:
            client = self.client
        except Exception as exc:  # no model installed, no key...: one line, nothing lost
            self._refusal = describe_failure(exc)
            self._show_error(self._refusal.line())
            return False
        keep, model, temperature = self.keep_last_n_turns, self.model_name, float(self.temperature.value)
        # The message leaves the input (it shows in the live area below) and the input stays open:
        # what is typed from now on is the next message (_panel_input.py).
        self._input.turn_starts(text)
        # the last error goes before "replying…" comes: the page draws the changes in this order, and for a
        # moment it held both lines and the controls below them went 18 px down and back (the error line
        # gives the status line's room back only while it shows)
        self._twin_error = ""
        self._show_error("")
        self._set_busy(True)
        if self._refocus:  # Send is disabled now, which drops the focus a click gave it: the input takes it
            self.prompt.focus_if_lost()  # (Enter left it there), and Stop is one Tab away (see docs/panel.md)
        # the turn in progress is the transcript's last block: it scrolls with the conversation, in the
        # same region (no second region or Tab stop), and the earlier messages give way as it grows
        self.transcript.show_live(text)
        twin = self.twin_history if self.side_by_side.value else None

        # Until the first words come, the status line counts the seconds (a shared server may be
        # writing others' replies first): "replying…" alone, for half a minute, looked frozen.
        self._ticker = ticker = Ticker(lambda seconds: self._count_wait(client, seconds), clock=self.clock).start()

        # What the turn reports, drawn here; each runs on the worker thread.
        def show_reply(so_far: str) -> None:
            if ticker.stop():  # the first words: the count is over
                self._say("replying\u2026")
            self.transcript.show_live(text, so_far)

        def remember_sent(sent: list[dict]) -> None:  # under the lock, in the commit's own step
            self._prev_sent, self.last_sent = self.last_sent, sent
            self._edited = {}  # this call sent the edits: they are no longer news
            # this call's request, kept before the side-by-side call replaces the client's record
            self._last_wire = getattr(getattr(client, "wire", None), "last", None)

        def show_twin_done(result: TurnResult) -> None:
            stopped = result.failure is not None and result.failure.kind == "cancelled"
            self._twin_error = ("" if result.ok else  # kept: refresh() redraws the view
                                "(stopped: this side's reply was dropped; your turn on the left was kept)"
                                if stopped else str(result))
            self.compare.update(self.twin_history, error=self._twin_error)

        def committed(sent: list[dict]) -> None:
            ticker.stop()  # (a reply with no words at all)
            self._record_cost(sent, client, model)
            if twin is not None:  # the kept turn is done: draw it so, while the second call runs
                self._show_kept()

        self._runner.start(
            client, self.history, text, keep, model, temperature, self._extra(), twin,
            on_text=show_reply,
            on_commit=remember_sent,
            after_commit=committed,
            on_twin_text=lambda so_far: self.compare.update(self.twin_history, text, so_far),
            on_twin_done=show_twin_done,
            on_finish=self._on_finish,
        )
        return True

    def _extra(self) -> dict:
        """Optional create() arguments: only what was asked for goes on the wire."""
        return {"max_tokens": self.max_tokens} if self.max_tokens is not None else {}

    def _show_kept(self) -> None:
        """Side by side: the turn with memory is in the history; draw it as done (transcript,
        header, views) and say what the panel is still waiting for."""
        self._draw_history()
        self.refresh()
        self._say("reply kept; now the same question without memory (side by side)\u2026")

    def _on_finish(self, result: TurnResult | None, late: Failure | None) -> None:
        """The turn is over (or was stopped): draw the end state, free the input."""
        if self._ticker is not None:
            self._ticker.stop()  # before the status line is redrawn: no count can come after it
        self._finish(result)
        if late is not None:  # the turn itself is done and kept; say what went wrong after it
            self._show_error(f"(the reply was kept, but a view or the side-by-side call failed: {late.message})")

    def _draw_history(self) -> None:
        """The transcript from the history, and the live area emptied.  The reply goes into the
        transcript first, then leaves the live area: cleared first, it would vanish from the
        screen while refresh() recounts tokens."""
        with self._lock:
            history = list(self.history)
        self.transcript.show(history, keep_live=True)
        self.transcript.show_live()

    def _finish(self, result: TurnResult | None) -> None:
        self.last_result = result
        self._draw_history()
        ok = result is not None and result.ok
        failed = result is not None and not ok
        # The input may hold the next message, typed while the reply ran: it is never written over.
        # A failed or stopped message goes back only into an empty input (Enter sends it again at
        # once); otherwise it is kept aside, and Undo puts it back in front of what was typed.
        # (A key typed meanwhile that the kernel has not had yet: the page keeps it, and _kept_aside.)
        typed = self._input.turn_over(failed)
        self._set_busy(False)  # last: an Enter from now on finds the input as it is meant to be
        self._failed_line = ""
        if ok:
            self._show_error("")
        elif result is not None:  # failed
            stopped = result.failure is not None and result.failure.kind == "cancelled"
            if stopped:
                self._failed_line = f"{STOPPED}."
            elif result.failure is not None:
                self._failed_line = result.failure.in_words_of(PANEL_TRIM, not_found=PANEL_NOT_FOUND,
                                                                    persona=PANEL_PERSONA).line()
            else:
                self._failed_line = str(result)
            if typed:
                self._kept_aside(self._input.sending)
            else:
                self._show_error(f"{STOPPED}; your message is back in the input." if stopped else self._failed_line)
        self.refresh()
        # not after panel.ask() from a cell: that would pull the cursor out of it; not if the person has
        # gone on to another panel or run a cell meanwhile (_moved)
        if self._refocus:
            self._refocus = False
            if self._focus_move == _LATEST_MOVE[0]:
                self.prompt.focus()
        if ok:  # after the focus has moved: a screen reader announces the move, then this
            self._announce(f"{self.title} replied:", markdown_to_html(str(result)))
        else:  # the error line is the alert; a note said while the reply ran is over
            self._announce("")

    def _kept_aside(self, message: str) -> None:
        """A failed, stopped or undone message was not put over what is typed in the input: say so."""
        kept = f"Your message {_quote(message)} is kept aside, so what you typed stays: Undo puts it back."
        if self._failed_line:
            self._show_error(f"{self._failed_line} {kept}")
        else:
            self._say(kept)

    def _announce(self, words: str, html: str = "") -> None:
        """Say something to a screen reader user, drawn nowhere: role="alert", the one live region
        that screen readers read when it is put into the page (the widget redraws its whole content)."""
        self.announce.value = (f'<div role="alert" style="{SR_ONLY}">{escape(words)} {html}</div>'
                               if words else "")

    def cancel(self) -> None:
        """Stop the reply in progress; the turn is rolled back (what the Stop button does).

        Stop frees the panel at once, even if the server has gone silent: waiting for
        the stalled call to give up could take as long as the client's timeout.
        """
        if self._runner.cancel() == "stopping":  # the reply is kept; only the side-by-side call is left
            with self._lock:  # the worker reports the end under this lock: "stopping" can't outlive it
                if self._runner.running:
                    self._live_stop(False)
                    self._say("stopping\u2026")
        # "stopped": the runner has already called _on_finish with the "cancelled" result

    def wait(self, timeout: float | None = 60.0) -> TurnResult | None:
        """Block until the reply in progress is complete; return its result (None if no turn ran).

        Raises TimeoutError if it is still running after timeout seconds.  A stopped turn is
        not waited for (it was finished when Stop was clicked).
        """
        try:
            self._runner.wait(timeout)
        except TimeoutError:  # in a cell: say what to call next (a shared server may be busy with a class)
            raise TimeoutError(f"the reply is still running after {timeout:g} s (a shared server may be writing "
                               "others' replies first): panel.wait() waits on, panel.cancel() stops it") from None
        return self.last_result

    def ask(self, text: str, timeout: float | None = 60.0) -> TurnResult | None:
        """Type text, click Send, wait: one call for lesson cells. Example: panel.ask("Hi") -> 'Hello!'

        Raises RuntimeError while a reply runs (the input may hold a message being typed).
        """
        if self._busy:
            raise RuntimeError("a reply is still running: panel.wait() for it, or panel.cancel() it, first")
        if text.__class__ is not str:  # the input holds text only: 42 was a TraitError from the widget
            try:
                validate_user_text(text)
            except NoraError as exc:
                self._show_error(str(exc))
                return TurnResult(str(exc), Failure(kind="bad_input", status=None, message=str(exc), hint=""))
        self.prompt.value = text
        if not self.submit():  # refused (empty, a broken list, no client): the line, and .ok False
            refusal = getattr(self, "_refusal", None)
            return TurnResult(self._error_text, refusal) if self._error_text else None
        return self.wait(timeout)

    def _live_stop(self, live: bool) -> None:
        """Stop is orange and clickable while a reply runs, plain and disabled otherwise (a disabled
        orange button looks clickable in JupyterLab's dark theme)."""
        self.stop.disabled = not live
        self.stop.button_style = "warning" if live else ""

    def _mark_amnesia(self, on: bool) -> None:
        """Amnesia on is a mode that changes every call: it shows as plainly as Stop does (and the
        header says it in words; the tooltip says it to a screen reader)."""
        self.amnesia.button_style = "danger" if on else ""
        self.amnesia.tooltip = AMNESIA_TIPS[bool(on)]

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        self.prompt.busy = busy  # Enter in the page keeps its text while a reply runs
        for control in (self.send, self.clear, self.undo, self.load, self.editor.open, self.editor.save):
            # (not the input: type the next message)
            control.disabled = busy
        self._live_stop(busy)
        self._say("replying\u2026" if busy else "")
        if busy:
            self._announce("")
            self._note_file("")  # "saved 5 messages" no longer describes the conversation

    def _here(self) -> None:
        """A button of this panel was used: the person is here (see _moved)."""
        self._focus_move = _moved()

    def _here_then(self, action: Callable[[], object]) -> None:
        """A control of this panel was used (Stop, Escape, Save, Load): _here, then action()."""
        self._here()
        action()

    def _clicked(self, action, always: bool = False) -> None:
        """Clear and Undo from their buttons: the next thing to do is to type, so the input gets the
        focus (from code, panel.clear_history() leaves the cursor where it is).  Undo that changed
        nothing ("nothing to undo") leaves it on the button; Clear moves it always: a Clear with nothing
        to clear left it on the button, and the letters typed next went to JupyterLab's shortcuts
        ("b" added a cell, "d d" deleted the panel's), not to the input."""
        self._here()
        before = (list(self.history), self.prompt.value)
        action()
        if not self._busy and (always or (list(self.history), self.prompt.value) != before):
            self.prompt.focus()

    # ------------------------------------------------------------------ #
    # persona, clear, save, load

    def _on_model(self, change: dict) -> None:
        """The model box holding what looks like an API key (the key pasted in the wrong box): emptied at once,
        so it is neither sent as the model's name, shown in the header, nor kept in the widget's state (which a
        notebook saves), and said in one line.  Example: model box <- 'sk-proj-...' -> box '', the client's default"""
        value = change["new"]
        if isinstance(value, str) and looks_like_a_key(value.strip()):
            self.model.value = ""
            self._show_error("the model box held what looks like an API key, not a model name: it was emptied "
                             "(a key goes in OPENAI_API_KEY, never in the panel)")

    def _on_persona(self, change: dict) -> None:
        """A new persona applies from the next call: it replaces the system message."""
        if self._loading:
            return
        text = change["new"]
        with self._lock:
            set_persona(self.history, text)  # a new dict: last_sent keeps the old one
            set_persona(self.twin_history, text)
        self.refresh()

    def _forget_calls(self) -> None:
        """A new conversation (cleared or loaded): no last call to show, no side-by-side error.
        Called with the lock held."""
        self.last_sent = self._prev_sent = self._last_wire = None
        self._twin_error = ""
        self._edited = {}
        self.editor.hide()  # the number it holds named a message of the conversation gone

    def clear_history(self) -> None:
        """Start a new conversation with the current persona (what Clear does)."""
        if self._busy:
            return
        with self._lock:
            self.history[:] = new_history(self.persona.value or None)
            self.twin_history[:] = new_history(self.persona.value or None)
            self._forget_calls()
        self._input.held = None  # the error line that named it goes too
        self.cost.reset()
        self._show_error("")
        self._say("")  # "took back your last message…", "… Undo puts it back": of the conversation gone
        self._note_file("")
        self._announce("")  # the reply it announced is gone
        self.refresh()

    def undo_last(self) -> None:
        """Take back the last turn (what Undo does): the model never kept it, so the next call
        simply does not send it.  The message goes back into the input if the input is empty.

        Right after a failed or stopped turn whose message was kept aside (the input held what was
        typed meanwhile), Undo puts that message back instead, in front of the typed text.
        """
        if self._busy:
            return
        if self._input.held is not None:
            self._put_back_held()
            return
        with self._lock:
            removed = undo_turn(self.history)
            twin_users = [m for m in self.twin_history if m["role"] == "user"]
            if removed and twin_users and twin_users[-1]["content"] == removed[0]["content"]:
                undo_turn(self.twin_history)  # the side-by-side twin was asked the same: keep them in step
            self._edited = {i: m for i, m in self._edited.items() if i < len(self.history)}
        if self.editor.index is not None and self.editor.index >= len(self.history):
            self.editor.hide()  # its message was taken back
        if not removed:
            self._say("nothing to undo")
            return
        self.cost.undo_made(removed)  # its bar stays (the tokens were sent), marked undone
        put_back = not self.prompt.value.strip()
        if put_back:
            self._input.put(removed[0]["content"])
        self._show_error("")
        self._announce("")
        self._note_file("")
        self.refresh()
        # not put back (the input holds text, e.g. a stopped message): say which message it was
        what = "your last message" + ("" if put_back else f" {_quote(removed[0]['content'])}")
        what += " and its reply" if len(removed) > 1 else ""
        self._say(f"took back {what}: the next call will not send it"
                  + ("" if put_back else " (the input keeps what you typed)"))

    def _put_back_held(self) -> None:
        """The message of a failed or stopped turn, kept aside, goes back into the input: in front of
        what is typed there (nothing typed is lost), and Enter on it sends at once."""
        typed = self._input.put_back()
        self._show_error("")
        self._say("put your message back in the input" + (", in front of what you typed" if typed else ""))

    # ------------------------------------------------------------------ #
    # edit: rewrite the past (as nora chat's /edit and %chat edit)

    def _edit_clicked(self) -> None:
        """Edit: the message numbered in the box goes into the editing box, which takes the focus.  A key
        pasted in the number box is emptied from it (as from the model box): the widget state a notebook saves
        would keep it."""
        number = self.editor.number.value
        if looks_like_a_key(number.strip()):
            self.editor.number.value = ""
        self.start_edit(number)

    def _save_edit_clicked(self) -> None:
        """Save edit: the text the box held when it was left (for the click)."""
        self._save_edit(self.editor.text.value)

    def _save_edit(self, text: str) -> None:
        """Save edit or Ctrl+Enter: on success the input gets the focus (the next thing to do is to send
        a message); refused, the box keeps the text and the focus."""
        if self.editor.index is not None and self.edit_message(self.editor.index, text):
            self.prompt.focus()

    def _cancel_edit_clicked(self) -> None:
        """Cancel or Escape: nothing changes; the focus goes back to Edit, where it came from."""
        if self.editor.index is None:  # Escape in a box that Clear, Load or Undo closed meanwhile
            return
        self.editor.hide()
        self.editor.open.focus()

    def _escape_number(self) -> None:
        """Escape in the number box: the number goes (in the page too), and so does a red line about an
        edit; the editing box, open with no changes, closes as with Cancel.  Changes typed in it stay (never
        dropped unsaid: Cancel, or Escape in the box, drops them).  The focus stays in the number box."""
        self.editor.number.put("")
        if self._error_text.startswith("edit: "):
            self._show_error("")
        if self.editor.index is not None and not self.editor.unsaved():
            self.editor.hide()

    def _refuse_edit(self, why: object) -> None:
        self._show_error(redact(f"edit: {why}; nothing was changed"))  # it quotes a bad number: a key pasted there

    def start_edit(self, number: int | str) -> bool:
        """What Edit does: open the editing box on message `number` (counted from 0, as the inspector's #
        column; 0 is the persona).  A number that names no message, or a reply running, is one red line,
        and the box stays as it was.  So is another number while the box holds changes not saved: they
        are never dropped unsaid (Save edit or Cancel first); the number of the message in the box puts
        the focus back in it, its text as typed.
        Example: panel.start_edit(2) -> True; panel.editor.text.value is reply 1"""
        if self._busy:
            self._refuse_edit("a reply is running: edit once it is done, or Stop it")
            return False
        try:
            with self._lock:
                index = message_number(self.history, number)  # ' 02 ' is message 2
                message = self.history[index]
        except NoraError as exc:
            self._refuse_edit(exc)
            return False
        if self.editor.unsaved():
            if index != self.editor.index:
                self._refuse_edit(f"the box holds changes to message {self.editor.index} not saved: "
                                  "Save edit or Cancel them first")
                return False
            self._show_error("")
            self.editor.number.put(str(index))
            self.editor.text.focus()  # the message being edited: its text stays as typed
            return True
        self._show_error("")
        self.editor.number.put(str(index))
        self.editor.show(index, message)
        return True

    def edit_message(self, index: int | str, text: str) -> bool:
        """Rewrite message `index` (its role kept), what Save edit does: conversation.edit_message on the
        list, and on the side-by-side twin's copy of the same message (its persona, or your question asked
        of both: never its replies, which are its own).  Nothing is sent now; the next call sends the list
        as edited.  A refusal (a number that names no message, empty text, a reply running) is one red line
        and changes nothing.  Returns whether the message was rewritten.
        Example: after one turn, panel.edit_message(2, "We have none.") -> True; the status line says
            message 2 (assistant) now: “We have none.”"""
        if self._busy:
            self._refuse_edit("a reply is running: edit once it is done, or Stop it")
            return False
        try:
            with self._lock:
                number = message_number(self.history, index)
                old = edit_message(self.history, number, text)  # the text trimmed at both ends, as every face
                text = self.history[number]["content"]
                self._edited.setdefault(number, old)  # as the last call had it (the first edit's old text)
                twin = self.twin_history
                if number < len(twin) and twin[number] == old and old["role"] != "assistant":
                    edit_message(twin, number, text)
        except NoraError as exc:
            self._refuse_edit(exc)
            return False
        if number == 0 and old["role"] == "system":  # the persona: its box shows the new one
            self._loading = True
            try:
                self.persona.value = text
            finally:
                self._loading = False
        self.editor.hide()
        self._show_error("")
        self._note_file("")  # "saved 5 messages" no longer describes the conversation
        self.refresh()
        keep = self.keep_last_n_turns
        left_out = keep is not None and number in dropped_indexes(self.history, trim_history(self.history, keep))
        why = ("amnesia" if keep == 0 else f"keep last {count_of(keep or 0, 'turn')}")
        self._say(f"message {number} ({old['role']}) now: {_quote(text, 50)}"
                  + (f"; {why} leaves it out of the next call" if left_out else "; the next call sends it"))
        return True

    def save_to(self, path: str | None = None) -> None:
        """Save the conversation as a transcript (the CLI's JSON format)."""
        path = path or self.path.value.strip()
        if not path:  # an empty box would mean "save as '.'": say what is missing instead
            self._note_file("not saved: type a file name in the file box", ok=False)
            return
        try:
            saved = save_transcript(path, self.history,
                                    model=model_used(self._client, self.model_name),
                                    temperature=float(self.temperature.value))
        except (NoraError, OSError) as exc:  # OSError: e.g. a read-only folder; the old file is untouched
            self._note_file(f"not saved: {exc.strerror or exc}" if isinstance(exc, OSError) else str(exc), ok=False)
            return
        self._note_file(f"saved {count_of(len(self.history), 'message')} to {saved}")

    def load_from(self, path: str | None = None) -> None:
        """Replace the conversation with a transcript file; on any problem, change nothing."""
        if self._busy:
            return
        path = path or self.path.value.strip()
        if not path:
            self._note_file("cannot load: type a file name in the file box", ok=False)
            return
        try:
            messages, _meta = load_transcript(path)  # "~/chat.json" works: transcript.py reads ~ as home
        except NoraError as exc:
            self._note_file(str(exc), ok=False)
            return
        with self._lock:
            self.history[:] = messages
            self.twin_history[:] = new_history(self._system_text() or None)
            self._forget_calls()
        self._input.held = None  # the error line that named it goes too
        self._loading = True
        try:
            self.persona.value = self._system_text()
        finally:
            self._loading = False
        self._show_error("")  # the old conversation's failure is gone with it
        self._say("")  # and what the status line said of it
        self._announce("")
        self._note_file(f"loaded {count_of(len(messages), 'message')} from {path}")
        self.refresh()

    # ------------------------------------------------------------------ #
    # drawing

    @property
    def _error_text(self) -> str:
        return getattr(self, "_error_plain", "")

    def _say(self, text: str) -> None:
        """The status line under the input (a status for screen readers; MUTED: #888 was 3.5:1 on white)."""
        self.status.value = f'<div role="status" style="color:{MUTED};line-height:1.4">{escape(text)}</div>' if text else ""

    def _show_error(self, text: str) -> None:
        """One red line; the sign says it without the colour, role="alert" says it to a screen reader."""
        self._error_plain = text
        if not text:
            self._failed_line = ""  # no failure is named any more: a message kept aside later is said apart
        if text:
            self.status.value = ""  # an old "saved ..." must not stand beside a new error
        self.error.value = (f'<div class="nora-error" role="alert" style="color:{ERROR_COLOUR};font-weight:600;line-height:1.4">'
                            f"\u26a0 {escape(text)}</div>" if text else "")

    def _note_file(self, text: str, ok: bool = True) -> None:
        """A line beside Save / Load: green for done, red for refused (the conversation is untouched).
        A sign in front tells them apart without the colour."""
        self._file_plain = text
        colour, sign, role = (DONE_COLOUR, "\u2713", "status") if ok else (ERROR_COLOUR, "\u26a0", "alert")
        self.file_note.value = (f'<span role="{role}" style="color:{colour};line-height:1.4">{sign} {escape(text)}</span>'
                                if text else "")

    @property
    def _file_text(self) -> str:
        return getattr(self, "_file_plain", "")

    def _show_view(self, name: str, visible: bool) -> None:
        self.views[name].layout.display = "" if visible else "none"
        self.toggles[name].icon = "check" if visible else ""  # the pressed shade alone is faint in both themes
        # the check mark is a picture: a screen reader hears "on" or "off" in the button's description
        self.toggles[name].tooltip = f"{'on' if visible else 'off'} - {VIEW_TIPS[name]}"

    def _record_cost(self, sent: list[dict], client: Any, model: str | None) -> None:
        counted = _count(sent, client, model)
        with self._lock:
            reply = self.history[-1] if self.history else None  # the call's reply, just committed
        # made=reply: Undo finds the bar of the turn it takes back (undo_made)
        self.cost.add_call(counted.total, counted.per_message[-1] if counted.per_message else 0, made=reply)

    def refresh(self) -> None:
        """Redraw the transcript, the header and every view from the history."""
        with self._lock:
            history = list(self.history)
            last_sent, prev_sent, last_wire = self.last_sent, self._prev_sent, self._last_wire
            edited = dict(self._edited)
        client = self._client
        model = self.model_name or getattr(client, "default_model", None)
        keep = self.keep_last_n_turns

        who = describe_client(client, self.model_name) if client is not None else _who_before_client()
        note = model_note(client, self.model_name, choose="the model box")
        if note:
            who += f" ({note})"
        memory = ("amnesia: only the persona and the latest message are sent" if keep == 0 else
                  f"sends the persona + the last {count_of(keep, 'turn')}" if keep else "sends the whole conversation every call")
        self.header.value = (f'<div style="font-family:sans-serif;line-height:1.4"><b>{escape(self.title)}</b> '
                             f'<span style="color:{MUTED}">\u00b7 {escape(who)} \u00b7 {escape(memory)} \u00b7 '
                             f"{count_of(len(history), 'message')} in the list</span></div>")
        self.transcript.show(history, keep_live=True)  # a reply streaming meanwhile stays (show_live)
        self.compare.update(self.twin_history, error=self._twin_error)

        # what the next call sends, and what trimming leaves out
        kept = trim_history(history, keep) if keep is not None else history
        dropped_idx = dropped_indexes(history, kept)
        whole = _count(history, client, model)  # the whole list, as if nothing were trimmed
        next_call = _count(kept, client, model) if keep is not None else whole
        dropped_tokens = sum(whole.per_message[i] for i in dropped_idx)
        # the last turn added the last two messages, while the list still ends with that turn: its question
        # (the last message sent) and a reply.  After Undo the list ends with an older turn: nothing is new
        # (an edited question is compared as it was when sent).  Messages Edit rewrote since are new too
        next_new = ([len(history) - 2, len(history) - 1] if last_sent and len(history) >= 2
                    and edited.get(len(history) - 2, history[-2]) == last_sent[-1]
                    and history[-1].get("role") == "assistant" else [])
        next_new = sorted({*next_new, *(i for i in edited if i < len(history))})
        note = ("amnesia on" if keep == 0 else f"keep last {count_of(keep, 'turn')}" if keep else "nothing trimmed")
        if last_sent is not None:
            last = _count(last_sent, client, model)
            last_counts, last_total = last.per_message, last.total
            # the same two lists until the next call (each is a snapshot): compared once, not each redraw
            if self._new_of[:2] != (id(last_sent), id(prev_sent)):
                self._new_of = (id(last_sent), id(prev_sent), _new_rows(last_sent, prev_sent or []), last_sent, prev_sent)
            last_new = self._new_of[2]
        else:
            last_counts, last_total, last_new = None, None, []
        self.inspector.update(last_sent, last_counts, last_new, history, whole.per_message, next_new,
                              dropped_idx, note=note, last_total=last_total)

        trim_label = ("amnesia" if keep == 0 else f"keep last {count_of(keep, 'turn')}" if keep else "trim off")
        window = context_window(client, self.model_name) if client is not None else _window_before_client()
        self.gauge.update(next_call.total, window, whole.total,
                          len(dropped_idx), dropped_tokens, whole.exact, trim_label, whole.method, len(history))

        wire = last_wire or getattr(getattr(client, "wire", None), "last", None)
        if wire is None and last_sent is not None:
            made = (id(last_sent), model, float(self.temperature.value))
            if self._made_wire[0] != made:  # the same record while these stay: the view draws it once
                self._made_wire = (made, {"transport": "in-process", "body": {
                    "model": model, "messages": last_sent, "temperature": made[2], "stream": True}}, last_sent)
            self.wire_view.update(self._made_wire[1],
                                  note="this client does not record requests: the arguments Nora passed")
        else:
            self.wire_view.update(wire)
