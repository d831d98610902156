"""The page's side of the panel's input box (PromptBox's JavaScript, nora_widgets/_prompt_box.py), as a
small model that kernel-level tests drive key by key, with the messages between page and kernel
delivered when the test says.

    page = PageInput(panel.prompt)
    page.type("Hello"); page.enter()   # keys into the box, Enter (nothing reaches the kernel yet)
    page.to_kernel()                   # the page's messages reach the kernel, in order (ipywidgets' handlers)
    page.to_kernel(enter_first=True)   # Enter overtakes the text: ipywidgets holds a value back while
                                       # the one before is unanswered, never a custom message
    page.type("next")                  # keys typed before the kernel's answer arrives
    page.to_page()                     # the kernel's messages reach the page, in order
    page.box                           # what the learner sees in the box

It follows the JavaScript rule for rule (a change there is a change here): every key sends the box's
text as the value; Enter sends {"event": "submit", "text", "emptied"} and empties the box unless the
page knows a reply runs; Escape sends {"event": "stop"}; the kernel's {"do": "set"} is applied only over
the text the kernel knew (base), an emptying keeps the keys typed after base, and a refused text is
answered with {"event": "kept"}; {"do": "return"} puts a message back in front of the box's text.
The kernel's own state updates to the value are left out: the page draws the box from them only when
it first shows it.
"""

from __future__ import annotations

from typing import Any


class PageInput:
    def __init__(self, prompt: Any) -> None:
        self.prompt = prompt
        self.box = prompt.value
        self.outbox: list[tuple[str, Any]] = []  # page -> kernel: ("value", text) or ("msg", content)
        self.inbox: list[dict] = []  # kernel -> page: custom messages
        self.busy: bool | None = None  # what the page believes of a reply running (None: what the kernel says)
        prompt.send = lambda content, buffers=None: self.inbox.append(content)

    # ------------------------------------------------------------------ #
    # a person

    def type(self, keys: str) -> None:
        """Keys typed, one "input" event each ("\\b" deletes the last character)."""
        for key in keys:
            self.box = self.box[:-1] if key == "\b" else self.box + key
            self._say()

    def paste(self, text: str) -> None:
        self.box += text
        self._say()

    def enter(self) -> None:
        text = self.box
        if not text.strip():
            return
        emptied = not (self.prompt.busy if self.busy is None else self.busy)
        if emptied:
            self.box = ""
            self._say()
        self.outbox.append(("msg", {"event": "submit", "text": text, "emptied": emptied}))

    def escape(self) -> None:
        self.outbox.append(("msg", {"event": "stop"}))

    def _say(self) -> None:
        self.outbox.append(("value", self.box))

    # ------------------------------------------------------------------ #
    # the wire

    def to_kernel(self, enter_first: bool = False) -> None:
        """Deliver the page's messages, through ipywidgets' own handlers (what the kernel's comm calls)."""
        out, self.outbox = self.outbox, []
        if enter_first:
            out = [m for m in out if m[0] == "msg"] + [m for m in out if m[0] == "value"]
        for kind, item in out:
            if kind == "value":
                self.prompt.set_state({"value": item})
            else:
                self.prompt._handle_custom_msg(item, [])

    def to_page(self) -> None:
        inbox, self.inbox = self.inbox, []
        for msg in inbox:
            if msg.get("do") == "return":
                self.box = msg["text"] + (("\n" if self.prompt.multiline else " ") + self.box
                                          if self.box.strip() else "")
                self._say()
            elif msg.get("do") == "set":
                if self.box == msg["base"]:
                    self.box = msg["text"]
                    continue
                if msg["text"] == "" and msg["base"] and self.box.startswith(msg["base"]):
                    self.box = self.box[len(msg["base"]):]
                elif msg["text"]:
                    self.outbox.append(("msg", {"event": "kept", "text": msg["text"]}))
                self._say()

    def settle(self) -> None:
        """Every message on its way arrives, and every answer to it."""
        while self.outbox or self.inbox:
            self.to_kernel()
            self.to_page()
