"""Model text -> safe HTML: markdown, role chips and the messages table.

Model output is untrusted text.  ``ipywidgets.HTML`` puts its value into the
page as-is (it does not sanitize), so a reply holding ``<img src=x onerror=...>``
would run script in the notebook.  Everything here turns text into HTML that
can only *show* things:

    markdown_to_html("**hi** <script>x()</script>")
        -> '<p><strong>hi</strong> &lt;script&gt;x()&lt;/script&gt;</p>\\n'

How: markdown-it-py with raw HTML off (tags come out as text), links only to
http(s)/mailto (no ``javascript:``/``data:``), no images (a markdown image is a
request the reader never agreed to: the classic way to leak a chat to a
server), and every other string passed through ``escape``.

``wire_sections`` is the one reading of a WireLog record (the last request):
the magics print its sections as plain text, the wire view draws them as HTML.

Pure functions, no widget import: the panel and the magics both use them.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
from functools import lru_cache
from typing import Iterable, Sequence, cast

from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML

from .errors import redact

__all__ = [
    "escape",
    "markdown_to_html",
    "is_safe_link",
    "role_chip_html",
    "messages_table_html",
    "messages_table_frame",
    "row_html",
    "wire_sections",
    "body_json",
    "ROLE_COLOURS",
    "MUTED",
    "ERROR_COLOUR",
    "DONE_COLOUR",
    "SR_ONLY",
    "WIRE_HEADERS",
    "SAFE_SCHEMES",
]

SAFE_SCHEMES = ("http", "https", "mailto")

# role -> (chip background, chip text); readable on a projector, colour-blind safe-ish
ROLE_COLOURS = {
    "system": ("#6b4fa0", "#ffffff"),
    "user": ("#1f5fae", "#ffffff"),
    "assistant": ("#1d7a46", "#ffffff"),
}
_UNKNOWN_ROLE = ("#777777", "#ffffff")

# Secondary text in JupyterLab's own grey, so it stays readable in the dark theme too
# (a fixed #555 is dark grey on near-black there); the fallback is for other frontends.
MUTED = "var(--jp-content-font-color2, #555)"
# Red for an error and green for done, in the theme's shade: a fixed red or green dark enough for
# white was under 4.5:1 on JupyterLab Dark's near-black (#c0392b: 3.5:1), and one light enough for
# the dark theme is too light on white.  The fallbacks are for other frontends (white pages).
ERROR_COLOUR = "var(--jp-error-color1, #c0392b)"
DONE_COLOUR = "var(--jp-success-color0, #1b5e20)"

# Text for screen readers only: in the page (read aloud) but drawn nowhere (the usual "sr-only" rules).
SR_ONLY = ("position:absolute;width:1px;height:1px;margin:-1px;padding:0;border:0;overflow:hidden;"
           "clip:rect(0 0 0 0);white-space:nowrap")

_SCHEME = re.compile(r"^([a-z][a-z0-9+.\-]*):", re.IGNORECASE)


def escape(text: object) -> str:
    """HTML-escape any value (quotes too, so it is safe inside attributes).

    Example: escape('<b a="1">') -> '&lt;b a=&quot;1&quot;&gt;'
    """
    return html.escape(str(text), quote=True)


def is_safe_link(url: str) -> bool:
    """True for http(s) and mailto links only; everything else is refused.

    markdown-it calls this with the already-decoded, percent-encoded URL, so
    tricks like 'JaVaScRiPt:' or '&#106;avascript:' arrive here spelled plainly.
    Example: is_safe_link("javascript:alert(1)") -> False; is_safe_link("https://x.org") -> True
    """
    match = _SCHEME.match(url.strip())
    return match is not None and match.group(1).lower() in SAFE_SCHEMES


CODE_STYLE = "background:var(--jp-layout-color2, #eeeeee);border-radius:3px;padding:0 3px"
# white-space/overflow-wrap: a code line keeps its shape and scrolls sideways (the transcript lets
# long words break anywhere, and JupyterLab wraps <pre>: "argume" / "nt_one" split an identifier).
# width:0 + min-width:100%: the block fills the column but adds nothing to its minimum width, so a
# long line cannot widen the transcript under the views beside it.
PRE_STYLE = ("background:var(--jp-layout-color2, #eeeeee);border-radius:4px;padding:6px 8px;overflow-x:auto;"
             "white-space:pre;overflow-wrap:normal;word-break:normal;box-sizing:border-box;width:0;min-width:100%")


class _SafeLinks(MarkdownIt):
    def validateLink(self, url: str) -> bool:  # refused links stay as plain text
        return is_safe_link(url)


def _build_markdown() -> MarkdownIt:
    # "commonmark" with html=False: <tags> in the text are rendered as text, not HTML.
    md = _SafeLinks("commonmark", {"html": False, "linkify": False, "typographer": False, "breaks": True})
    md.enable(["table", "strikethrough"])
    md.disable("image")  # ![x](http://tracker/?q=secret) would fetch a URL on display

    def link_open(renderer, tokens, idx, options, env):
        # links open in a new tab and tell the target nothing about the notebook
        tokens[idx].attrSet("target", "_blank")
        tokens[idx].attrSet("rel", "noopener noreferrer nofollow")
        # JupyterLab draws <a> like plain text; a fixed style makes a link look like one
        tokens[idx].attrSet("style", "color:var(--jp-content-link-color, #1a5fb4);text-decoration:underline")
        return renderer.renderToken(tokens, idx, options, env)

    md.add_render_rule("link_open", link_open)

    # Code stands out on its own background (JupyterLab's, so dark themes work), and a long
    # line in a code block scrolls sideways instead of widening the transcript.
    rules = cast(RendererHTML, md.renderer).rules  # MarkdownIt's default renderer, which has rules
    inline_default = rules["code_inline"]
    block_defaults = {name: rules[name] for name in ("fence", "code_block")}

    def code_inline(renderer, tokens, idx, options, env):
        tokens[idx].attrSet("style", CODE_STYLE)
        return inline_default(tokens, idx, options, env)

    def code_block(renderer, tokens, idx, options, env):
        html_ = block_defaults[tokens[idx].type](tokens, idx, options, env)
        return html_.replace("<pre>", f'<pre style="{PRE_STYLE}">', 1)

    md.add_render_rule("code_inline", code_inline)
    md.add_render_rule("fence", code_block)
    md.add_render_rule("code_block", code_block)
    return md


_MD = _build_markdown()


def markdown_to_html(text: str) -> str:
    """Render model text as markdown, safely (no raw HTML, no script, no images).

    Example: markdown_to_html("[x](javascript:alert(1))") -> '<p>[x](javascript:alert(1))</p>\\n'
    """
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    return _MD.render(text)


def role_chip_html(role: str) -> str:
    """A small coloured label for a message role.

    Example: role_chip_html("user") -> '<span class="nora-chip nora-chip-user" style="...">user</span>'
    """
    # a handful of roles, drawn in every message and row on every redraw: cached (any str)
    return _chip(role) if isinstance(role, str) else _chip.__wrapped__(role)


@lru_cache(maxsize=256)
def _chip(role: str) -> str:
    background, colour = ROLE_COLOURS.get(role, _UNKNOWN_ROLE)
    name = escape(role)
    css_name = re.sub(r"[^a-z0-9_-]", "", str(role).lower()) or "unknown"
    style = (
        f"background:{background};color:{colour};border-radius:9px;padding:1px 8px;"
        "font-size:0.85em;font-weight:600;font-family:sans-serif;white-space:nowrap"
    )
    return f'<span class="nora-chip nora-chip-{css_name}" style="{style}">{name}</span>'


# JupyterLab's own rule colour between rows: a fixed #ddd drew bright lines across the dark theme
RULE = "var(--jp-border-color2, #ddd)"


def _cell(text: str, style: str = "", attrs: str = "") -> str:
    return (f'<td{attrs} style="text-align:left;padding:3px 6px;vertical-align:top;border-bottom:1px solid {RULE};'
            f'{style}">{text}</td>')


def _draw_row(number: object, role: str, content: str, with_tokens: bool, tokens: int | None,
              new: bool, dropped: bool, max_chars: int | None) -> str:
    """One <tr> of messages_table_html."""
    shown = content
    if max_chars is not None and len(content) > max_chars:
        shown = content[:max_chars] + f"\u2026 ({len(content):,} characters)"
    classes = ["nora-row"]
    style = ""
    if new:
        classes.append("nora-row-new")
        style += "background:#fff3b0;color:#1a1a1a;"  # its own text colour: the theme's is white in dark mode
    if dropped:
        classes.append("nora-row-dropped")
        style += "opacity:0.45;text-decoration:line-through;"
    return (
        f'<tr class="{" ".join(classes)}" data-role="{escape(role)}" style="{style}">'
        # a fixed dark grey on the yellow of a new row (#888 was 3.2:1 there), else the theme's grey
        + _cell(str(number), f"color:{'#555' if new else MUTED};text-align:right")
        + _cell(role_chip_html(role))
        + ("" if not with_tokens else  # no counts given: no empty tokens column
           _cell("" if tokens is None else f"{tokens:,}", "text-align:right;font-variant-numeric:tabular-nums"))
        # dir="auto" and start: a message in Arabic or Hebrew reads right to left, from the right edge
        + _cell(escape(shown), "white-space:pre-wrap;word-break:break-word;width:100%;text-align:start", ' dir="auto"')
        + "</tr>"
    )


# Each redraw draws every row again, and from one turn to the next almost every row is the same: a
# 1,000-message panel redrew each table in ~15 ms a turn, ~2 from the cache (docs/benchmarks.md, finding 14).
# typed: 1, 1.0 and True are one key but are drawn "1", "1.0" and "True".
_row_html = lru_cache(maxsize=16384, typed=True)(_draw_row)


def messages_table_html(
    messages: Sequence[dict],
    token_counts: Sequence[int | None] | None = None,
    highlight: Iterable[int] = (),
    dimmed: Iterable[int] = (),
    caption: str | None = None,
    max_chars: int | None = None,
    numbers: Sequence[int] | None = None,
) -> str:
    """One table row per message: index, role chip, token count (a column only when counts are given),
    escaped content.

    highlight: row indexes drawn with a yellow background (e.g. what the last turn added);
    dimmed: row indexes drawn faded and struck through (e.g. what trimming will drop);
    max_chars: cut long contents for display (the row then says how many characters it has);
    numbers: what the # column shows per row (default 0, 1, 2, ...), e.g. the messages' places in a
    longer list when only some are drawn (highlight and dimmed still count rows from 0).
    Example: messages_table_html([{"role": "user", "content": "<b>"}], [3], highlight=[0])
        -> '<table class="nora-messages" ...>...<td ...>&lt;b&gt;</td>...</table>'
    """
    highlight = set(highlight)
    dimmed = set(dimmed)
    if numbers is not None and len(numbers) != len(messages):
        raise ValueError(f"numbers: one per message ({len(messages)}), not {len(numbers)}")
    rows = [
        row_html(i if numbers is None else numbers[i], message,
                 token_counts[i] if token_counts is not None and i < len(token_counts) else None,
                 token_counts is not None, i in highlight, i in dimmed, max_chars)
        for i, message in enumerate(messages)
    ]
    return messages_table_frame(f"<tbody>{''.join(rows)}</tbody>", caption, token_counts is not None)


def row_html(number: object, message: object, tokens: int | None, with_tokens: bool, new: bool = False,
             dropped: bool = False, max_chars: int | None = None) -> str:
    """One <tr> of messages_table_html (cached: a long chat draws the same rows on every redraw).
    Example: row_html(3, {"role": "user", "content": "hi"}, 5, True).startswith('<tr class="nora-row"') -> True"""
    role = message.get("role", "?") if isinstance(message, dict) else "?"
    content = message.get("content", "") if isinstance(message, dict) else message
    content = "" if content is None else str(content)
    args = (number, role, content, with_tokens, tokens, new, dropped, max_chars)
    # a role or count that cannot be a cache key (no validated history has one) is drawn uncached
    if isinstance(role, str) and isinstance(number, int) and isinstance(tokens, (int, type(None))):
        return _row_html(*args)
    return _draw_row(*args)


def messages_table_frame(body: str, caption: str | None = None, with_tokens: bool = False) -> str:
    """The table of messages_table_html around body (its <tbody>s): the caption and the header row.
    Example: messages_table_frame("<tbody></tbody>", "2 messages").startswith('<table class="nora-messages"') -> True"""
    # Each <th> and the <table> carry their own alignment and layout: a notebook's output area
    # (JupyterLab's .jp-RenderedHTMLCommon) right-aligns headers and fixes the layout to equal
    # columns, which squeezed the content into the last quarter, far from its header.
    th = "padding:3px 6px;font-weight:600;text-align:"
    head = (
        f'<tr style="color:{MUTED};font-size:0.85em">'
        f'<th style="{th}right">#</th><th style="{th}left">role</th>'
        + ("" if not with_tokens else f'<th style="{th}right">tokens</th>')
        + f'<th style="{th}left">content</th></tr>'
    )
    cap = f'<caption style="text-align:left;font-weight:600;padding:2px 0">{escape(caption)}</caption>' if caption else ""
    return (
        '<table class="nora-messages" style="border-collapse:collapse;width:100%;table-layout:auto;margin:0;'
        'font-size:0.9em;line-height:1.35">'
        f"{cap}<thead>{head}</thead>{body}</table>"
    )


# --------------------------------------------------------------------------- #
# the wire: one WireLog record (clients.WireLog.last) -> sections to show

# the headers worth a learner's look; the rest (x-stainless-*, ...) is client bookkeeping
WIRE_HEADERS = ("authorization", "api-key", "x-api-key", "content-type", "accept", "user-agent")
_RECORD_KEYS = ("transport", "method", "url", "headers", "body")  # anything else is an extra


def _json(value: object) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


# The body's JSON is the whole conversation, and a new call adds two messages to its end: drawn whole,
# json.dumps and redact took ~140 ms a call at 5,000 messages (benchmarks/bench_panel.py).  So it is
# put together a message at a time: each message's lines (masked) are kept, and only new ones are made.
# In the body a message sits two levels deep, "messages" in the body's {}: every line of it starts 4
# spaces further in than json.dumps(message, indent=2) has it, and a string holds no line end ("\n").
_ITEM = "\n    "  # before each message in the list; _ITEM + a message's lines with _ITEM for each "\n"
_MARK = "nora-messages-go-here-7f3a9c"  # stands for the list while the rest of the body is drawn


def _message_key(message: object) -> tuple | None:
    """What a message's JSON depends on, hashable, or None (drawn uncached): its items, when its keys
    are str and its values str or None (1 and True would be one key but two JSON texts).
    Example: _message_key({"role": "user", "content": "hi"}) -> (('role', 'user'), ('content', 'hi'))"""
    if type(message) is not dict:
        return None
    items = tuple(message.items())
    for k, v in items:
        if type(k) is not str or (type(v) is not str and v is not None):
            return None
    return items


def _lines(message: object) -> str:
    """One message's masked lines as they stand in the body's list."""
    return redact(_json(message).replace("\n", _ITEM))


@lru_cache(maxsize=16384)
def _message_lines(key: tuple, secret: str) -> str:
    """_lines, cached (secret: a digest of the key redact reads from the environment, so that a new key
    draws them again)."""
    return _lines(dict(key))


def body_json(body: object) -> str:
    """redact(the body's JSON, indent 2), the same text, made a message at a time: the messages' lines are
    cached, so a body that differs from the last by its newest messages costs those messages.
    Example: body_json({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).splitlines()[2] -> '    {'"""
    messages = body.get("messages") if isinstance(body, dict) else None
    secret = os.environ.get("OPENAI_API_KEY", "")
    # every match redact makes lies inside a run of characters with no white space in it, and the
    # pieces are cut at white space: masked apart, they read as the whole masked at once
    if not isinstance(messages, list) or not messages or any(c.isspace() for c in secret):
        return redact(_json(body))
    outline = _json({**cast(dict, body), "messages": _MARK})  # the list's place kept among the body's keys
    mark = json.dumps(_MARK)
    if outline.count(mark) != 1:
        return redact(_json(body))
    head, _, tail = outline.partition(mark)
    digest = hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()
    lines = [_message_lines(key, digest) if key is not None else _lines(m)
             for m, key in zip(messages, map(_message_key, messages))]
    return f"{redact(head)}[{_ITEM}{(',' + _ITEM).join(lines)}\n  ]{redact(tail)}"


def _extra(key: str, value: object) -> tuple[str, str]:
    """An extra an in-process client records, as (title, text)."""
    if isinstance(value, str):
        return f"{key}:", value
    if isinstance(value, list) and all(isinstance(x, int) for x in value):
        return f"{key} ({len(value):,}):", json.dumps(value)  # token ids: one line, not one per row
    return f"{key}:", _json(value)


def wire_sections(last: dict, headers: Sequence[str] = WIRE_HEADERS) -> list[tuple[str, str]]:
    """The last request as ordered (title, text) sections, any key masked.

    title is one line ("" when the text speaks for itself); text is shown as-is
    ("" when the title says it all).  HTTP: the request line with the chosen headers,
    then the JSON body, as in an HTTP request.  In-process: what was called, the body,
    then what the client recorded beside it (the embedded model: the prompt it read).
    headers: which to show: authorization first ("(none)" when no key was sent), the rest in
    the order they were sent.
    Example: wire_sections({"transport": "in-process", "body": {"model": "m"}})
        -> [('in-process call: client.chat.completions.create(**body) (no HTTP)', ''), ('', '{\\n  "model": "m"\\n}')]
    """
    if last.get("transport") == "http":
        sent = {k: v for k, v in (last.get("headers") or {}).items() if k in headers}
        if "authorization" in headers:
            sent = {"authorization": "(none)", **sent}  # no key sent at all is worth saying
        lines = "\n".join(f"{k}: {v}" for k, v in sent.items())
        sections = [(f"{last.get('method', '')} {last.get('url', '')}", lines)]
    else:
        sections = [("in-process call: client.chat.completions.create(**body) (no HTTP)", "")]
    sections.append(("", body_json(last.get("body"))))  # masked already: a message at a time
    extras = {k: v for k, v in last.items() if k not in _RECORD_KEYS}
    if isinstance(extras.get("prompt"), str):  # the embedded model: what it really reads, template applied
        tokens = extras.pop("prompt_tokens", "?")
        sections.append((f"the prompt the model reads ({tokens} tokens):", extras.pop("prompt")))
    sections += [_extra(key, value) for key, value in extras.items()]
    # headers are masked when recorded; this is belt and braces for everything else (the body: masked)
    return [(redact(title), text if i == 1 else redact(text)) for i, (title, text) in enumerate(sections)]
