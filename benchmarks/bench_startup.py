"""Start-up: `import nora_widgets` and `nora --help`, against `python -c pass` and `llm --help`.

Each command is a fresh process, run in turn (A B C D, D C B A, ...) several times;
medians of the wall time.  Then `python -X importtime` lists what each Nora entry
point really imports, so a heavy module (openai, llama_cpp, ipywidgets, numpy)
pulled in too early shows up by name.

    python benchmarks/bench_startup.py [--quick] [--json out.json]
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, finish, find_executable, fmt_seconds, interleaved_commands, median, parser, table  # noqa: E402

# modules that cost a visible fraction of a second each on this machine
HEAVY = ("openai", "llama_cpp", "ipywidgets", "IPython", "numpy", "pydantic", "httpx2", "httpx",
         "markdown_it", "llm", "click", "jinja2")


def import_times(argv: list[str]) -> list[tuple[str, float, float]]:
    """(module, self seconds, cumulative seconds) for every import `argv` makes, from -X importtime.

    Example: import_times([sys.executable, "-c", "import json"]) -> [..., ("json", 0.0002, 0.0011)]
    """
    proc = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        # "import time:       123 |       4567 |   package.module"  (indent = nesting)
        self_us, cumulative_us, name = (part.strip() for part in line.split(":", 1)[1].split("|"))
        rows.append((name, int(self_us) / 1e6, int(cumulative_us) / 1e6))
    return rows


def heavy_imports(rows: list[tuple[str, float, float]]) -> dict[str, float]:
    """The HEAVY top-level packages that were imported, with their cumulative seconds."""
    found: dict[str, float] = {}
    for name, _self, cumulative in rows:
        top = name.split(".")[0]
        if top in HEAVY and name == top:
            found[top] = cumulative
    return found


def main(argv: list[str] | None = None) -> dict:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    python = sys.executable
    commands = {
        "python -c pass": [python, "-c", "pass"],
        "import nora_widgets": [python, "-c", "import nora_widgets"],
    }
    nora, llm = find_executable("nora"), find_executable("llm")
    if nora:
        commands["nora --help"] = [nora, "--help"]
    if llm and not args.quick:  # --quick leaves out the peer (about 2-3 s a run)
        commands["llm --help"] = [llm, "--help"]
    rounds = 1 if args.quick else 7
    # one untimed pass first: fills the OS file cache and writes any missing .pyc files;
    # a command that fails here is reported and left out (never timed as if it had worked)
    broken = {}
    for name, cmd in list(commands.items()):
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
        if proc.returncode != 0:
            broken[name] = (proc.stderr.strip().splitlines() or ["?"])[-1]
            print(f"{name}: left out: exited {proc.returncode}: {broken[name]}")
            del commands[name]
            if name == "nora --help":
                nora = None
    samples, _ = interleaved_commands(commands, rounds=rounds, cwd=ROOT)
    medians = {name: median(xs) for name, xs in samples.items()}
    base = medians["python -c pass"]
    rows = []
    for name, m in medians.items():
        vs_llm = f"{m / medians['llm --help']:.2f}" if "llm --help" in medians else "-"
        rows.append([name, fmt_seconds(m), fmt_seconds(max(0.0, m - base)), vs_llm])
    print(f"Start-up wall time, median of {rounds} interleaved runs (fresh processes)")
    print(table(["command", "wall", "above python -c pass", "x llm --help"], rows))

    # what gets imported, and what it costs
    probes = {"import nora_widgets": [python, "-c", "import nora_widgets"]}
    if nora:
        probes["nora --help"] = [python, nora, "--help"]
    imports = {}
    for name, probe in probes.items():
        rows_it = import_times(probe)
        total = sum(s for _, s, _ in rows_it)
        heavy = heavy_imports(rows_it)
        top = sorted((r for r in rows_it if r[2] >= 0.005 and "." not in r[0]), key=lambda r: -r[2])[:8]
        imports[name] = {"modules": len(rows_it), "import_seconds": total, "heavy": heavy,
                         "top": [(n, c) for n, _, c in top]}
        heavy_text = ", ".join(f"{k} {fmt_seconds(v)}" for k, v in heavy.items()) or "none"
        print(f"\n{name}: {len(rows_it)} modules, {fmt_seconds(total)} importing; heavy packages: {heavy_text}")
        print("  largest top-level imports: " + ", ".join(f"{n} {fmt_seconds(c)}" for n, c in imports[name]["top"]))
    return finish(args, "startup", {"medians_s": medians, "samples": samples, "imports": imports,
                                    "broken": broken})


if __name__ == "__main__":
    main()
