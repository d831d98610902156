"""The lessons as files: numbered, in sync with their sources, executed cleanly, and checks that bite.

nbval (configured in pyproject.toml) re-runs every notebook and compares outputs; these tests cover what
nbval does not: the committed files are well formed (kernelspec, execution counts 1, 2, 3..., no errors, no
key), every lesson ends with an exercise and a check, the solutions pass their checks, and a wrong answer
makes the check fail loudly (an AssertionError, run in a fresh kernel): every wrong answer a lesson lists,
each on its own, and every other right answer a lesson lists passes. A wrong answer with a line `# the check says: TEXT` must also get a message holding TEXT, so
the check names that mistake and not another one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"

_spec = importlib.util.spec_from_file_location("nora_lesson_build", NOTEBOOKS / "_build" / "build.py")
build = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = build  # dataclasses look their module up while the file runs
_spec.loader.exec_module(build)

LESSONS = build.load_lessons()
REQUIRED = ["00-start-here", "01-the-mental-model", "02-one-call", "03-persona", "04-the-loop",
            "05-when-calls-fail", "06-long-conversations", "07-temperature", "08-not-a-security-boundary",
            "09-the-chat-panel", "10-streaming", "11-memory"]
SAYS = re.compile(r"^\s*# the check says: (.+?)\s*$", re.MULTILINE)  # in a wrong answer: what the check must say
KEY_PATTERN = re.compile(r"sk-[A-Za-z0-9_\-]{8,}")
HAVE_MODEL = importlib.util.find_spec("llama_cpp") is not None


def committed(stem: str, variant: str = "lesson"):
    folder = NOTEBOOKS if variant == "lesson" else NOTEBOOKS / "solutions"
    return nbformat.read(folder / f"{stem}.ipynb", as_version=4)


def all_notebooks():
    for lesson in LESSONS:
        for variant in ("lesson", "solution"):
            yield pytest.param(lesson.stem, variant, id=f"{variant}:{lesson.stem}")


def test_the_course_has_the_twelve_lessons_numbered_in_order():
    stems = [lesson.stem for lesson in LESSONS]
    assert stems[: len(REQUIRED)] == REQUIRED
    assert [int(s[:2]) for s in stems] == list(range(len(stems))), "numbers must run 00, 01, 02... without gaps"
    on_disk = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert on_disk == stems, "every notebook must come from a source in notebooks/_build/lessons/ (and back)"
    assert sorted(p.stem for p in (NOTEBOOKS / "solutions").glob("*.ipynb")) == stems


@pytest.mark.parametrize("stem,variant", list(all_notebooks()))
def test_committed_notebook_matches_its_source(stem, variant):
    lesson = next(l for l in LESSONS if l.stem == stem)
    expected = build.to_notebook(lesson, variant)
    nb = committed(stem, variant)
    got = [(c.cell_type, c.source) for c in nb.cells]
    want = [(c.cell_type, c.source) for c in expected.cells]
    assert got == want, f"{stem} ({variant}) is out of date: run python notebooks/_build/build.py {stem[:2]}"


@pytest.mark.parametrize("stem,variant", list(all_notebooks()))
def test_committed_notebook_is_executed_cleanly(stem, variant):
    nb = committed(stem, variant)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "run from a fresh kernel, top to bottom"
    for cell in code:
        for out in cell.outputs:
            assert out.output_type != "error", f"error output in {stem}: {out.get('ename')}: {out.get('evalue')}"
            if out.output_type == "stream":
                assert "Traceback" not in out.text, f"a traceback was printed in {stem}"
    text = json.dumps(nb)
    assert not KEY_PATTERN.search(text), f"something that looks like an API key is stored in {stem}"
    key = os.environ.get("OPENAI_API_KEY")
    if key and len(key) >= 8:
        assert key not in text


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda l: l.stem)
def test_each_lesson_has_one_idea_in_prose_and_code_and_ends_with_exercise_and_check(lesson):
    nb = committed(lesson.stem)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith(f"# {lesson.stem[:2]} "), "title: '# NN ...'"
    code = [c for c in nb.cells if c.cell_type == "code"]
    prose = [c for c in nb.cells if c.cell_type == "markdown"]
    assert len(prose) >= 0.6 * len(code), f"{lesson.stem}: {len(prose)} markdown cells for {len(code)} code cells"
    assert code[-2].metadata.get("tags") == ["exercise"], "the second-to-last code cell is the exercise"
    assert code[-1].metadata.get("tags") == ["check"], "the last code cell is the check"
    assert code[-1] is nb.cells[-1], "the check is the last cell"
    assert "..." in code[-2].source, "the exercise leaves a ... for the learner to replace"


@pytest.mark.parametrize("lesson", LESSONS[1:], ids=lambda l: l.stem)
def test_each_lesson_says_how_to_resume_after_a_restart_before_its_first_code_cell(lesson):
    """A learner back after a kernel restart reads the top of the lesson, not lesson 00: the way out of the
    NameError a cell in the middle then stops with is said there, before any code runs."""
    nb = committed(lesson.stem)
    first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    before = " ".join(c.source for c in nb.cells[:first_code] if c.cell_type == "markdown")
    before = " ".join(before.replace(">", " ").split())  # the note is a blockquote wrapped over two lines
    assert "NameError" in before and "Run All Above Selected Cell" in before, (
        f"{lesson.stem}: say above the first code cell how to resume after a restart (see 01-the-mental-model.md)"
    )


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda l: l.stem)
def test_the_lesson_check_waits_and_the_solution_check_passes(lesson):
    def check_text(nb):
        return "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")

    assert "Not answered yet" in check_text(committed(lesson.stem))
    solved = check_text(committed(lesson.stem, "solution"))
    assert solved.startswith("✓ Correct"), f"the solution of {lesson.stem} does not pass its check: {solved!r}"


def _run_wrong(lesson, index):
    """Execute the lesson with its wrong answer number `index` in a fresh kernel; return the check cell's error."""
    from nbclient.exceptions import CellExecutionError

    nb = build.to_notebook(lesson, "wrong", index)
    try:
        build.execute(nb, NOTEBOOKS, timeout=120)
    except CellExecutionError as exc:
        failed = [c for c in nb.cells if c.cell_type == "code" and any(o.output_type == "error" for o in c.outputs)]
        return exc, failed[0]
    return None, None


