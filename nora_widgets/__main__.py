"""`python -m nora_widgets ...` is the `nora` command (the same arguments, the same Ctrl-C guard), for where
its console script is not on PATH (a venv not activated, `py -m` on Windows).
Example: python -m nora_widgets ask "Do you have any Le Guin?"
"""

import sys

from ._start import main

if __name__ == "__main__":  # imported (pkgutil, a test), it runs nothing
    sys.exit(main())
