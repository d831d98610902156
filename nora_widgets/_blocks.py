"""HTML that goes to the page in blocks: a redraw sends the blocks that changed, not the whole HTML.

    box = BlockBox(block_tag="div")
    box.draw(f"<div>{PLACE}</div>", keys, html)   # block i shows keys[i]; html(i) draws it when it changed
    box.value                                     # the whole HTML, as the page draws it

Why: a stock HTML widget is sent whole on every change.  The panel's transcript, its inspector tables
and its wire view are long and change at their end (a turn adds two messages), so each goes in blocks:
each block is a model of its own (``_Block``, a value and no view), and a block whose key is the one it
shows is not touched.  What is around the blocks (a caption, a heading, a scrolling box) is the
``frame``: HTML with one PLACE in it, where the blocks go, each in an element ``block_tag``:

    frame  <table><caption>...</caption><thead>...</thead>PLACE</table>     block_tag "tbody"
    page   <table><caption>...</caption><thead>...</thead><tbody>rows 0-19</tbody><tbody>rows 20-39</tbody></table>

A frame without PLACE shows no blocks (a note such as "No call yet").  A new frame is drawn whole and the
blocks are moved into it, not drawn again; the PLACE itself is not in the page.  A box that scrolls
is a named region (``region_label``, or role="region" in its frame), and the keys that scroll it (arrows, Page
Up / Down, Home, End, Space) stay with it instead of moving JupyterLab's cell selection.  No import from anywhere: the page may be offline (a classroom).
Used by _transcript_box.py (the transcript), views.InspectorView (its tables) and views.WireView.
"""

from __future__ import annotations

import threading
from typing import Callable, Hashable, Sequence

import anywidget
import ipywidgets as widgets
import traitlets

__all__ = ["BlockBox", "PLACE", "KEEP"]

# Where the blocks go in a frame.  A <template> is allowed anywhere, in a <table> or a <pre> too,
# where any other element would be moved out of the table by the browser's parser.
PLACE = "<template data-nora-blocks></template>"

# A key for draw(): the block at that anchor keeps what it shows (a new one is drawn by html(i)).  The
# chat panel's turn in progress streams into a block of its own (redraw); a redraw of the messages
# meanwhile leaves it as it is.
KEEP = object()

_ESM = r"""
function render({ model, el }) {
  // block model id -> {node, block, paint}; a block's node takes its value whenever it changes
  const drawn = new Map();
  let order = [];     // the ids drawn, in the page's order
  let holder = null;  // where the frame's PLACE was: the blocks go in holder, before `after` (null: no blocks shown)
  let after = null;
  const forget = (id) => {
    const it = drawn.get(id);
    it.block.off("change:value", it.paint);
    it.node.remove();
    drawn.delete(id);
  };
  const arrange = () => {  // the blocks in order where PLACE was; a block already in its place stays
    if (!holder) return;
    let next = after;
    for (let i = order.length - 1; i >= 0; i--) {
      const node = drawn.get(order[i]).node;
      if (node.parentNode !== holder || node.nextSibling !== next) holder.insertBefore(node, next);
      next = node;
    }
  };
  const frame = () => {
    const t = document.createElement("template");
    t.innerHTML = model.get("frame");
    const place = t.content.querySelector("template[data-nora-blocks]");
    [holder, after] = place ? [place.parentNode, place.nextSibling] : [null, null];
    if (place) place.remove();  // the page holds the blocks, not the marker
    arrange();  // the blocks move into the new frame: not drawn again
    el.replaceChildren(t.content);
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
      if (mine === latest) console.warn("nora blocks:", err);
      return;
    }
    if (mine !== latest) return;  // a newer list came while these were fetched: it draws
    for (const id of [...drawn.keys()]) if (!ids.includes(id)) forget(id);
    ids.forEach((id, i) => {
      if (drawn.has(id)) return;
      const node = document.createElement(model.get("block_tag"));
      const paint = () => { node.innerHTML = blocks[i].get("value"); };
      blocks[i].on("change:value", paint);
      drawn.set(id, { node, block: blocks[i], paint });
      paint();
    });
    order = ids;
    arrange();
  };
  // A scrolling box a key can reach is a named region (region_label: its name), and the keys that scroll it
  // stay with it: JupyterLab took ArrowDown on it (the focus went to the notebook's footer, nothing
  // scrolled).  Only the plain scrolling keys: Ctrl+Enter, Escape and the rest still reach JupyterLab.
  const name = () => {
    const label = model.get("region_label");
    if (label) { el.setAttribute("role", "region"); el.setAttribute("aria-label", label); }
    else { el.removeAttribute("role"); el.removeAttribute("aria-label"); }
  };
  const SCROLL_KEYS = ["ArrowUp", "ArrowDown", "ArrowLeft", "ArrowRight", "PageUp", "PageDown", "Home", "End", " "];
  // End scrolls smoothly, and in a box that grew meanwhile (a reply streaming in the conversation) it stopped
  // short of the end (102 px above the newest line) and stayed there; at its very end a box that scrolls
  // from the bottom (column-reverse) follows what is added.  So when the scroll End began is over, the box
  // goes the rest of the way, unless another key, the wheel or a click came first.  (Set at the key, the
  // end was lost: a smooth scroll still running from the key before carried the box back.)
  let ending = null;  // the region End was pressed in, until its scroll is over
  el.addEventListener("keydown", (e) => {
    if (!SCROLL_KEYS.includes(e.key) || e.ctrlKey || e.metaKey || e.altKey
        || !(e.target instanceof Element) || !e.target.matches("[role=region]")) return;
    e.stopPropagation();
    ending = e.key === "End" ? e.target : null;
  });
  el.addEventListener("scrollend", (e) => {  // scrollend does not bubble: heard on the way down (capture)
    if (ending && e.target === ending) { ending.scrollTop = ending.scrollHeight; ending = null; }
  }, true);
  for (const type of ["wheel", "pointerdown"]) el.addEventListener(type, () => { ending = null; }, { passive: true });
  name();
  frame();
  draw();
  model.on("change:region_label", name);
  model.on("change:frame", frame);
  model.on("change:blocks", draw);
  return () => { for (const id of [...drawn.keys()]) forget(id); };
}
export default { render };
"""


