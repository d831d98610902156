"""render.py: model text comes out as HTML that can only show things, never run them.

The oracle: parse the produced HTML with the standard library's parser and check
that every tag and attribute is on a short allow-list and every href is http(s)/mailto.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser

import httpx2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nora_widgets.clients import WireLog
from nora_widgets.render import (
    body_json,
    escape,
    is_safe_link,
    markdown_to_html,
    messages_table_html,
    role_chip_html,
    wire_sections,
)

# what markdown-it (commonmark + tables + strikethrough) may emit
ALLOWED_TAGS = {
    "p", "br", "strong", "em", "code", "pre", "a", "ul", "ol", "li", "blockquote", "hr", "s",
    "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td",
}
ALLOWED_ATTRS = {"href", "title", "target", "rel", "start", "style", "class"}


class TagAudit(HTMLParser):
    """Collects every tag and attribute a browser would see in the HTML."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.extend(attrs)

    handle_startendtag = handle_starttag


def audit(html_text: str) -> TagAudit:
    parser = TagAudit()
    parser.feed(html_text)
    parser.close()
    return parser


def assert_inert(html_text: str) -> None:
    found = audit(html_text)
    assert set(found.tags) <= ALLOWED_TAGS, found.tags
    for name, value in found.attrs:
        assert name in ALLOWED_ATTRS, (name, value)
        if name == "href":
            assert is_safe_link(value), value
        if name == "style":  # only the fixed `style` attributes this module writes for tables
            assert "url(" not in value and "expression" not in value.lower()


PAYLOADS = [
    "<script>window.__nora_pwned = 1</script>",
    "<img src=x onerror=\"window.__nora_pwned=1\">",
    "<svg onload=alert(1)>",
    "<iframe src=\"javascript:alert(1)\"></iframe>",
    "[click me](javascript:alert(1))",
    "[click me](JaVaScRiPt:alert(1))",
    "[click me](&#106;avascript:alert(1))",
    "[click me](java%0Ascript:alert(1))",
    "[click me](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[click me](vbscript:msgbox(1))",
    "<javascript:alert(1)>",
    "[x]: javascript:alert(1)\n\n[x]",
    "![pixel](https://tracker.example/leak?q=secret)",
    "<a href=\"javascript:alert(1)\">link</a>",
    "<div style=\"background:url(javascript:alert(1))\">x</div>",
    "```html\n<script>alert(1)</script>\n```",
    "`<img src=x onerror=alert(1)>`",
    "<!-- comment --><b onmouseover=alert(1)>bold</b>",
    "[x](https://ok.example/\" onmouseover=\"alert(1))",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payloads_come_out_inert(payload):
    out = markdown_to_html(payload)
    assert_inert(out)
    assert "<script" not in out and "<img" not in out and "<iframe" not in out and "<svg" not in out


def test_raw_html_is_shown_as_text():
    out = markdown_to_html("<b>bold?</b> <script>x()</script>")
    assert "&lt;b&gt;bold?&lt;/b&gt;" in out
    assert "&lt;script&gt;x()&lt;/script&gt;" in out


def test_refused_links_stay_readable_as_text():
    assert markdown_to_html("[x](javascript:alert(1))") == "<p>[x](javascript:alert(1))</p>\n"


def test_images_become_links_not_requests():
    out = markdown_to_html("![pixel](https://tracker.example/p.png)")
    assert "<img" not in out
    assert 'href="https://tracker.example/p.png"' in out


def test_markdown_still_works():
    out = markdown_to_html("**bold** and *it*\n\n- one\n- two\n\n`code` [site](https://example.org)")
    assert "<strong>bold</strong>" in out and "<em>it</em>" in out
    assert out.count("<li>") == 2 and '<code style="background:var(--jp-layout-color2' in out and ">code</code>" in out
    assert '<a href="https://example.org" target="_blank" rel="noopener noreferrer nofollow" style="' in out
    assert "text-decoration:underline\">site</a>" in out


def test_code_stands_out_and_a_long_line_scrolls_inside_its_block():
    out = markdown_to_html("run `x = <b>1</b>` then\n\n```python\nprint('<script>' * 40)\n```\n\n    indented")
    assert out.count('background:var(--jp-layout-color2') == 3  # inline code, the fence, the indented block
    assert out.count('<pre style="') == 2 and out.count("overflow-x:auto") == 2
    assert "&lt;b&gt;1&lt;/b&gt;" in out and "&lt;script&gt;" in out and "<script" not in out  # still escaped


def test_tables_render():
    out = markdown_to_html("| a | b |\n|---|---|\n| 1 | 2 |")
    assert "<table>" in out and "<td>2</td>" in out


@pytest.mark.parametrize(
    "url, ok",
    [
        ("https://example.org", True),
        ("http://example.org/x?y=1", True),
        ("mailto:shop@example.org", True),
        ("javascript:alert(1)", False),
        (" JAVASCRIPT:alert(1)", False),
        ("data:text/html,hi", False),
        ("file:///etc/passwd", False),
        ("/relative/path", False),
        ("", False),
    ],
)
def test_is_safe_link(url, ok):
    assert is_safe_link(url) is ok


def test_non_string_input():
    assert markdown_to_html(None) == ""
    assert markdown_to_html(42) == "<p>42</p>\n"


def test_escape_quotes_too():
    assert escape('<b a="1">\'') == "&lt;b a=&quot;1&quot;&gt;&#x27;"


def test_role_chip_escapes_an_odd_role():
    chip = role_chip_html('<img src=x onerror="alert(1)">')
    assert_inert(chip.replace("<span", "<p").replace("</span>", "</p>"))
    assert "&lt;img" in chip
    assert 'class="nora-chip nora-chip-user"' in role_chip_html("user")


def test_messages_table_rows_counts_highlight_and_dim():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "<script>alert(1)</script>"},
        {"role": "assistant", "content": "Hello & welcome"},
    ]
    out = messages_table_html(messages, [3, 7, 1234], highlight=[1, 2], dimmed=[0], caption="sent <now>")
    found = audit(out)
    assert found.tags.count("tr") == 4  # header + one row per message
    assert "script" not in found.tags
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert "Hello &amp; welcome" in out
    assert "1,234" in out
    assert out.count("nora-row-new") == 2 and out.count("nora-row-dropped") == 1
    assert "sent &lt;now&gt;" in out


