"""The chat panel's input box: an <input> (or a <textarea>) with a few lines of JavaScript of its own.

    box = PromptBox(placeholder="Type a message and press Enter")
    box.on_msg(lambda _box, content, _buffers: print(content))
    # Enter in the browser -> {"event": "submit", "text": "Hello", "emptied": True}; Escape -> {"event": "stop"}
    box.value = "Hello"        # shown in the browser, unless something typed there has not reached the kernel
    box.send_button = "nora-send"   # a click on that button beside the box is Enter ("submit")

Why not ipywidgets' Text: it tells the kernel about Enter with a message of its own and sends the text
apart from it, and it redraws the box from the kernel's copy whenever the kernel writes it, wiping keys
the kernel has not had yet (typed right after Enter, before the kernel emptied the box).  Here the page
owns what is typed:

- Every key goes to the kernel as the new ``value`` (so ``box.value`` is what the box shows, a round trip
  later).  Enter (one line) or Ctrl/Cmd+Enter (``multiline``: plain Enter is a new line) sends one message
  with the text of that instant, and the page empties the box at once: keys typed next are the next
  message ("emptied": true).  While ``busy`` (a reply runs) Enter sends the text but keeps it in the box
  ("emptied": false); the kernel says why.
- A click on the button of class ``send_button`` beside the box (the panel's Send) is the same "submit",
  with the text of the click (blank too: the kernel says why), and the button's own click message never
  goes.  It went out at once, while the page holds a box's next update back until the kernel has taken
  the one before (ipywidgets sends one at a time): the kernel sent "Hello from o", and "ne" stayed.
- A write from the kernel (``box.value = ...``) goes to the page as {"do": "set", "text", "base"}: base is
  what the kernel believed the box held.  The page applies it only if the box holds exactly that; if the
  write empties the box and the box holds base and more (keys typed right after it), the keys stay.
  Otherwise the page keeps its text, sends it as ``value``, and answers {"event": "kept", "text"}.
- {"do": "return", "text"}: a message Enter sent that the kernel could not take (a reply had started)
  goes back into the box, in front of anything typed since.
- ``focus()`` / ``blur()`` (ipywidgets' {"do": "focus"}) are done here too; a focus request leaves the
  focus where it is when it is in one of the panel's scrolling regions (someone reading back).
- ``focus_if_lost()`` ({"do": "focus", "if_lost": true}): the box takes the focus only if nothing has it
  (the page's body) or what has it is disabled (Send, once a turn starts).  A turn's start asks this way:
  the request reaches the page after Stop is live, and a Tab pressed meanwhile had moved on to Stop.
- The panel shown twice (``panel`` in two cells): what is typed in one view shows in the other, and each
  message from the kernel is acted on by one view, the one where the person is (_one_view.py); the
  others take its text.  Each view took the focus (the last one kept it) and applied every write.

No import from anywhere: the page may be offline (a classroom).  The browser tests drive it in JupyterLab.
"""

from __future__ import annotations

from typing import Any

import anywidget
import traitlets

from ._one_view import ONE_VIEW_JS

__all__ = ["PromptBox"]

_ESM = ONE_VIEW_JS + r"""
function render({ model, el }) {
  const multiline = model.get("multiline");
  const box = document.createElement(multiline ? "textarea" : "input");
  if (multiline) box.rows = model.get("rows"); else box.type = "text";
  box.className = "nora-prompt-box";
  box.value = model.get("value");
  el.appendChild(box);

  const attrs = () => {
    box.placeholder = model.get("placeholder");
    box.disabled = model.get("disabled");
    box.setAttribute("aria-label", model.get("aria_label"));
  };
  attrs();
  model.on("change:placeholder change:disabled change:aria_label", attrs);

  // the kernel's copy; and the box's other views (the panel shown twice) show what is typed in this one
  const say = (value) => { model.set("value", value, { nora_view: box }); model.save_changes(); };
  box.addEventListener("input", () => say(box.value));
  const mirror = (_model, value, options) => {
    if (options && options.nora_view && options.nora_view !== box && box.value !== value) box.value = value;
  };
  model.on("change:value", mirror);
  const used = lastUsed(box, el);

  box.addEventListener("keydown", (e) => {
    e.stopPropagation();  // a key in the box is text, never a JupyterLab shortcut (as ipywidgets' Text)
    if (e.key === "Escape") { model.send({ event: "stop" }); return; }
    if (e.key !== "Enter" || e.isComposing) return;
    if (multiline && !(e.ctrlKey || e.metaKey)) return;  // a new line
    e.preventDefault();
    if (box.value.trim()) submit();
  });
  box.addEventListener("keypress", (e) => e.stopPropagation());
  const submit = () => {  // the text of this instant goes with the message (a blank one: the kernel says why)
    const text = box.value;
    const emptied = !model.get("busy") && !!text.trim();  // while a reply runs the text stays (the kernel says why)
    if (emptied) { box.value = ""; say(""); }  // the next key typed starts the next message
    model.send({ event: "submit", text, emptied });
  };

  // Send (the button beside the box, of class send_button): its click is this box's, as Enter.  The
  // button's own click message would go out at once, while the page holds the box's last keys back
  // until the kernel has taken the update before them: the kernel sent the text of a few keys earlier.
  const clicked = (e) => {
    const name = model.get("send_button"), row = el.parentElement;
    const button = name && row && e.target instanceof Element ? e.target.closest("." + name) : null;
    if (!button || button.disabled || !row.contains(button)) return;  // another view's, or no Send
    e.stopPropagation();  // the button's own message never goes: the kernel hears the click once
    submit();
  };
  document.addEventListener("click", clicked, true);  // before the button's own listener

  // the panel shown twice: one view acts on a message from the kernel, the view where the person is (_one_view.py)
  const onMessage = (msg) => {
    if (msg.do === "blur") { box.blur(); return; }
    const view = { box, home: () => homeOf(box, el), at: used.at };
    if (msg.do === "focus") oneView(msg, { ...view, take: () => focus(msg) });
    else oneView(msg, { ...view, take: () => write(msg), copy: (text) => { box.value = text; } });
  };
  const write = (msg) => {
    if (msg.do === "return") {  // a message Enter sent while a reply had just started
      box.value = box.value.trim() ? msg.text + (multiline ? "\n" : " ") + box.value : msg.text;
      say(box.value);
      return;
    }
    if (msg.do !== "set") return;
    if (box.value === msg.base) { box.value = msg.text; return; }  // nothing typed the kernel has not had
    if (msg.text === "" && msg.base && box.value.startsWith(msg.base)) {
      box.value = box.value.slice(msg.base.length);  // the message sent leaves; keys typed after it stay
    } else if (msg.text) {
      model.send({ event: "kept", text: msg.text });
    }
    say(box.value);  // the kernel's copy is the page's text again
  };
  const focus = (msg) => {
    // someone reading back in one of this panel's scrolling regions (the conversation, the inspector's
    // tables, the wire view) stays there: a reply that ends does not pull the focus out from under them
    // (a region of the panel's own: JupyterLab's notebook around it is a region too)
    const at = document.activeElement, panel = box.closest(".nora-panel");
    // a turn's start: only when the focus was lost (a click on Send, now disabled), never pulled back
    // from where a key has taken it since (one Tab from the input reaches Stop)
    if (msg.if_lost && at && at !== document.body && !at.disabled) return;
    const region = at && at !== box ? at.closest('[role="region"]') : null;
    if (panel && region && panel.contains(region)) return;
    box.focus();
  };
  model.on("msg:custom", onMessage);
  return () => {
    model.off("msg:custom", onMessage); model.off("change:value", mirror); used.stop();
    document.removeEventListener("click", clicked, true);
  };
}
export default { render };
"""

