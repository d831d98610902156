"""Build the lesson notebooks from their sources, and run them from a fresh kernel.

Each lesson is written as one Markdown file in ``notebooks/_build/lessons/``.
Prose stays prose; a code cell is a *tilde* fence (backtick fences stay inside
the markdown, for code that is only shown):

    Some explanation.                 -> a markdown cell

    ~~~python                         -> a code cell
    history = [...]
    ~~~

    ~~~python exercise                -> the learner's exercise (placeholder: ...)
    ~~~python solution                -> replaces the exercise in notebooks/solutions/
    ~~~python check                   -> the check cell that ends every lesson
    ~~~python wrong                   -> a wrong answer; never written to a notebook,
                                         tests/test_lessons.py proves the check rejects it
                                         (one or more per lesson: each is tried on its own)
    ~~~python right                   -> another correct answer, written differently from the
                                         solution; never written to a notebook, the tests prove
                                         the check accepts it (optional, any number)

    <!-- needs: model -->              -> the lesson runs the embedded model (llama-cpp-python);
                                         stored as notebook metadata nora.needs_model

Usage (from the repository root):

    python notebooks/_build/build.py            # write + execute every lesson and solution
    python notebooks/_build/build.py 03 06      # only lessons 03 and 06
    python notebooks/_build/build.py --no-run   # write the cells only (outputs dropped)

Execution uses nbclient with the ``python3`` kernel of the Python running this
script, with OPENAI_API_KEY / OPENAI_BASE_URL / NORA_* removed from its
environment, so the stored outputs are the offline ones nbval expects.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOTEBOOKS = HERE.parent
SOURCES = HERE / "lessons"
SOLUTIONS = NOTEBOOKS / "solutions"

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
CELL_KINDS = ("code", "exercise", "solution", "check", "wrong", "right")
# A code cell: "~~~python" or "~~~python exercise" alone on a line, closed by "~~~".
_FENCE = re.compile(r"^~~~python(?:[ \t]+(\w+))?[ \t]*$")
# Variables a lesson must never see while it is executed for the committed outputs.
_SCRUB_ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID",
              "NORA_MODEL", "NORA_TIMEOUT", "NORA_MAX_RETRIES", "NORA_MODEL_PATH")


@dataclass
class Cell:
    kind: str  # "markdown" or one of CELL_KINDS
    source: str


@dataclass
class Lesson:
    stem: str  # "03-persona"
    cells: list[Cell] = field(default_factory=list)
    needs_model: bool = False  # runs the embedded model: skipped where llama-cpp-python is missing

    def find(self, kind: str) -> Cell:
        """The one cell of this kind (exercise, solution, check)."""
        found = [c for c in self.cells if c.kind == kind]
        if len(found) != 1:
            raise ValueError(f"{self.stem}: expected exactly one '{kind}' cell, found {len(found)}")
        return found[0]

    @property
    def wrongs(self) -> list[Cell]:
        """The wrong answers, in source order (at least one): each must make the check fail."""
        found = [c for c in self.cells if c.kind == "wrong"]
        if not found:
            raise ValueError(f"{self.stem}: expected at least one 'wrong' cell, found none")
        return found

    @property
    def rights(self) -> list[Cell]:
        """Other correct answers, in source order (often none): the check must accept each one."""
        return [c for c in self.cells if c.kind == "right"]


def parse_lesson(path: Path) -> Lesson:
    """Split a lesson source into cells.

    Example: "Hi.\\n~~~python\\nx = 1\\n~~~\\n" -> [Cell('markdown', 'Hi.'), Cell('code', 'x = 1')]
    """
    lesson = Lesson(path.stem)
    text = path.read_text(encoding="utf-8")
    if "<!-- needs: model -->" in text:
        lesson.needs_model = True
        text = text.replace("<!-- needs: model -->", "")
    prose: list[str] = []
    lines = iter(text.splitlines())

    def flush_prose() -> None:
        # A markdown cell per block of prose; "<!-- cell -->" splits a long one in two.
        for chunk in "\n".join(prose).split("<!-- cell -->"):
            if chunk.strip():
                lesson.cells.append(Cell("markdown", chunk.strip()))
        prose.clear()

    for line in lines:
        match = _FENCE.match(line)
        if not match:
            prose.append(line)
            continue
        flush_prose()
        kind = match.group(1) or "code"
        if kind not in CELL_KINDS:
            raise ValueError(f"{path.name}: unknown cell kind {kind!r} (use one of {', '.join(CELL_KINDS)})")
        body: list[str] = []
        for inner in lines:
            if inner.rstrip() == "~~~":
                break
            body.append(inner)
        else:
            raise ValueError(f"{path.name}: a ~~~python fence is never closed")
        lesson.cells.append(Cell(kind, "\n".join(body).strip("\n")))
    flush_prose()
    for kind in ("exercise", "solution", "check"):
        lesson.find(kind)
    lesson.wrongs  # raises if there is none
    return lesson


def load_lessons(only: list[str] | None = None) -> list[Lesson]:
    """Every lesson source, in order (only: number prefixes such as ["03", "06"])."""
    paths = sorted(SOURCES.glob("[0-9][0-9]-*.md"))
    if only:
        paths = [p for p in paths if p.name[:2] in only]
    return [parse_lesson(p) for p in paths]


def lesson_cells(lesson: Lesson, variant: str = "lesson", index: int = 0) -> list[Cell]:
    """The cells of one notebook: variant 'lesson', 'solution', 'wrong' or 'right' (for tests: the wrong
    or other right answer number `index`, counted from 0, in place of the exercise)."""
    if variant == "wrong":
        answer = lesson.wrongs[index]
    elif variant == "right":
        answer = lesson.rights[index]
    else:
        answer = {"lesson": None, "solution": lesson.find("solution")}[variant]
    cells = []
    for cell in lesson.cells:
        if cell.kind in ("solution", "wrong", "right"):
            continue
        if cell.kind == "exercise" and answer is not None:
            cell = Cell("exercise", answer.source)
        cells.append(cell)
    if variant == "solution":
        banner = (
            f"> **Solution notebook** for lesson `{lesson.stem}`: the same lesson with the exercise "
            f"filled in. Try the exercise in [`../{lesson.stem}.ipynb`](../{lesson.stem}.ipynb) first."
        )
        cells.insert(0, Cell("markdown", banner))
    return cells


def to_notebook(lesson: Lesson, variant: str = "lesson", index: int = 0):
    """An nbformat notebook (v4.5, python3 kernelspec, stable cell ids); index: see lesson_cells."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}
    nb.metadata["nora"] = {"lesson": lesson.stem, "variant": variant, "needs_model": lesson.needs_model}
    for i, cell in enumerate(lesson_cells(lesson, variant, index)):
        if cell.kind == "markdown":
            nb_cell = nbformat.v4.new_markdown_cell(cell.source)
        else:
            nb_cell = nbformat.v4.new_code_cell(cell.source)
            if cell.kind in ("exercise", "check"):
                nb_cell.metadata["tags"] = [cell.kind]
        nb_cell.id = f"{lesson.stem[:2]}-{'s' if variant == 'solution' else 'l'}{i:02d}"
        nb.cells.append(nb_cell)
    return nb