def test_messages_table_numbers_rows_by_their_place_in_the_whole_list():
    import re

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Turn 39"},
                {"role": "assistant", "content": "Reply 39"}]
    first_cells = lambda out: re.findall(r'<tr class="nora-row[^"]*"[^>]*><td[^>]*>(\d+)</td>', out)  # noqa: E731
    assert first_cells(messages_table_html(messages)) == ["0", "1", "2"]
    out = messages_table_html(messages, numbers=[0, 77, 78], dimmed=[1])  # dimmed still counts rows
    assert first_cells(out) == ["0", "77", "78"]
    assert '<tr class="nora-row nora-row-dropped" data-role="user"' in out
    with pytest.raises(ValueError, match="one per message"):
        messages_table_html(messages, numbers=[0, 1])


def test_messages_table_cuts_long_content_and_says_so():
    out = messages_table_html([{"role": "user", "content": "x" * 5000}], max_chars=100)
    assert "x" * 100 + "\u2026 (5,000 characters)" in out
    assert "x" * 101 not in out


def test_messages_table_redrawn_from_its_row_cache_is_the_table_drawn_afresh():
    """A long chat redraws both inspector tables on every turn; the rows come from a cache. What the
    cache gives back is exactly what drawing the row again gives, for every kind of value a row holds:
    1, 1.0 and True are equal as keys but a count of 1.0 is drawn '1.0', a row number True 'True'."""
    from nora_widgets import render

    def afresh(*args, **kw):  # the same table with no cache in the way
        cached, render._row_html = render._row_html, render._draw_row
        try:
            return messages_table_html(*args, **kw)
        finally:
            render._row_html = cached

    messages = [{"role": "user", "content": "<b>&</b>"}, {"role": "assistant", "content": None},
                {"role": "tool", "content": 5}, "plain text", {"role": "assistant"}]
    tables = [((messages,), {}),
              ((messages, [1, 1, 1.0, True, None]), {"highlight": [0], "dimmed": [1], "max_chars": 3}),
              ((messages, [True, 1.0, 1, None, 1]), {"highlight": [1], "dimmed": [0], "max_chars": 3}),
              ((messages,), {"numbers": [1, True, 1, 2, 3]}),
              ((messages,), {"numbers": [True, 1, True, 2, 3]})]
    for _ in range(2):  # the second time every row is a cache hit
        for args, kw in tables:
            assert messages_table_html(*args, **kw) == afresh(*args, **kw)
    assert ">1.0</td>" in messages_table_html(messages, [1.0, 1, 1, 1, 1])  # drawn after [1, 1, 1.0, ...]
    assert ">True</td>" in messages_table_html(messages, numbers=[True, 1, 2, 3, 4])  # after [1, True, ...]