# The look of ipywidgets' text box (its theme variables: light or dark), and the height of one line
_CSS = """
.nora-prompt { display: flex; }
.nora-prompt .nora-prompt-box {
  flex: 1 1 auto; min-width: 0; box-sizing: border-box; margin: 0; padding: 4px 8px;
  font-family: var(--jp-ui-font-family); font-size: var(--jp-widgets-font-size);
  color: var(--jp-widgets-input-color); background: var(--jp-widgets-input-background-color);
  border: var(--jp-widgets-input-border-width, 1px) solid var(--jp-widgets-input-border-color);
}
.nora-prompt input.nora-prompt-box { height: var(--jp-widgets-inline-height, 28px); }
.nora-prompt textarea.nora-prompt-box { resize: vertical; }
.nora-prompt .nora-prompt-box::placeholder { color: var(--jp-widgets-input-color); opacity: 0.7; }
.nora-prompt .nora-prompt-box:focus { border-color: var(--jp-widgets-input-focus-border-color); }
"""


class PromptBox(anywidget.AnyWidget):
    """The input box: ``value`` is its text (what the page last sent, or what the kernel wrote).

    Custom messages from the page (``on_msg``): {"event": "submit", "text"} (Enter, Send), {"event": "stop"}
    (Escape), {"event": "kept", "text"} (a write refused: the page kept what was typed there).
    """

    _esm = _ESM
    _css = _CSS
    value = traitlets.Unicode("").tag(sync=True)
    placeholder = traitlets.Unicode("").tag(sync=True)
    multiline = traitlets.Bool(False).tag(sync=True)  # a <textarea>: Enter is a new line, Ctrl+Enter sends
    rows = traitlets.Int(3).tag(sync=True)
    disabled = traitlets.Bool(False).tag(sync=True)
    busy = traitlets.Bool(False).tag(sync=True)  # a reply runs: Enter sends the text but keeps it in the box
    # the class of a button beside the box (in the same row): its click sends the text as Enter does
    send_button = traitlets.Unicode("").tag(sync=True)
    aria_label = traitlets.Unicode("your message").tag(sync=True)  # its name for a screen reader

    def __init__(self, **kwargs: Any) -> None:
        self._from_page = False
        super().__init__(**kwargs)
        self.add_class("nora-prompt")

    def set_state(self, sync_data: dict) -> None:
        """What the page sends (a key typed): taken as it is, not sent back as a write."""
        self._from_page = True
        try:
            super().set_state(sync_data)
        finally:
            self._from_page = False

    @traitlets.observe("value")
    def _written(self, change: dict) -> None:
        """The kernel wrote the box: the page applies it only over the text the kernel knew (base)."""
        if not self._from_page:
            self.send({"do": "set", "text": change["new"], "base": change["old"]})

    def focus_if_lost(self) -> None:
        """Focus the box unless something else in the page holds the focus and is not disabled."""
        self.send({"do": "focus", "if_lost": True})

    def give_back(self, text: str) -> None:
        """A message Enter sent that could not be taken goes back into the box, in front of what is
        typed there (the page had emptied the box; the kernel may not have its new text yet)."""
        self.send({"do": "return", "text": text})
