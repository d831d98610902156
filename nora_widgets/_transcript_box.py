"""The chat panel's transcript in blocks of messages: a turn sends the page the block it changed.

    box = TranscriptBox()
    box.show(history)          # draws it; returns how many blocks went to the page
    box.show(history + two)    # a turn later: 1 (the last block), or 1 new block
    box.value                  # the whole HTML: == views.transcript_html(history)

Why: one HTML widget holding the whole chat sent it whole after every turn, 735 kB at 1,000
messages and 3.7 MB at 5,000, and the page parsed it all again (benchmarks/bench_panel.py).  Here
the messages go in blocks of BLOCK; each block is a model of its own (``_Block``, a value and no
view), and a block whose messages are the ones it shows is not touched.  A turn changes the last
block, or starts a new one; Clear, Load or a new persona change the blocks whose messages changed.

The page draws what ``views.transcript_html`` draws, the same message HTML in the same box:

    <div class="nora-transcript" role="region" aria-label="conversation" style="...column-reverse...">
      <div> <div>block 1's messages</div> <div>block 2's messages</div> ... </div>
    </div>

one region named "conversation" around all blocks, scrolled to the newest message by the same
column-reverse box.  A block's <div> has no style of its own: the messages lay out as in one list.
No import from anywhere: the page may be offline (a classroom).  The browser tests draw it in JupyterLab.
"""

from __future__ import annotations

import threading
from typing import Sequence

import anywidget
import ipywidgets as widgets
import traitlets

from .views import EMPTY_TRANSCRIPT, TRANSCRIPT_HEIGHT, message_html, transcript_frame, transcript_style

__all__ = ["TranscriptBox", "BLOCK"]

# Messages per block.  A turn sends one block, half full on average: at ~0.7 kB a message (the
# benchmark's chat), 50 is ~18 kB a turn, and 5,000 messages are 100 blocks (benchmarks/bench_panel.py).
BLOCK = 50

_ESM = r"""
function render({ model, el }) {
  const region = document.createElement("div");
  region.className = "nora-transcript";
  region.setAttribute("role", "region");  // one region around all blocks: screen readers jump to it
  const inner = document.createElement("div");
  region.append(inner);
  el.append(region);
  const frame = () => {
    region.setAttribute("aria-label", model.get("label"));
    region.setAttribute("style", model.get("box_style"));
  };

  // block model id -> {div, block, paint}; a block's div takes its value whenever it changes
  const drawn = new Map();
  const forget = (id) => {
    const it = drawn.get(id);
    it.block.off("change:value", it.paint);
    it.div.remove();
    drawn.delete(id);
  };
  let latest = 0;
  const draw = async () => {
    const mine = ++latest;
    const ids = model.get("blocks").map((ref) => String(ref).replace(/^IPY_MODEL_/, ""));
    let blocks;
    try {
      blocks = await Promise.all(ids.map((id) => drawn.has(id) ? drawn.get(id).block
                                                               : model.widget_manager.get_model(id)));
    } catch (err) {  // a block closed meanwhile: the newer list that left it out draws
      if (mine === latest) console.warn("nora transcript:", err);
      return;
    }
    if (mine !== latest) return;  // a newer list came while these were fetched: it draws
    for (const id of [...drawn.keys()]) if (!ids.includes(id)) forget(id);
    ids.forEach((id, i) => {
      if (!drawn.has(id)) {
        const div = document.createElement("div");
        const paint = () => { div.innerHTML = blocks[i].get("value"); };
        blocks[i].on("change:value", paint);
        drawn.set(id, { div, block: blocks[i], paint });
        paint();
      }
      const div = drawn.get(id).div;
      if (inner.children[i] !== div) inner.insertBefore(div, inner.children[i] || null);
    });
  };
  frame();
  draw();
  model.on("change:label change:box_style", frame);
  model.on("change:blocks", draw);
  return () => { for (const id of [...drawn.keys()]) forget(id); };
}
export default { render };
"""


class _Block(widgets.Widget):
    """The HTML of up to BLOCK messages: a model with no view of its own (TranscriptBox draws it)."""

    value = traitlets.Unicode("").tag(sync=True)


def _key(messages: Sequence[dict]) -> tuple:
    """What a block shows, to compare with what it should show.  Example: [user("hi")] -> (("user", "hi"),)"""
    return tuple((m.get("role", "?"), m.get("content") or "") for m in messages)


class TranscriptBox(anywidget.AnyWidget):
    """The transcript as blocks; ``show(messages)`` redraws the blocks whose messages changed."""

    _esm = _ESM
    blocks = traitlets.List(traitlets.Instance(_Block)).tag(sync=True, **widgets.widget_serialization)
    label = traitlets.Unicode("conversation").tag(sync=True)  # the region's name for screen readers
    box_style = traitlets.Unicode(transcript_style()).tag(sync=True)
    redrawn = traitlets.Int(0)  # not synced: +1 each time the page's transcript changes (tests watch it)

    def __init__(self, block_size: int = BLOCK, max_height: str = TRANSCRIPT_HEIGHT, **kwargs) -> None:
        super().__init__(box_style=transcript_style(max_height), **kwargs)
        if block_size < 1:
            raise ValueError(f"block_size must be a whole number >= 1 (got {block_size!r})")
        self.block_size = block_size
        self.max_height = max_height
        self._shown: list[tuple] = []  # per block: the _key of the messages it shows
        self._lock = threading.Lock()  # a turn's end (worker thread) and refresh() may draw at once
        self.show([])

    def show(self, messages: Sequence[dict]) -> int:
        """Draw messages; only blocks whose messages changed are sent.  Returns how many were.
        Example: 120 messages drawn, then 122 -> 1 (the third block: messages 100-121)."""
        n = self.block_size
        chunks = [messages[i:i + n] for i in range(0, len(messages), n)] or [[]]
        with self._lock:
            blocks, changed = list(self.blocks), 0
            for i, chunk in enumerate(chunks):
                key = _key(chunk)
                if i < len(self._shown) and self._shown[i] == key:
                    continue
                html = "".join(message_html(m) for m in chunk) or EMPTY_TRANSCRIPT
                if i < len(blocks):
                    blocks[i].value = html
                else:
                    blocks.append(_Block(value=html))
                self._shown[i:i + 1] = [key]
                changed += 1
            gone = blocks[len(chunks):]
            del blocks[len(chunks):], self._shown[len(chunks):]
            if len(blocks) != len(self.blocks):  # a block opened or closed: the page's list of them
                self.blocks = blocks
            for block in gone:  # the page forgets them too
                block.close()
            if changed or gone:
                self.redrawn += 1
        return changed

    @property
    def value(self) -> str:
        """The whole transcript's HTML, as the page shows it: views.transcript_html of the messages."""
        return transcript_frame("".join(b.value for b in self.blocks), self.max_height, self.label)