def test_a_long_table_drawn_again_takes_every_row_from_the_cache():
    from nora_widgets import render

    messages = [{"role": "user" if i % 2 else "assistant", "content": f"message {i} of a long chat"}
                for i in range(3000)]
    first = messages_table_html(messages, list(range(3000)), highlight=[2998, 2999], max_chars=600)
    hits = render._row_html.cache_info().hits
    assert messages_table_html(messages, list(range(3000)), highlight=[2998, 2999], max_chars=600) == first
    assert render._row_html.cache_info().hits - hits == 3000


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("<>\"'=&;:/()[]!`*_ \n#-|ajvscriptonerrorhefimgdt%0123")), max_size=80))
def test_any_text_renders_inert(text):
    assert_inert(markdown_to_html(text))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]),
                                       "content": st.text(max_size=40)}), max_size=5))
def test_any_messages_table_is_inert(messages):
    out = messages_table_html(messages, [len(m["content"]) for m in messages], highlight=[0])
    found = audit(out)
    assert set(found.tags) <= {"table", "caption", "thead", "tbody", "tr", "th", "td", "span"}
    assert found.tags.count("tr") == len(messages) + 1


# --------------------------------------------------------------------------- #
# wire_sections: one WireLog record -> (title, text) sections, for `%chat wire` and the wire view

KEY = "sk-test-wire-0123456789"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"my key is {KEY}"}]


def recorded_http(headers: dict) -> dict:
    """What the openai client's event hook records for one real httpx2 request."""
    wire = WireLog()
    body = json.dumps({"model": "m", "messages": MESSAGES, "stream": True}).encode()
    wire.record_http(httpx2.Request("POST", "http://127.0.0.1:8000/v1/chat/completions",
                                    headers=headers, content=body))
    return wire.last


def test_wire_sections_of_an_http_request_read_like_the_request():
    last = recorded_http({"Content-Type": "application/json", "Authorization": f"Bearer {KEY}",
                          "User-Agent": "OpenAI/Python 9.9", "X-Stainless-Os": "Linux"})
    sections = wire_sections(last)
    assert sections[0] == ("POST http://127.0.0.1:8000/v1/chat/completions",
                           "authorization: Bearer ***\ncontent-type: application/json\nuser-agent: OpenAI/Python 9.9")
    title, body = sections[1]
    assert title == "" and len(sections) == 2  # the body follows the headers, as in HTTP
    assert json.loads(body)["messages"] == [MESSAGES[0], {"role": "user", "content": "my key is sk-***"}]
    assert KEY not in repr(sections)
    # the magics ask for the authorization header only; no key at all is said, not hidden
    assert wire_sections(last, headers=("authorization",))[0][1] == "authorization: Bearer ***"
    assert wire_sections(recorded_http({}), headers=("authorization",))[0][1] == "authorization: (none)"


def test_wire_sections_of_an_in_process_call_add_what_the_client_recorded():
    wire = WireLog()
    wire.record_call({"model": "smol", "messages": MESSAGES[:1]}, prompt="<|im_start|>system\nBe brief.<|im_end|>\n",
                     prompt_tokens=9, token_ids=[1, 2, 3], settings={"seed": 0})
    assert wire_sections(wire.last) == [
        ("in-process call: client.chat.completions.create(**body) (no HTTP)", ""),
        ("", json.dumps({"model": "smol", "messages": MESSAGES[:1]}, indent=2)),
        ("the prompt the model reads (9 tokens):", "<|im_start|>system\nBe brief.<|im_end|>\n"),
        ("token_ids (3):", "[1, 2, 3]"),  # token ids on one line
        ("settings:", '{\n  "seed": 0\n}'),
    ]


