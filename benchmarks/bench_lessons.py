"""The lesson suite's wall time under nbval: `python -m pytest notebooks` (pyproject's addopts add
--nbval --nbval-current-env and the sanitizer), with the time each notebook took.

Every notebook runs in a fresh kernel, so most of the time is kernel start-up and
imports; lessons that use the embedded model also load it (once per kernel).
--quick only collects the first notebook (proves the command works, runs no kernel).

    python benchmarks/bench_lessons.py [--quick] [--rounds N] [--json out.json]
"""

from __future__ import annotations

import re
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, finish, fmt_seconds, median, parser, run_timed, skipped, table  # noqa: E402


def per_notebook(junit_xml: Path) -> dict[str, float]:
    """Seconds per notebook file, summed over its cells, from pytest's JUnit XML."""
    totals: dict[str, float] = defaultdict(float)
    for case in ET.parse(junit_xml).getroot().iter("testcase"):
        name = case.get("file") or case.get("classname") or "?"
        totals[name.replace(".", "/") if not name.endswith(".ipynb") else name] += float(case.get("time") or 0)
    return dict(totals)


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=1, help="how many full runs (median reported)")
    args = p.parse_args(argv)
    if not (ROOT / "notebooks").is_dir():
        return skipped(args, "lessons", "no notebooks/ folder")
    try:
        import nbval  # noqa: F401
    except ImportError:
        return skipped(args, "lessons", "needs nbval (the [test] extra)")
    base = [sys.executable, "-m", "pytest", "notebooks", "-q", "-p", "no:cacheprovider"]
    if args.quick:
        first = sorted((ROOT / "notebooks").glob("*.ipynb"))[:1]
        wall, proc = run_timed(base[:3] + [str(f) for f in first] + base[4:] + ["--collect-only"], cwd=ROOT,
                               timeout=600)
        collected = re.search(r"(\d+) tests? collected", proc.stdout)
        print(f"lessons: collected {collected.group(1) if collected else '?'} cells in {fmt_seconds(wall)} "
              f"(--quick: no kernel run)")
        return finish(args, "lessons", {"collect_s": wall, "returncode": proc.returncode})
    walls, notebooks, summary = [], {}, ""
    for _ in range(max(1, args.rounds)):
        with tempfile.TemporaryDirectory(prefix="nora-bench-lessons-") as tmp:
            xml = Path(tmp) / "junit.xml"
            wall, proc = run_timed(base + [f"--junitxml={xml}"], cwd=ROOT, timeout=1800)
            walls.append(wall)
            summary = (proc.stdout.strip().splitlines() or ["?"])[-1]
            if xml.exists():
                notebooks = per_notebook(xml)
    rows = [[name, fmt_seconds(t)] for name, t in sorted(notebooks.items())]
    print(f"Lessons under nbval: {fmt_seconds(median(walls))} wall (median of {len(walls)}); pytest says: {summary}")
    print(table(["notebook", "cells' time"], rows))
    return finish(args, "lessons", {"wall_s": median(walls), "walls": walls, "pytest_summary": summary,
                                    "notebooks_s": notebooks})


if __name__ == "__main__":
    main()
