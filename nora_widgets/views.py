"""The views that teach: each one shows a different face of "the API is stateless".

    InspectorView  the exact list the last call sent, and the list the next call will send
    WireView       the last request as it went out (HTTP body, key masked; or the in-process call)
    GaugeView      tokens the next call uses against the model's window, and what trimming drops
    CostView       tokens sent per call and in total: resending everything grows quadratically
    CompareView    a second conversation fed the same questions, sent without memory

Each view is a small VBox of stock widgets with one ``update(...)`` method that
takes plain data (lists of messages, numbers) and keeps what it showed in plain
attributes, so tests and lessons can read the numbers without parsing HTML.
Every string that reaches an HTML widget goes through ``render`` (escaped or
safe markdown): ``ipywidgets.HTML`` does not sanitize.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Callable, Iterable, Sequence

import ipywidgets as widgets

from ._blocks import PLACE, BlockBox
from .errors import count_of
from .render import (ERROR_COLOUR, MUTED, ROLE_COLOURS, escape, markdown_to_html, messages_table_frame, role_chip_html,
                     row_html, wire_sections)

__all__ = [
    "transcript_html",
    "InspectorView",
    "WireView",
    "GaugeView",
    "CostView",
    "CompareView",
]

def _box() -> widgets.Layout:
    # one Layout per view: a shared Layout would show/hide every view at once
    return widgets.Layout(border="1px solid #ddd", padding="4px 8px", margin="4px 0", width="100%")


_TITLE = "font-weight:600;font-family:sans-serif;margin:2px 0 4px 0;line-height:1.4"
_BODY = '<div style="line-height:1.4">{}</div>'  # ipywidgets' HTML widget line-height is for one-liners


def _title(text: str) -> widgets.HTML:
    # a heading for screen readers too: they jump from view to view by heading
    return widgets.HTML(f'<div role="heading" aria-level="3" style="{_TITLE}">{escape(text)}</div>')


def _draw_when_shown(view: widgets.VBox, draw: Callable[[], None]) -> threading.Lock:
    """A view whose drawing is long (the inspector's tables, the wire view's JSON: the whole conversation)
    draws nothing while hidden (layout.display "none", its toggle off): its update() keeps the data, and
    draw() draws the latest when the view is shown again.  Returns the lock draw() holds while it reads
    and draws: the turn's end (a worker thread) and the toggle may draw at once, and the latest data wins."""
    def shown(change: dict) -> None:
        if change["new"] != "none":
            draw()

    view.layout.observe(shown, names="display")
    return threading.Lock()


# --------------------------------------------------------------------------- #
# the transcript


# A long chat redraws every message on every refresh.  Redrawn in order, a list longer than the
# cache misses on every message (5,000 messages with room for 4,096: 247 ms a refresh, 52 ms now).
@lru_cache(maxsize=16384)
def _message_html(role: str, content: str) -> str:
    """One message as a coloured block; assistant text as safe markdown, the rest as plain text."""
    colour = ROLE_COLOURS.get(role, ("#777777", ""))[0]
    if role == "assistant":
        body = markdown_to_html(content)
    elif role == "system":
        body = f'<div style="white-space:pre-wrap;font-style:italic;color:{MUTED}">{escape(content)}</div>'
    else:
        body = f'<div style="white-space:pre-wrap">{escape(content)}</div>'
    return (
        f'<div class="nora-msg nora-msg-{escape(role)}" style="border-left:4px solid {colour};'
        'padding:2px 8px;margin:4px 0">'
        # dir="auto": a message in Arabic or Hebrew reads right to left, from the right edge, with its
        # punctuation where it belongs (in the page's left-to-right it ended at the wrong side)
        f'{role_chip_html(role)}<div class="nora-content" dir="auto" style="margin-top:2px">{body}</div></div>'
    )


# At most 420 px, and at most 45% of the window: on a projector (1280x800 at 150% zoom: 533 CSS px
# high) a 420 px box with the input row under it was taller than the notebook's visible area.
TRANSCRIPT_HEIGHT = "min(420px, 45vh)"


EMPTY_TRANSCRIPT = f'<div style="color:{MUTED}">(empty conversation)</div>'


