"""For the lessons' check cells: one clear line when a cell they rely on has not run yet.

After a kernel restart, or a skipped cell, a check would stop with a bare
``NameError: name 'my_history' is not defined`` and a traceback.  ``need`` says instead which
cell to run, in one line (IPython shows an exception's ``_render_traceback_`` in place of the
traceback):

    need("my_history", run="the exercise cell above")
    -> NotRunYet: my_history is not defined yet: run the exercise cell above first ...
"""

from __future__ import annotations

import builtins
import sys

__all__ = ["NotRunYet", "need"]

_AFTER_RESTART = "(after a kernel restart: Run → Run All Above Selected Cell)"


class NotRunYet(NameError):
    """A name a cell uses is not defined yet: the message says which cell to run first."""

    def _render_traceback_(self) -> list[str]:  # IPython: these lines instead of a traceback
        return [f"\x1b[0;31mNotRunYet\x1b[0m: {self}"]


def need(*names: str, run: str = "the cells above") -> None:
    """Raise NotRunYet naming the cell to run when one of `names` is not defined where need was called.

    Example: need("history", "my_history", run="the lesson's cells above") passes once both exist.
    """
    defined = sys._getframe(1).f_globals  # a notebook cell's globals are the notebook's names
    missing = [name for name in names if name not in defined and not hasattr(builtins, name)]
    if missing:
        what = ", ".join(missing) + (" are" if len(missing) > 1 else " is")
        raise NotRunYet(f"{what} not defined yet: run {run} first {_AFTER_RESTART}")
