"""Fresh install time: the llama-cpp-python compile, with and without the build settings.

Compiling llama-cpp-python takes 7-14 minutes of both cores, so by default this
script only prints the recorded build times (and a pip log passed with --build-log).
--compile builds the installed version's sdist twice, one after the other: with
Nora's settings (CMAKE_ARGS="-DLLAVA_BUILD=OFF", as .ci/run and the README use) and
with none, each with `pip wheel --no-cache-dir` in its own build environment, and
prints wall and CPU time (about 20 minutes; nothing else should run meanwhile).
--run times `pip install -e ".[local]"` into a throwaway venv, which uses the wheel
pip cached after the first compile (the later-installs case).

    python benchmarks/bench_install.py [--compile] [--run] [--build-log F] [--json out.json]
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, finish, fmt_seconds, parser, run_timed, table  # noqa: E402

# Measured compile times on 2 cores (Python 3.11), pip install from the PyPI sdist:
RECORDED = [
    # (build settings, wall, user CPU, where it comes from)
    ('CMAKE_ARGS="-DLLAVA_BUILD=OFF"', "6 min 38 s", "12 min 31 s", "this machine, 2026-11-26 (--compile)"),
    ("default (no CMAKE_ARGS)", "7 min 43 s", "15 min 01 s", "this machine, 2026-11-26 (--compile)"),
    ('CMAKE_ARGS="-DLLAVA_BUILD=OFF"', "7 min 06 s", "11 min 11 s", "this machine, 2026-11-25 (pip log)"),
    ('CMAKE_ARGS="-DLLAVA_BUILD=OFF"', "9 min", "884 s (CPU)", "reference 2-core machine (FACTS.md)"),
    ("default (no CMAKE_ARGS)", "12-14 min", "-", "reference 2-core machine (FACTS.md)"),
]


def parse_time_log(path: Path) -> tuple[float, float] | None:
    """(real, user) seconds from the `time` lines at the end of a log, e.g. 'real 7m6.400s'."""
    found = {}
    for line in path.read_text(errors="replace").splitlines():
        m = re.match(r"^(real|user)\s+(\d+)m([\d.]+)s$", line.strip())
        if m:
            found[m.group(1)] = int(m.group(2)) * 60 + float(m.group(3))
    return (found["real"], found["user"]) if {"real", "user"} <= found.keys() else None


def build_env(cmake_args: str | None) -> dict:
    """This process's environment with CMAKE_ARGS set to cmake_args, or removed when it is None.

    Example: build_env("-DLLAVA_BUILD=OFF")["CMAKE_ARGS"] -> "-DLLAVA_BUILD=OFF"
    """
    env = dict(os.environ)
    env.pop("CMAKE_ARGS", None)  # an inherited value would silently change the "default" build
    if cmake_args:
        env["CMAKE_ARGS"] = cmake_args
    return env


def timed_install(extra: str, cmake_args: str | None) -> dict:
    """Make a venv in a temp dir and time `pip install -e .[extra]` into it (pip's wheel cache on)."""
    with tempfile.TemporaryDirectory(prefix="nora-install-") as tmp:
        venv = Path(tmp) / "venv"
        made, proc = run_timed([sys.executable, "-m", "venv", str(venv)])
        if proc.returncode != 0:
            raise RuntimeError(f"python -m venv failed: {proc.stderr.strip()[-800:]}")
        installed, proc = run_timed([str(venv / "bin" / "python"), "-m", "pip", "install", "-e", f".[{extra}]"],
                                    env=build_env(cmake_args), cwd=ROOT, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"pip install failed: {proc.stderr.strip()[-800:]}")
        log = proc.stdout
        return {
            "venv_s": made,
            "pip_s": installed,
            "compiled": "Building wheel for llama-cpp-python" in log,
            "used_cached_wheel": bool(re.search(r"llama_cpp_python-[^ ]+\.whl", log)) and
            "Building wheel for llama-cpp-python" not in log,
        }


def timed_compile(sdist: Path, cmake_args: str | None, out: Path) -> dict:
    """`pip wheel` the sdist with CMAKE_ARGS set or unset; wall and CPU seconds of the whole build."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)  # CPU of finished children: the build's, by difference
    wall, proc = run_timed([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-w", str(out),
                            str(sdist)], env=build_env(cmake_args), timeout=3600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"pip wheel failed: {proc.stderr.strip()[-800:]}")
    return {"cmake_args": cmake_args, "wall_s": wall,
            "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)}


def compile_both() -> list[dict]:
    """Download the installed llama-cpp-python's sdist once (untimed), then build it both ways."""
    from importlib.metadata import version

    wanted = f"llama-cpp-python=={version('llama-cpp-python')}"
    with tempfile.TemporaryDirectory(prefix="nora-compile-") as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", tmp,
                        wanted], check=True, capture_output=True, text=True, timeout=600)
        sdist = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        runs = []
        for cmake_args in ("-DLLAVA_BUILD=OFF", None):
            out = Path(tmp) / ("wheel-" + ("settings" if cmake_args else "default"))
            runs.append({"version": wanted, **timed_compile(sdist, cmake_args, out)})
        return runs


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--compile", action="store_true",
                   help="compile llama-cpp-python with and without the build settings (~20 min, both cores)")
    p.add_argument("--run", action="store_true", help="time pip install -e .[local] into a throwaway venv")
    p.add_argument("--build-log", default="/tmp/llbuild.log", help="a pip log ending with `time` output")
    args = p.parse_args(argv)
    rows = [list(r) for r in RECORDED]
    log = Path(args.build_log)
    if log.exists() and (times := parse_time_log(log)):
        rows.insert(0, ["(the log given)", fmt_seconds(times[0]), fmt_seconds(times[1]), f"parsed from {log}"])
    print("Compiling llama-cpp-python 0.3.36 from the sdist (2 cores)")
    print(table(["build settings", "wall", "user CPU", "source"], rows))
    results: dict = {"recorded": RECORDED}
    if args.compile and not args.quick:
        runs = compile_both()
        results["compile"] = runs
        print("\nCompiled now, one after the other (pip wheel --no-cache-dir, the same downloaded sdist):")
        print(table(["build settings", "wall", "CPU (user + system)"],
                    [[f'CMAKE_ARGS="{r["cmake_args"]}"' if r["cmake_args"] else "default (no CMAKE_ARGS)",
                      fmt_seconds(r["wall_s"]), fmt_seconds(r["cpu_s"])] for r in runs]))
        print(f"ratio with / without the settings: {runs[0]['wall_s'] / runs[1]['wall_s']:.2f} (wall)")
    if args.run and not args.quick:
        cmake = os.environ.get("CMAKE_ARGS", "-DLLAVA_BUILD=OFF")
        run = timed_install("local", cmake)
        results["install_cached"] = run
        how = "compiled llama-cpp-python" if run["compiled"] else "reused pip's cached llama-cpp-python wheel"
        print(f"\npip install -e '.[local]' into a fresh venv (CMAKE_ARGS={cmake!r}): "
              f"{fmt_seconds(run['pip_s'])} (+ {fmt_seconds(run['venv_s'])} to make the venv); {how}")
        print("With a cached wheel the build settings change nothing: pip's wheel cache is keyed by the sdist,\n"
              "not by CMAKE_ARGS (changing them needs --no-cache-dir --force-reinstall).")
    return finish(args, "install", results)


if __name__ == "__main__":
    main()
