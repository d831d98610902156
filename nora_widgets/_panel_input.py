"""The chat panel's input box around a turn: what Enter and Escape do, and what the box holds.

    box = PanelInput(prompt, busy=lambda: False, send=lambda text: True, stop=print,
                     note_busy=print, kept=print)
    prompt.on_msg(box.on_msg)     # {"event": "submit", "text": ...} (Enter, Send), "stop" (Escape), "kept"

``prompt`` is the panel's PromptBox (_prompt_box.py): the page empties it on Enter (or a click on Send)
and sends the text with it, so keys typed after it are the next message, and a write from the kernel
never wipes text typed there that the kernel has not had yet (the page keeps it and answers "kept").

The panel owns one (``ChatPanel._input``) and asks it at the turn's edges: ``turn_starts(text)``
empties the box of the message sent; ``turn_over(failed)`` puts a failed or stopped message back
into an empty box, or keeps it aside (``held``) when something was typed meanwhile; ``put_back()``
is Undo's half of that.  ``send(text)`` is the panel's send (True if a turn started); ``busy()`` says
whether a reply runs; ``stop()`` is the Stop button; ``note_busy()`` says why Enter did nothing;
``kept(message)`` says that a message put back was kept aside instead.
"""

from __future__ import annotations

from typing import Any, Callable

from ._prompt_box import PromptBox

__all__ = ["PanelInput"]


class PanelInput:
    """The state of the panel's input box between the page's messages and the turns."""

    def __init__(self, prompt: PromptBox, *, busy: Callable[[], bool], send: Callable[[str], bool],
                 stop: Callable[[], Any], note_busy: Callable[[], Any], kept: Callable[[str], Any]) -> None:
        self.prompt = prompt
        self._busy, self._send, self._stop, self._note_busy, self._kept = busy, send, stop, note_busy, kept
        self.sending = ""  # the message of the turn in progress (the box was emptied of it)
        self.held: str | None = None  # a failed or stopped message kept aside, not put over typed text
        self._put: tuple[str, str] | None = None  # (text written, message in it): a write the page may refuse

    # ------------------------------------------------------------------ #
    # from the page

    def on_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        """A message from the page: Enter ("submit"), Escape ("stop"), a write refused ("kept")."""
        if not isinstance(content, dict):
            return
        event, text = content.get("event"), content.get("text")
        if event == "submit" and isinstance(text, str):
            if self._busy():  # a reply runs: nothing is sent, and the text stays in the box
                self._note_busy()
                if content.get("emptied"):  # the page had not heard of the reply yet
                    self.prompt.give_back(text)
            elif not self._send(text) and content.get("emptied"):  # refused (one line says why): nothing lost
                self.prompt.give_back(text)
        elif event == "stop" and self._busy():
            self._stop()
        elif event == "kept" and self._put is not None and text == self._put[0]:
            self.held, self._put = self._put[1], None
            self._kept(self.held)

    # ------------------------------------------------------------------ #
    # the panel writes the box

    def put(self, text: str, message: str | None = None) -> None:
        """Write text into the box; if the page refuses it (something typed there the kernel had not
        had yet), message (default: text) is kept aside, and kept(message) says so."""
        self._put = (text, text if message is None else message)
        self.prompt.value = text

    def turn_starts(self, text: str) -> None:
        """The message leaves the box (it shows in the live area); what is typed from now on is the
        next message.  After Enter the page has emptied it already; keys typed since stay."""
        self.sending, self.held, self._put = text, None, None
        self.prompt.value = ""

    def turn_over(self, failed: bool) -> bool:
        """The turn is over: returns whether the box holds text typed meanwhile.

        That text is never written over.  A failed or stopped message goes back only into an empty
        box (Enter sends it again); otherwise it is kept aside (held), and Undo puts it back in front
        of what was typed.
        """
        typed = bool(self.prompt.value.strip())
        self.held = self.sending if failed and typed else None
        if failed and not typed:
            self.put(self.sending)
        return typed

    def put_back(self) -> bool:
        """The message kept aside goes back into the box, in front of what is typed there (nothing
        typed is lost; in a text area, on the line above).  Returns whether there was typed text."""
        held, self.held = self.held, None
        assert held is not None, "put_back() with no message kept aside"  # the panel asks only when held
        typed = self.prompt.value
        joint = "\n" if self.prompt.multiline else " "
        self.put(held + joint + typed if typed.strip() else held, held)
        return bool(typed.strip())
