"""The chat panel's Edit: rewrite a message of the list, as ``/edit N TEXT`` and ``%chat edit N TEXT`` do.

    editor = MessageEditor()
    editor.number.value = "2"          # the inspector's # column: 0 is the persona
    editor.show(2, history[2])         # (the panel does this when Edit is pressed) the box holds its text
    editor.text.value = "We have none."
    editor.index, editor.text.value    # -> 2, 'We have none.': what Save edit hands edit_message
    editor.hide()

Only widgets here: the panel (``panel.py``) checks the number with ``conversation.message_at``, saves
with ``conversation.edit_message`` and says what changed.  In reading (and Tab) order:

    message [ 2 ] [Edit]                           in the row of Clear and Undo
    message 2 (assistant): what the next call ...  a line, the box and its buttons, under that row,
    [ the text, in a box of a few lines ]          shown only while a message is being edited
    [Save edit] [Cancel]

Save edit is not "Save" (that button saves the file): a screen reader tells the two apart by name.
Keys (the panel hears them with ``on_key``): Enter in the number box is Edit, Escape empties it (and
closes the box when it holds no changes); in the box, Ctrl+Enter (Cmd+Enter on a Mac) is Save edit and
Escape is Cancel; each carries the box's text of that instant.  Save edit's text is trimmed at both
ends by ``edit_message``, as /edit and %chat edit take theirs.
"""

from __future__ import annotations

import ipywidgets as widgets

from ._key_box import KeyBox
from .render import MUTED, escape

__all__ = ["MessageEditor"]


class MessageEditor:
    """The Edit controls (number box, Edit) and the editing box (text, Save edit, Cancel).

    ``index`` is the message being edited, None while the box is closed.
    """

    def __init__(self) -> None:
        # KeyBox (_key_box.py): Enter in the number box, and Ctrl/Cmd+Enter or Escape in the text, reach
        # the kernel with the text of that instant.  Otherwise the text goes to the kernel as the box is left
        # (Tab, or the click on Edit or Save edit), ahead of the click.  Sent key by key, the last keys' update
        # could be held back (one update in flight at a time) while the click went ahead: Save edit saved
        # the text cut short
        self.number = KeyBox(description="message", placeholder="#", description_width="70px",
                             tooltip="the number of the message to edit (the inspector's # column; 0 is the "
                                     "persona); Enter opens it, Escape empties the box",
                             layout=widgets.Layout(width="126px"))
        self.open = widgets.Button(description="Edit", icon="pencil", layout=widgets.Layout(width="80px"),
                                   tooltip="put that message in a box to rewrite it: the next call sends the list "
                                           "as edited, and the model cannot tell")
        self.label = widgets.HTML()
        # the box is named by its description, "message 2": a screen reader hears which message it holds
        self.text = KeyBox(multiline=True, rows=3, description_width="80px", layout=widgets.Layout(width="98%"))
        self.save = widgets.Button(description="Save edit", button_style="primary", layout=widgets.Layout(width="100px"),
                                   tooltip="put this text in the list in place of the message (its role is kept); "
                                           "Ctrl+Enter in the box does it too")
        self.cancel = widgets.Button(description="Cancel", layout=widgets.Layout(width="80px"),
                                     tooltip="close the box: the message stays as it was (Escape in the box does it too)")
        self.box = widgets.VBox([self.label, self.text, widgets.HBox([self.save, self.cancel])],
                                layout=widgets.Layout(display="none", padding="2px 0"))
        self.number.add_class("nora-edit-number")
        self.open.add_class("nora-edit")
        self.text.add_class("nora-edit-text")
        self.save.add_class("nora-edit-save")
        self.cancel.add_class("nora-edit-cancel")
        self.index: int | None = None
        self._shown = ""  # the text the box opened with: unsaved() compares with it

    def show(self, index: int, message: dict) -> None:
        """Open the box on message index, holding its text as it is now; the box takes the focus."""
        self.index = index
        self.text.description = f"message {index}"
        self._shown = message["content"]
        self.text.put(self._shown)
        self.label.value = (f'<div style="color:{MUTED};line-height:1.4">message {index} ({escape(message["role"])}): '
                            "Save edit puts this text in the list; the next call sends it, and the model cannot tell "
                            "it was not said so</div>")
        self.box.layout.display = ""
        self.text.focus()

    def hide(self) -> None:
        """Close the box (after Save edit, Cancel, or a new conversation); its text is dropped."""
        self.index = None
        self.box.layout.display = "none"
        self.text.put("")

    def unsaved(self) -> bool:
        """Whether the box is open on text changed since it opened (as far as the kernel has it: the text
        comes as the box is left, so by the time Edit is pressed).  Example: show(2, m); text.value = "x" -> True"""
        return self.index is not None and self.text.value != self._shown
