"""A panel shown twice: which of a box's views takes the focus the kernel asks for.

    panel = ChatPanel()
    panel            # cell 1: one view of every widget
    panel            # cell 2 (or "Create New View for Cell Output"): a second view of the same widgets

The kernel's focus request (``prompt.focus()`` after a reply, ``editor.text.focus()`` after Edit) reaches
every view of the box, one after the other, and each took the focus: the last view drawn kept it, so a
message sent from the first view moved the cursor into the second, and the next keys went there.

ONE_VIEW_JS is page code that the boxes' own JavaScript (_prompt_box.py, _key_box.py) starts with.  Each
view that hears a request joins it (the views hear the same message object), and once they all have, one
acts on it: the view whose panel holds the focus, else the one last used (a click or the focus in its
panel), else the first still on the page (a view whose cell output was cleared is gone from it).  With one
view, that view acts, as before.

    const used = lastUsed(box, el);             // in render(): used.at() is when its panel was last used
    oneView(msg, {box, home, at: used.at, take: () => box.focus()});   // in the message handler

The input box's writes from the kernel (_prompt_box.py: "set", "return") go the same way, with copy: the
view that acts applies the write over its text (which the other views mirror, as typed), and the others
take the result.  Each applied it on its own, and a write that prepends a message prepended it twice.
"""

from __future__ import annotations

__all__ = ["ONE_VIEW_JS"]

ONE_VIEW_JS = r"""
// the panel a view is in (the box's own element when it is shown alone)
const homeOf = (box, el) => box.closest(".nora-panel") || el;

// when the person last clicked in or moved the focus into this view's panel; stop() when the view goes
function lastUsed(box, el) {
  let at = 0;
  const mark = (e) => { if (e.target instanceof Node && homeOf(box, el).contains(e.target)) at = performance.now(); };
  document.addEventListener("focusin", mark, true);
  document.addEventListener("pointerdown", mark, true);
  return {
    at: () => at,
    stop: () => {
      document.removeEventListener("focusin", mark, true);
      document.removeEventListener("pointerdown", mark, true);
    },
  };
}

// view: {box, home(), at(), take(), copy?(text)}.  The views of one model hear one message object one
// after the other, in the same task: each joins it here, and a microtask later one of them takes it;
// then the others that can copy(text) show the box's text as that one has it.
function oneView(msg, view) {
  const views = msg.__nora_views || (msg.__nora_views = []);
  views.push(view);
  if (views.length > 1) return;
  queueMicrotask(() => {
    const shown = views.filter((v) => v.box.isConnected);
    if (!shown.length) return;
    const focus = document.activeElement;
    const here = shown.find((v) => focus && focus !== document.body && v.home().contains(focus))
      || shown.reduce((best, v) => (v.at() > best.at() ? v : best), shown[0]);
    here.take();
    for (const v of shown) if (v !== here && v.copy) v.copy(here.box.value);
  });
}
"""
