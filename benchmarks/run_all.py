"""Run every benchmark, each in a fresh process, and print a summary against the targets.

    python benchmarks/run_all.py                  # everything (about 5-8 minutes on 2 cores)
    python benchmarks/run_all.py --quick          # tiny runs: proves every script still works
    python benchmarks/run_all.py --only core trim # some of them
    python benchmarks/run_all.py --install        # also time pip install -e .[local] into a fresh venv

Run it from the venv that has the project with the [local,test] extras; the model
benchmarks are skipped (with the reason) where llama-cpp-python is missing.
Numbers on a shared machine move with the load: the load average is printed
before and after, and each benchmark alternates Nora with its baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import fmt_seconds, machine, table  # noqa: E402

ORDER = ["startup", "core", "trim", "panel", "model", "oneshot", "lessons", "install"]


def headline(name: str, r: dict) -> list[list[str]]:
    """Rows of (benchmark, measure, value, target) for the summary."""
    if r.get("skipped"):
        return [[name, "skipped", r["skipped"], ""]]
    if r.get("quick"):
        return [[name, "ran (--quick)", "", ""]]
    rows = []
    if name == "core":
        for size, e in r["sizes"].items():
            (lo, hi), (dlo, dhi), (alo, ahi) = e["ratio_ci95"], e["derived_ci95"], e["aa_ci95"]
            rows.append([name, f"run_turn / article's run_turn, {size} messages: measured, derived; A/A noise "
                               f"(intervals)",
                         f"{e['ratio']:.3f} ({lo:.3f}-{hi:.3f}), {e['derived_ratio']:.3f} ({dlo:.3f}-{dhi:.3f}); "
                         f"{e['aa_ratio']:.3f} ({alo:.3f}-{ahi:.3f})", "<= 1.02"])
    elif name == "trim":
        best = r.get("best_sizes", {}).get("10000", {})
        for case, t in r["sizes"].get("10000", {}).items():
            fastest = f" (fastest {fmt_seconds(best[case])})" if case in best else ""
            rows.append([name, f"{case}, 10,000 messages", fmt_seconds(t) + fastest, "< 5 ms"])
    elif name == "panel":
        for size in ("1000", "5000"):
            if size in r["sizes"]:
                e = r["sizes"][size]
                rows.append([name, f"chat panel, all views, {int(size):,} messages: turn / refresh() / sent per turn",
                             f"{fmt_seconds(e['turn_s'])} / {fmt_seconds(e['refresh_s'])} / "
                             f"{e['sent_per_turn_bytes'] / 1e6:.1f} MB", "linear"])
    elif name == "startup":
        m = r["medians_s"]
        for cmd in ("import nora_widgets", "nora --help"):
            if cmd in m:
                extra = f" ({m[cmd] / m['llm --help']:.2f} x llm --help)" if "llm --help" in m else ""
                rows.append([name, cmd, fmt_seconds(m[cmd]) + extra, "fast; no openai/llama_cpp"])
    elif name == "model":
        (lo, hi), (alo, ahi) = r["decode_round_ratio_ci95"], r["decode_aa_ratio_ci95"]
        rows.append([name, "decode tokens/s, nora / direct (same Llama): of the medians, per round (interval); "
                           "A/A noise",
                     f"{r['decode_ratio']:.3f}, {r['decode_round_ratio']:.3f} ({lo:.3f}-{hi:.3f}); "
                     f"{r['decode_aa_ratio']:.3f} ({alo:.3f}-{ahi:.3f})", ">= 0.95"])
        slo, shi = r["decode_second_copy_ratio_ci95"]
        rows.append([name, "decode tokens/s, nora / a second Llama loaded from the same file, per round",
                     f"{r['decode_second_copy_ratio']:.3f} ({slo:.3f}-{shi:.3f})", ""])
        rows.append([name, "first token (stream), nora", fmt_seconds(r["stream"]["nora"]["ttft_s"]), ""])
        last = r["conversation"]["turns"][-1]
        rows.append([name, f"first token, turn {last['turn']} of a chat at 0.7: nora / nora, reset / direct",
                     " / ".join(fmt_seconds(last[k]) for k in ("ttft_nora_s", "ttft_nora_reset_s", "ttft_direct_s")),
                     ""])
        rows.append([name, "load (fresh process), nora", fmt_seconds(r["load"]["nora"]["total_s"]), ""])
    elif name == "oneshot":
        busy = " (busy machine: see the warning)" if r.get("busy") else ""
        rows.append([name, f"nora ask --max-tokens {r.get('max_tokens')} / llm, wall", f"{r['raw_ratio']:.2f}{busy}",
                     "<= 0.8"])
        rows.append([name, "nora ask / llm, extrapolated to equal length", f"{r['equal_length_ratio']:.2f}", ""])
    elif name == "lessons":
        rows.append([name, "nbval wall time", fmt_seconds(r["wall_s"]), ""])
    elif name == "install":
        if "install_cached" in r:
            rows.append([name, "pip install -e .[local], cached wheel", fmt_seconds(r["install_cached"]["pip_s"]), ""])
        for run in r.get("compile", []):
            label = f'CMAKE_ARGS="{run["cmake_args"]}"' if run["cmake_args"] else "default settings"
            rows.append([name, f"compile llama-cpp-python, {label}", fmt_seconds(run["wall_s"]), ""])
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run Nora's benchmarks")
    p.add_argument("--quick", action="store_true", help="tiny runs that only prove each script works")
    p.add_argument("--only", nargs="+", choices=ORDER, help="run only these")
    p.add_argument("--install", action="store_true", help="also time a fresh pip install (network, ~1 min)")
    p.add_argument("--compile", action="store_true",
                   help="also compile llama-cpp-python with and without the build settings (~20 min, both cores)")
    p.add_argument("--json", metavar="PATH", help="write all results as one JSON file")
    args = p.parse_args(argv)
    names = args.only or ORDER
    print(f"machine: {json.dumps(machine())}")
    started = time.perf_counter()
    results, failed = {}, []
    with tempfile.TemporaryDirectory(prefix="nora-bench-") as tmp:
        for name in names:
            out = Path(tmp) / f"{name}.json"
            cmd = [sys.executable, str(HERE / f"bench_{name}.py"), "--json", str(out)]
            if args.quick:
                cmd.append("--quick")
            if name == "install" and args.install:
                cmd.append("--run")
            if name == "install" and args.compile:
                cmd.append("--compile")
            print(f"\n=== {name} ({' '.join(Path(c).name if i < 2 else c for i, c in enumerate(cmd))})", flush=True)
            proc = subprocess.run(cmd, env=dict(os.environ, PYTHONUNBUFFERED="1"))
            if proc.returncode != 0 or not out.exists():
                failed.append(name)
                continue
            results[name] = json.loads(out.read_text())
    rows = [row for name in names if name in results for row in headline(name, results[name])]
    rows += [[name, "FAILED (see above)", "", ""] for name in failed]
    print(f"\n=== summary ({fmt_seconds(time.perf_counter() - started)} in all; "
          f"load average now {os.getloadavg()[0]:.2f})")
    print(table(["benchmark", "measure", "value", "target"], rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "results": results, "failed": failed},
                                              indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