def message_html(message: dict) -> str:
    """One message of the history as the transcript draws it (cached: a long chat redraws them all).
    Example: message_html({"role": "user", "content": "hi"}).startswith('<div class="nora-msg nora-msg-user"') -> True"""
    return _message_html(message.get("role", "?"), message.get("content") or "")


def transcript_style(max_height: str = TRANSCRIPT_HEIGHT) -> str:
    """The style of the transcript's scrolling box (the region around the messages)."""
    style = "line-height:1.4;"  # ipywidgets' HTML widget uses a tall line-height for one-line labels
    # a word longer than the column (a pasted URL, "zzzz...") breaks anywhere; without this it
    # widens the whole transcript under the views beside it and hides the end of every line
    style += "overflow-wrap:anywhere;"
    if max_height:
        style += f"display:flex;flex-direction:column-reverse;overflow-y:auto;max-height:{max_height}"
    return style


def transcript_frame(inner: str, max_height: str = TRANSCRIPT_HEIGHT, label: str | None = "conversation") -> str:
    """The messages' HTML in the transcript's box: a region named label for screen readers, scrolling.
    The region is one Tab stop (tabindex 0): there the arrows, Page Up / Down, Home and End scroll it
    (_blocks.py keeps them from JupyterLab); Chromium passed it by, and the chat could not be read back
    from the keyboard.  label None: no region and no Tab stop (tabindex -1, or Chromium's Tab stops on
    the box once it scrolls) -- the panel's turn in progress, drawn under the "conversation" region in
    the same box, would be a second stop and a second region of that name.
    Example: transcript_frame("").startswith('<div class="nora-transcript" role="region"') -> True"""
    named = 'tabindex="-1"' if label is None else f'role="region" aria-label="{escape(label)}" tabindex="0"'
    return (f'<div class="nora-transcript" {named} '
            f'style="{transcript_style(max_height)}"><div>{inner}</div></div>')


def transcript_html(messages: Sequence[dict], pending: str | None = None, streaming: str | None = None,
                    max_height: str = TRANSCRIPT_HEIGHT, label: str | None = "conversation") -> str:
    """The chat as HTML: one block per message, newest at the bottom.

    pending: a user message on its way (shown, not yet in the history);
    streaming: the reply so far (shown with a cursor).
    label: the box's name for screen readers (a named region they can jump to, and a Tab stop);
    None for a box that is part of another's region (transcript_frame).
    The outer div uses column-reverse, a CSS trick that keeps the scroll at the bottom.
    The chat panel draws the same HTML in blocks of messages (_transcript_box.py).
    Example: transcript_html([{"role": "user", "content": "hi"}]).count('class="nora-msg ') -> 1
    """
    parts = [message_html(m) for m in messages]
    return transcript_frame("".join(parts) + live_html(pending, streaming) or EMPTY_TRANSCRIPT, max_height, label)


def live_html(pending: str | None = None, streaming: str | None = None) -> str:
    """The turn in progress as the transcript draws it after the history: the user message on its way,
    the reply so far with a cursor; "" when neither.
    Example: live_html("hi", "Hel").count('class="nora-msg ') -> 2"""
    # the message on its way and the reply so far change on every redraw: not worth caching
    parts = [] if pending is None else [_message_html.__wrapped__("user", pending)]
    if streaming is not None:
        parts.append(_message_html.__wrapped__("assistant", streaming + " \u258d"))
    return "".join(parts)


# --------------------------------------------------------------------------- #
# 1. the messages inspector


# Rows drawn per inspector table.  A browser lays out a table of 1,000 rows in ~0.7 s, every turn (the
# widget's HTML is replaced whole), and one of 5,000 in seconds (docs/benchmarks.md, finding 14); a longer
# list is drawn as its first message (the persona) and its last rows, and the caption says what is between.
INSPECTOR_ROWS = 200


# Rows per block of an inspector table (_blocks.py): a turn sends the blocks whose rows changed, the
# last one or two (the new pair, the pair no longer new) and, past INSPECTOR_ROWS, the first block of
# the last rows, which loses the two rows that scroll out.  Blocks go by the messages' places (rows
# 0-9, 10-19, ...) so that a block keeps its rows from one turn to the next.  Both tables at 1,000
# messages, per turn: 5 rows 23 kB, 10: 30 kB, 20: 53 kB, 50: 118 kB (505 kB drawn whole); 10 rows
# make a table at most 21 blocks.
TABLE_BLOCK = 10