def answers(kind: str):
    """One test case per answer of that kind in every lesson ("wrong": lesson.wrongs, "right": lesson.rights)."""
    for lesson in LESSONS:
        for index in range(len(getattr(lesson, kind + "s"))):
            marks = [pytest.mark.model] if lesson.needs_model else []
            yield pytest.param(lesson, index, marks=marks, id=f"{lesson.stem}-{kind}{index}")


@pytest.mark.timeout(240)
@pytest.mark.parametrize("lesson,index", list(answers("wrong")))
def test_a_wrong_answer_makes_the_check_fail_loudly(lesson, index):
    if lesson.needs_model and not HAVE_MODEL:
        pytest.skip("needs the embedded model (llama-cpp-python)")
    exc, cell = _run_wrong(lesson, index)
    wrong = lesson.wrongs[index].source
    assert exc is not None, f"the check of {lesson.stem} accepted a wrong answer:\n{wrong}"
    assert cell.metadata.get("tags") == ["check"], f"the wrong answer broke another cell:\n{wrong}\n{exc}"
    assert exc.ename == "AssertionError", f"the check should fail with an AssertionError, got {exc.ename}"
    assert exc.evalue.strip(), "the AssertionError should say what is wrong"
    for expected in SAYS.findall(wrong):
        assert expected in exc.evalue, f"the check should say {expected!r} for this wrong answer, it said: {exc.evalue}"


@pytest.mark.timeout(240)
@pytest.mark.parametrize("lesson,index", list(answers("right")))
def test_another_right_answer_passes_the_check(lesson, index):
    """A correct answer written differently from the solution (a harmless variation) must not be rejected."""
    if lesson.needs_model and not HAVE_MODEL:
        pytest.skip("needs the embedded model (llama-cpp-python)")
    from nbclient.exceptions import CellExecutionError

    nb = build.to_notebook(lesson, "right", index)
    right = lesson.rights[index].source
    try:
        build.execute(nb, NOTEBOOKS, timeout=120)
    except CellExecutionError as exc:
        pytest.fail(f"the check of {lesson.stem} rejected a right answer:\n{right}\n{exc.ename}: {exc.evalue}")
    said = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    assert said.startswith("✓ Correct"), f"the check of {lesson.stem} did not accept a right answer:\n{right}\n{said!r}"
