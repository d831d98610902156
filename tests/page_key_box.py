"""The page's side of a KeyBox (its JavaScript, nora_widgets/_key_box.py), as a small model that
kernel-level tests drive key by key, with the messages between page and kernel delivered when the
test says.

    page = PageKeyBox(panel.editor.text)
    page.replace("new text")        # keys typed: only the box changes (nothing reaches the kernel)
    page.enter()                    # Ctrl+Enter: the value, then {"key": "enter", "text"}, wait in the outbox
    page.to_kernel(key_first=True)  # the key overtakes the value: ipywidgets may hold a value back while
                                    # the one before is unanswered, never a custom message
    page.to_page()                  # the kernel's writes and focus requests reach the page
    page.box, page.focused          # what the learner sees in the box; whether it has the focus

It follows the JavaScript rule for rule (a change there is a change here): the value is sent when the
box is left and with Enter (only when it differs from the page's copy); Enter and Escape send the box's
text with the key; a write from the kernel is drawn in the box when it changes the page's copy.
"""

from __future__ import annotations

from typing import Any


class PageKeyBox:
    def __init__(self, widget: Any) -> None:
        self.widget = widget
        self.model = self.box = widget.value  # the page's copy of value; the text in the box
        self.outbox: list[tuple[str, Any]] = []  # page -> kernel: ("value", text) or ("msg", content)
        self.inbox: list[dict] = []  # kernel -> page: ipywidgets' messages (updates, custom)
        self.focused = False
        widget._send = lambda msg, buffers=None: self.inbox.append(msg)

    # a person
    def replace(self, text: str) -> None:
        self.box = text

    def leave(self) -> None:  # Tab or a click elsewhere: the browser's "change"
        self._say()
        self.focused = False

    def enter(self) -> None:  # Enter in a one-line box, Ctrl/Cmd+Enter in a text area
        self._say()
        self.outbox.append(("msg", {"key": "enter", "text": self.box}))

    def escape(self) -> None:
        self.outbox.append(("msg", {"key": "escape", "text": self.box}))

    def _say(self) -> None:
        if self.box != self.model:
            self.model = self.box
            self.outbox.append(("value", self.box))

    # the wire
    def to_kernel(self, key_first: bool = False) -> None:
        """Deliver the page's messages through ipywidgets' own handlers (what the kernel's comm calls)."""
        items, self.outbox = self.outbox, []
        if key_first:
            items.sort(key=lambda item: item[0] != "msg")  # stable: each kind keeps its order
        for kind, item in items:
            if kind == "value":
                self.widget.set_state({"value": item})
            else:
                self.widget._handle_custom_msg(item, [])

    def to_page(self) -> None:
        items, self.inbox = self.inbox, []
        for msg in items:
            if msg.get("method") == "update" and "value" in msg["state"]:
                if msg["state"]["value"] != self.model:  # Backbone's change:value
                    self.model = self.box = msg["state"]["value"]
            elif msg.get("method") == "custom" and msg["content"].get("do") in ("focus", "blur"):
                self.focused = msg["content"]["do"] == "focus"