def _table(box: BlockBox, messages: Sequence[dict], counts: Sequence[int | None] | None, highlight: Iterable[int],
           dimmed: Iterable[int], caption: str, sent: str) -> int:
    """Draw the list in box as messages_table_html draws it, or its first message and last INSPECTOR_ROWS - 1
    when it is longer, numbered by their places in the whole list; in blocks of TABLE_BLOCK places.
    sent: how the caption says the rows not drawn go out ("were sent", "will be sent").  Returns the
    blocks sent.
    Example: 1,000 messages -> rows 0 and 801-999; the caption ends
        '(messages 1-800 are not drawn here, 9,600 tokens; all of them were sent)'"""
    n = len(messages)
    highlight, dimmed = set(highlight), set(dimmed)
    places: Sequence[int] = range(n)
    if n > INSPECTOR_ROWS:
        tail = n - (INSPECTOR_ROWS - 1)
        places = [0, *range(tail, n)]
        between = [c for c in (counts or [])[1:tail] if c is not None]
        tokens = f", {sum(between):,} tokens" if counts else ""
        left_out = sum(1 for i in dimmed if 0 < i < tail)
        fate = (f"all of them {sent}" if not left_out else
                f"{left_out:,} of them are left out by trimming, the other {tail - 1 - left_out:,} {sent}")
        caption += f" (messages 1-{tail - 1:,} are not drawn here{tokens}; {fate})"
    blocks: dict[int, list[str]] = {}  # place // TABLE_BLOCK -> its rows' HTML, in order
    for p in places:
        tokens_p = counts[p] if counts is not None and p < len(counts) else None
        blocks.setdefault(p // TABLE_BLOCK, []).append(
            row_html(p, messages[p], tokens_p, counts is not None, p in highlight, p in dimmed, 600))
    keys = ["".join(rows) for rows in blocks.values()]  # a block's HTML is what it shows
    return box.draw(messages_table_frame(PLACE, caption, counts is not None), keys, keys.__getitem__,
                    anchors=list(blocks))


def _table_box(name: str, label: str) -> BlockBox:
    # each table scrolls in a box of its own: a long conversation pushed every control below it
    # thousands of pixels down the page.  Chromium's Tab stops on a box that scrolls: label names it
    # (a region) so a screen reader says which table it is, and the arrows scroll it (_blocks.py)
    box = BlockBox(block_tag="tbody", region_label=label, layout=widgets.Layout(max_height="360px", overflow="auto"))
    box.add_class(name)
    return box


