"""The chat panel in a real JupyterLab, in a real Chromium: type, click, read.

One notebook, generated here, shows a ChatPanel over the scripted client.  The
test runs it, sends one message with the Send button and one with Enter, and
checks what a person would see: the reply in the transcript, the inspector's
list growing by two, and a reply full of HTML/script/javascript: shown as text
that runs nothing (a window flag the payload would set stays unset).
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import nbformat
import pytest

from .conftest import SCREENSHOTS

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]
CHECKOUT = Path(__file__).resolve().parents[2]

# Every trick a reply could use to run script in the page; each would set window.__nora_pwned.
XSS_REPLY = (
    'Here you go: <img src=x onerror="window.__nora_pwned=1"> '
    "<script>window.__nora_pwned=2</script> "
    "[a link](javascript:window.__nora_pwned=3) "
    '<a href="javascript:window.__nora_pwned=4">raw link</a> '
    '<svg onload="window.__nora_pwned=5"></svg>'
)
FIRST_REPLY = "Hello **Ada**, welcome to the bookshop!"
LONG_WORD_REPLY = ("A word with no space to break at: " + "z" * 3000 + "\n\nAnd code:\n\n```\n"
                   + "def f(" + ", ".join(f"argument_{i}" for i in range(30)) + "):\n    pass\n```")

SETUP_CELL = f"""\
from nora_widgets import ChatPanel, ScriptedClient
client = ScriptedClient([{FIRST_REPLY!r}, {XSS_REPLY!r}, {LONG_WORD_REPLY!r}])
client.context_window = 2048  # so the Context view draws its bar
panel = ChatPanel(client, views=("inspector", "cost"))
panel"""


# WCAG contrast ratio of each element's text against the first opaque background behind it
CONTRAST_JS = """(selectors) => {
    const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
    const lum = ([r, g, b]) => {
        const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
        return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const out = {};
    for (const [name, sel] of Object.entries(selectors)) {
        const el = document.querySelector(sel);
        if (!el) { out[name] = null; continue; }
        let bg = null;
        for (let e = el; e && !bg; e = e.parentElement) {
            const c = rgb(getComputedStyle(e).backgroundColor);
            if (c.length >= 3 && (c.length < 4 || c[3] > 0.5)) bg = c;
        }
        const fg = lum(rgb(getComputedStyle(el).color)), back = lum(bg || [255, 255, 255]);
        out[name] = Math.round(100 * (Math.max(fg, back) + 0.05) / (Math.min(fg, back) + 0.05)) / 100;
    }
    return out;
}"""


def write_notebook(path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(SETUP_CELL)]
    # without a kernelspec JupyterLab opens a "Select Kernel" dialog that blocks the page
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.write(nb, str(path))


def wait_for_idle_kernel(page) -> None:
    """Wait until JupyterLab is up, the notebook is open and its kernel is idle (then cells can run)."""
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                           " && window.jupyterapp.shell.currentWidget.sessionContext"
                           " && window.jupyterapp.shell.currentWidget.sessionContext.session"
                           " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
                           " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
                           timeout=45_000)


def rows_in_next_list(page) -> int:
    # the inspector's table of "what the next call will send"
    return page.locator(".nora-panel .nora-next-send tr.nora-row").count()


def test_panel_in_jupyterlab(lab, browser_page):
    page = browser_page
    write_notebook(lab.root / "panel.ipynb")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(lab.url("panel.ipynb"))

    # wait for the app, the notebook and an idle kernel, then run the cell
    wait_for_idle_kernel(page)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    prompt = page.locator(".nora-panel .nora-prompt input")
    prompt.wait_for(state="visible", timeout=45_000)
    assert rows_in_next_list(page) == 1  # just the persona

    # 1. type and click Send
    prompt.click()
    prompt.type("My name is Ada.")
    page.locator(".nora-panel .nora-send button, .nora-panel button.nora-send").first.click()
    transcript = page.locator(".nora-panel .nora-transcript").first
    transcript.locator("strong", has_text="Ada").wait_for(timeout=20_000)  # markdown rendered
    assert "welcome to the bookshop" in transcript.inner_text()
    page.wait_for_function("() => document.querySelector('.nora-panel .nora-prompt input').value === ''")
    assert rows_in_next_list(page) == 3  # the list grew by two
    # Send is disabled while the reply runs, which drops the focus the click gave it: the input has
    # it, so the next message can be typed at once
    page.wait_for_function("() => document.activeElement === document.querySelector('.nora-panel .nora-prompt input')",
                           timeout=5_000)
    assert page.locator(".nora-panel tr.nora-row-new").count() >= 2

    # 2. type and press Enter: the reply is an attack, shown as text
    prompt.click()
    prompt.type("Show me some HTML")
    prompt.press("Enter")
    page.wait_for_function(
        "() => document.querySelector('.nora-panel .nora-transcript').innerText.includes('onerror=')",
        timeout=20_000)
    page.wait_for_timeout(500)  # give any injected handler time to fire
    assert rows_in_next_list(page) == 5
    text = transcript.inner_text()
    assert '<img src=x onerror="window.__nora_pwned=1">' in text
    assert "<script>window.__nora_pwned=2</script>" in text
    assert "[a link](javascript:window.__nora_pwned=3)" in text
    found = page.evaluate("""() => {
        const panel = document.querySelector('.nora-panel');
        return {
            pwned: window.__nora_pwned === undefined ? null : window.__nora_pwned,
            img: panel.querySelectorAll('img').length,
            script: panel.querySelectorAll('script').length,
            svg_onload: panel.querySelectorAll('svg[onload]').length,
            js_links: [...panel.querySelectorAll('a')].filter(a => /^\\s*javascript:/i.test(a.getAttribute('href') || '')).length,
        };
    }""")
    assert found == {"pwned": None, "img": 0, "script": 0, "svg_onload": 0, "js_links": 0}, found

    # typed fast and sent with Enter: the whole text arrived, not a half-synced prefix
    assert "Show me some HTML" in text
    assert errors == [], errors  # no script error in the page either

    # 3. a reply with a 3,000-character word wraps inside the chat column: it does not
    # widen the transcript under the views beside it (which hid the end of every message)
    prompt.click()
    prompt.type("One long word")
    prompt.press("Enter")
    page.wait_for_function("() => document.querySelector('.nora-panel .nora-transcript').innerText.includes('zzzz')",
                           timeout=20_000)
    widths = page.evaluate("""() => {
        const t = document.querySelector('.nora-panel .nora-transcript');
        return {transcript: t.getBoundingClientRect().width,
                column: t.closest('.widget-vbox').getBoundingClientRect().width};
    }""")
    assert widths["transcript"] <= widths["column"] + 1, widths
    # a long code line keeps its shape and scrolls sideways (it wrapped mid-identifier), and the
    # inspector's tables scroll in boxes of their own (the panel grew by every message)
    shape = page.evaluate("""() => {
        const pre = [...document.querySelectorAll('.nora-panel .nora-transcript pre')].pop();
        const lines = parseFloat(getComputedStyle(pre).lineHeight) || 16;
        return {scrolls: pre.scrollWidth > pre.clientWidth + 1, lines: (pre.clientHeight - 12) / lines,
                next_list: document.querySelector('.nora-panel .nora-next-send').getBoundingClientRect().height};
    }""")
    assert shape["scrolls"] and shape["lines"] < 2.6 and shape["next_list"] <= 361, shape

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator(".nora-panel").screenshot(path=str(SCREENSHOTS / "panel.png"))

    # 4. in JupyterLab's dark theme every text stays readable: the yellow "new" rows, the
    # persona, the header and the wire view (light text on a light box was unreadable)
    page.locator(".nora-panel button", has_text="Wire").first.click()
    page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
    page.wait_for_function("() => document.body.dataset.jpThemeName === 'JupyterLab Dark'", timeout=20_000)
    page.wait_for_timeout(1000)  # the theme's stylesheet applies
    page.locator(".nora-panel button", has_text="Context").first.click()  # its "counted:" line is small and grey
    # an error line (Send on an empty input) and a refused Save (an empty file box): a fixed red
    # was 3.5:1 on the dark page, the line that most needs reading
    page.locator(".nora-panel button.nora-send").click()
    page.locator(".nora-panel .nora-error").wait_for(timeout=10_000)
    file_box = page.locator(".nora-panel input[type=text]").nth(3)  # the input, model, message number, file
    assert file_box.input_value() == "nora-transcript.json"
    file_box.fill("")
    page.locator(".nora-panel").get_by_role("button", name="Save", exact=True).click()  # not "Save edit"
    page.locator(".nora-panel .nora-file-note", has_text="not saved").wait_for(timeout=10_000)
    refused = page.evaluate(CONTRAST_JS, {"refused save": ".nora-panel .nora-file-note span"})
    file_box.fill("dark.json")
    page.locator(".nora-panel").get_by_role("button", name="Save", exact=True).click()  # not "Save edit"
    page.locator(".nora-panel .nora-file-note", has_text="saved 7 messages").wait_for(timeout=10_000)
    contrast = refused | page.evaluate(CONTRAST_JS, {
        "error line": ".nora-panel .nora-error",
        "saved": ".nora-panel .nora-file-note span",
        "new row's number": ".nora-panel tr.nora-row-new td:first-child",  # #888 on yellow: 3.2:1
        "counted": ".nora-panel .nora-gauge-counted",
        "new row": ".nora-panel tr.nora-row-new td:last-child",
        "persona": ".nora-panel .nora-transcript .nora-msg-system .nora-content > div",
        "header": ".nora-panel .nora-header span",
        "wire": ".nora-panel .nora-wire pre",
        "cost chart": ".nora-panel svg text",  # a fixed light box stayed light in the dark theme
    })
    page.locator(".nora-panel").screenshot(path=str(SCREENSHOTS / "panel-dark.png"))
    low = {name: ratio for name, ratio in contrast.items() if ratio is None or ratio < 4.5}
    assert low == {}, contrast
    # the Context gauge's empty track follows the theme (it stayed a light grey bar on the dark page)
    track = page.locator(".nora-panel .nora-gauge-track").first
    track.wait_for(state="visible", timeout=10_000)
    level = track.evaluate("""(el) => {
        const [r, g, b] = getComputedStyle(el).backgroundColor.match(/[\\d.]+/g).map(Number);
        return (r + g + b) / 3;
    }""")
    assert level < 128, level
    # Amnesia on (red) reads in the dark theme too (black on ipywidgets' red: 4.2:1)
    page.locator(".nora-panel button", has_text="Amnesia").first.click()
    page.locator(".nora-panel button.mod-danger", has_text="Amnesia").wait_for(timeout=10_000)
    amnesia = page.evaluate(CONTRAST_JS, {"Amnesia on": ".nora-panel button.mod-danger"})
    assert amnesia["Amnesia on"] >= 4.5, amnesia


TABLE_CELLS = [
    "from IPython.display import HTML\n"
    "from nora_widgets import SYSTEM_PROMPT\n"
    "from nora_widgets.render import messages_table_html\n"
    "msgs = [{'role': 'system', 'content': SYSTEM_PROMPT}, {'role': 'user', 'content': 'Any Le Guin?'},\n"
    "        {'role': 'assistant', 'content': 'Yes: The Dispossessed and The Left Hand of Darkness.'}]",
    "HTML(messages_table_html(msgs, caption='no counts'))",
    "HTML(messages_table_html(msgs, token_counts=[30, 8, 15], caption='with counts'))",
]


def test_messages_table_in_a_notebook_output(lab, browser_page):
    """The lessons display messages_table_html in ordinary output cells, where JupyterLab's own table
    styles apply (right-aligned headers, equal fixed columns): the content column must still take most
    of the width under a left-aligned 'content' header, and a table without counts has no tokens column."""
    page = browser_page
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in TABLE_CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, str(lab.root / "table.ipynb"))
    page.goto(lab.url("table.ipynb") + "&reset")  # a fresh workspace: only this notebook is open
    wait_for_idle_kernel(page)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    # this notebook's own tables (the panel test's notebook may still be open in another tab)
    tables = "window.jupyterapp.shell.currentWidget.node.querySelectorAll('.jp-OutputArea table.nora-messages')"
    page.wait_for_function(f"() => {tables}.length === 2", timeout=45_000)
    shapes = page.evaluate("""() => [...""" + tables + """].map(t => {
        const heads = [...t.querySelectorAll('th')];
        const content = heads[heads.length - 1];
        const cell = t.querySelector('tbody tr td:last-child');
        return {
            heads: heads.map(h => h.innerText.trim()),
            share: cell.getBoundingClientRect().width / t.getBoundingClientRect().width,
            header_align: getComputedStyle(content).textAlign,
            header_over_text: Math.abs(content.getBoundingClientRect().left - cell.getBoundingClientRect().left),
        };
    })""")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator(".jp-NotebookPanel:visible .jp-OutputArea table.nora-messages").first.screenshot(path=str(SCREENSHOTS / "messages-table.png"))
    for s in shapes:
        assert s["share"] > 0.6 and s["header_align"] == "left" and s["header_over_text"] < 2, shapes
    assert [s["heads"] for s in shapes] == [["#", "role", "content"], ["#", "role", "tokens", "content"]], shapes


PROJECTOR_CELL = """\
from nora_widgets import ChatPanel, ScriptedClient
panel = ChatPanel(ScriptedClient(), views=("inspector", "cost"))
panel"""


def test_the_controls_sit_under_the_input_on_a_projector(lab, chromium):
    """A 1280x800 window at 150% zoom (853x533 CSS pixels), as on a classroom projector: the views
    wrap below the chat.  Amnesia, keep last and the persona were below every open view, three
    screens from the input the instructor types in; they sit right under it.  The trim control
    reads in order, 'keep last [2] turns' (it read 'keep last turns [2]'), and nothing is cut off."""
    context = chromium.new_context(viewport={"width": 853, "height": 533}, device_scale_factor=1.5)
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(PROJECTOR_CELL)]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
        nbformat.write(nb, str(lab.root / "projector.ipynb"))
        page.goto(lab.url("projector.ipynb") + "&reset")
        wait_for_idle_kernel(page)
        page.evaluate("() => window.jupyterapp.commands.execute('application:toggle-left-area')")  # as the demo says
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        prompt = page.locator(".nora-panel .nora-prompt input")
        prompt.wait_for(state="visible", timeout=45_000)
        for text in ("My name is Ada.", "What's my name?"):  # the inspector and the cost chart grow
            prompt.click()
            prompt.type(text)
            prompt.press("Enter")
            page.wait_for_function("(n) => document.querySelectorAll('.nora-panel .nora-next-send tr.nora-row').length === n",
                                   arg=5 if "name?" in text else 3, timeout=20_000)
        found = page.evaluate("""() => {
            const panel = document.querySelector('.nora-panel');
            const box = (el) => el.getBoundingClientRect();
            const amnesia = [...panel.querySelectorAll('button')].find(b => b.innerText.includes('Amnesia'));
            const number = panel.querySelector('.widget-inline-hbox input[type=number]');
            const turns = [...panel.querySelectorAll('.widget-label, label')].find(l => l.innerText.trim() === 'turns');
            const slider = panel.querySelector('.nora-range');
            return {below_input: box(amnesia).top - box(panel.querySelector('.nora-prompt')).bottom,
                    turns_after_box: turns ? box(turns).left - box(number).right : null,
                    // on one row, 'turns' and 'temperature' read as one label unless a gap parts them
                    same_row: Math.abs(box(turns).top - box(slider).top) < 10,
                    gap_to_temperature: box(slider).left - box(turns).right,
                    overflow: panel.scrollWidth - panel.clientWidth};
        }""")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "panel-projector.png"))
        assert 0 < found["below_input"] < 120, found  # the status line and a border between them
        assert found["turns_after_box"] is not None and found["turns_after_box"] >= 0, found
        assert found["overflow"] <= 0, found
        assert found["same_row"] and found["gap_to_temperature"] >= 12, found
    finally:
        context.close()


KEYBOARD_CELL = """\
import time
from nora_widgets import ChatPanel, ScriptedClient

class Slow(ScriptedClient):  # a question with "slowly" in it gets a reply that takes seconds
    def _create(self, **kwargs):
        stream = super()._create(**kwargs)
        if "slowly" not in kwargs["messages"][-1]["content"]:
            return stream
        def slowly():
            for piece in stream:
                time.sleep(0.3)
                yield piece
        return slowly()

panel = ChatPanel(Slow(), views=("inspector",))
panel"""

# the focused element's focus ring (null when the focus is outside the panel)
RING_JS = """() => {
    const el = document.activeElement;
    if (!el || !el.closest('.nora-panel')) return null;
    const style = getComputedStyle(el);
    return {width: parseFloat(style.outlineWidth) || 0, style: style.outlineStyle, colour: style.outlineColor};
}"""


def focused(page) -> dict | None:
    """What a screen reader says for the focused element (role and name, from the page's
    accessibility tree) and its focus ring; None when the focus has left the panel."""
    ring = page.evaluate(RING_JS)
    if ring is None:
        return None
    said = page.locator("*:focus").aria_snapshot().splitlines()[0]  # e.g. '- checkbox "keep last"'
    match = re.match(r'- (\w+)(?: "(.*?)")?', said)
    # the name as it is: an icon's glyph is kept out of it (ICON_GLYPHS in panel.py)
    return {"role": match.group(1), "name": match.group(2) or "", **ring}


IS_FOCUSED = "(sel) => document.activeElement === document.querySelector(sel)"
PROMPT = ".nora-panel .nora-prompt input"
STOP_LIVE = "() => !document.querySelector('.nora-panel .nora-stop').disabled"  # a reply is running


def open_panel(page, lab, name: str, cell: str, wait_for: str = PROMPT, cells: list[str] = ()) -> None:
    """Open notebook `name` of `cell` (and `cells` after it), run it, wait for `wait_for`."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in [cell, *cells]]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, str(lab.root / name))
    page.goto(lab.url(name) + "&reset")  # a fresh workspace: only this notebook is open
    wait_for_idle_kernel(page)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.locator(wait_for).wait_for(state="visible", timeout=45_000)


@contextlib.contextmanager
def projector_page(chromium, lab, name: str, cell: str, height: int = 480):
    """A page the size of a 1280x720 projector at 150% zoom (853x480 CSS pixels; height=533 for
    1280x800), the panel of `cell` open in notebook `name`, the file browser closed as docs/panel.md's
    demo says; the page's context is closed after."""
    context = chromium.new_context(viewport={"width": 853, "height": height}, device_scale_factor=1.5)
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        open_panel(page, lab, name, cell)
        page.evaluate("() => window.jupyterapp.commands.execute('application:toggle-left-area')")
        yield page
    finally:
        context.close()


def opened(page, lab, name: str, cell: str, wait_for: str = PROMPT, cells: list[str] = ()):
    """open_panel, with the page's errors collected: (the panel's locator, the list of errors)."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    open_panel(page, lab, name, cell, wait_for, cells)
    return page.locator(".nora-panel"), errors


def type_and_send(page, text: str):
    """Type text into the panel's input, press Enter; returns the input's locator."""
    prompt = page.locator(PROMPT)
    prompt.focus()
    page.keyboard.type(text)
    page.keyboard.press("Enter")
    return prompt


def test_the_panel_with_the_keyboard_only_and_a_screen_reader(lab, browser_page):
    """Everything with Tab, Shift+Tab, Enter and Space, in reading order, with a focus ring that can
    be seen; the focus goes where the next key is needed; names, states, replies and errors are
    there for a screen reader (checked in the page's accessibility tree)."""
    from playwright.sync_api import expect

    page = browser_page
    open_panel(page, lab, "keyboard.ipynb", KEYBOARD_CELL)
    panel = page.locator(".nora-panel")
    # names: the message box had none (a placeholder only), the turns box was called "null"
    expect(panel.get_by_role("textbox", name="your message", exact=True)).to_have_count(1)
    expect(panel.get_by_role("spinbutton", name="how many of the last turns to send", exact=True)).to_have_count(1)
    expect(panel.get_by_role("spinbutton", name="null")).to_have_count(0)
    expect(panel.get_by_role("region", name="conversation", exact=True)).to_have_count(1)
    expect(panel.get_by_role("heading", name="Messages inspector")).to_have_count(1)
    wire = panel.get_by_role("button", name="Wire")
    expect(wire).to_have_accessible_description("off - show the last request exactly as it went out (key masked)")

    # 1. type and press Enter: the reply is announced, and the focus is back in the input
    page.locator(PROMPT).focus()
    page.keyboard.type("My name is Ada.")
    page.keyboard.press("Enter")
    expect(panel.get_by_role("alert")).to_contain_text("Nora replied: [scripted reply 1]", timeout=20_000)
    page.wait_for_function(IS_FOCUSED, arg=PROMPT, timeout=10_000)

    # 2. Tab walks the panel in reading order: the input row, the controls under it, the views
    stops = [focused(page)]
    for _ in range(30):
        page.keyboard.press("Tab")
        stop = focused(page)
        if stop is None:
            break
        stops.append(stop)
    said = [f"{s['role']} {s['name']}".strip() for s in stops]
    assert said == ["textbox your message", "button Send", "button Amnesia", "checkbox keep last",
                    "spinbutton how many of the last turns to send", "slider temperature", "textbox model",
                    "textbox persona", "button Clear", "button Undo", "textbox message", "button Edit", "textbox file", "button Save", "button Load",
                    "button Inspector", "button Wire", "button Context", "button Cost", "button Side by side"], said
    # the focus ring is seen: 2 px (JupyterLab's was 1 px of light blue, about 2:1 on white)
    thin = [s for s in stops if s["width"] < 2 or s["style"] == "none"]
    assert thin == [], thin
    page.keyboard.press("Shift+Tab")
    assert focused(page)["name"] == "Side by side"

    # 3. Space and Enter press the toggles; a screen reader hears "on" / "off"
    wire.focus()
    page.keyboard.press("Space")
    page.locator(".nora-panel .nora-wire").wait_for(state="visible")
    expect(wire).to_have_accessible_description("on - show the last request exactly as it went out (key masked)")
    page.keyboard.press("Enter")
    page.locator(".nora-panel .nora-wire").wait_for(state="hidden")
    amnesia = panel.get_by_role("button", name="Amnesia")
    amnesia.focus()
    page.keyboard.press("Enter")
    expect(amnesia).to_have_accessible_description("on - each call sends only the persona and the latest message")
    expect(page.locator(".nora-panel .nora-header")).to_contain_text("amnesia")
    page.keyboard.press("Enter")
    expect(amnesia).to_have_accessible_description(re.compile("^off - "))

    # 4. Undo from the keyboard: the message is back in the input, which has the focus, and Enter
    # on it sends at once (it waited for the fallback timer, 30 s here)
    panel.get_by_role("button", name="Undo").focus()
    page.keyboard.press("Enter")
    page.wait_for_function(IS_FOCUSED, arg=PROMPT, timeout=10_000)
    assert page.locator(PROMPT).input_value() == "My name is Ada."
    expect(panel.get_by_role("status")).to_contain_text("took back your last message and its reply")
    page.keyboard.press("Enter")
    expect(panel.get_by_role("alert")).to_contain_text("Nora replied: [scripted reply 2]", timeout=10_000)
    assert rows_in_next_list(page) == 3

    # 5. a slow reply: the focus stays in the input while it runs (the next message can be typed),
    # one Tab reaches Stop (Send is disabled), Space stops it; the message is back in the input with
    # the focus, and the error line says so in words (role alert, a sign, not only red)
    page.keyboard.type("Tell it slowly")
    page.keyboard.press("Enter")
    page.wait_for_function(STOP_LIVE, timeout=10_000)
    assert page.evaluate(IS_FOCUSED, PROMPT) and page.locator(PROMPT).input_value() == ""
    page.keyboard.press("Tab")
    assert focused(page)["name"] == "Stop"
    page.keyboard.press("Space")
    expect(panel.get_by_role("alert")).to_contain_text("\u26a0 Stopped: the turn was rolled back", timeout=10_000)
    page.wait_for_function(IS_FOCUSED, arg=PROMPT, timeout=10_000)
    assert page.locator(PROMPT).input_value() == "Tell it slowly" and rows_in_next_list(page) == 3
    page.keyboard.press("Enter")  # sent again at once; the input keeps the focus while it runs
    page.wait_for_function(STOP_LIVE, timeout=10_000)
    assert page.evaluate(IS_FOCUSED, PROMPT)
    expect(panel.get_by_role("alert")).to_contain_text("Nora replied:", timeout=20_000)
    page.wait_for_function(IS_FOCUSED, arg=PROMPT, timeout=10_000)
    assert rows_in_next_list(page) == 5

    # 6. Save says what it did beside the button (in words and a sign); Clear gives the input the focus
    panel.get_by_role("button", name="Save", exact=True).focus()
    page.keyboard.press("Enter")
    expect(page.locator(".nora-panel .nora-file-note").get_by_role("status")).to_contain_text("\u2713 saved 5 messages")
    panel.get_by_role("button", name="Clear").focus()
    page.keyboard.press("Enter")
    page.wait_for_function(IS_FOCUSED, arg=PROMPT, timeout=10_000)
    assert rows_in_next_list(page) == 1


# The buttons with an icon, in reading order (Inspector: the check mark of a view that is on), and
# what a screen reader should hear for each: the words alone.  Chromium's names were "\uf1d8 Send",
# "\uf04d Stop", ... : Font Awesome's glyph, a private-use character, in front of the words.
ICON_BUTTONS = ["Send", "Stop", "Amnesia", "Clear", "Undo", "Edit", "Save", "Load", "Inspector"]
WITH_ICON = ".nora-panel button:has(> i.fa)"
# each icon as drawn in the panel, beside Font Awesome's own glyph for the same class outside it
ICONS_JS = """(sel) => [...document.querySelectorAll(sel)].map(b => {
    const i = b.querySelector(':scope > i.fa'), drawn = getComputedStyle(i, '::before');
    const own = document.createElement('i');
    own.className = i.className;
    document.body.append(own);
    const glyph = getComputedStyle(own, '::before').content;
    own.remove();
    return {words: b.innerText.trim(), content: drawn.content, glyph, font: drawn.fontFamily,
            width: i.getBoundingClientRect().width, colour: drawn.color, words_colour: getComputedStyle(b).color};
})"""


def chromium_names(page, selector: str) -> list[str]:
    """The name Chromium's accessibility tree gives each element that matches selector (over CDP:
    what a screen reader is handed, not a computation of our own)."""
    cdp = page.context.new_cdp_session(page)
    try:
        root = cdp.send("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
        names = []
        for node in cdp.send("DOM.querySelectorAll", {"nodeId": root, "selector": selector})["nodeIds"]:
            ax = cdp.send("Accessibility.getPartialAXTree", {"nodeId": node, "fetchRelatives": False})["nodes"]
            names.append(ax[0].get("name", {}).get("value"))
        return names
    finally:
        cdp.detach()


def test_icon_buttons_are_named_by_their_words_and_still_show_their_icons(lab, browser_page):
    """Send, Stop, Amnesia, Clear, Undo, Save, Load and a view that is on are named by their words
    alone in Chromium's accessibility tree (the icon's glyph came first), in the light and the dark
    theme, and each icon is still drawn: Font Awesome's glyph, in its font, in the words' colour."""
    from playwright.sync_api import expect

    page = browser_page
    panel, errors = opened(page, lab, "icons.ipynb", KEYBOARD_CELL)
    for theme in ("JupyterLab Light", "JupyterLab Dark"):
        if theme != "JupyterLab Light":
            page.evaluate("(t) => window.jupyterapp.commands.execute('apputils:change-theme', {theme: t})", theme)
            page.wait_for_function("(t) => document.body.dataset.jpThemeName === t", arg=theme, timeout=20_000)
            page.wait_for_timeout(1000)  # the theme's stylesheet applies
            panel.get_by_role("button", name="Amnesia", exact=True).click()  # on: red, white words
            expect(panel.get_by_role("button", name="Amnesia", exact=True)).to_have_accessible_description(
                re.compile("^on - "))
        names = chromium_names(page, WITH_ICON)
        assert names == ICON_BUTTONS, (theme, names)
        for words in ICON_BUTTONS:  # and as Playwright reads the page
            expect(panel.get_by_role("button", name=words, exact=True)).to_have_count(1)
        icons = page.evaluate(ICONS_JS, WITH_ICON)
        assert [icon["words"] for icon in icons] == ICON_BUTTONS
        for icon in icons:
            assert re.fullmatch('"[\ue000-\uf8ff]"', icon["glyph"]), icon  # Font Awesome's, a private-use character
            assert icon["content"].startswith(icon["glyph"]), (theme, icon)  # the same glyph drawn
            assert "Font Awesome" in icon["font"] and icon["width"] > 5, (theme, icon)
            assert icon["colour"] == icon["words_colour"], (theme, icon)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.locator(".nora-panel").screenshot(path=str(SCREENSHOTS / f"panel-icons-{theme.split()[-1].lower()}.png"))
    assert errors == [], errors


PROJECTOR_CHAT_CELL = """\
from nora_widgets import ChatPanel, ScriptedClient
reply = "Here is a longer answer, so that the chat fills its box. " * 6
panel = ChatPanel(ScriptedClient([reply] * 4), views=("inspector", "cost"))
panel"""


def test_on_a_projector_the_input_and_the_whole_chat_box_fit_on_the_screen(lab, chromium):
    """1280x800 at 150% zoom (853x533 CSS pixels): the chat box was 420 px high, taller with the
    input row than the notebook's visible area, so the instructor scrolled between the start of
    the last reply and the input.  The box is at most 45% of the window's height now."""
    with projector_page(chromium, lab, "projector-chat.ipynb", PROJECTOR_CHAT_CELL, height=533) as page:
        prompt = page.locator(PROMPT)
        for n, text in enumerate(("My name is Ada.", "Recommend a book.", "Why that one?"), start=1):
            prompt.focus()
            page.keyboard.type(text)
            page.keyboard.press("Enter")
            page.wait_for_function("(n) => document.querySelectorAll('.nora-panel .nora-next-send tr.nora-row').length === n",
                                   arg=1 + 2 * n, timeout=20_000)
        page.wait_for_function(IS_FOCUSED, arg=PROMPT, timeout=10_000)
        # as after typing: the input row at the bottom of the notebook's visible area
        found = page.evaluate("""() => {
            const row = document.querySelector('.nora-panel .nora-prompt').parentElement;
            row.scrollIntoView({block: 'end'});
            const area = row.closest('.jp-WindowedPanel-outer').getBoundingClientRect();
            const box = document.querySelector('.nora-panel .nora-transcript').getBoundingClientRect();
            const last = [...document.querySelectorAll('.nora-panel .nora-transcript .nora-msg-assistant')].pop()
                .getBoundingClientRect();
            const input = row.getBoundingClientRect();
            return {area_top: area.top, area_bottom: area.bottom, box_top: box.top, box_height: box.height,
                    last_reply_top: last.top, input_bottom: input.bottom};
        }""")
        page.screenshot(path=str(SCREENSHOTS / "panel-projector-chat.png"))
        assert found["input_bottom"] <= found["area_bottom"] + 1, found
        assert found["last_reply_top"] >= found["area_top"] and found["box_top"] >= found["area_top"], found
        assert found["box_height"] > 200, found  # the replies filled the box: it did not just stay small


def slow_chat_cell(turns: int, delay: float, reply: str, views: str) -> str:
    """A panel over a chat of `turns` turns (each reply short markdown) whose client streams `reply`
    a piece every `delay` seconds, so that it streams for seconds; views: the ChatPanel argument."""
    return f"""\
import time
from nora_widgets import ChatPanel, ScriptedClient

class Slow(ScriptedClient):  # a piece of the reply every {delay} s: it streams for seconds
    def _create(self, **kwargs):
        stream = super()._create(**kwargs)
        def slowly():
            for piece in stream:
                time.sleep({delay})
                yield piece
        return slowly()

history = [{{"role": "system", "content": "You are Nora."}}]
for i in range({turns}):
    history += [{{"role": "user", "content": f"Question {{i}}: tell me about book {{i}}."}},
                {{"role": "assistant", "content": f"Book **{{i}}** is good. " * 3}}]
panel = ChatPanel(Slow([{reply}] * 2), history=history, views={views})
panel"""


LONG_CHAT_CELL = slow_chat_cell(
    150, 0.05, '"A reply that streams in slowly, word by word, for a while so the class can watch it. " * 8',
    '("inspector", "cost")')

# where the input row and the messages are, in CSS pixels
ROW_JS = """() => {
    const row = document.querySelector('.nora-panel .nora-prompt').parentElement.getBoundingClientRect();
    const lefts = [...document.querySelectorAll('.nora-panel .nora-chat-box .nora-msg')].slice(-3)
        .map(m => Math.round(m.getBoundingClientRect().left));
    return {top: Math.round(row.top), bottom: Math.round(row.bottom), lefts};
}"""


def test_on_a_720p_projector_the_input_row_stays_put_while_a_reply_streams(lab, chromium):
    """1280x720 at 150% zoom (853x480 CSS pixels), a chat of 300 messages: the transcript filled its
    box (45% of the window) and the streaming reply had a box of its own, 45% more, so at each reply
    the input row and Stop went 121 px down (off the screen with a long reply) and came back at its
    end.  The two share one box now: the transcript gives way as the reply grows.  And the reply being
    written lines up with the messages above it (it sat 4 px to the right, and jumped at its end)."""
    with projector_page(chromium, lab, "projector-long.ipynb", LONG_CHAT_CELL) as page:
        page.locator(PROMPT).scroll_into_view_if_needed()
        before = page.evaluate(ROW_JS)
        type_and_send(page, "Tell me a long story.")
        page.wait_for_function(STOP_LIVE, timeout=10_000)
        during = []
        for _ in range(6):  # the reply grows past the box it has
            page.wait_for_timeout(700)
            during.append(page.evaluate(ROW_JS))
        page.screenshot(path=str(SCREENSHOTS / "panel-projector-streaming.png"))
        streaming = page.evaluate("""() => {
            const box = document.querySelector('.nora-panel .nora-chat-box').getBoundingClientRect();
            const region = document.querySelector('.nora-panel .nora-chat-box .nora-transcript');
            const reply = [...region.querySelectorAll('.nora-msg-assistant')].pop();
            return {box: box.height, writing: reply.textContent.includes('\u258d'),
                    scrolls: region.scrollHeight > region.clientHeight};
        }""")
        page.wait_for_function("() => document.querySelector('.nora-panel .nora-stop').disabled", timeout=60_000)
        after = page.evaluate(ROW_JS)
        assert streaming["scrolls"] and streaming["writing"] and streaming["box"] <= 0.45 * 480 + 1, streaming
        assert all(abs(d["top"] - before["top"]) <= 2 for d in during), (before, during)
        assert after["top"] == before["top"] and before["bottom"] <= 480, (before, after)
        for d in during:  # the message being written starts where the others do
            assert len(set(d["lefts"])) == 1, d


# where the controls under the input are, from the input row's top (CSS pixels), and the status line
CONTROLS_JS = """() => {
    const panel = document.querySelector('.nora-panel');
    const row = panel.querySelector('.nora-prompt').getBoundingClientRect().top;
    const at = (words) => [...panel.querySelectorAll('button')].find(b => b.innerText.trim() === words)
        .getBoundingClientRect().top - row;
    const status = panel.querySelector('.nora-status').getBoundingClientRect();
    return {amnesia: at('Amnesia'), clear: at('Clear'), views: at('Inspector'), status_height: status.height,
            status_right: status.right, panel_right: panel.getBoundingClientRect().right,
            line: parseFloat(getComputedStyle(panel.querySelector('.nora-status')).fontSize) * 1.4};
}"""


def test_on_a_projector_the_controls_stay_put_as_status_lines_come_and_go(lab, chromium):
    """1280x720 at 150% zoom (853x480 CSS pixels), light and dark theme: the status line under the
    input ("replying…" at each turn, "took back your last message…") and the note beside Save came and
    went, and the controls and views below them jumped 18 px (27 screen pixels) each time; the views
    32 px at "saved N messages".  Both keep their room now; a long status line still wraps.  And Clear
    takes away a status line about the conversation it cleared."""
    from playwright.sync_api import expect

    with projector_page(chromium, lab, "projector-status.ipynb", KEYBOARD_CELL) as page:
        panel = page.locator(".nora-panel")
        status, note = panel.locator(".nora-status"), panel.locator(".nora-file-note")
        for theme in ("JupyterLab Light", "JupyterLab Dark"):
            page.evaluate("(t) => window.jupyterapp.commands.execute('apputils:change-theme', {theme: t})", theme)
            page.wait_for_function("(t) => document.body.dataset.jpThemeName === t", arg=theme, timeout=20_000)
            page.wait_for_timeout(1000)  # the theme's stylesheet applies
            idle = page.evaluate(CONTROLS_JS)
            seen = {}
            type_and_send(page, "Tell it slowly")
            expect(status).to_contain_text("replying", timeout=10_000)
            seen["replying"] = page.evaluate(CONTROLS_JS)
            page.wait_for_function("() => document.querySelector('.nora-panel .nora-stop').disabled", timeout=30_000)
            expect(status).to_have_text("")
            # the reply's end gives the input the focus, then announces it: once announced, the focus
            # given to Undo stays (a focus that came after it sent Enter to the empty input instead)
            expect(panel.get_by_role("alert")).to_contain_text("Nora replied:", timeout=10_000)
            seen["replied"] = page.evaluate(CONTROLS_JS)
            panel.get_by_role("button", name="Undo", exact=True).focus()
            page.keyboard.press("Enter")
            expect(status).to_contain_text("took back your last message and its reply")
            seen["undone"] = page.evaluate(CONTROLS_JS)
            panel.get_by_role("button", name="Save", exact=True).focus()
            page.keyboard.press("Enter")
            expect(note).to_contain_text("saved 1 message")
            seen["saved"] = page.evaluate(CONTROLS_JS)
            page.screenshot(path=str(SCREENSHOTS / f"panel-projector-status-{theme.split()[-1].lower()}.png"))
            for when, found in seen.items():
                for control in ("amnesia", "clear", "views"):
                    assert abs(found[control] - idle[control]) < 0.5, (theme, when, control, idle, found)
            assert abs(idle["status_height"] - idle["line"]) < 1, idle  # one line's room, not more

            # a long line wraps inside the panel; Clear takes it away with the conversation it spoke of
            page.locator(PROMPT).focus()
            page.keyboard.press("Control+a")
            page.keyboard.type("and something else I typed")
            panel.get_by_role("button", name="Clear", exact=True).focus()
            page.keyboard.press("Enter")
            type_and_send(page, "My name is Ada, and I would like a book about the sea, please.")
            expect(panel.get_by_role("alert")).to_contain_text("Nora replied:", timeout=10_000)
            page.keyboard.type("Thanks")
            panel.get_by_role("button", name="Undo", exact=True).focus()
            page.keyboard.press("Enter")
            expect(status).to_contain_text("(the input keeps what you typed)")
            long = page.evaluate(CONTROLS_JS)
            assert long["status_height"] > 1.5 * long["line"] and long["status_right"] <= long["panel_right"], long
            panel.get_by_role("button", name="Clear", exact=True).focus()
            page.keyboard.press("Enter")
            expect(status).to_have_text("")
            page.locator(PROMPT).fill("")


TYPEAHEAD_CELL = """\
import time
from nora_widgets import ChatPanel, ScriptedClient

class Slow(ScriptedClient):  # a word every 0.25 s; the second call breaks off after four
    calls_made = 0
    def _create(self, **kwargs):
        stream = super()._create(**kwargs)
        self.calls_made += 1
        breaks = self.calls_made == 2
        def slowly():
            for n, piece in enumerate(stream):
                time.sleep(0.25)
                if breaks and n == 4:
                    raise ConnectionResetError("connection reset by peer")
                yield piece
        return slowly()

panel = ChatPanel(Slow([
    "One moment: yes, we have The Dispossessed and The Left Hand of Darkness, both in paperback.",
    "The Dispossessed is twelve euros and the other one is ten euros, both in stock today.",
    "Once upon a time there was a bookshop with every book in it, and a reader who wanted them all.",
]), views=("inspector",))
panel"""


def test_typing_the_next_message_while_a_reply_streams(lab, browser_page):
    """The input stays open while a reply streams (keys typed went nowhere): what is typed then
    survives the reply's end, a failure and Stop; Enter meanwhile sends nothing and says why; the
    focus stays in the input, and Stop is one Tab away.  Typed with no delay between keys."""
    from playwright.sync_api import expect

    page = browser_page
    panel, errors = opened(page, lab, "typeahead.ipynb", TYPEAHEAD_CELL)
    prompt = page.locator(PROMPT)
    # the light theme (the first test leaves the lab's settings in the dark one)
    page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})")
    page.wait_for_function("() => document.body.dataset.jpThemeName === 'JupyterLab Light'", timeout=20_000)

    # 1. the message leaves the input for the live area; the input stays open, with the focus
    prompt.focus()
    page.keyboard.type("Do you have Le Guin?")
    page.keyboard.press("Enter")
    page.wait_for_function(STOP_LIVE, timeout=10_000)
    assert prompt.is_enabled() and prompt.input_value() == "" and page.evaluate(IS_FOCUSED, PROMPT)
    # Stop, orange while the reply runs, reads in JupyterLab Light (white on ipywidgets' orange: 2.7:1)
    stop = page.evaluate(CONTRAST_JS, {"Stop": ".nora-panel button.nora-stop"})
    assert stop["Stop"] >= 4.5, stop
    page.keyboard.type("How much is the first one?")
    # 2. Enter while the reply streams: nothing is sent, the status line says why
    page.keyboard.press("Enter")
    expect(page.locator(".nora-panel [role=status]").first).to_contain_text("still replying", timeout=5_000)
    assert page.evaluate(STOP_LIVE), "the reply was over before Enter: make it slower"
    # 3. the reply ends: the typed text is still there, the focus too, and only one turn was sent
    expect(panel.get_by_role("alert")).to_contain_text("Nora replied: One moment", timeout=20_000)
    assert prompt.input_value() == "How much is the first one?" and rows_in_next_list(page) == 3
    page.wait_for_function(IS_FOCUSED, arg=PROMPT, timeout=10_000)

    # 4. sent; this call breaks off mid-reply while the next message is being typed: the typed
    # text stays, the failed message is kept aside (the error line says so), Undo puts it back
    page.keyboard.press("Enter")
    page.wait_for_function(STOP_LIVE, timeout=10_000)
    assert prompt.input_value() == ""
    page.keyboard.type("Thanks")
    expect(panel.get_by_role("alert")).to_contain_text("is kept aside, so what you typed stays", timeout=20_000)
    assert prompt.input_value() == "Thanks" and rows_in_next_list(page) == 3
    panel.get_by_role("button", name="Undo").click()
    page.wait_for_function("(v) => document.querySelector('.nora-panel .nora-prompt input').value === v",
                           arg="How much is the first one? Thanks", timeout=10_000)
    page.wait_for_function(IS_FOCUSED, arg=PROMPT, timeout=10_000)

    # 5. typed over the message put back, Enter at once: the whole new text is sent (in one CI run no
    # turn started: every key had reached the kernel before the Enter); Stop (one Tab from the input)
    # while the next one is being typed
    prompt.select_text()
    page.keyboard.type("Tell me a story")
    page.keyboard.press("Enter")
    page.wait_for_function(STOP_LIVE, timeout=10_000)
    page.keyboard.type("A short one")
    page.keyboard.press("Tab")
    assert focused(page)["name"] == "Stop"
    page.keyboard.press("Space")
    expect(panel.get_by_role("alert")).to_contain_text(
        "Stopped: the turn was rolled back. Your message \u201cTell me a story\u201d is kept aside", timeout=10_000)
    page.wait_for_function(IS_FOCUSED, arg=PROMPT, timeout=10_000)
    assert prompt.input_value() == "A short one" and rows_in_next_list(page) == 3
    assert errors == [], errors


SLOW_EMPTYING_CELL = """\
import time
import nora_widgets
import nora_widgets._panel_input as panel_input
from nora_widgets import ChatPanel, ScriptedClient
emptying = panel_input.PanelInput.turn_starts

def slow_emptying(self, text):  # the emptied input reaches the page half a second after the Enter,
    time.sleep(0.5)             # as over a slow connection: every key typed meanwhile gets there first
    emptying(self, text)

panel_input.PanelInput.turn_starts = slow_emptying
panel = ChatPanel(ScriptedClient(["Hi!", "Hi again!", "Once upon a time."]), views=())
print(nora_widgets.__file__)
panel"""


def test_keys_typed_right_after_enter_on_a_message_put_back(lab, browser_page):
    """Undo puts the message back and Enter sends it at once; "Tell" typed right after the Enter, before
    the page hears that the input was emptied, stays there, without the message in front of it (with
    ipywidgets' stock Text the page's copy of "HelloTell" came back, and the next Enter sent "Hello" twice)."""
    from playwright.sync_api import expect

    page = browser_page
    panel, errors = opened(page, lab, "after_enter.ipynb", SLOW_EMPTYING_CELL)
    prompt = page.locator(PROMPT)
    source = page.locator(".jp-OutputArea-output").filter(has_text="nora_widgets").first.inner_text()
    assert source.strip().startswith(str(CHECKOUT)), source  # the kernel runs this checkout's code
    prompt.focus()
    page.keyboard.type("Hello")
    page.keyboard.press("Enter")
    expect(panel.get_by_role("alert")).to_contain_text("Nora replied: Hi!", timeout=20_000)
    panel.get_by_role("button", name="Undo").click()
    page.wait_for_function("(v) => document.querySelector('.nora-panel .nora-prompt input').value === v",
                           arg="Hello", timeout=10_000)
    page.wait_for_function(IS_FOCUSED, arg=PROMPT, timeout=10_000)
    page.keyboard.press("Enter")
    page.keyboard.type("Tell")  # no delay: all of it before the input's emptying reaches the page
    expect(panel.get_by_role("alert")).to_contain_text("Nora replied: Hi again!", timeout=20_000)
    expect(prompt).to_have_value("Tell", timeout=10_000)  # it was "HelloTell"
    page.keyboard.type(" me a story")
    page.keyboard.press("Enter")
    expect(panel.get_by_role("alert")).to_contain_text("Nora replied: Once upon a time.", timeout=20_000)
    said = [m.inner_text() for m in panel.locator(".nora-transcript .nora-msg-user .nora-content").all()]
    assert said == ["Hello", "Tell me a story"], said
    assert prompt.input_value() == "" and errors == [], errors


NARROW_CELL = """\
from nora_widgets import ChatPanel, ScriptedClient
panel = ChatPanel(ScriptedClient(["Hello Ada! " * 12]), views=("inspector", "cost"))
panel"""


def test_in_a_narrow_area_send_and_stop_stay_on_the_panel(lab, chromium):
    """An 800 px wide window at 200% zoom (400 CSS pixels; a side area or half a projector screen
    is as narrow): the panel is under 320 px wide.  The chat column kept its least width of 320 px,
    so the Send button was cut to its icon and Stop lay past the panel's edge, out of reach of the
    mouse, with the end of every line of the transcript.  The column takes the width there is, the
    input gives way and the buttons keep their words."""
    context = chromium.new_context(viewport={"width": 400, "height": 700}, device_scale_factor=2)
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        open_panel(page, lab, "narrow.ipynb", NARROW_CELL)
        page.evaluate("() => window.jupyterapp.commands.execute('application:toggle-left-area')")
        prompt = page.locator(PROMPT)
        prompt.focus()
        page.keyboard.type("My name is Ada.")
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.querySelectorAll('.nora-panel .nora-next-send tr.nora-row').length === 3",
                               timeout=20_000)
        found = page.evaluate("""() => {
            const panel = document.querySelector('.nora-panel');
            const right = panel.getBoundingClientRect().right;
            const out = {panel: panel.getBoundingClientRect().width};
            for (const [name, sel] of [['input', '.nora-prompt input'], ['send', 'button.nora-send'],
                                       ['stop', 'button.nora-stop'], ['transcript', '.nora-transcript']]) {
                const el = panel.querySelector(sel);
                out[name] = {past_edge: Math.round(el.getBoundingClientRect().right - right),
                             cut: el.scrollWidth > el.clientWidth + 1, width: el.getBoundingClientRect().width};
            }
            return out;
        }""")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "panel-narrow.png"))
        assert found["panel"] < 320, found  # the case this test is about
        for name in ("input", "send", "stop", "transcript"):
            assert found[name]["past_edge"] <= 0, found
        assert not found["send"]["cut"] and not found["stop"]["cut"], found  # "Send", "Stop", not an icon and "..."
        assert found["input"]["width"] >= 60, found  # still a box to type in
    finally:
        context.close()