class _Block(widgets.Widget):
    """The HTML of one block: a model with no view of its own (its BlockBox draws it)."""

    value = traitlets.Unicode("").tag(sync=True)


class BlockBox(anywidget.AnyWidget):
    """HTML in blocks around a frame; ``draw(frame, keys, html)`` sends only the blocks that changed."""

    _esm = _ESM
    frame = traitlets.Unicode("").tag(sync=True)  # the HTML around the blocks, with PLACE where they go
    block_tag = traitlets.Unicode("div").tag(sync=True)  # the element each block is drawn in
    # the box's name when it scrolls itself (a layout with overflow): role="region", aria-label=region_label,
    # so that the stop Tab makes on it is announced ("last call sent, region"); "" for none
    region_label = traitlets.Unicode("").tag(sync=True)
    blocks = traitlets.List(traitlets.Instance(_Block)).tag(sync=True, **widgets.widget_serialization)
    redrawn = traitlets.Int(0)  # not synced: +1 each time the page's HTML changes (tests watch it)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._shown: dict[Hashable, tuple[_Block, Hashable]] = {}  # anchor -> (its block, the key it shows)
        self._lock = threading.Lock()  # a turn's end (worker thread) and refresh() may draw at once

    def draw(self, frame: str, keys: Sequence[Hashable], html: Callable[[int], str],
             anchors: Sequence[Hashable] | None = None) -> int:
        """Show len(keys) blocks in frame: block i shows keys[i], drawn by html(i) only when that changed.
        anchors: what names each block from one draw to the next (default its place, 0, 1, 2, ...): a
        window that scrolls (the inspector's last rows) names its blocks by the rows they hold, so that
        a block dropped at the front does not make every block after it change.
        Returns how many blocks were sent.  Example: 3 blocks drawn, then the same 3 with a new last key -> 1"""
        anchors = range(len(keys)) if anchors is None else anchors
        with self._lock:
            old, shown, blocks, changed = self._shown, {}, [], 0
            for i, (anchor, key) in enumerate(zip(anchors, keys)):
                block, was = old.pop(anchor, (None, None))
                if key is KEEP and block is not None:
                    key = was
                if block is None:
                    block = _Block(value=html(i))
                    changed += 1
                elif was != key:
                    block.value = html(i)
                    changed += 1
                shown[anchor] = (block, key)
                blocks.append(block)
            self._shown = shown
            if blocks != list(self.blocks):  # a block opened, closed or moved: the page's list of them
                self.blocks = blocks
            for block, _ in old.values():  # the blocks no longer shown: the page forgets them too
                block.close()
            framed = frame != self.frame
            if framed:
                self.frame = frame
            if changed or old or framed:
                self.redrawn += 1
        return changed

    def redraw(self, anchor: Hashable, key: Hashable, html: str) -> bool:
        """Only the block at anchor (drawn by the last draw()) now shows key, drawn as html; nothing is
        sent when it shows key already.  Returns whether it was sent.
        Example: box.redraw("live", "<p>Hel</p>", "<p>Hel</p>") -> True; the same again -> False"""
        with self._lock:
            block, was = self._shown[anchor]
            if was == key:
                return False
            self._shown[anchor] = (block, key)
            block.value = html
            self.redrawn += 1
        return True

    @property
    def value(self) -> str:
        """The whole HTML as the page draws it: the frame with the blocks, each in its element, at PLACE."""
        tag = self.block_tag
        return self.frame.replace(PLACE, "".join(f"<{tag}>{b.value}</{tag}>" for b in self.blocks))
