"""Shared helpers for the benchmarks: interleaved A/B timing, medians, tables, JSON.

The rule every benchmark here follows: measure Nora and its baseline *in the same
run*, alternating A, B, A, B, ... so that a noisy neighbour (2 shared cores) slows
both sides alike, then compare medians.  Benchmarks print numbers; they never fail
because something was slow.

    samples = interleaved({"nora": f, "direct": g}, rounds=7, batch=100)
    ratio = median(samples["nora"]) / median(samples["direct"])
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parent.parent  # the repository root


def median(values: Sequence[float]) -> float:
    """Example: median([3, 1, 2]) -> 2"""
    return statistics.median(values)


def median_ci(values: Sequence[float], z: float = 1.96) -> tuple[float, float]:
    """A ~95% confidence interval for the median, from order statistics: the values at ranks
    n/2 -+ z*sqrt(n)/2 (no assumption about the shape of the noise).
    Example: median_ci(range(101)) -> (40, 60)
    """
    xs = sorted(values)
    half = z * len(xs) ** 0.5 / 2
    lo = max(0, int(len(xs) / 2 - half))
    hi = min(len(xs) - 1, int(len(xs) / 2 + half + 0.5))
    return xs[lo], xs[hi]


def _order(names: list[str], r: int) -> list[str]:
    """The order of the cases in round r: rotated by one every two rounds, and every other
    round reversed, so over 2 x len(names) rounds each case runs in every position equally
    often (the case right after the round's collection runs with cold caches: up to 1.6x
    slower on a 100 us call).
    Example: names a b c -> rounds 0-5: abc, cba, bca, acb, cab, bac
    """
    rot = (r // 2) % len(names)
    order = names[rot:] + names[:rot]
    return order if r % 2 == 0 else order[::-1]


def interleaved(cases: dict[str, Callable[[], object]], rounds: int, batch: int = 1,
                setup: Callable[[], None] | None = None, warm_up: bool = False) -> dict[str, list[float]]:
    """Run every case `batch` times per round, alternating cases each round; seconds per call.

    The order changes every round (see _order: A B, B A, ... for two cases) so no case
    always runs first, last or "warm after the other".  The garbage collector is paused inside a
    batch (as timeit does), collects once a round, and `setup()` runs between
    batches, untimed.  warm_up=True runs every case once, untimed, after the collection
    and before timing any: for ratios of calls that should both be timed warm (a full
    collection leaves the CPU caches cold; the first case after it ran up to 1.6x slower).
    Example: interleaved({"a": f, "b": g}, rounds=5, batch=10) -> {"a": [5 floats], "b": [5 floats]}
    """
    names = list(cases)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        gc.collect()  # once a round: a full collection is slow when openai/pydantic are loaded
        order = _order(names, r)
        for name in order if warm_up else ():
            if setup is not None:
                setup()
            cases[name]()
        for name in order:
            if setup is not None:
                setup()
            fn = cases[name]
            gc.disable()
            try:
                start = time.perf_counter()
                for _ in range(batch):
                    fn()
                elapsed = time.perf_counter() - start
            finally:
                gc.enable()
            samples[name].append(elapsed / batch)
    return samples


def make_history(n_messages: int, texts: tuple[Sequence[str], Sequence[str]] | None = None) -> list[dict]:
    """The persona, then alternating user/assistant messages: n_messages in all (wire-format dicts).

    texts=None: fresh ~60-character contents, "Message {i}: ...", made for this history.
    texts=(user_texts, reply_texts): message i takes pool[i % len(pool)] from the user pool (even i)
    or the reply pool (odd i), the very string objects of the pools, so histories made from the
    same pools share their contents (what a per-content cache sees in a real chat).
    Example: make_history(3) -> [system, {"role": "user", "content": "Message 0: ..."}, {"role": "assistant", ...}]
    """
    from nora_widgets.conversation import SYSTEM_PROMPT  # here: the other benchmarks never need the package

    history = [{"role": "system", "content": SYSTEM_PROMPT}]
    for i in range(n_messages - 1):  # i counts the messages after the persona; user first
        if texts is None:
            content = f"Message {i}: do you have the second Earthsea book in paperback?"
        else:
            pool = texts[i % 2]
            content = pool[i % len(pool)]
        history.append({"role": "user" if i % 2 == 0 else "assistant", "content": content})
    return history


def run_timed(cmd: Sequence[str], env: dict | None = None, cwd: str | Path | None = None,
              timeout: float = 300) -> tuple[float, subprocess.CompletedProcess]:
    """Run a command to completion; (wall seconds, the completed process)."""
    start = time.perf_counter()
    proc = subprocess.run(list(cmd), capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    return time.perf_counter() - start, proc


def interleaved_commands(commands: dict[str, Sequence[str]], rounds: int, env: dict | None = None,
                         cwd: str | Path | None = None) -> tuple[dict[str, list[float]], dict]:
    """Wall time of whole processes, alternating; (samples per name, last CompletedProcess per name).

    A command that exits non-zero stops the benchmark with its stderr: a fast
    failure must never pass for a fast run.
    """
    names = list(commands)
    samples: dict[str, list[float]] = {name: [] for name in names}
    last: dict[str, subprocess.CompletedProcess] = {}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            wall, proc = run_timed(commands[name], env=env, cwd=cwd)
            if proc.returncode != 0:
                raise RuntimeError(f"{name}: {' '.join(commands[name])!r} exited {proc.returncode}: "
                                   f"{proc.stderr.strip()[-500:]}")
            samples[name].append(wall)
            last[name] = proc
    return samples, last


def find_executable(name: str) -> str | None:
    """The console script next to this Python first (the venv we run in), then PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name)


def fmt_seconds(s: float) -> str:
    """Example: fmt_seconds(0.0000123) -> '12.3 µs'; fmt_seconds(426) -> '7 min 06 s'"""
    if s >= 60:
        minutes, seconds = divmod(round(s), 60)
        return f"{minutes} min {seconds:02d} s"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    if s >= 1e-6:
        return f"{s * 1e6:.1f} µs"
    return f"{s * 1e9:.0f} ns"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text (and Markdown-compatible) table."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    line = lambda row: "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


def verdict(value: float, target: float, higher_is_better: bool = False) -> str:
    """Example: verdict(0.7, 0.8) -> 'meets target (<= 0.80)'"""
    ok = value >= target if higher_is_better else value <= target
    sign = ">=" if higher_is_better else "<="
    return f"{'meets' if ok else 'MISSES'} target ({sign} {target:.2f})"


def machine() -> dict:
    """Cores, CPU model, Python, load: what a reader needs to weigh the numbers."""
    cpu = "unknown"
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                cpu = text.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_1m_5m_15m": [round(x, 2) for x in load],
    }


def parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark script takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a tiny run that only proves the script works")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    return p


def finish(args: argparse.Namespace, name: str, results: dict) -> dict:
    """Attach the machine, write --json if asked, return the results."""
    results = {"benchmark": name, "quick": bool(args.quick), "machine": machine(), **results}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return results


def skipped(args: argparse.Namespace, name: str, reason: str) -> dict:
    """Print and record why a benchmark could not run here (a missing optional dependency)."""
    print(f"{name}: skipped: {reason}")
    return finish(args, name, {"skipped": reason})
