"""The chat panel's input box: when Enter sends, and what the box holds around a turn.

    box = PanelInput(prompt, lock, busy=lambda: False, send=print, note_busy=print)
    prompt.on_msg(box.on_msg)                       # Enter: {"event": "submit"} from the browser
    prompt.observe(box.on_value, names="value")     # the text, as the browser sends it

The panel owns one (``ChatPanel._input``) and asks it at the turn's edges: ``turn_starts(text)``
empties the box of the message being sent, ``turn_over(failed)`` puts a failed message back or
keeps it aside, ``put_back()`` is Undo's half of that.  ``send`` is the panel's "send what is
in the input"; ``busy`` says whether a reply runs; ``note_busy`` says why Enter did nothing.

Enter to send.  On Enter the browser sends {"event": "submit"} (the message behind the
deprecated Text.on_submit) and *then* the new text as a value change.  So Enter only arms a
send; the value change that follows fires it.  If the text did not change, no value change
comes, and a short timer fires it.

Except when the panel itself has just put the text there (Undo puts the message back; a failure
or Stop puts it back) and nothing has been typed since: then the box is "known" (``known``),
and Enter sends at once.  To know that nothing was typed, the input sends every keystroke while
it is known (continuous_update=True): the first key typed reaches the kernel before any Enter
after it and ends the known state.  The input goes on sending every key, and what it holds is
then treated as text typed ahead (below): keys typed before the Enter may reach the kernel after
it, or all of them before it, and in both cases Enter sends the whole text.

Type-ahead.  The input stays open while a reply runs; the message being sent leaves it when the
turn starts (it shows above, in the live area), so what is typed next is the next message.  While
the reply runs the input sends every keystroke too, for two reasons: the panel must know whether
the input is empty when a turn fails (the failed message goes back only into an empty input:
``turn_over``), and the browser redraws a text box from its model whenever the panel changes
anything of it, which would wipe keys it had not yet sent.  Enter (and Send, disabled) while a
reply runs sends nothing; a note says why.  After the reply, text typed during it is "typed
ahead" (``typed_ahead``): the input goes on sending every key, so once no key has arrived for
KEYS_SETTLED seconds the panel has the whole text, and Enter sends at once.  Sooner, a key may
still be on its way (the browser holds back a value while the previous one is unanswered, but
not the Enter): Enter waits for the text that follows, as above, or until KEYS_SETTLED is over.

Keys typed right after Enter.  The turn starts when the kernel has the message, and the input is
emptied then; the page hears of it a round trip after the Enter.  When the input sends every key (text
typed ahead, or a message put back), a key typed meanwhile goes out with the whole box, the message
and the key ("Hello" + "T"), and later keys follow it.  The page shows that text again when its copy
comes back from the kernel, so the input kept only what follows the message (``emptied_of``): the
message is not in it twice.  If more keys are typed into the emptied box before the kernel's answer
to the first one arrives, the page sends them as the box's whole text, and the first keys are lost.
A new message (one value per Enter) sends nothing for the keys typed after its Enter; whatever the
kernel writes to the input then redraws the box from the value it has, so those keys are lost when the
emptying reaches the page after them.  The stock Text gives no way round that: sending every key instead
would make the text before the Enter indistinguishable from the keys after it (the page merges keys
held back while a value is unanswered).  docs/panel.md says what this means for someone typing.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import ipywidgets as widgets

__all__ = ["PanelInput", "ENTER_GRACE", "KEYS_SETTLED", "EMPTIED_HEARD"]

ENTER_GRACE = 0.5  # seconds to wait for the text that follows an Enter before sending what is there
# After a reply, Enter on text typed during it sends at once if no key has arrived for this long: by
# then every key has reached the kernel (the browser holds a value back only while the previous one is
# unanswered, a round trip to the kernel).  Sooner, Enter waits for the text that follows it.
KEYS_SETTLED = 0.5
# A value from the page that is the message just sent and more, arriving this long after the input was
# emptied of it (or after the last such value), was typed after the page heard of the emptying: a text
# pasted over the empty input that begins with the message sent is the next message, whole.  Values
# typed before the page heard of it arrive within a round trip or two.
EMPTIED_HEARD = 1.0


class PanelInput:
    """The state of the panel's input box between the browser's messages and the turns.

    prompt: the panel's Text (Enter sends) or Textarea (only Send sends).
    lock: the panel's RLock; the end of a turn reads the box and writes it under it, and a key
        arriving meanwhile waits for it.
    busy(): True while a reply runs.  send(): send what is in the input (Enter's send).
    note_busy(): Enter while a reply runs: say why nothing happened.
    """

    def __init__(self, prompt: widgets.Text | widgets.Textarea, lock: Any, *, busy: Callable[[], bool],
                 send: Callable[[], Any], note_busy: Callable[[], None]) -> None:
        self.prompt = prompt
        self._lock = lock
        self._busy = busy
        self._send = send
        self._note_busy = note_busy
        self.known = False  # the input shows exactly the text the panel knows: Enter sends at once
        self.typed_ahead = False  # the input holds text typed while the last reply ran (see turn_over)
        self.typed_at = float("-inf")  # time.monotonic() when the browser last sent the input's text
        self._writing = False  # the panel itself is setting the input's value (not a key typed)
        self.sending = ""  # the message of the turn in progress (the input was emptied of it)
        # The text the panel emptied the input of, while the page may not have heard of it yet: a value
        # from the page that is this text and more was typed before the page did (see _drop_sent_text)
        self.emptied_of: str | None = None
        self.emptied_at = float("-inf")  # time.monotonic() of that emptying, or of the last value cut so
        self.held: str | None = None  # a failed or stopped message kept aside, not put over typed text
        self._enter_pressed = False
        self.enter_timer: threading.Timer | None = None
        self.submit_lock = threading.Lock()  # Enter's timer thread and a click must not both start a turn

    # ------------------------------------------------------------------ #
    # from the browser

    def on_msg(self, _widget: Any, content: dict, _buffers: Any) -> None:
        """A custom message from the input: {"event": "submit"} is Enter."""
        if not (isinstance(content, dict) and content.get("event") == "submit"):
            return
        if self._busy():  # a reply is running: nothing is sent, and the text stays in the input
            self._note_busy()
            return
        with self.submit_lock:
            unsettled = KEYS_SETTLED - (time.monotonic() - self.typed_at)  # > 0: a key may be on its way
            now = self.known or (self.typed_ahead and unsettled <= 0)
            if not now:
                self._enter_pressed = True  # typed ahead: no later than when every key has arrived
                grace = min(ENTER_GRACE, unsettled) if self.typed_ahead else ENTER_GRACE
                self.enter_timer = threading.Timer(grace, self._send_after_enter)
                self.enter_timer.daemon = True
                self.enter_timer.start()
        if now:  # the text in the box is the text the panel knows: no value change will follow
            self._send()

    def on_value(self, _change: dict) -> None:
        """The input's value changed: a key typed (or text set from code), or the panel's own write."""
        with self._lock:  # turn_over reads the input and puts a failed message back under it
            if self._writing:  # the panel's own write, not a key typed
                return
            self.typed_at = time.monotonic()
            self._drop_sent_text()
            if self._busy():  # typed while a reply runs: it stays in the input, and nothing is sent
                return
        if self.known:  # something was typed (or set from code) into a text the panel put there: the
            # input goes on sending every key, as after text typed during a reply (see on_msg).  It
            # went back to one value per Enter here, but keys typed before that reached the page
            # still came one by one: with all of them in before the Enter, no value followed it,
            # and Enter waited for ENTER_GRACE.
            self.known, self.typed_ahead = False, True
        if self._enter_pressed:
            self._send_after_enter()

    def _drop_sent_text(self) -> None:
        """A value the page sent before it heard that the input was emptied of the message sent: that
        message and the keys typed after the Enter ("Hello" sent, "HelloT" arrives).  The page shows it
        again (its copy of the value comes back), and Enter would send the message twice: the input
        keeps only what follows the message ("T").  Values keep coming so while the page had keys on
        their way; the first that is not the message and more is typed over the emptied input.  A value
        set from code (not from the page) is taken as it is, and so is one that arrives EMPTIED_HEARD
        after the emptying (or the last value cut so): a text pasted over the emptied input.  After a
        new message (the box sent one value per Enter) nothing is cut: keys typed after its Enter were
        never sent, and "Hello again?" sent soon after "Hello" went out as " again?".

        What stays is text typed ahead: the input goes on sending every key, and Enter on it works as
        on text typed during a reply.  (With the reply over already, the input had gone back to one value
        per Enter; Enter on the text the panel wrote there sent nothing until ENTER_GRACE.)"""
        emptied, self.emptied_of = self.emptied_of, None
        value = self.prompt.value
        # ipywidgets' own mark of a value the page sent (set_state); were it gone, nothing is cut
        from_page = getattr(self.prompt, "_property_lock", {}).get("value") == value
        heard = time.monotonic() - self.emptied_at > EMPTIED_HEARD
        if emptied is None or heard or not from_page or not (value.startswith(emptied) and len(value) > len(emptied)):
            return
        self.write(value[len(emptied):], continuous=True)
        self.emptied_of, self.emptied_at = emptied, time.monotonic()
        if not self._busy():
            self.known, self.typed_ahead = False, True

    def _send_after_enter(self) -> None:
        with self.submit_lock:
            if not self._enter_pressed:
                return
            self._enter_pressed = False
            if self.enter_timer is not None:
                self.enter_timer.cancel()
        self._send()

    def wait_for_enter(self, timeout: float | None) -> None:
        """Enter pressed a moment ago: wait until its send has started (or timeout)."""
        timer = self.enter_timer
        if timer is not None and timer.is_alive():
            timer.join(timeout)

    # ------------------------------------------------------------------ #
    # the panel writes the box

    def write(self, value: str | None = None, continuous: bool | None = None) -> None:
        """The panel writes the input: one message to the browser, and not taken for a key typed."""
        with self._lock:
            self._writing = True
            try:
                with self.prompt.hold_sync():
                    if value is not None:
                        self.prompt.value = value
                    if continuous is not None:
                        self.prompt.continuous_update = continuous
            finally:
                self._writing = False

    def know(self, text: str | None = None) -> None:
        """The input shows text (None: what it has now), and Enter on it sends at once (see above).

        One message to the browser: a key typed before the input sends keystrokes must be impossible.
        """
        known = isinstance(self.prompt, widgets.Text)  # Enter does not send from a text area (one value per Send)
        with self._lock:
            self.write(text, continuous=known)
            self.known, self.typed_ahead = known, False
            self.emptied_of = None  # what the page sends from now on is typed over this text

    def forget(self) -> None:
        """One value per Enter again: the panel no longer knows what the box shows."""
        self.known = self.typed_ahead = False
        self.prompt.continuous_update = False

    # ------------------------------------------------------------------ #
    # around a turn

    def turn_starts(self, text: str) -> None:
        """The message leaves the input (it shows in the live area) and the input stays open: what
        is typed from now on is the next message.  Every key typed is sent (see above)."""
        self.sending, self.held = text, None
        with self._lock:
            # Only a box that sent every key can send the message and keys typed after the Enter as one
            # value; a new message (one value per Enter) sends nothing for them (see _drop_sent_text)
            keyed = self.prompt.continuous_update
            self.write("", continuous=True)
            self.known = self.typed_ahead = False
            self.emptied_of, self.emptied_at = (text if keyed else None), time.monotonic()

    def turn_over(self, failed: bool) -> bool:
        """The turn is over: returns whether the input holds text typed meanwhile.

        That text is never written over.  A failed or stopped message goes back only into an empty
        input (Enter sends it again at once); otherwise it is kept aside (held), and Undo puts it
        back in front of what was typed.  Call with the lock held, in the step that frees the panel:
        a key arriving meanwhile waits (on_value).
        """
        with self._lock:
            typed = bool(self.prompt.value.strip())
            self.held = self.sending if failed and typed else None
            if failed and not typed:
                self.know(self.sending)
            elif typed and isinstance(self.prompt, widgets.Text):
                self.typed_ahead = True  # every key goes on reaching the kernel (see on_msg)
            else:
                self.forget()  # one value per Enter again
        return typed

    def put_back(self) -> bool:
        """The message kept aside goes back into the input, in front of what is typed there (nothing
        typed is lost; in a text area, on the line above), and Enter on it sends at once.  Returns
        whether there was typed text."""
        held, self.held = self.held, None
        typed = self.prompt.value
        joint = "\n" if isinstance(self.prompt, widgets.Textarea) else " "
        self.know(held + joint + typed if typed.strip() else held)
        return bool(typed.strip())