NEXT_CELL = """\
from nora_widgets import ChatPanel, ScriptedClient
panel = ChatPanel(ScriptedClient(["Hi!", "Hi again!"]), views=())
panel"""


def test_keys_typed_right_after_enter_are_the_next_message(lab, browser_page):
    """"Hello", Enter, and "next" typed at once (no wait for the kernel): "Hello" is sent, and after the
    reply the box holds "next".  With ipywidgets' stock Text the kernel's emptying of the box reached the
    page after the keys and wiped them."""
    from playwright.sync_api import expect

    page = browser_page
    panel, errors = opened(page, lab, "next.ipynb", NEXT_CELL)
    prompt = type_and_send(page, "Hello")
    page.keyboard.type("next")  # no delay: before the kernel has heard of the Enter
    expect(panel.get_by_role("alert")).to_contain_text("Nora replied: Hi!", timeout=20_000)
    page.wait_for_timeout(500)  # anything the kernel still sends the box has arrived
    assert prompt.input_value() == "next"
    said = [m.inner_text() for m in panel.locator(".nora-transcript .nora-msg-user .nora-content").all()]
    assert said == ["Hello"], said
    page.keyboard.press("Enter")  # the kernel had every key of it: "next" is the next message, whole
    expect(panel.get_by_role("alert")).to_contain_text("Nora replied: Hi again!", timeout=20_000)
    said = [m.inner_text() for m in panel.locator(".nora-transcript .nora-msg-user .nora-content").all()]
    assert said == ["Hello", "next"], said
    assert prompt.input_value() == "" and errors == [], errors