class InspectorView(widgets.VBox):
    """Two tables: the list the last call sent and the list the next call will send.

    After update(), ``last_rows`` and ``next_rows`` hold one dict per row:
    {"role", "content", "tokens", "new", "dropped"} (made when read: one per message, every redraw).
    """

    def __init__(self) -> None:
        # the tables go to the page in blocks of rows (_blocks.py): a turn sends the rows that changed;
        # .value is a table's whole HTML, as drawn
        self.last_html = _table_box("nora-last-sent", "last call sent")
        self.next_html = _table_box("nora-next-send", "next call will send")
        self._args: tuple = ()  # update()'s arguments, drawn now or when the view is shown
        self._rows_of: tuple = (None, [], [])  # (the arguments, last_rows, next_rows) made from them
        super().__init__([_title("Messages inspector"), self.last_html, self.next_html], layout=_box())
        self._lock = _draw_when_shown(self, self._draw)
        self.update(None, None, (), [], None, ())

    @property
    def last_rows(self) -> list[dict]:
        return self._made_rows()[0]

    @property
    def next_rows(self) -> list[dict]:
        return self._made_rows()[1]

    def _made_rows(self) -> tuple[list[dict], list[dict]]:
        args = self._args
        if self._rows_of[0] is not args:
            last_sent, last_counts, last_new, next_list, next_counts, next_new, next_dropped = args[:7]
            last = [] if last_sent is None else self._rows(last_sent, last_counts, last_new)
            self._rows_of = (args, last, self._rows(next_list, next_counts, next_new, next_dropped))
        return self._rows_of[1], self._rows_of[2]

    @staticmethod
    def _rows(messages, counts, new, dropped=()) -> list[dict]:
        new, dropped = set(new), set(dropped)
        return [
            {"role": m["role"], "content": m["content"],
             "tokens": counts[i] if counts is not None else None,
             "new": i in new, "dropped": i in dropped}
            for i, m in enumerate(messages)
        ]

    def update(self, last_sent: Sequence[dict] | None, last_counts: Sequence[int] | None, last_new,
               next_list: Sequence[dict], next_counts: Sequence[int] | None, next_new,
               next_dropped=(), note: str = "", last_total: int | None = None) -> None:
        """last_new / next_new: row indexes to highlight; next_dropped: rows trimming leaves out;
        last_total: the prompt's token total (the rows plus the template's framing), if known.
        Hidden (layout.display "none"), the view keeps them and draws them when it is shown again."""
        self._args = (last_sent, last_counts, last_new, next_list, next_counts, next_new, next_dropped, note, last_total)
        if self.layout.display != "none":
            self._draw()

    def _draw(self) -> None:
        with self._lock:
            self._draw_tables(*self._args)

    def _draw_tables(self, last_sent, last_counts, last_new, next_list, next_counts, next_new, next_dropped,
                     note, last_total) -> None:
        if last_sent is None:
            self.last_html.draw(f'<div style="color:{MUTED}">No call yet: send a message.</div>', [], str)
        else:
            total = last_total if last_total is not None else (sum(last_counts) if last_counts else None)
            cap = f"Last call sent {count_of(len(last_sent), 'message')}" + (f" ({total:,} tokens)" if total is not None else "")
            _table(self.last_html, last_sent, last_counts, last_new, (), cap, "were sent")
        count = len(next_list) - len(set(next_dropped))
        cap = (f"Next call will send {'this' if count == 1 else 'these'} {count_of(count, 'message')} + your new one"
               if count else "Next call will send only your new message (the list is empty)")
        if note:
            cap += f" ({note})"
        _table(self.next_html, next_list, next_counts, next_new, next_dropped, cap, "will be sent")


# --------------------------------------------------------------------------- #
# 2. the wire


# Lines per block of the wire view's longest text (_blocks.py).  That text is the JSON body (or the
# embedded model's prompt): the whole conversation, ~0.4 kB a message, and a new call changes its end
# only (the messages added, the closing lines), so a call sends the last block or two; 200 lines is
# ~50 messages of JSON.
WIRE_LINES = 200


def _line_blocks(text: str, n: int = WIRE_LINES) -> list[str]:
    """text in pieces of n lines, each with its line ends: "".join(them) == text.
    Example: _line_blocks("a\nb\nc", 2) -> ['a\nb\n', 'c']"""
    lines = text.splitlines(keepends=True)
    return ["".join(lines[i:i + n]) for i in range(0, len(lines), n)]


def _wire_label(title: str, i: int) -> str:
    """The name of the wire view's i-th text box for a screen reader: the body (no title) is "the last
    request", the request line's headers are its headers, the others go by their titles.
    Example: _wire_label("the prompt the model reads (41 tokens):", 2) -> 'the prompt the model reads (41 tokens)'"""
    if not title:
        return "the last request"
    if i == 0:
        return "the last request's headers"
    return title.rstrip(":") or "the last request"


