"""The lessons as a learner meets them: JupyterLab at 1280x720, Run All, then look.

The lessons with rich output (the chat panel in 00 and 09, the token bars, tables and
charts of 06) are opened from a copy of notebooks/ and run with Run > Run All Cells.
Then the test checks what is on the screen: no cell shows a traceback or stderr, no
widget failed ("Error displaying widget", "Model not found"), every panel, table and
chart is drawn with a size, no output cuts its text off sideways, the links between
lessons lead to files that exist, and lesson 06's two charts give each way of sending
the same colour (the trimmed line was orange in one chart and blue, the colour of the
whole history, in the other).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
import urllib.parse
from pathlib import Path

import pytest

from .conftest import SCREENSHOTS
from .test_panel_browser import KERNEL_JS, wait_for_idle_kernel

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]
CHECKOUT = Path(__file__).resolve().parents[2]
FOLDER = "lessons"  # the copy of notebooks/ inside the lab's root

# lesson -> how many chat panels it shows, and whether it draws a chart (an image output)
LESSONS = {
    "00-start-here": {"panels": 1, "images": 0},
    "06-long-conversations": {"panels": 0, "images": 1},
    "09-the-chat-panel": {"panels": 2, "images": 0},
}

RUN_ALL_JS = "() => window.jupyterapp.commands.execute('notebook:run-all-cells')"
DONE_JS = ("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'"
           " && ![...window.jupyterapp.shell.currentWidget.content.node.querySelectorAll('.jp-InputPrompt')]"
           ".some(p => p.innerText.includes('*'))")

# What the learner sees, cell by cell (each scrolled into view: JupyterLab skips drawing cells off screen)
LOOK_JS = """async () => {
    const nb = window.jupyterapp.shell.currentWidget.content;
    const found = {errors: [], broken: [], unsized: [], clipped: [], panels: [], images: 0, links: []};
    for (const [i, cell] of nb.widgets.entries()) {
        if (cell.model.type === 'code') {
            for (const o of cell.model.outputs.toJSON()) {
                if (o.output_type === 'error') found.errors.push(`cell ${i}: ${o.ename}: ${o.evalue}`);
                if (o.output_type === 'stream' && o.name === 'stderr') found.errors.push(`cell ${i} stderr: ${o.text}`);
            }
        }
        cell.node.scrollIntoView();
        await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
        const text = cell.node.innerText;
        for (const words of ['Error displaying widget', 'Model not found', 'Traceback'])
            if (text.includes(words)) found.broken.push(`cell ${i}: ${words}`);
        for (const out of cell.node.querySelectorAll('.jp-OutputArea-output')) {
            for (const el of out.querySelectorAll(':scope > .nora-panel, img, table, svg')) {
                if (!el.checkVisibility()) continue;  // inside a view that is switched off
                const box = el.getBoundingClientRect();
                if (box.width < 1 || box.height < 1)
                    found.unsized.push(`cell ${i}: ${el.tagName}.${el.getAttribute('class')}`);
            }
            for (const el of [out, ...out.querySelectorAll('*')]) {
                const style = getComputedStyle(el);
                if (el.scrollWidth > el.clientWidth + 1 && ['hidden', 'clip'].includes(style.overflowX)
                        && el.innerText.trim())
                    found.clipped.push(`cell ${i}: ${el.tagName}.${el.getAttribute('class')}`
                                       + ` ${el.scrollWidth} > ${el.clientWidth}`);
            }
            found.images += out.querySelectorAll('img').length;
            for (const panel of out.querySelectorAll('.nora-panel')) {
                const box = panel.getBoundingClientRect();
                found.panels.push([Math.round(box.width), Math.round(box.height)]);
            }
        }
        for (const a of cell.node.querySelectorAll('.jp-MarkdownOutput a[href]'))
            found.links.push(a.getAttribute('href'));
    }
    return found;
}"""

# lesson 06's two charts: each line's colour, by the words its label starts with
COLOURS = """\
import json
from matplotlib.colors import to_hex
print(json.dumps([[l.get_label().split(' (')[0], to_hex(l.get_color())] for ax in fig.axes for l in ax.get_lines()]))"""


@pytest.fixture(scope="module")
def lessons(lab):
    shutil.copytree(CHECKOUT / "notebooks", lab.root / FOLDER, ignore=shutil.ignore_patterns("_build"),
                    dirs_exist_ok=True)
    return lab.root / FOLDER


def needs_model(path: Path) -> bool:
    return bool(json.loads(path.read_text(encoding="utf-8"))["metadata"].get("nora", {}).get("needs_model"))


@pytest.mark.parametrize("stem", list(LESSONS))
def test_a_lesson_run_all_in_jupyterlab_shows_no_error_and_draws_everything(lab, chromium, lessons, stem):
    if needs_model(lessons / f"{stem}.ipynb") and importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("the lesson runs the embedded model: pip install -e '.[local]' (llama-cpp-python)")
    context = chromium.new_context(viewport={"width": 1280, "height": 720})  # a laptop, a projector
    page = context.new_page()
    page.set_default_timeout(30_000)
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    try:
        page.goto(lab.url(f"{FOLDER}/{stem}.ipynb") + "&reset")
        wait_for_idle_kernel(page)
        started = time.monotonic()
        page.evaluate(RUN_ALL_JS)
        page.wait_for_function(DONE_JS, timeout=120_000)
        print(f"{stem}: Run All took {time.monotonic() - started:.1f} s")
        if LESSONS[stem]["panels"]:
            page.wait_for_function("(n) => window.jupyterapp.shell.currentWidget.node"
                                   ".querySelectorAll('.nora-panel .nora-prompt input').length === n",
                                   arg=LESSONS[stem]["panels"], timeout=30_000)
        found = page.evaluate(LOOK_JS)
        # the lesson's first panel or chart, to look at (a taller window: 09's panel is taller than 720 px)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.set_viewport_size({"width": 1280, "height": 1600})
        shown = page.locator(".jp-OutputArea-output > .nora-panel, .jp-OutputArea-output img").first
        shown.scroll_into_view_if_needed()
        shown.screenshot(path=str(SCREENSHOTS / f"lesson-{stem[:2]}.png"))

        assert found["errors"] == [] and found["broken"] == [], found
        assert found["unsized"] == [] and found["clipped"] == [], found
        assert found["images"] >= LESSONS[stem]["images"], found
        assert len(found["panels"]) == LESSONS[stem]["panels"], found
        assert all(width > 300 and height > 150 for width, height in found["panels"]), found
        # a link to another lesson (or to solutions/) opens a file that is there
        for href in found["links"]:
            path = urllib.parse.urlparse(href).path
            if "/files/" in path:
                target = lab.root / urllib.parse.unquote(path.split("/files/", 1)[1])
                assert target.exists(), (href, target)
        assert page_errors == [], page_errors

        if stem == "06-long-conversations":
            said = page.evaluate(KERNEL_JS, COLOURS)
            lines = json.loads(said)
            colours: dict[str, set[str]] = {}
            for label, colour in lines:
                colours.setdefault(label, set()).add(colour)
            assert colours["whole history"] != colours["last 3 turns only"], lines
            assert all(len(seen) == 1 for seen in colours.values()), lines  # one colour per line, both charts
    finally:
        page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")
        context.close()