ESCAPE_CELL = """\
import time
from nora_widgets import ChatPanel
from nora_widgets.clients import make_chunk

class Slow:  # one word every 0.2 s: a reply that runs for a while
    default_model = "slow"

    def __init__(self):
        self.chat = self
        self.completions = self

    def create(self, **kwargs):
        def slowly():
            for i in range(100):
                time.sleep(0.2)
                yield make_chunk("s", 0, "slow", content=f"word{i} ")
        return slowly()

panel = ChatPanel(Slow(), views=())
panel"""


def test_escape_stops_a_reply(lab, browser_page):
    """Escape in the input while a reply streams: the turn is rolled back (the history as it was) and the
    message is back in the input."""
    from playwright.sync_api import expect

    page = browser_page
    panel, errors = opened(page, lab, "escape.ipynb", ESCAPE_CELL)
    prompt = type_and_send(page, "Tell me a long story")
    page.wait_for_function(STOP_LIVE, timeout=10_000)
    expect(panel).to_contain_text("word1", timeout=10_000)  # the reply is streaming
    page.keyboard.press("Escape")
    expect(panel.get_by_role("alert")).to_contain_text(
        "Stopped: the turn was rolled back; your message is back in the input.", timeout=10_000)
    expect(prompt).to_have_value("Tell me a long story", timeout=10_000)
    assert not page.evaluate(STOP_LIVE) and page.evaluate(IS_FOCUSED, PROMPT)
    assert panel.locator(".nora-transcript .nora-msg-user").count() == 0  # the history as it was
    # the inspector is hidden here (views=()), and a hidden view draws nothing: opened, it shows the list
    # the next call sends, the persona alone
    panel.get_by_role("button", name="Inspector").click()
    expect(page.locator(".nora-panel .nora-next-send tr.nora-row")).to_have_count(1, timeout=10_000)
    assert rows_in_next_list(page) == 1 and errors == [], errors


