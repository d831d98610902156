"""Where the `nora` console script starts (pyproject.toml: ``nora = "nora_widgets._start:main"``).

Python runs the script's ``from nora_widgets._start import main`` before any of Nora's code can
catch anything, so this module and the package's ``__init__`` import nothing.  main() then imports
the command line (cli.py and what it imports: about 0.3 s) inside a guard, so that Ctrl-C at any
moment of the start says what a Ctrl-C later says, one line and exit status 130, not a traceback:

    $ nora ask hi      (Ctrl-C at once)
    ^C
    (cancelled)        exit status 130
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing's own flag, without importing typing (nothing here is imported at run time)
if TYPE_CHECKING:
    from typing import Any, Callable

EXIT_CANCELLED = 130  # cli.EXIT_CANCELLED: 128 + SIGINT, as a shell reports a job stopped by Ctrl-C


def main(argv: list[str] | None = None, wrap: Callable[[Any], Any] | None = None) -> int:
    """Entry point of the `nora` console script: cli.main (see its wrap) behind a Ctrl-C guard.
    Example: main(["ask", "Hi"]) -> 0; Ctrl-C while cli.py is being imported -> '(cancelled)', 130"""
    try:
        from .cli import main as run_command_line

        return run_command_line(argv, wrap)
    except KeyboardInterrupt:  # before cli.main's own handling is in place, or after it let go
        if sys.stderr is not None:  # closed (`nora ask hi 2>&-`): nothing to say it on
            try:
                sys.stderr.write("\n(cancelled)\n")  # a new line first: the terminal has just echoed ^C
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
        return EXIT_CANCELLED