def clean_env() -> dict:
    """os.environ without keys or Nora settings: lessons run as on a fresh machine."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB_ENV}
    env["PYTHONHASHSEED"] = "0"
    return env


def execute(nb, cwd: Path, timeout: int = 300):
    """Run every cell in order in a fresh python3 kernel; raises on the first error."""
    from nbclient import NotebookClient

    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(cwd)}},
        record_timing=False,       # no timestamps in the committed files
        store_widget_state=False,  # widget state is random model ids; re-run to see widgets
    )
    client.execute(env=clean_env())
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    return nb


def build(only: list[str] | None = None, run: bool = True) -> None:
    import nbformat

    SOLUTIONS.mkdir(exist_ok=True)
    for lesson in load_lessons(only):
        for variant, folder in (("lesson", NOTEBOOKS), ("solution", SOLUTIONS)):
            nb = to_notebook(lesson, variant)
            target = folder / f"{lesson.stem}.ipynb"
            started = time.monotonic()
            if run:
                execute(nb, folder)
            nbformat.validate(nb)
            nbformat.write(nb, target)
            took = f" ({time.monotonic() - started:.1f} s)" if run else ""
            print(f"wrote {target.relative_to(NOTEBOOKS.parent)}{took}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build (and run) the lesson notebooks from notebooks/_build/lessons/.")
    parser.add_argument("lessons", nargs="*", help="lesson numbers to build, e.g. 03 06 (default: all)")
    parser.add_argument("--no-run", action="store_true", help="write the cells without executing them")
    args = parser.parse_args(argv)
    try:
        build(args.lessons or None, run=not args.no_run)
    except Exception as exc:  # a failing cell: say which, keep the old notebook
        print(f"build failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