MULTILINE_CELL = """\
from nora_widgets import ChatPanel, ScriptedClient
panel = ChatPanel(ScriptedClient(["Two lines, thanks."]), multiline=True)
panel"""


def test_in_a_text_area_enter_is_a_new_line_and_ctrl_enter_sends(lab, browser_page):
    from playwright.sync_api import expect

    page = browser_page
    panel, errors = opened(page, lab, "multiline.ipynb", MULTILINE_CELL, wait_for=".nora-panel .nora-prompt textarea")
    box = page.locator(".nora-panel .nora-prompt textarea")
    expect(panel.get_by_role("textbox", name="your message", exact=True)).to_have_count(1)
    box.focus()
    page.keyboard.type("Line one")
    page.keyboard.press("Enter")  # a new line, nothing sent
    page.keyboard.type("line two")
    page.wait_for_timeout(300)
    assert box.input_value() == "Line one\nline two" and not page.evaluate(STOP_LIVE)
    assert panel.locator(".nora-transcript .nora-msg-user").count() == 0
    page.keyboard.press("Control+Enter")
    expect(panel.get_by_role("alert")).to_contain_text("Nora replied: Two lines, thanks.", timeout=20_000)
    said = [m.inner_text() for m in panel.locator(".nora-transcript .nora-msg-user .nora-content").all()]
    assert said == ["Line one\nline two"], said
    assert box.input_value() == "" and errors == [], errors


