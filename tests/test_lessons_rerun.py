"""The lessons as learners really run them: every code cell run twice in a row, then the next one.

nbval runs each lesson once, in order.  In JupyterLab people press Shift + Enter twice, or run a cell again
to look at it once more.  Here each lesson runs in one fresh kernel with every code cell executed twice
before the next cell, and:

* no execution raises, and no scripted stand-in runs out of replies (a story gone out of step);
* the first execution of every cell prints what the committed notebook shows (so running the cells above
  twice changed nothing the prose relies on: counts, lists, replies);
* the second execution prints the same again, or a note that starts with "already" and names the cell to
  run to start again (a cell that continues the cell above and says so instead of doing it twice).

Outputs are compared as nbval compares them (notebooks/nbval-sanitize.cfg applied; cells marked
NBVAL_IGNORE_OUTPUT left out).  A few cells differ when run again for a true reason; RERUN_DIFFERS names them,
with the reason, and their outputs are only checked for errors.

Wall time, measured on two cores shared with other work: 81 s for the twelve lessons, of which 00, 06 and 07
(marked `model`: they load the embedded model) take 33 s; `-m "not model"` runs the other nine in about 48 s.
"""

from __future__ import annotations

import copy
import re

import nbformat
import pytest

from tests.test_lessons import HAVE_MODEL, LESSONS, NOTEBOOKS, build  # the lessons as their builder reads them

RERUN_NOTE = re.compile(r"^already .*: run the cell above", re.MULTILINE)
OUT_OF_STEP = "has no replies left"  # ScriptedClient's words when a cell asked more often than the story planned

# Cells (found by their first line) whose output truly changes when they run again; neither run is compared.
RERUN_DIFFERS = {
    "01-the-mental-model": {
        'full = history + [{"role": "user", "content": "How much is it?"}]':
            "run again it is one more call: the stand-in numbers it '[scripted reply 3]' (still 4 messages)",
        "for n, call in enumerate(client.calls, start=1):":
            "lists every call made, so a call cell run twice shows up as a third call, identical to the second",
    },
    "09-the-chat-panel": {
        'client.enqueue("How much is what, sorry?':
            "the panel is one live conversation: asked again, Amnesia keeps two more messages (the prose says so)",
        "request = httpx2.Request(":
            "prints how many messages the panel keeps: two more after the Amnesia cell ran twice",
        "%load_ext nora_widgets": "IPython says the extension is already loaded",
        "%%chat": "a %%chat cell sends its text as the next message every time it runs (the echo says how many)",
        "print(len(nora_history)": "counts the messages the %%chat cells sent",
    },
}


def _sanitizers() -> list[tuple[re.Pattern, str]]:
    """The regex/replace pairs of notebooks/nbval-sanitize.cfg, as nbval reads them."""
    pairs, pattern = [], None
    for line in (NOTEBOOKS / "nbval-sanitize.cfg").read_text(encoding="utf-8").splitlines():
        if line.startswith("regex:"):
            pattern = re.compile(line[len("regex:"):].strip())
        elif line.startswith("replace:") and pattern is not None:
            pairs.append((pattern, line[len("replace:"):].strip()))
            pattern = None
    return pairs


SANITIZE = _sanitizers()


def shown(outputs) -> str:
    """What a learner reads in a cell's output area (text, reprs, errors), each part sanitized as nbval does."""
    parts = []
    for out in outputs:
        if out.output_type == "stream":
            text = out.text
        elif out.output_type == "error":
            text = f"{out.ename}: {out.evalue}"
        else:
            text = out.get("data", {}).get("text/plain", "")
        for pattern, replacement in SANITIZE:
            text = pattern.sub(replacement, text)
        parts.append(text)
    return "".join(parts)


def run_each_cell_twice(nb):
    """Execute nb in a fresh kernel, each code cell twice in a row; {index: (first outputs, second outputs)}."""
    from nbclient import NotebookClient

    client = NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True, record_timing=False,
                            store_widget_state=False, resources={"metadata": {"path": str(NOTEBOOKS)}})
    runs = {}
    with client.setup_kernel(env=build.clean_env()):
        for index, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                client.execute_cell(cell, index)
                first = copy.deepcopy(cell.outputs)
                client.execute_cell(cell, index)
                runs[index] = (first, cell.outputs)
    return runs


