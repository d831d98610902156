"""The page's side of the panel's input box, as ipywidgets 8.1.9 runs it in the browser: a small model
that kernel-level tests drive key by key, with the messages between page and kernel delivered in an
order the test chooses.

    page = PageInput(panel.prompt)
    page.type("Hello"); page.enter()     # keys into the box, Enter (nothing reaches the kernel yet)
    page.paste("Hello there")            # one "input" event
    page.to_kernel()                     # the page's messages reach the kernel, in order (ipywidgets' handler)
    page.type("T")                       # a key typed before the kernel's answer arrives
    page.to_page()                       # the kernel's messages reach the page, in order
    page.box                             # what the learner sees in the box

What it follows (@jupyter-widgets/controls TextView, @jupyter-widgets/base WidgetModel, in
jupyterlab_widgets' static/121...js and 170...js):

- A key ("input" event): the box changes; with continuous_update on, the model's value is set from it
  and synced; with it off, nothing is sent.
- Enter (keypress 13): {"event": "submit"} is sent at once (a custom message: never held back).  Then
  the "change" event: the model's value is set from the box and synced, if it differs (with
  continuous_update on, it never does).
- A sync is held back while an earlier one is unanswered (_pending_msgs >= 1): the held value is
  replaced by later ones and sent when the kernel's "idle" for the earlier one arrives.
- The kernel's "update": set on the model as it is; any change to the model redraws the box from the
  model's value (TextView.update), so keys in the box that the model does not have are wiped.
  (A value set so is taken here as the box's text at its last "change" event; a "change" event on it
  would send nothing anyway, as the model has that value.)
- The kernel's "echo_update" (the kernel's copy of a value the page sent): dropped if the page has sent
  a later value since, or holds one back; otherwise set like an update.
"""

from __future__ import annotations

import itertools
from typing import Any

_ids = itertools.count(1)


class PageInput:
    def __init__(self, prompt: Any) -> None:
        self.prompt = prompt
        self.box = prompt.value  # the <input>'s text
        self.value = prompt.value  # the page's model
        self.continuous = prompt.continuous_update
        self._changed_at = prompt.value  # the box's text at its last "change" event
        self._pending: list[str] = []  # ids of syncs sent and not yet answered ("idle")
        self._held: str | None = None  # a value held back while a sync is unanswered
        self._echo_expected: str | None = None  # id of the last value sync sent, until its echo
        self.outbox: list[dict] = []  # page -> kernel, in order
        self.inbox: list[tuple[str | None, dict]] = []  # kernel -> page: (parent id, data), in order
        self._handling: str | None = None
        prompt.comm.send = self._from_kernel  # what the kernel sends to the page (DummyComm drops it)

    # ------------------------------------------------------------------ #
    # the learner

    def type(self, keys: str) -> None:
        """Keys typed into the box, one "input" event each ("\\b" is Backspace)."""
        for key in keys:
            self.box = self.box[:-1] if key == "\b" else self.box + key
            if self.continuous:
                self._set_from_box()

    def paste(self, text: str) -> None:
        """Text pasted into the box: one "input" event."""
        self.box += text
        if self.continuous:
            self._set_from_box()

    def enter(self) -> None:
        self.outbox.append({"id": next(_ids), "data": {"method": "custom", "content": {"event": "submit"}}})
        if self.box != self._changed_at:  # the "change" event
            self._changed_at = self.box
            self._set_from_box()

    def _set_from_box(self) -> None:
        if self.box == self.value:
            return  # no change: nothing to sync
        self.value = self.box
        if self._pending:
            self._held = self.value
        else:
            self._send_value(self.value)

    def _send_value(self, value: str) -> None:
        msg_id = f"page-{next(_ids)}"
        self.outbox.append({"id": msg_id, "data": {"method": "update", "state": {"value": value},
                                                   "buffer_paths": []}})
        self._pending.append(msg_id)
        self._echo_expected = msg_id

    # ------------------------------------------------------------------ #
    # the wire

    def _from_kernel(self, data=None, metadata=None, buffers=None) -> None:
        self.inbox.append((self._handling, data))

    def to_kernel(self, n: int | None = None) -> None:
        """The next n of the page's messages (all when None) reach the kernel, each handled by
        ipywidgets' own handler; the kernel's "idle" for each follows what it sent meanwhile."""
        for _ in range(len(self.outbox) if n is None else n):
            msg = self.outbox.pop(0)
            self._handling = str(msg["id"])
            try:
                self.prompt._handle_msg({"header": {"msg_id": self._handling}, "content": {"data": msg["data"]},
                                         "buffers": []})
            finally:
                self._handling = None
            self.inbox.append((str(msg["id"]), {"method": "idle"}))

    def to_page(self, n: int | None = None) -> None:
        """The next n of the kernel's messages (all when None) reach the page."""
        for _ in range(len(self.inbox) if n is None else n):
            parent, data = self.inbox.pop(0)
            method = data.get("method")
            if method == "idle":
                if parent in self._pending:
                    self._pending.remove(parent)
                    if self._held is not None and not self._pending:
                        held, self._held = self._held, None
                        self._send_value(held)
                continue
            if method not in ("update", "echo_update"):
                continue  # custom messages (focus) change nothing here
            state = dict(data.get("state", {}))
            if method == "echo_update" and "value" in state and self._echo_expected is not None:
                if self._echo_expected != parent:
                    del state["value"]  # the page has sent a later value since
                else:
                    self._echo_expected = None
                    if self._held is not None:
                        del state["value"]  # the page holds a later one back
            changed = False
            if "continuous_update" in state and state["continuous_update"] != self.continuous:
                self.continuous, changed = state["continuous_update"], True
            if "value" in state and state["value"] != self.value:
                self.value, changed = state["value"], True
            if changed and self.box != self.value:  # TextView.update: the box redrawn from the model
                self.box = self._changed_at = self.value  # (set from script: no "change" event for it)

    def settle(self, rounds: int = 10) -> None:
        """Deliver everything both ways until nothing is left (the learner has stopped typing)."""
        for _ in range(rounds):
            if not (self.outbox or self.inbox):
                return
            self.to_kernel()
            self.to_page()
