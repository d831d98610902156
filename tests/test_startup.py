"""The `nora` console script's start: Ctrl-C before its commands run is the one line and exit 130.

The script is written as pip writes it for the entry point pyproject.toml declares, and run as a
real process; the import it is in when Ctrl-C comes is held (tests/helpers.holding_import), so the
key lands where it is meant to on a loaded machine too.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from tests import helpers
from tests.helpers import ROOT


def console_script(folder) -> str:
    """The `nora` script pip writes for [project.scripts] (as in the venv's bin/), in folder; its path."""
    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["nora"]
    module, function = target.split(":")
    path = folder / "nora"
    path.write_text(f"import sys\nfrom {module} import {function}\n"
                    "if __name__ == '__main__':\n"
                    "    sys.argv[0] = sys.argv[0].removesuffix('.exe')\n"
                    f"    sys.exit({function}())\n")
    return str(path)


# the command, and the import Ctrl-C comes in: cli.py itself (the first import main() makes), the client
# module it imports (the package's __init__ imported it before main() ran), nora serve's module (imported
# while the command line is built, before the command's own handling)
@pytest.mark.parametrize("command, module", [
    (["ask", "hi"], "nora_widgets.cli"),
    (["ask", "hi"], "nora_widgets.clients"),
    (["chat"], "nora_widgets.clients"),
    (["models"], "nora_widgets.clients"),
    (["serve"], "nora_widgets.clients"),
    (["serve"], "nora_widgets.serve"),
])
def test_ctrl_c_while_nora_starts_is_one_line_and_exit_130(tmp_path, command, module):
    # it was a KeyboardInterrupt traceback and exit 1 until about 0.4 s in, then the one line and 130
    script = console_script(tmp_path)
    env, held = helpers.holding_import(tmp_path, module, helpers.nora_env("http://127.0.0.1:9/v1", "sk-test-x"))
    proc = subprocess.Popen([sys.executable, script, *command], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
                            preexec_fn=helpers.sigint_as_in_a_terminal)
    out, err = helpers.press_ctrl_c_when_held(proc, held)
    assert (proc.returncode, out, err) == (130, "", "\n(cancelled)\n")


def test_the_script_runs_the_command_line_and_imports_nothing_before_it(tmp_path):
    # what the script imports before main() is in place: the package and _start.py, nothing of Nora besides,
    # nothing of the standard library but sys (each would widen the moment a Ctrl-C is a traceback)
    code = ("import sys; before = set(sys.modules); from nora_widgets._start import main; "
            "print(sorted(set(sys.modules) - before))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=helpers.nora_env(),
                          cwd=tmp_path, timeout=60)
    assert done.stdout.strip() == "['nora_widgets', 'nora_widgets._start']", done.stderr
    run = subprocess.run([sys.executable, console_script(tmp_path), "models", "--backend", "scripted"],
                         capture_output=True, text=True, env=helpers.nora_env(), cwd=tmp_path, timeout=60)
    assert (run.returncode, run.stdout) == (0, "scripted\n"), run.stderr


def test_python_m_nora_widgets_is_the_nora_command_with_its_ctrl_c_guard(tmp_path):
    # `python -m nora_widgets` said "is a package and cannot be directly executed"
    done = subprocess.run([sys.executable, "-m", "nora_widgets", "--version"], capture_output=True, text=True,
                          env=helpers.nora_env(), cwd=tmp_path, timeout=60)
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, "nora 0.1.0", "")
    env, held = helpers.holding_import(tmp_path, "nora_widgets.cli", helpers.nora_env("http://127.0.0.1:9/v1",
                                                                                      "sk-test-x"))
    proc = subprocess.Popen([sys.executable, "-m", "nora_widgets", "ask", "hi"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
                            preexec_fn=helpers.sigint_as_in_a_terminal)
    out, err = helpers.press_ctrl_c_when_held(proc, held)
    assert (proc.returncode, out, err) == (130, "", "\n(cancelled)\n")