TEMPERATURE_CELL = """\
from nora_widgets import ChatPanel, ScriptedClient
panel = ChatPanel(ScriptedClient(), temperature=0.7, views=("gauge",))
values = []  # every value the kernel hears, in order
panel.temperature.observe(lambda change: values.append(change["new"]), names="value")
panel"""

# Run code in the notebook's kernel and return what it printed (how the test reads the kernel's state)
KERNEL_JS = """async (code) => {
    const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
    let out = '';
    const future = kernel.requestExecute({code, store_history: false});
    future.onIOPub = (msg) => { if (msg.header.msg_type === 'stream') out += msg.content.text; };
    await future.done;
    return out.trim();
}"""


def kernel_says(page, code: str, expected: str, timeout: float = 10.0) -> str:
    """What `code` prints in the kernel, asked again until it is `expected` (a value the page set
    reaches the kernel a round trip later) or the time is up."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        said = page.evaluate(KERNEL_JS, code)
        if said == expected or time.monotonic() > deadline:
            return said
        page.wait_for_timeout(200)


def test_a_turns_focus_request_leaves_the_focus_where_a_key_has_taken_it(lab, browser_page):
    """At a turn's start the kernel asks the page to focus the input only if the focus was lost (a click on
    Send, which is then disabled). Under load the request came after Stop was live and a Tab had reached
    it, and pulled the focus back to the input ('your message' == 'Stop' in the keyboard test, once)."""
    page = browser_page
    panel, errors = opened(page, lab, "focus.ipynb", KEYBOARD_CELL)
    clear = panel.get_by_role("button", name="Clear")
    clear.focus()
    assert kernel_says(page, "panel.prompt.focus_if_lost(); print('asked')", "asked") == "asked"
    assert kernel_says(page, "print('round trip')", "round trip") == "round trip"  # the request has arrived
    page.wait_for_timeout(500)
    assert page.evaluate("() => document.activeElement.textContent.trim()") == "Clear"  # left where it was
    page.evaluate("() => document.activeElement.blur()")  # lost: the body has it
    assert kernel_says(page, "panel.prompt.focus_if_lost(); print('asked')", "asked") == "asked"
    page.wait_for_function(IS_FOCUSED, arg=PROMPT, timeout=10_000)
    clear.focus()
    assert kernel_says(page, "panel.prompt.focus(); print('asked')", "asked") == "asked"  # a reply's end: moves it
    page.wait_for_function(IS_FOCUSED, arg=PROMPT, timeout=10_000)
    assert errors == [], errors


def test_the_temperature_slider_has_a_name_and_keys_set_the_kernels_value(lab, browser_page):
    """The temperature control is found by its name, as a screen reader finds it (FloatSlider's handle had
    none); ArrowRight and End set panel.temperature.value in the kernel, one value per key; a drag sends one
    value when the handle is let go (the views recount once); a value set from code shows in the page."""
    from playwright.sync_api import expect

    page = browser_page
    panel, errors = opened(page, lab, "temperature.ipynb", TEMPERATURE_CELL)
    slider = panel.get_by_role("slider", name="temperature", exact=True)
    expect(slider).to_have_count(1)
    readout = panel.locator(".nora-range-readout")
    expect(slider).to_have_attribute("aria-valuetext", "0.7")
    expect(readout).to_have_text("0.7")
    expect(panel.locator(".nora-range-label")).to_have_text("temperature")  # the name can be seen too

    # keys: as on any range input; each key is one value in the kernel
    slider.focus()
    page.keyboard.press("ArrowRight")
    assert kernel_says(page, "print(panel.temperature.value, values)", "0.8 [0.8]") == "0.8 [0.8]"
    expect(readout).to_have_text("0.8")
    expect(slider).to_have_attribute("aria-valuetext", "0.8")
    ring = page.evaluate(RING_JS)
    assert ring["width"] >= 2 and ring["style"] != "none", ring  # the panel's focus ring
    assert focused(page)["role"] == "slider" and focused(page)["name"] == "temperature"
    page.keyboard.press("End")
    assert kernel_says(page, "print(panel.temperature.value, values)", "2.0 [0.8, 2.0]") == "2.0 [0.8, 2.0]"
    expect(readout).to_have_text("2.0")
    # each key heard before the next (keys faster than the round trip reach the kernel merged, by
    # ipywidgets, into the last value: Home then PageUp at once came as 0.2 alone)
    for key, value in (("ArrowLeft", "1.9"), ("Home", "0.0"), ("PageUp", "0.2")):
        page.keyboard.press(key)
        assert kernel_says(page, "print(panel.temperature.value)", value) == value, key
    assert kernel_says(page, "print(values)", "[0.8, 2.0, 1.9, 0.0, 0.2]") == "[0.8, 2.0, 1.9, 0.0, 0.2]"
    assert page.evaluate(IS_FOCUSED, ".nora-panel .nora-range-input")  # the arrows moved no cell

    # a drag from one end to the middle: the readout follows, the kernel hears one value, on letting go
    box = slider.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + 2, y)
    page.mouse.down()
    for step in range(1, 11):
        page.mouse.move(box["x"] + 2 + step * (box["width"] / 2 - 2) / 10, y)
    page.wait_for_timeout(300)
    assert kernel_says(page, "print(len(values))", "5", timeout=0) == "5"  # nothing yet: still held
    dragged = readout.inner_text()
    assert 0.5 <= float(dragged) <= 1.5, dragged
    page.mouse.up()
    said = kernel_says(page, "print(panel.temperature.value, len(values))", f"{dragged} 6")
    assert said == f"{dragged} 6", said

    # from code: the page shows it
    page.evaluate(KERNEL_JS, "panel.temperature.value = 1.3")
    expect(readout).to_have_text("1.3")
    expect(slider).to_have_attribute("aria-valuetext", "1.3")
    assert slider.input_value() == "1.3" and errors == [], errors


BLOCKS_CELL = """\
from nora_widgets import ChatPanel, ScriptedClient
def chat(n):  # the persona, then questions and markdown replies, all different
    history = [{"role": "system", "content": "You are a helpful assistant."}]
    while len(history) < n:
        k = len(history)
        history.append({"role": "user", "content": f"question {k}?"} if k % 2 else
                       {"role": "assistant", "content": f"**reply {k}**"})
    return history