class WireView(widgets.VBox):
    """The last request exactly as it left: method, URL, headers (key masked), JSON body.

    For an in-process model there is no HTTP: it shows the create() arguments and,
    when the client records it, the prompt text the model really read.
    ``data`` holds the dict shown (already masked); ``body.value`` the whole HTML, as drawn.
    """

    def __init__(self) -> None:
        # the longest text goes to the page in blocks of lines (_blocks.py): a new call sends its end
        self.body = BlockBox(block_tag="span")
        self.data: dict | None = None
        self._note = ""
        self._drawn: tuple | None = None  # (record, note) last drawn; None: nothing yet
        super().__init__([_title("Wire: the last request"), self.body], layout=_box())
        self._lock = _draw_when_shown(self, self._draw)
        self.update(None)

    def update(self, last: dict | None, note: str = "") -> None:
        """Show last (a WireLog record) with an optional note above it.  Hidden (layout.display "none",
        the Wire toggle off), the view keeps the record and draws it when it is shown again."""
        self.data, self._note = last, note
        if self.layout.display != "none":
            self._draw()

    def _draw(self) -> None:
        with self._lock:
            self._draw_record()

    def _draw_record(self) -> None:
        # Every redraw (each turn's end, twice side by side; every control change) passes the same
        # record until the next call: a record is a snapshot, never changed after it is made, and its
        # JSON is the whole conversation (at 5,000 messages ~120 ms to draw again, whole).
        last, note = self.data, self._note
        if last is not None and self._drawn is not None and last is self._drawn[0] and note == self._drawn[1]:
            return
        self._drawn = (last, note)
        if not last:
            self.body.draw(f'<div style="color:{MUTED}">No request yet.</div>', [], str)
            return
        # each text scrolls in a <pre> that Tab stops on (Chromium): a region named for what it holds
        pre = ('<pre role="region" aria-label="{}" style="white-space:pre-wrap;word-break:break-word;font-size:0.85em;'
               'max-height:360px;overflow:auto;background:var(--jp-layout-color2, #f7f7f7);'
               'color:var(--jp-content-font-color1, #111);padding:4px;margin:2px 0">')
        parts = [f'<div style="color:{MUTED}">{escape(note)}</div>'] if note else []
        sections = wire_sections(last)  # the same sections `%chat wire` prints
        longest = max(range(len(sections)), key=lambda i: len(sections[i][1]))
        blocks: list[str] = []
        for i, (title, text) in enumerate(sections):
            if title:
                parts.append(f"<div>{escape(title)}</div>")
            named = pre.format(escape(_wire_label(title, i)))
            if text and i == longest:  # in blocks: spans of lines in the one <pre>
                parts.append(f"{named}{PLACE}</pre>")
                blocks = _line_blocks(text)
            elif text:
                parts.append(f"{named}{escape(text)}</pre>")
        self.body.draw(_BODY.format("".join(parts)), blocks, lambda i: escape(blocks[i]))


# --------------------------------------------------------------------------- #
# 3. the context gauge


class GaugeView(widgets.VBox):
    """A bar: tokens the next call will send against the model's context window.

    After update(): ``used``, ``window`` (None if unknown), ``fraction``,
    ``total`` (the whole conversation), ``dropped_messages``, ``dropped_tokens``, ``exact``.
    """

    def __init__(self) -> None:
        self.body = widgets.HTML()
        self.used = self.total = self.dropped_messages = self.dropped_tokens = 0
        self.window: int | None = None
        self.fraction: float | None = None
        self.exact = False
        super().__init__([_title("Context window"), self.body], layout=_box())
        self.update(0, None, 0, 0, 0, False, "")

    def update(self, used: int, window: int | None, total: int, dropped_messages: int, dropped_tokens: int,
               exact: bool, trim_label: str, method: str = "", messages: int | None = None) -> None:
        """messages: how many the list holds (0: there is no conversation yet to resend)."""
        self.used, self.window, self.total = used, window, total
        self.dropped_messages, self.dropped_tokens, self.exact = dropped_messages, dropped_tokens, exact
        how = "exact" if exact else "estimate"
        counted = f'<div class="nora-gauge-counted" style="color:{MUTED};font-size:0.85em">counted: {escape(method or how)}</div>'
        if window:
            self.fraction = used / window
            pct = min(100.0, 100.0 * self.fraction)
            colour = "#2e8b57" if pct < 70 else ("#e69500" if pct < 90 else "#c0392b")
            bar = (f'<div class="nora-gauge-track" style="background:var(--jp-layout-color3, #eeeeee);'
                   f'border-radius:4px;height:14px;width:100%">'
                   f'<div class="nora-gauge-fill" style="background:{colour};height:14px;border-radius:4px;'
                   f'width:{pct:.1f}%"></div></div>')
            line = f"next call: <b>{used:,}</b> of {window:,} tokens + your message ({pct:.0f}%, {escape(how)})"
        else:
            self.fraction = None
            bar = ""
            line = f"next call: <b>{used:,}</b> tokens + your message ({escape(how)}); this model's window is unknown"
        if dropped_messages:
            trim = (f"{escape(trim_label)}: leaves out {count_of(dropped_messages, 'older message')} "
                    f"({dropped_tokens:,} tokens) of {total:,}")
        elif messages == 0:  # the tokens counted are the chat template's framing, not a conversation
            trim = "the list is empty: only your new message is sent"
        else:
            trim = f"{escape(trim_label)}: nothing left out; the whole conversation ({total:,} tokens) is resent"
        self.body.value = _BODY.format(f"{bar}<div>{line}</div><div style='color:{MUTED}'>{trim}</div>{counted}")


