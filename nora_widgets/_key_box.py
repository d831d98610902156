"""The Edit controls' text boxes: a box whose Enter and Escape reach the kernel with the text they saw.

    number = KeyBox(description="message", placeholder="#")
    number.on_key("enter", print)     # Enter in the page -> print("2"): the box's text at that instant
    text = KeyBox(description="message 2", multiline=True)
    text.on_key("enter", save)        # a text area: Ctrl+Enter (Cmd+Enter on a Mac); plain Enter is a new line
    text.on_key("escape", cancel)     # Escape -> cancel("...")
    text.put("Dune is a novel.")      # the kernel writes the box

Why not ipywidgets' Text and Textarea: the Textarea tells the kernel nothing of its keys, and the Text's
Enter ("submit", deprecated) goes out ahead of its value, which ipywidgets may hold back while an earlier
update is unanswered: the kernel would act on the text as it was before the last keys.  Here a key's
message carries the text, so what the kernel saves or opens is what the page showed.

``value`` reaches the kernel as the box is left (Tab, a click elsewhere: the browser's "change"), as
ipywidgets' ``continuous_update=False`` did, and with Enter / Escape; not key by key, so the click on a
button beside it never goes ahead of the last keys' update.  A key in the box is never a JupyterLab
shortcut (Ctrl+Enter would run the cell, Escape would leave it), as with ipywidgets' text boxes.

No import from anywhere: the page may be offline (a classroom).  The browser tests drive it in JupyterLab.
"""

from __future__ import annotations

from typing import Any, Callable

import anywidget
import traitlets

from ._one_view import ONE_VIEW_JS

__all__ = ["KeyBox"]

_ESM = ONE_VIEW_JS + r"""
let made = 0;  // each box's id, for its <label for=...>
function render({ model, el }) {
  const multiline = model.get("multiline");
  const label = document.createElement("label");
  const box = document.createElement(multiline ? "textarea" : "input");
  if (multiline) box.rows = model.get("rows"); else box.type = "text";
  box.id = `nora-key-box-${++made}`;
  label.htmlFor = box.id;
  label.className = "nora-key-label";
  box.className = "nora-key-input";
  box.value = model.get("value");
  el.append(label, box);

  const attrs = () => {
    label.textContent = model.get("description");
    label.style.width = model.get("description_width");
    label.style.display = model.get("description") ? "" : "none";
    box.setAttribute("aria-label", model.get("description"));  // its name: "message", "message 2"
    box.placeholder = model.get("placeholder");
    box.disabled = model.get("disabled");
  };
  attrs();
  model.on("change:description change:description_width change:placeholder change:disabled", attrs);
  const written = () => { if (box.value !== model.get("value")) box.value = model.get("value"); };
  model.on("change:value", written);  // the kernel wrote it (put)

  const say = () => { model.set("value", box.value); model.save_changes(); };  // the kernel's copy
  box.addEventListener("change", say);  // the box is left

  box.addEventListener("keydown", (e) => {
    e.stopPropagation();  // text, never a JupyterLab shortcut
    if (e.key === "Escape") { model.send({ key: "escape", text: box.value }); return; }
    if (e.key !== "Enter" || e.isComposing) return;
    if (multiline && !(e.ctrlKey || e.metaKey)) return;  // a new line
    e.preventDefault();
    say();
    model.send({ key: "enter", text: box.value });  // the text with the key: it may go ahead of say()'s
  });
  box.addEventListener("keypress", (e) => e.stopPropagation());

  const used = lastUsed(box, el);
  const onMessage = (msg) => {  // the panel shown twice: the view where the person is takes the focus (_one_view.py)
    if (msg.do === "focus") oneView(msg, { box, home: () => homeOf(box, el), at: used.at, take: () => box.focus() });
    else if (msg.do === "blur") box.blur();
  };
  model.on("msg:custom", onMessage);
  return () => { model.off("msg:custom", onMessage); used.stop(); };
}
export default { render };
"""

# The look of ipywidgets' text boxes and their labels (its theme variables: light or dark)
_CSS = """
.nora-key-box { display: flex; align-items: flex-start; box-sizing: border-box; }
.nora-key-box .nora-key-label {
  flex: 0 0 auto; box-sizing: border-box; padding-right: 8px; text-align: right;
  overflow: hidden; text-overflow: ellipsis; white-space: nowrap;
  line-height: var(--jp-widgets-inline-height, 28px);
  font-family: var(--jp-ui-font-family); font-size: var(--jp-widgets-font-size);
  color: var(--jp-widgets-label-color, var(--jp-ui-font-color1));
}
.nora-key-box .nora-key-input {
  flex: 1 1 auto; min-width: 0; box-sizing: border-box; margin: 0; padding: 4px 8px;
  font-family: var(--jp-ui-font-family); font-size: var(--jp-widgets-font-size);
  color: var(--jp-widgets-input-color); background: var(--jp-widgets-input-background-color);
  border: var(--jp-widgets-input-border-width, 1px) solid var(--jp-widgets-input-border-color);
}
.nora-key-box input.nora-key-input { height: var(--jp-widgets-inline-height, 28px); }
.nora-key-box textarea.nora-key-input { resize: vertical; }
.nora-key-box .nora-key-input::placeholder { color: var(--jp-widgets-input-color); opacity: 0.7; }
.nora-key-box .nora-key-input:focus { border-color: var(--jp-widgets-input-focus-border-color); }
"""

KEYS = ("enter", "escape")  # enter: Enter in a one-line box, Ctrl/Cmd+Enter in a text area


class KeyBox(anywidget.AnyWidget):
    """A text box (``multiline``: a text area) named by its ``description``; ``on_key`` hears Enter and
    Escape with the box's text at that instant."""

    _esm = _ESM
    _css = _CSS
    value = traitlets.Unicode("").tag(sync=True)
    description = traitlets.Unicode("").tag(sync=True)  # the words before it, and its name (aria-label)
    description_width = traitlets.Unicode("").tag(sync=True)  # "70px": the words' room ("" as they need)
    placeholder = traitlets.Unicode("").tag(sync=True)
    multiline = traitlets.Bool(False).tag(sync=True)
    rows = traitlets.Int(3).tag(sync=True)
    disabled = traitlets.Bool(False).tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_class("nora-key-box")
        self._heard: dict[str, list[Callable[[str], Any]]] = {key: [] for key in KEYS}
        self.on_msg(self._key)

    def on_key(self, key: str, callback: Callable[[str], Any]) -> None:
        """callback(text) when key ("enter" or "escape") is pressed in the box; text is what it held."""
        if key not in KEYS:
            raise ValueError(f"on_key: the key must be one of {', '.join(KEYS)} (got {key!r})")
        self._heard[key].append(callback)

    def _key(self, _widget: Any, content: Any, _buffers: Any) -> None:
        """{"key": "enter" | "escape", "text": ...} from the page: the callbacks hear the text it carries.
        The kernel's copy (value) comes in an update of its own, which may come after this."""
        if not isinstance(content, dict) or not isinstance(content.get("text"), str):
            return
        for callback in self._heard.get(content.get("key"), []):  # type: ignore[arg-type]
            callback(content["text"])

    def put(self, text: str) -> None:
        """Write text into the box, in the page too even if the kernel's copy held it already (the
        page's copy can differ: what is typed reaches the kernel as the box is left)."""
        self.value = text
        self.send_state("value")