panel = ChatPanel(ScriptedClient(), history=chat(120), views=())
panel"""

# The transcript as the page shows it: its regions, its messages in order, the block <div>s and whether
# the newest message is in sight in the scrolling box
PAGE_TRANSCRIPT_JS = """() => {
    const t = document.querySelector('.nora-panel .nora-transcript');  // the first: the side-by-side view has one
    const msgs = [...t.querySelectorAll('.nora-msg')];
    const box = t.getBoundingClientRect(), last = msgs.length ? msgs[msgs.length - 1].getBoundingClientRect() : box;
    return {regions: document.querySelectorAll('.nora-panel [role=region][aria-label=conversation]').length,
            texts: msgs.map((m) => m.querySelector('.nora-content').innerText.trim()),
            // the blocks of messages: the last block is the turn in progress's, empty between turns
            blocks: t.firstElementChild.children.length - 1,
            live_empty: t.firstElementChild.lastElementChild.innerHTML === '',
            first_kept: t.firstElementChild.children[0].dataset.seen === 'yes',
            newest_in_sight: last.bottom <= box.bottom + 1 && last.top >= box.top - 1};
}"""


MESSAGES_ARE = "(n) => document.querySelector('.nora-panel .nora-transcript').querySelectorAll('.nora-msg').length === n"


def test_the_transcript_drawn_in_blocks_reads_as_one_conversation(lab, browser_page):
    """120 messages go to the page in 3 blocks (_transcript_box.py) and read as one list in one region
    named "conversation", scrolled to the newest message; a turn redraws the last block only (the first
    block's element is the same one); Undo, Clear and a history set from code show the history in order."""
    from playwright.sync_api import expect

    page = browser_page
    panel, errors = opened(page, lab, "blocks.ipynb", BLOCKS_CELL)
    expect(panel.get_by_role("region", name="conversation", exact=True)).to_have_count(1)
    page.wait_for_function(MESSAGES_ARE, arg=120, timeout=20_000)

    def shown() -> dict:
        return page.evaluate(PAGE_TRANSCRIPT_JS)

    def expected(n: int, extra: tuple = ()) -> list[str]:
        texts = ["You are a helpful assistant."] + [f"question {k}?" if k % 2 else f"reply {k}" for k in range(1, n)]
        return texts + list(extra)

    first = shown()
    assert first["texts"] == expected(120) and first["blocks"] == 3 and first["regions"] == 1, first
    assert first["live_empty"], first
    assert first["newest_in_sight"], first
    page.evaluate("() => { document.querySelector('.nora-panel .nora-transcript').firstElementChild"
                  ".children[0].dataset.seen = 'yes'; }")  # a mark that a redraw of the block would lose

    page.locator(PROMPT).focus()
    page.keyboard.type("one more?")
    page.keyboard.press("Enter")
    # 122 messages, the reply moved out of the turn in progress's block (which counts while it streams)
    page.wait_for_function(f"(n) => ({MESSAGES_ARE})(n) && ({PAGE_TRANSCRIPT_JS})().live_empty", arg=122,
                           timeout=20_000)
    after = shown()
    assert after["texts"][:120] == expected(120) and after["texts"][120] == "one more?", after["texts"][-3:]
    assert after["blocks"] == 3 and after["first_kept"] and after["newest_in_sight"] and after["live_empty"], after

    panel.locator("button", has_text="Undo").click()
    page.wait_for_function(MESSAGES_ARE, arg=120, timeout=20_000)
    assert shown()["texts"] == expected(120) and shown()["first_kept"]

    page.evaluate(KERNEL_JS, "panel.history[:] = chat(160); panel.refresh()")  # a fourth block, opened
    page.wait_for_function(MESSAGES_ARE, arg=160, timeout=20_000)
    grown = shown()
    assert grown["texts"] == expected(160) and grown["blocks"] == 4 and grown["newest_in_sight"], grown

    panel.locator("button", has_text="Clear").click()  # one block: the persona; the others leave the page
    page.wait_for_function(MESSAGES_ARE, arg=1, timeout=20_000)
    cleared = shown()
    assert cleared["texts"] == expected(1) and cleared["blocks"] == 1 and cleared["regions"] == 1, cleared
    assert errors == [], errors


COMPARE_BLOCKS_CELL = BLOCKS_CELL.replace("history=chat(120), views=())\npanel", """views=('compare',))
panel.side_by_side.value = True
panel.twin_history[:] = chat(25)  # the memory-less twin, 25 turns' worth of messages in
panel.refresh()
panel""")

# The side-by-side view's transcript as the page shows it (as PAGE_TRANSCRIPT_JS, for its own region)
PAGE_TWIN_JS = """() => {
    const named = '.nora-panel [role=region][aria-label="conversation without memory"]';
    const t = document.querySelector(named), blocks = t.firstElementChild.children;
    const msgs = [...t.querySelectorAll('.nora-msg')];
    const box = t.getBoundingClientRect(), last = msgs[msgs.length - 1].getBoundingClientRect();
    return {regions: document.querySelectorAll(named).length,
            texts: msgs.map((m) => m.querySelector('.nora-content').innerText.trim()),
            blocks: blocks.length, last_empty: blocks[blocks.length - 1].innerHTML === '',
            first_kept: blocks[0].dataset.seen === 'yes',
            newest_in_sight: last.bottom <= box.bottom + 1 && last.top >= box.top - 1};
}"""


def test_the_side_by_side_transcript_drawn_in_blocks_reads_as_one_conversation(lab, browser_page):
    """The memory-less twin's transcript goes to the page in blocks of 10 messages and a last one for the
    turn in progress (views.CompareView), and reads as one list in its own region, scrolled to the newest
    message; a turn keeps the first block's element and leaves the last block empty again."""
    page = browser_page
    panel, errors = opened(page, lab, "twin.ipynb", COMPARE_BLOCKS_CELL)
    twin_has = ("(n) => document.querySelector('.nora-panel [role=region][aria-label=\"conversation without memory\"]')"
                ".querySelectorAll('.nora-msg').length === n")
    page.wait_for_function(twin_has, arg=25, timeout=20_000)
    texts = ["You are a helpful assistant."] + [f"question {k}?" if k % 2 else f"reply {k}" for k in range(1, 25)]
    first = page.evaluate(PAGE_TWIN_JS)
    assert first["texts"] == texts and first["blocks"] == 4 and first["last_empty"] and first["regions"] == 1, first
    page.evaluate("() => { document.querySelector('.nora-panel [role=region][aria-label=\"conversation without "
                  "memory\"]').firstElementChild.children[0].dataset.seen = 'yes'; }")  # lost if redrawn
    type_and_send(page, "one more?")
    page.wait_for_function(twin_has, arg=27, timeout=20_000)
    page.wait_for_function(f"() => ({PAGE_TWIN_JS})().last_empty", timeout=20_000)  # the reply left it
    after = page.evaluate(PAGE_TWIN_JS)
    assert after["texts"][:26] == texts + ["one more?"] and after["texts"][26].startswith("[scripted reply"), after
    assert after["blocks"] == 4 and after["last_empty"] and after["first_kept"] and after["newest_in_sight"], after
    assert errors == [], errors


INSPECTOR_BLOCKS_CELL = BLOCKS_CELL.replace("history=chat(120), views=()", "history=chat(300), views=('inspector', 'wire')")

# The "next call" table as the page shows it: one table, its caption and header row, its <tbody> blocks,
# its rows' numbers, and where each column starts and how wide it is, row by row
PAGE_TABLE_JS = """() => {
    const box = document.querySelector('.nora-panel .nora-next-send');
    const tables = box.querySelectorAll('table');
    const t = tables[0];
    const rows = [...t.querySelectorAll('tbody tr.nora-row')];
    const columns = rows.map((r) => [...r.children].map((c) => {
        const b = c.getBoundingClientRect(); return [Math.round(b.left), Math.round(b.width)]; }));
    return {tables: tables.length, captions: t.querySelectorAll('caption').length, caption: t.caption.innerText,
            heads: t.querySelectorAll('thead tr').length, bodies: t.tBodies.length,
            numbers: rows.map((r) => Number(r.children[0].innerText)),
            new_rows: t.querySelectorAll('tr.nora-row-new').length,
            aligned: columns.every((c) => JSON.stringify(c) === JSON.stringify(columns[0])),
            first_kept: t.tBodies[0].dataset.seen === 'yes', scrolls: box.scrollHeight > box.clientHeight,
            height: box.getBoundingClientRect().height,
            wire: document.querySelector('.nora-panel .nora-wire pre:last-of-type').innerText};
}"""


def test_the_inspector_drawn_in_blocks_is_one_table_whose_columns_line_up(lab, browser_page):
    """300 messages: the "next call" table goes to the page in <tbody> blocks of 10 rows (_blocks.py) and
    reads as one table, named by its caption, with one header row, its columns lined up from the first row
    to the last, scrolling in its box; a turn keeps the blocks that did not change (the persona's <tbody>
    is the same element) and the new pair is highlighted.  The wire view's JSON, in blocks of lines, reads
    as one text with the new question at its end."""
    from playwright.sync_api import expect

    page = browser_page
    panel, errors = opened(page, lab, "inspector-blocks.ipynb", INSPECTOR_BLOCKS_CELL)
    type_and_send(page, "one more?")
    expect(panel.get_by_role("alert")).to_contain_text("Nora replied", timeout=20_000)
    page.wait_for_function("() => document.querySelector('.nora-panel .nora-next-send caption')"
                           ".innerText.includes('302 messages')", timeout=20_000)
    first = page.evaluate(PAGE_TABLE_JS)
    assert (first["tables"], first["captions"], first["heads"]) == (1, 1, 1), first
    assert first["numbers"] == [0, *range(103, 302)] and first["bodies"] == 22 and first["new_rows"] == 2, first
    assert first["aligned"] and first["scrolls"] and first["height"] <= 361, first
    expect(panel.get_by_role("table", name=first["caption"])).to_have_count(1)  # named by its caption
    page.evaluate("() => { document.querySelector('.nora-panel .nora-next-send tbody').dataset.seen = 'yes'; }")

    type_and_send(page, "and the last?")
    page.wait_for_function("() => document.querySelector('.nora-panel .nora-next-send caption')"
                           ".innerText.includes('304 messages')", timeout=20_000)
    page.wait_for_function("() => document.querySelector('.nora-panel .nora-wire pre:last-of-type')"
                           ".innerText.includes('and the last?')", timeout=20_000)
    after = page.evaluate(PAGE_TABLE_JS)
    assert after["numbers"] == [0, *range(105, 304)] and after["new_rows"] == 2, after
    assert after["first_kept"] and after["aligned"] and after["tables"] == 1, after
    wire = json.loads(after["wire"])  # the blocks of lines, read as the one text they are
    assert wire["messages"][-1] == {"role": "user", "content": "and the last?"} and len(wire["messages"]) == 303
    assert errors == [], errors


SCROLLERS_CELL = BLOCKS_CELL.replace("history=chat(120), views=()", "history=chat(300), views=('inspector', 'wire')")
# the focused element: its role and name as the page gives them, whether it scrolls and how far
SCROLL_JS = """() => {
    const el = document.activeElement;
    return {role: el.getAttribute('role'), name: el.getAttribute('aria-label'), top: el.scrollTop,
            scrolls: el.scrollHeight > el.clientHeight, in_panel: !!el.closest('.nora-panel')};
}"""


def test_the_scrolling_boxes_tab_stops_on_are_named_regions_the_arrows_scroll(lab, browser_page):
    """A chat of 300 messages: Chromium's Tab stops on the inspector's two tables and the wire view's
    JSON, boxes that scroll; a screen reader heard no name there (the focused div has no role), and
    ArrowDown scrolled nothing: JupyterLab took it and the focus went to the notebook's footer.  Each is
    a named region now, and the arrows, Page Down and End scroll it, the focus staying on it."""
    from playwright.sync_api import expect

    page = browser_page
    panel, errors = opened(page, lab, "scrollers.ipynb", SCROLLERS_CELL)
    type_and_send(page, "one more?")  # the wire view shows a request
    expect(panel.get_by_role("alert")).to_contain_text("Nora replied:", timeout=20_000)
    for name in ("last call sent", "next call will send", "the last request"):
        expect(panel.get_by_role("region", name=name, exact=True)).to_have_count(1)
    page.locator(PROMPT).focus()
    stops = []
    for _ in range(30):
        page.keyboard.press("Tab")
        found = page.evaluate(SCROLL_JS)
        if not found["in_panel"]:
            break
        if found["scrolls"]:
            stops.append(found)
    assert [(s["role"], s["name"]) for s in stops] == [
        ("region", "last call sent"), ("region", "next call will send"), ("region", "the last request")], stops
    for name in ("last call sent", "next call will send", "the last request"):
        region = panel.get_by_role("region", name=name, exact=True)
        region.focus()
        assert region.aria_snapshot().splitlines()[0].startswith(f'- region "{name}"')
        for key in ("ArrowDown", "PageDown", "End"):
            before = page.evaluate(SCROLL_JS)
            page.keyboard.press(key)
            page.wait_for_function("(top) => document.activeElement.scrollTop > top", arg=before["top"],
                                   timeout=5_000)
            after = page.evaluate(SCROLL_JS)
            assert after["name"] == name and after["top"] > before["top"], (key, before, after)
        page.keyboard.press("Home")
        page.wait_for_function("() => document.activeElement.scrollTop === 0", timeout=5_000)
    assert errors == [], errors


# the input row and what is around it, in CSS pixels from the chat box's bottom (the page may scroll)
SHIFT_JS = """() => {
    const panel = document.querySelector('.nora-panel');
    const base = panel.querySelector('.nora-chat-box').getBoundingClientRect().bottom;
    const at = (sel) => panel.querySelector(sel).getBoundingClientRect().top - base;
    const clear = [...panel.querySelectorAll('button')].find(b => b.innerText.trim() === 'Clear');
    return {prompt: at('.nora-prompt'), stop: at('.nora-stop'), clear: clear.getBoundingClientRect().top - base};
}"""


def test_on_a_projector_the_error_line_moves_nothing(lab, chromium):
    """1280x720 at 150% zoom (853x480 CSS pixels): the red error line sat above the input, so when it
    came (Stop, a failure, a refused message) the input row and Stop went 18 px down (27 screen pixels).
    It sits under the input now, in the status line's room: nothing moves, as it comes or goes, and it is
    still an alert."""
    from playwright.sync_api import expect

    with projector_page(chromium, lab, "projector-error.ipynb", KEYBOARD_CELL) as page:
        panel = page.locator(".nora-panel")
        idle = page.evaluate(SHIFT_JS)
        type_and_send(page, "Tell it slowly")
        page.wait_for_function(STOP_LIVE, timeout=10_000)
        page.keyboard.press("Escape")
        expect(panel.get_by_role("alert")).to_contain_text("\u26a0 Stopped: the turn was rolled back", timeout=10_000)
        stopped = page.evaluate(SHIFT_JS)
        page.screenshot(path=str(SCREENSHOTS / "panel-projector-error.png"))
        under = page.evaluate("""() => {
            const panel = document.querySelector('.nora-panel');
            return panel.querySelector('.nora-error').getBoundingClientRect().top
                   >= panel.querySelector('.nora-prompt').getBoundingClientRect().bottom;
        }""")
        page.keyboard.press("Enter")  # sent again: "replying…", then the error line goes
        page.wait_for_function(STOP_LIVE, timeout=10_000)
        replying = page.evaluate(SHIFT_JS)
        expect(panel.locator(".nora-error")).to_have_count(0, timeout=20_000)
        for when, found in (("stopped", stopped), ("replying", replying), ("replied", page.evaluate(SHIFT_JS))):
            for part in ("prompt", "stop", "clear"):
                assert abs(found[part] - idle[part]) < 0.5, (when, part, idle, found)
        assert under


# the persona box: its height, how much of its text it shows, the gap to the Clear row under it (CSS pixels)
PERSONA_JS = """() => {
    const box = document.querySelector('.nora-panel .nora-persona textarea');
    return {value: box.value, client: box.clientHeight, scroll: box.scrollHeight,
            height: box.getBoundingClientRect().height,
            below: [...document.querySelectorAll('.nora-panel button')].find(b => b.innerText.trim() === 'Clear')
                       .getBoundingClientRect().top - box.getBoundingClientRect().bottom};
}"""


def test_the_persona_box_shows_the_whole_persona(lab, chromium):
    """Two rows high, the persona box showed the default persona's third line cut in half at 1280x720
    (and 1920x1080 with the file browser open), the rest scrolled inside the box.  It is as tall as its
    text now, 3 lines at least and 8 at most: the whole default persona shows at common widths and on a
    1280x720 projector at 150% (853x480 CSS pixels, 4 lines there) in both themes; a short persona keeps
    the 3-line box; a long one stops growing at 8 lines and scrolls, and the Clear row stays under it."""
    from nora_widgets import SYSTEM_PROMPT

    context = chromium.new_context(viewport={"width": 1280, "height": 720})
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:  # JupyterLab as it opens: the file browser at the left
        open_panel(page, lab, "persona.ipynb", PROJECTOR_CELL)
        for width, height in ((1280, 720), (1920, 1080), (1366, 768)):
            page.set_viewport_size({"width": width, "height": height})
            page.wait_for_timeout(300)
            found = page.evaluate(PERSONA_JS)
            assert found["value"] == SYSTEM_PROMPT and found["scroll"] <= found["client"], (width, found)
    finally:
        context.close()
    with projector_page(chromium, lab, "projector-persona.ipynb", PROJECTOR_CELL) as page:
        box = page.locator(".nora-panel .nora-persona textarea")
        box.scroll_into_view_if_needed()
        for theme in ("JupyterLab Light", "JupyterLab Dark"):
            page.evaluate("(t) => window.jupyterapp.commands.execute('apputils:change-theme', {theme: t})", theme)
            page.wait_for_function("(t) => document.body.dataset.jpThemeName === t", arg=theme, timeout=20_000)
            page.wait_for_timeout(1000)  # the theme's stylesheet applies
            default = page.evaluate(PERSONA_JS)
            assert default["value"] == SYSTEM_PROMPT and default["scroll"] <= default["client"], (theme, default)
        page.locator(".nora-panel").screenshot(path=str(SCREENSHOTS / "panel-persona-projector-dark.png"))
        sizes = {}
        for name, text in (("short", "You are a pirate."), ("long", SYSTEM_PROMPT + " Mention one book." * 30)):
            box.fill(text)
            page.keyboard.press("Tab")  # the new persona goes to the kernel: the inspector's row 0 shows it
            page.locator(".nora-panel .nora-next-send tr.nora-row", has_text=text[-40:]).wait_for(timeout=10_000)
            sizes[name] = page.evaluate(PERSONA_JS)
        short, long = sizes["short"], sizes["long"]
        assert short["scroll"] <= short["client"], short
        # padding 4 px above and below: 3 lines for the short one, 8 for the long one, which scrolls
        line = (short["client"] - 8) / 3
        assert 12 <= line <= 24 and abs(long["client"] - 8 - 8 * line) <= 1 and long["scroll"] > long["client"], sizes
        assert all(0 <= found["below"] < 10 for found in (default, short, long)), (default, sizes)  # not over Clear
        page.locator(".nora-panel").screenshot(path=str(SCREENSHOTS / "panel-persona-long.png"))


TRANSCRIPT_FOCUS_CELL = slow_chat_cell(
    100, 0.04, '"A reply that streams in slowly, word by word, so the class can watch it. " * 12', "()")

# the focused element (its role and name, whether it is in the chat box) and the transcript's scroll
TRANSCRIPT_JS = """() => {
    const el = document.activeElement, t = document.querySelector('.nora-panel .nora-transcript[role=region]');
    return {role: el.getAttribute('role'), name: el.getAttribute('aria-label'),
            in_chat_box: !!el.closest('.nora-chat-box'), is_transcript: el === t,
            top: t.scrollTop, bottom: t.scrollHeight - t.clientHeight,
            stops: [...document.querySelectorAll('.nora-panel .nora-chat-box *')].filter(e => e.tabIndex >= 0).length,
            regions: document.querySelectorAll('.nora-panel [role=region][aria-label=conversation]').length};
}"""


def test_tab_reaches_the_transcript_whose_keys_scroll_it(lab, browser_page):
    """A chat of 200 messages scrolls in a box of at most 45% of the window.  Tab stopped there only
    where the browser makes a box that scrolls a stop of its own (Chromium 156 does, with tabIndex -1;
    a short chat, or a browser without that rule, had none), and while a reply streamed the page held
    two regions named "conversation".  Now: Shift+Tab from the input reaches it, one stop (tabindex 0)
    named "conversation" (the reply streaming in the same box is no stop and no second region), ArrowUp,
    PageUp and Home scroll it back with the focus staying there, and while a reply streams the input
    keeps the focus."""
    from playwright.sync_api import expect

    page = browser_page
    panel, errors = opened(page, lab, "transcript-focus.ipynb", TRANSCRIPT_FOCUS_CELL)
    expect(panel.get_by_role("region", name="conversation", exact=True)).to_have_count(1)
    page.locator(PROMPT).focus()
    page.keyboard.press("Shift+Tab")
    at = page.evaluate(TRANSCRIPT_JS)
    assert at["is_transcript"] and (at["role"], at["name"]) == ("region", "conversation"), at
    assert focused(page)["role"] == "region" and focused(page)["width"] >= 2  # named, and its ring is seen
    assert at["stops"] == 1 and at["top"] == 0 and at["bottom"] > 1000, at  # newest at the bottom (column-reverse)
    # column-reverse: scrollTop is 0 at the newest message and goes negative towards the oldest
    for key in ("ArrowUp", "PageUp", "Home"):
        before = page.evaluate(TRANSCRIPT_JS)["top"]
        page.keyboard.press(key)
        page.wait_for_function("(top) => document.activeElement.scrollTop < top", arg=before, timeout=5_000)
        now = page.evaluate(TRANSCRIPT_JS)
        assert now["is_transcript"] and now["top"] < before, (key, before, now)
    # Home: the first message (the browser scrolls smoothly: wait for the end)
    page.wait_for_function("() => { const e = document.activeElement; "
                           "return -e.scrollTop >= e.scrollHeight - e.clientHeight - 1; }", timeout=5_000)
    assert page.evaluate(TRANSCRIPT_JS)["is_transcript"]
    page.keyboard.press("End")
    page.wait_for_function("() => document.activeElement.scrollTop === 0", timeout=5_000)
    page.keyboard.press("Tab")
    assert page.evaluate(IS_FOCUSED, PROMPT)

    # a reply streams: the input keeps the focus; the reply being written is no Tab stop and no second
    # region, even once it is taller than the box
    type_and_send(page, "Tell me a long story")
    page.wait_for_function(STOP_LIVE, timeout=10_000)
    page.wait_for_function("() => { const r = [...document.querySelectorAll('.nora-panel .nora-chat-box "
                           ".nora-msg-assistant')].pop(); return r && r.textContent.includes('\u258d') "
                           "&& r.getBoundingClientRect().height > 150; }", timeout=30_000)
    assert page.evaluate(IS_FOCUSED, PROMPT)
    while_streaming = page.evaluate(TRANSCRIPT_JS)
    # at this moment, not after a wait: the live part was a second region named "conversation"
    assert while_streaming["stops"] == 1 and while_streaming["regions"] == 1, while_streaming
    page.keyboard.press("Shift+Tab")
    assert page.evaluate(TRANSCRIPT_JS)["is_transcript"]  # not the live part under it
    page.keyboard.press("Shift+Tab")
    assert not page.evaluate(TRANSCRIPT_JS)["in_chat_box"]  # one stop for the box
    page.locator(PROMPT).focus()
    page.keyboard.type("next")
    for _ in range(5):  # the reply's pieces arrive; the focus and the typed text stay
        page.wait_for_timeout(300)
        assert page.evaluate(IS_FOCUSED, PROMPT)
    expect(panel.get_by_role("alert")).to_contain_text("Nora replied:", timeout=30_000)
    assert page.evaluate(IS_FOCUSED, PROMPT) and page.locator(PROMPT).input_value() == "next"
    expect(panel.get_by_role("region", name="conversation", exact=True)).to_have_count(1)

    # someone who went back to read while a reply streamed stays there when it ends: the input took the
    # focus back after every reply, and the reader was pulled out of the conversation
    page.locator(PROMPT).fill("")
    type_and_send(page, "And another one")
    page.wait_for_function(STOP_LIVE, timeout=10_000)
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("PageUp")
    assert page.evaluate(TRANSCRIPT_JS)["is_transcript"]
    page.wait_for_function(f"() => !({STOP_LIVE})()", timeout=30_000)  # the reply has ended
    page.wait_for_timeout(500)  # the kernel's focus request, had there been one, is drawn
    assert page.evaluate(TRANSCRIPT_JS)["is_transcript"]
    page.keyboard.press("Tab")
    assert page.evaluate(IS_FOCUSED, PROMPT)  # one Tab back to the input

    # the side-by-side view's transcript: a Tab stop of its own name
    panel.get_by_role("button", name="Side by side").click()
    twin = panel.get_by_role("region", name="conversation without memory", exact=True)
    expect(twin).to_have_count(1)
    assert twin.evaluate("(el) => el.tabIndex") == 0
    twin.focus()
    page.keyboard.press("ArrowUp")
    assert page.evaluate("() => document.activeElement.getAttribute('aria-label')") == "conversation without memory"
    assert errors == [], errors


READING_CELL = slow_chat_cell(
    100, 0.05, '"A long reply that streams in slowly, word by word, for the class to read as it comes. " * 30', "()")

# the reply being written (the last reply in the chat box): can its first line and its last line be seen
# (the element at that point of the screen is in it: not cut off by a scrolling box), and where the focus is
READING_JS = """() => {
    const box = document.querySelector('.nora-panel .nora-chat-box');
    const reply = [...box.querySelectorAll('.nora-msg-assistant')].pop();
    const r = reply.getBoundingClientRect();
    const seen = (y) => { const hit = document.elementFromPoint(r.left + 30, y); return !!hit && reply.contains(hit); };
    const el = document.activeElement;
    return {writing: reply.textContent.includes('\\u258d'), height: Math.round(r.height),
            first: seen(r.top + 8), last: seen(r.bottom - 8),
            in_conversation: el.getAttribute('role') === 'region' && el.getAttribute('aria-label') === 'conversation'};
}"""


def test_the_conversations_keys_reach_the_reply_being_written(lab, browser_page):
    """A long reply streams under a chat of 200 messages.  Someone reading it as it comes goes to the
    conversation (Shift+Tab from the input): its keys scrolled the messages above the reply only, and the
    reply scrolled in a box of its own (at most min(280px, 30vh)), kept at its newest line: its start,
    cut off at the top of that box, could not be reached from the keyboard.  The reply is in the
    conversation's scrolling region now: Page Up reaches its first line, End its newest, while it is still
    being written; the region is still the chat box's one region and Tab stop, and the input row does not move."""
    page = browser_page
    panel, errors = opened(page, lab, "reading.ipynb", READING_CELL)
    page.locator(".nora-panel .nora-chat-box").scroll_into_view_if_needed()
    row = page.evaluate(ROW_JS)
    type_and_send(page, "Tell me a long story")
    page.wait_for_function(STOP_LIVE, timeout=10_000)
    page.wait_for_function(f"() => ({READING_JS})().height > 500", timeout=30_000)  # taller than the box
    page.keyboard.press("Shift+Tab")
    at = page.evaluate(READING_JS)
    assert at["in_conversation"] and at["writing"] and at["last"] and not at["first"], at
    reached = []
    for _ in range(8):  # back up the conversation, a page at a time, to the reply's first line
        page.keyboard.press("PageUp")
        page.wait_for_timeout(400)  # the browser scrolls smoothly
        reached.append(page.evaluate(READING_JS))
        if reached[-1]["first"]:
            break
    assert reached[-1]["first"] and reached[-1]["writing"] and reached[-1]["in_conversation"], reached
    page.wait_for_timeout(1_000)  # more of the reply comes: what is being read stays in view
    assert page.evaluate(READING_JS)["first"]
    page.keyboard.press("End")  # the newest line of the reply, still being written, and it follows the reply
    page.wait_for_function(f"() => {{ const r = ({READING_JS})(); return r.last && r.writing; }}", timeout=5_000)
    grown = page.evaluate(READING_JS)["height"]
    page.wait_for_function(f"(h) => ({READING_JS})().height > h + 30", arg=grown, timeout=10_000)
    now = page.evaluate(READING_JS)
    assert now["last"] and now["in_conversation"], now  # End scrolled smoothly: it stopped 102 px short
    streaming = page.evaluate(TRANSCRIPT_JS)
    assert streaming["stops"] == 1 and streaming["regions"] == 1, streaming  # one region, one Tab stop
    assert page.evaluate(ROW_JS)["top"] == row["top"]  # the input row did not move
    page.wait_for_function(f"() => !({STOP_LIVE})()", timeout=60_000)  # the reply has ended
    assert page.evaluate(ROW_JS)["top"] == row["top"]
    assert errors == [], errors


EDIT_CELL = """\
from nora_widgets import ChatPanel, ScriptedClient
client = ScriptedClient()
panel = ChatPanel(client, views=("inspector",))
panel"""
EDITED = "Yes: we have three copies of Dune, at 12 euros each."


def test_edit_a_reply_with_the_keyboard_and_the_next_request_carries_it(lab, browser_page):
    """Rewrite the past from the keyboard: the number, Tab to Edit, Enter: the reply is in a box that has
    the focus; new text, Tab to Save edit, Enter: the transcript and the inspector's next-call table show it
    (marked new), the status line says so, the input has the focus; the next message's request, as the
    stand-in recorded it, carries the edited reply.  A number that names no message is one red line."""
    from playwright.sync_api import expect

    page = browser_page
    panel, errors = opened(page, lab, "edit.ipynb", EDIT_CELL)
    type_and_send(page, "Do you have Dune?")
    expect(panel.get_by_role("alert")).to_contain_text("Nora replied: [scripted reply 1]", timeout=20_000)
    number = panel.get_by_role("textbox", name="message", exact=True)
    number.focus()
    page.keyboard.type("9")
    page.keyboard.press("Tab")
    assert focused(page)["name"] == "Edit"
    page.keyboard.press("Enter")
    expect(panel.locator(".nora-error")).to_have_text(
        "\u26a0 edit: there is no message 9: the conversation has 3 messages, numbered 0 to 2; nothing was changed",
        timeout=10_000)
    number.focus()
    page.keyboard.press("Backspace")
    page.keyboard.type("2")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    box = ".nora-panel .nora-edit-text textarea"
    page.wait_for_function(IS_FOCUSED, arg=box, timeout=10_000)
    expect(page.locator(box)).to_have_value(re.compile(r"^\[scripted reply 1\]"))
    expect(panel.get_by_role("textbox", name="message 2", exact=True)).to_have_count(1)  # its name says which
    expect(panel.locator(".nora-error")).to_have_count(0)  # the refusal's line is gone
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type(EDITED)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    panel.screenshot(path=str(SCREENSHOTS / "panel-edit.png"))
    page.keyboard.press("Tab")
    assert focused(page)["name"] == "Save edit"
    page.keyboard.press("Enter")
    expect(panel.get_by_role("status").first).to_contain_text(
        "message 2 (assistant) now: \u201cYes: we have three copies of Dune, at 12 euros ea\u2026\u201d; the next call "
        "sends it", timeout=10_000)  # all of it reached the kernel: typed fast, its end had been left behind
    page.wait_for_function(IS_FOCUSED, arg=PROMPT, timeout=10_000)  # the next thing to do: send a message
    page.locator(box).wait_for(state="hidden")
    expect(panel.locator(".nora-transcript .nora-msg-assistant")).to_have_text(re.compile("three copies of Dune"))
    row = panel.locator(".nora-next-send tr.nora-row").nth(2)
    expect(row).to_contain_text(EDITED)
    expect(row).to_have_class(re.compile("nora-row-new"))
    expect(panel.locator(".nora-last-sent tr.nora-row")).to_have_count(2)  # the last call sent the old list
    type_and_send(page, "How much is one copy?")
    expect(panel.get_by_role("alert")).to_contain_text("Nora replied: [scripted reply 2]", timeout=20_000)
    sent = kernel_says(page, "print(client.calls[-1]['messages'][2]['content'])", EDITED)
    assert sent == EDITED, sent
    assert errors == [], errors


def test_the_edit_keys_enter_opens_escape_cancels_ctrl_enter_saves_all_that_was_typed(lab, browser_page):
    """Enter in the number box is Edit, Escape empties it (and closes an unchanged box); in the box, Escape is Cancel (nothing changes, the focus back on
    Edit) and Ctrl+Enter (Cmd+Enter on a Mac) is Save edit, with all of the text typed at full speed just
    before it: the key carries the text (the box's own value goes to the kernel only as the box is left).
    Edit on another number while the box holds changes not saved is one red line, and they stay."""
    from playwright.sync_api import expect

    page = browser_page
    panel, errors = opened(page, lab, "edit-keys.ipynb", EDIT_CELL)
    type_and_send(page, "Do you have Dune?")
    expect(panel.get_by_role("alert")).to_contain_text("Nora replied: [scripted reply 1]", timeout=20_000)
    number = panel.get_by_role("textbox", name="message", exact=True)
    box = ".nora-panel .nora-edit-text textarea"
    number.focus()
    page.keyboard.type("9")
    page.keyboard.press("Enter")
    expect(panel.locator(".nora-error")).to_contain_text("edit: there is no message 9", timeout=10_000)
    page.keyboard.press("Escape")  # empties the number box and its red line; JupyterLab does not hear it
    expect(number).to_have_value("", timeout=10_000)
    expect(panel.locator(".nora-error")).to_have_count(0, timeout=10_000)
    assert page.evaluate(IS_FOCUSED, ".nora-panel .nora-edit-number input")  # not the notebook's command mode
    page.keyboard.type("2")
    page.keyboard.press("Enter")
    page.wait_for_function(IS_FOCUSED, arg=box, timeout=10_000)
    expect(page.locator(box)).to_have_value(re.compile(r"^\[scripted reply 1\]"))
    number.focus()  # Escape there closes the box, unchanged
    page.keyboard.press("Escape")
    page.locator(box).wait_for(state="hidden", timeout=10_000)
    expect(number).to_have_value("")
    assert page.evaluate(IS_FOCUSED, ".nora-panel .nora-edit-number input")
    page.keyboard.type("2")
    page.keyboard.press("Enter")
    page.wait_for_function(IS_FOCUSED, arg=box, timeout=10_000)
    page.keyboard.type(" Not this.")
    page.keyboard.press("Escape")
    page.locator(box).wait_for(state="hidden", timeout=10_000)
    page.wait_for_function(IS_FOCUSED, arg=".nora-panel button.nora-edit", timeout=10_000)
    assert focused(page)["name"] == "Edit"
    number.focus()
    page.keyboard.press("Enter")  # the message as it is: what was typed before Escape is gone
    page.wait_for_function(IS_FOCUSED, arg=box, timeout=10_000)
    value = page.locator(box).input_value()  # written before the focus request came
    assert value.startswith("[scripted reply 1]") and "Not this." not in value, value
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type(EDITED)  # no pause, then the key: the text has not left the page yet
    page.keyboard.press("ControlOrMeta+Enter")
    expect(panel.get_by_role("status").first).to_contain_text(
        "message 2 (assistant) now: \u201cYes: we have three copies of Dune, at 12 euros ea\u2026\u201d",
        timeout=10_000)
    assert kernel_says(page, "print(panel.history[2]['content'])", EDITED) == EDITED  # whole
    page.wait_for_function(IS_FOCUSED, arg=PROMPT, timeout=10_000)
    page.locator(box).wait_for(state="hidden")
    expect(page.locator(".jp-Cell .jp-InputPrompt").first).to_have_text("[1]:")  # Ctrl+Enter did not run the cell
    # changes not saved stay: another number is refused, the same one goes back into the box
    number.focus()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type("1")
    page.keyboard.press("Enter")
    page.wait_for_function(IS_FOCUSED, arg=box, timeout=10_000)
    page.keyboard.type(" By Frank Herbert?")
    number.focus()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type("2")
    page.keyboard.press("Enter")
    expect(panel.locator(".nora-error")).to_have_text(
        "\u26a0 edit: the box holds changes to message 1 not saved: Save edit or Cancel them first; "
        "nothing was changed", timeout=10_000)
    expect(page.locator(box)).to_have_value("Do you have Dune? By Frank Herbert?")
    assert kernel_says(page, "print(panel.history[2]['content'])", EDITED) == EDITED
    assert errors == [], errors


# each view's input box: its text, and whether it has the focus
INPUTS_JS = ("() => [...document.querySelectorAll('.nora-panel .nora-prompt input')]"
             ".map(b => ({text: b.value, focused: b === document.activeElement}))")
BOTH_ROWS = "(n) => [...document.querySelectorAll('.nora-panel')].every(p => p.querySelectorAll('.nora-next-send tr.nora-row').length === n)"


def test_the_panel_shown_twice_is_one_conversation(lab, browser_page):
    """`panel` in a second cell draws a second view of the same widgets (so does a cell run again, or
    "Create New View for Cell Output").  A message sent from either view is sent once and shows in both;
    the input's text is the same in both; the focus stays in the view the person is using: after a reply
    it went to the last view drawn (each view took the kernel's focus request), so the next keys typed
    went into the other cell's panel; and typing in one view left the other's box with old text, which its
    Send would not send.  Once the second view's output is cleared, the first goes on alone."""
    from playwright.sync_api import expect

    page = browser_page
    panel, errors = opened(page, lab, "twice.ipynb", KEYBOARD_CELL, f"{PROMPT} >> nth=1", ["panel"])
    prompts = page.locator(PROMPT)
    expect(prompts).to_have_count(2, timeout=30_000)
    first, second = panel.nth(0), panel.nth(1)

    # 1. Enter in the first view: one turn, drawn in both views; the focus stays in the first
    prompts.nth(0).focus()
    page.keyboard.type("My name is Ada.")
    page.keyboard.press("Enter")
    page.wait_for_function(BOTH_ROWS, arg=3, timeout=20_000)
    for view in (first, second):
        expect(view.get_by_role("alert")).to_contain_text("Nora replied: [scripted reply 1]", timeout=20_000)
        expect(view.locator(".nora-transcript .nora-msg-user")).to_have_count(1)
    assert page.evaluate(INPUTS_JS) == [{"text": "", "focused": True}, {"text": "", "focused": False}]

    # 2. typed in the second view: the first shows it too, and its Send sends it, whole
    prompts.nth(1).focus()
    page.keyboard.type("Recommend a book.")
    page.wait_for_function("() => document.querySelector('.nora-panel .nora-prompt input').value === 'Recommend a book.'",
                           timeout=10_000)
    first.get_by_role("button", name="Send", exact=True).click()
    page.wait_for_function(BOTH_ROWS, arg=5, timeout=20_000)
    expect(first.get_by_role("alert")).to_contain_text("Nora replied: [scripted reply 2]", timeout=20_000)
    page.wait_for_function(IS_FOCUSED, arg=PROMPT, timeout=10_000)  # the first view's input: where Send was
    assert page.evaluate(INPUTS_JS) == [{"text": "", "focused": True}, {"text": "", "focused": False}]

    # 3. Enter in the second view: the focus stays there
    prompts.nth(1).focus()
    page.keyboard.type("Why that one?")
    page.keyboard.press("Enter")
    page.wait_for_function(BOTH_ROWS, arg=7, timeout=20_000)
    expect(second.get_by_role("alert")).to_contain_text("Nora replied: [scripted reply 3]", timeout=20_000)
    assert page.evaluate(INPUTS_JS) == [{"text": "", "focused": False}, {"text": "", "focused": True}]

    # 4. the second cell's output cleared: the first view goes on, and takes the focus back after a reply
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:clear-cell-output')")
    expect(prompts).to_have_count(1, timeout=10_000)
    type_and_send(page, "Thanks!")
    page.wait_for_function(BOTH_ROWS, arg=9, timeout=20_000)
    expect(first.get_by_role("alert")).to_contain_text("Nora replied: [scripted reply 4]", timeout=20_000)
    assert page.evaluate(INPUTS_JS) == [{"text": "", "focused": True}]
    sent = kernel_says(page, "print([m['content'] for m in panel.history if m['role'] == 'user'])", "")
    assert sent == "['My name is Ada.', 'Recommend a book.', 'Why that one?', 'Thanks!']", sent  # each once, whole
    assert errors == [], errors


SEND_RACE_CELL = """\
import time
import nora_widgets
import nora_widgets._prompt_box as prompt_box
from nora_widgets import ChatPanel, ScriptedClient
taking = prompt_box.PromptBox.set_state

def slow_taking(self, sync_data):  # each update of the input's text takes the kernel 0.3 s, as a busy
    time.sleep(0.3)                # kernel's: the keys typed meanwhile wait in the page, behind it
    taking(self, sync_data)

prompt_box.PromptBox.set_state = slow_taking
panel = ChatPanel(ScriptedClient([f"Reply {i}." for i in range(1, 4)]), views=())
print(nora_widgets.__file__)
panel"""


def test_send_clicked_right_after_typing_sends_every_key(lab, browser_page):
    """Keys typed with no delay and Send clicked at once, with the kernel slow to take each update of the
    input's text: the message sent is the whole text the box held at the click, three times over.  The
    page sends one update of a widget's state at a time and holds the next until the kernel has taken it,
    while the button's click went out at once, so the kernel sent the text as it was a few keys before
    ("H", with "ello from one" left in the box).  Enter never had this: it carries its text."""
    from playwright.sync_api import expect

    page = browser_page
    panel, errors = opened(page, lab, "send_race.ipynb", SEND_RACE_CELL)
    source = page.locator(".jp-OutputArea-output").filter(has_text="nora_widgets").first.inner_text()
    assert source.strip().startswith(str(CHECKOUT)), source  # the kernel runs this checkout's code
    prompt, send = page.locator(PROMPT), panel.get_by_role("button", name="Send", exact=True)
    messages = ["Hello from one", "Hello from two, a longer one", "Three"]
    for i, message in enumerate(messages, 1):
        prompt.focus()
        page.keyboard.type(message)  # no delay: every key but the first waits in the page for the kernel
        send.click()
        expect(panel.get_by_role("alert")).to_contain_text(f"Nora replied: Reply {i}.", timeout=20_000)
        expect(prompt).to_have_value("", timeout=10_000)  # nothing of it left behind
    said = [m.inner_text() for m in panel.locator(".nora-transcript .nora-msg-user .nora-content").all()]
    assert said == messages, said
    sent = kernel_says(page, "print([m['content'] for m in panel.history if m['role'] == 'user'])", str(messages))
    assert sent == str(messages), sent
    assert kernel_says(page, "print(repr(panel.prompt.value))", "''") == "''"  # the kernel's copy: empty too
    assert errors == [], errors