# --------------------------------------------------------------------------- #
# 4. the cost of statelessness


def _bars_svg(values: Sequence[int], colour: str, title: str, width: int = 260, height: int = 110,
              undone: Iterable[int] = ()) -> str:
    """A tiny bar chart as inline SVG (no plotting library, nothing to load).  undone: the bars (by index)
    of calls whose turn was taken back, drawn paler with a dashed edge and named "undone".
    Example: _bars_svg([120, 180], "#1f5fae", "tokens sent per call", undone={1}) has '180 (undone)'"""
    undone = set(undone)
    top = max(values) if values else 1
    n = max(len(values), 1)
    gap = 2
    bar_w = min(24.0, max(2.0, (width - gap * (n + 1)) / n))
    bars = []
    for i, v in enumerate(values):
        h = (height - 28) * v / top if top else 0
        x = gap + i * (bar_w + gap)
        pale = (' fill-opacity="0.35" stroke="currentColor" stroke-dasharray="3 2" stroke-width="1"'
                if i in undone else "")
        bars.append(f'<rect x="{x:.1f}" y="{height - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="{colour}"{pale}>'
                    f"<title>call {i + 1}: {v:,}{' (undone)' if i in undone else ''}</title></rect>")
        if n <= 10:  # few bars: print each value above its bar
            bars.append(f'<text x="{x + bar_w / 2:.1f}" y="{height - h - 2:.1f}" font-size="10" '
                        f'text-anchor="middle" font-family="sans-serif" fill="currentColor">{v:,}</text>')
    # the theme's colours (JupyterLab's variables; light fallbacks elsewhere): a fixed light grey
    # box stayed light in the dark theme
    # what a screen reader says for the picture
    shown = ", ".join(f"{v:,}" + (" (undone)" if i in undone else "") for i, v in enumerate(values))
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="{escape(title)}: {shown}" '
            f'style="background:var(--jp-layout-color2, #fafafa);color:var(--jp-ui-font-color1, #222)">'
            f'<text x="4" y="12" font-size="11" font-family="sans-serif" fill="currentColor">{escape(title)} '
            f'(max {top:,})</text>{"".join(bars)}</svg>')


