"""The acceptance test of the embedded model: no key, no network at all, and
`nora chat` still answers a piped question with a real reply from SmolLM2.

`unshare -n` runs the command in a new network namespace with no interfaces up
(not even loopback), so any attempt to reach a server fails at once.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.model, pytest.mark.timeout(120)]
ROOT = Path(__file__).resolve().parent.parent


def _unshare_works() -> str | None:
    """None when `unshare -n` may be used here, else why not."""
    if not shutil.which("unshare"):
        return "the unshare command is not installed (util-linux)"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"unshare -n is not permitted here: {probe.stderr.strip() or probe.returncode}"
    return None


WHY_NOT = _unshare_works()
needs_unshare = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")


def offline_env() -> dict:
    """The machine's environment without any OpenAI or Nora setting: no key, no base URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "NORA_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@needs_unshare
def test_inside_unshare_there_is_no_network_at_all():
    """The premise: even a server on this machine's loopback is out of reach in there."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        code = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)"
        outside = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
        inside = subprocess.run(["unshare", "-n", sys.executable, "-c", code], capture_output=True, text=True,
                                timeout=30)
    assert outside.returncode == 0
    assert inside.returncode != 0 and "Network is unreachable" in inside.stderr


@needs_unshare
def test_nora_chat_answers_with_no_key_and_no_network():
    pytest.importorskip("llama_cpp", reason="the embedded model needs llama-cpp-python ([local] extra)")
    # temperature 0: the same reply every run (at the default 0.7 the model once answered "Sold maps.")
    run = subprocess.run(["unshare", "-n", sys.executable, "-m", "nora_widgets.cli", "chat", "--temperature", "0"],
                         input="Do you sell maps?\n", cwd=ROOT, env=offline_env(),
                         capture_output=True, text=True, timeout=100)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    lines = run.stdout.splitlines()
    assert lines[0] == ("Nora chat: local model SmolLM2-135M-Instruct (llama.cpp, in-process), "
                        "context window n_ctx=2048 tokens")
    assert lines[2] == "you: Do you sell maps?"
    reply = "\n".join(lines[3:])
    assert reply.startswith("nora: ")
    assert "(error talking to the model" not in reply
    assert len(reply.removeprefix("nora: ").split()) >= 3  # a real sentence from the model, not an echo


# The runner: `nora ...` in this process, then the names of the heavy modules it loaded (on stderr).
RUN_AND_LIST_MODULES = """
import sys
from nora_widgets.cli import main
status = main(sys.argv[1:])
sys.stdout.flush()
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"openai", "pydantic", "httpx", "httpx2", "llama_cpp"})
print("loaded:", " ".join(loaded), file=sys.stderr)
sys.exit(status)
"""


@pytest.mark.parametrize("argv, stdin", [
    (["ask", "--max-tokens", "4", "--temperature", "0", "Do you sell maps?"], ""),
    (["chat", "--max-tokens", "4", "--temperature", "0"], "Do you sell maps?\n"),
])
def test_nora_on_the_embedded_model_imports_neither_openai_nor_pydantic(argv, stdin):
    """openai's types cost 0.6-0.9 s to import; on the embedded model nora gets plain look-alikes."""
    pytest.importorskip("llama_cpp", reason="the embedded model needs llama-cpp-python ([local] extra)")
    run = subprocess.run([sys.executable, "-c", RUN_AND_LIST_MODULES, *argv], input=stdin, cwd=ROOT,
                         env=offline_env(), capture_output=True, text=True, timeout=100)
    assert run.returncode == 0, run.stderr
    assert run.stderr == "loaded: llama_cpp\n"  # the model really answered; nothing of openai came along
    answer = run.stdout.splitlines()[-1]
    if argv[0] == "chat":
        assert answer.startswith("nora: ")
        answer = answer.removeprefix("nora: ")
    else:
        assert len(run.stdout.splitlines()) == 1
    assert answer.strip()