def lessons():
    for lesson in LESSONS:
        marks = [pytest.mark.model] if lesson.needs_model else []
        yield pytest.param(lesson, marks=marks, id=lesson.stem)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("lesson", list(lessons()))
def test_each_cell_run_twice_keeps_the_lesson_true(lesson):
    if lesson.needs_model and not HAVE_MODEL:
        pytest.skip("needs the embedded model (llama-cpp-python)")
    stored = nbformat.read(NOTEBOOKS / f"{lesson.stem}.ipynb", as_version=4)
    nb = build.to_notebook(lesson, "lesson")
    differs = RERUN_DIFFERS.get(lesson.stem, {})
    problems = []
    for index, (first, second) in run_each_cell_twice(nb).items():
        source = nb.cells[index].source
        head = source.strip().splitlines()[0]
        where = f"cell {index} ({head[:60]!r})"
        for run, outputs in (("first", first), ("second", second)):
            errors = [o for o in outputs if o.output_type == "error"]
            if errors:
                problems.append(f"{where}, {run} run raised {errors[0].ename}: {errors[0].evalue}")
            elif OUT_OF_STEP in shown(outputs):
                problems.append(f"{where}, {run} run: the stand-in ran out of replies")
        if "NBVAL_IGNORE_OUTPUT" in source or any(source.startswith(key) for key in differs):
            continue
        want, got_first, got_second = shown(stored.cells[index].outputs), shown(first), shown(second)
        if got_first != want:
            problems.append(f"{where}: after the cells above ran twice it shows\n{got_first}\ninstead of\n{want}")
        elif got_second != got_first and not RERUN_NOTE.search(got_second):
            problems.append(f"{where}: run again it shows\n{got_second}\ninstead of\n{got_first}")
    assert not problems, f"{lesson.stem}, every cell run twice:\n" + "\n\n".join(problems)


def test_every_cell_allowed_to_differ_still_exists():
    """RERUN_DIFFERS must not go stale: each first line it names starts a code cell of its lesson."""
    for stem, cells in RERUN_DIFFERS.items():
        lesson = next(l for l in LESSONS if l.stem == stem)
        sources = [c.source for c in lesson.cells if c.kind == "code"]
        for key in cells:
            assert any(s.startswith(key) for s in sources), f"{stem}: no code cell starts with {key!r}"


def test_need_passes_when_the_names_exist_and_names_the_cell_to_run_when_not():
    from nora_widgets.lessons import NotRunYet, need

    need("len", "pytest")  # a builtin and a module-level name of this file
    with pytest.raises(NotRunYet) as caught:
        need("pytest", "my_history", "texts", run="the exercise cell above")
    said = str(caught.value)
    assert said.startswith("my_history, texts are not defined yet: run the exercise cell above first")
    assert "Run All Above Selected Cell" in said and "\n" not in said
    assert isinstance(caught.value, NameError)  # still a NameError for code that catches those
    assert caught.value._render_traceback_() == [f"\x1b[0;31mNotRunYet\x1b[0m: {said}"]


@pytest.mark.timeout(120)
def test_a_check_run_first_after_a_restart_says_which_cell_to_run_in_one_line():
    """The kernel restarted, the learner runs the check: one line naming the cells to run, not a bare NameError."""
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(lesson.find("check").source) for lesson in LESSONS]
    client = NotebookClient(nb, timeout=60, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    with client.setup_kernel(env=build.clean_env()):
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
    for lesson, cell in zip(LESSONS, nb.cells):
        [error] = [o for o in cell.outputs if o.output_type == "error"]
        assert error.ename == "NotRunYet", f"{lesson.stem}: the check stopped with {error.ename}: {error.evalue}"
        assert len(error.traceback) == 1, f"{lesson.stem}: a traceback, not one line: {error.traceback}"
        assert "not defined yet: run the " in error.evalue, error.evalue