class CostView(widgets.VBox):
    """Tokens sent per call and in total, next to what a server with memory would need.

    ``per_call``: tokens sent by each call; ``new_per_call``: tokens that were new in it
    (the user's message); ``cumulative``: running total of per_call; ``undone``: the calls (by index)
    whose turn Undo took back.  Their bars stay, marked "undone": those tokens were sent all the same.
    """

    def __init__(self) -> None:
        self.body = widgets.HTML()
        self.per_call: list[int] = []
        self.new_per_call: list[int] = []
        self.undone: set[int] = set()
        self.made: list[object | None] = []  # what each call added (the panel's reply message): undo_made finds it
        super().__init__([_title("Cost of statelessness"), self.body], layout=_box())
        self.update()

    @property
    def cumulative(self) -> list[int]:
        out, running = [], 0
        for v in self.per_call:
            running += v
            out.append(running)
        return out

    def add_call(self, sent_tokens: int, new_tokens: int, made: object | None = None) -> None:
        """One more call's bar.  made: what the call added to the conversation (its reply message),
        so that undo_made can find the bar when Undo takes that turn back."""
        self.per_call.append(int(sent_tokens))
        self.new_per_call.append(int(new_tokens))
        self.made.append(made)
        self.update()

    def undo_made(self, removed: Sequence[object]) -> None:
        """Undo took these messages back: the bar of each call that made one of them is marked undone
        (a turn loaded from a file made no bar here).  Example: view.undo_made([question, reply])"""
        for call, made in enumerate(self.made):
            if made is not None and any(m is made for m in removed):
                self.mark_undone(call)

    def mark_undone(self, call: int) -> None:
        """The turn of call (an index into per_call) was taken back: its bar stays, marked undone.
        Example: view.mark_undone(3) -> the caption says 'Call 4 was undone: ...'"""
        if 0 <= call < len(self.per_call) and call not in self.undone:
            self.undone.add(call)
            self.update()

    def reset(self) -> None:
        self.per_call, self.new_per_call, self.undone, self.made = [], [], set(), []
        self.update()

    def update(self) -> None:
        if not self.per_call:
            self.body.value = f'<div style="color:{MUTED}">No call yet.</div>'
            return
        total, new_total = sum(self.per_call), sum(self.new_per_call)
        charts = (_bars_svg(self.per_call, "#1f5fae", "tokens sent per call", undone=self.undone) + " "
                  + _bars_svg(self.cumulative, "#c0392b", "total tokens sent"))
        self.body.value = _BODY.format(
            f"<div>{charts}</div>"
            f"<div>call {len(self.per_call)} sent <b>{self.per_call[-1]:,}</b> tokens; "
            f"{count_of(len(self.per_call), 'call')} sent <b>{total:,}</b> in all.</div>"
            + (f"<div style='color:{MUTED}'>The first call sends the persona and your first message; from the "
               "next one on, everything before is sent again with each new message.</div>"
               if len(self.per_call) == 1 else
               f"<div style='color:{MUTED}'>Only {new_total:,} of those were new text (your messages): the rest is "
               "the same conversation sent again, because the model remembers nothing.</div>")
            + self._undone_line()
        )

    def _undone_line(self) -> str:
        """The caption for calls whose turn was taken back.
        Example: undone {2, 3} -> 'Calls 3 and 4 were undone (the pale bars): ...'"""
        if not self.undone:
            return ""
        calls = [f"{i + 1}" for i in sorted(self.undone)]
        named = calls[0] if len(calls) == 1 else ", ".join(calls[:-1]) + " and " + calls[-1]
        tokens = sum(self.per_call[i] for i in self.undone)
        return (f"<div style='color:{MUTED}'>{'Call' if len(calls) == 1 else 'Calls'} {named} "
                f"{'was' if len(calls) == 1 else 'were'} undone (the pale "
                f"{'bar' if len(calls) == 1 else 'bars'}): {'its' if len(calls) == 1 else 'their'} "
                f"{tokens:,} tokens were sent and still count; the next call does not send that turn.</div>")


# --------------------------------------------------------------------------- #
# 5. side by side: with memory and without


# Messages per block of the side-by-side transcript.  The twin grows by a turn per question asked in the
# panel (a loaded transcript starts it again), so it stays far shorter than the panel's own; smaller blocks
# resend less of the last one.  Sent per turn, mean over turns 1-50 / 151-200 (a scripted chat, ~0.5 kB
# a message):
# 5 messages: 3.6 / 4.7 kB, 10: 5.0 / 5.3, 20: 7.6 / 7.7, 50: 15.6 / 15.6 (without the kept live block,
# whose opening and closing resent the list of blocks twice a turn: 10: 5.7 / 8.5).
TWIN_BLOCK = 10


class CompareView(widgets.VBox):
    """The second conversation: same questions, sent with keep_last_n_turns=0 (no memory).
    ``body.value`` is the whole HTML, transcript_html(messages, pending, streaming) in a shorter box."""

    def __init__(self) -> None:
        from ._transcript_box import TranscriptBox  # imported here: it draws with this module's message_html

        # In blocks, as the panel's own transcript (_transcript_box.py): a turn sends the block it changed
        # and the reply on its way, not the whole conversation (sent whole: ~110 kB at the 50th turn).
        # Blocks of TWIN_BLOCK messages, with the turn in progress in a block of its own (live).
        self.body = TranscriptBox(TWIN_BLOCK, max_height="min(300px, 40vh)", label="conversation without memory",
                                  live=True)
        self.error = widgets.HTML()
        super().__init__([_title("Without memory (same questions, only the latest one sent)"),
                          self.body, self.error], layout=_box())

    def update(self, messages: Sequence[dict], pending: str | None = None, streaming: str | None = None,
               error: str = "") -> None:
        self.body.show(messages, pending, streaming)
        # the sign says "something went wrong" without the colour
        self.error.value = f'<div style="color:{ERROR_COLOUR}">\u26a0 {escape(error)}</div>' if error else ""