def test_magics_and_the_wire_view_show_the_same_sections():
    from types import SimpleNamespace

    from nora_widgets.magics import wire_view
    from nora_widgets.views import WireView

    last = recorded_http({"Authorization": f"Bearer {KEY}", "Accept": "application/json"})
    text = wire_view(SimpleNamespace(wire=SimpleNamespace(last=last)))
    assert text == "POST http://127.0.0.1:8000/v1/chat/completions\nauthorization: Bearer ***\n\n" + \
        wire_sections(last)[1][1]
    view = WireView()
    view.update(last)
    html_text = view.body.value
    places = [html_text.index(escape(part)) for section in wire_sections(last) for part in section if part]
    assert places == sorted(places)  # every section, escaped, in order
    assert "accept: application/json" in html_text and "accept" not in text  # the view shows more headers
    assert KEY not in text + html_text


# pieces redact masks, and the characters around them: a run with no white space is where a match can be
SECRETISH = ["sk-abcdef123456", "sk-", "http://u:pw@h/v1", "?api-key=zz&token=y", "&sig=1", "://", "\n", "\t",
             " ", '"', "\\", "{", "}", "[", "]", ",", ":", "\u00e9", "\u2028", "x"]


@settings(max_examples=300)
@given(messages=st.lists(st.dictionaries(st.sampled_from(["role", "content", "name"]),
                                         st.one_of(st.lists(st.sampled_from(SECRETISH), max_size=6).map("".join),
                                                   st.none(), st.integers(), st.booleans(), st.floats())),
                         max_size=6),
       key=st.sampled_from(["", "sk-abcdef123456", "abcdefgh", "short", "has a space 123"]))
def test_the_body_json_made_a_message_at_a_time_is_the_whole_one_masked(messages, key):
    # the wire view's JSON is made from each message's cached lines: it must be, character for character,
    # what masking the body's whole JSON gives
    import os

    from nora_widgets.errors import redact
    from nora_widgets.render import _json

    before = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = key
    try:
        for body in ({"model": "m" + key, "messages": messages, "temperature": 0.7, "stream": True},
                     {"messages": messages}, {"messages": messages, "extra": {"url": "http://a:b@c/?token=1"}}):
            assert body_json(body) == redact(_json(body))
            assert body_json(body) == body_json(body)  # from the cache, the same
    finally:
        if before is None:
            del os.environ["OPENAI_API_KEY"]
        else:
            os.environ["OPENAI_API_KEY"] = before


def test_a_body_two_messages_longer_costs_two_messages(monkeypatch):
    from nora_widgets import render

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    made = []
    real = render._lines
    monkeypatch.setattr(render, "_lines", lambda message: made.append(message) or real(message))
    history = [{"role": "user" if i % 2 else "assistant", "content": f"body test {i} sk-{i:08d}"} for i in range(300)]
    body_json({"model": "m", "messages": history})
    made.clear()
    text = body_json({"model": "m", "messages": history + [{"role": "user", "content": "new"}], "stream": True})
    assert made == [{"role": "user", "content": "new"}]  # only the new message's lines were made
    assert "sk-00000007" not in text and "sk-***" in text
    monkeypatch.setenv("OPENAI_API_KEY", "sk-00000005")  # a new key: every message masked again
    text = body_json({"model": "m", "messages": history})
    assert len(made) == 1 + 300 and '"content": "body test 5 ***"' in text  # the key itself, not "sk-***"


def test_a_long_transcript_is_redrawn_from_the_cache():
    # refresh() redraws the whole list in order: a cache smaller than the list would miss on
    # every message of every redraw (markdown is the expensive part of a redraw)
    from nora_widgets.views import _message_html, transcript_html

    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"cache test message {i}: *hi*"}
                for i in range(6000)]
    first = transcript_html(messages)
    before = _message_html.cache_info()
    assert transcript_html(messages) == first
    after = _message_html.cache_info()
    assert (after.hits - before.hits, after.misses - before.misses) == (6000, 0)
