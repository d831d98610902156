"""The fixes docs/benchmarks.md proposes, measured against the current code in the same run.

Each proposal is a small function here (not in the package: the files belong to
their owners); this script checks it gives the same results as the current code,
then times both, alternating.  Once a proposal is adopted, its "now" and
"proposed" columns simply come out equal.

  1. trim_history's slice: keep_last_n_turns larger than the number of turns
  2. validate_history with a fast path (run_turn's own cost)
  3. tokens: the default counter built once (message_tokens without a client)
  4. a counter closure reading the cache + trims that walk back from the end
  5. prompt reading with 2 threads (n_threads_batch) for the embedded model

    python benchmarks/bench_proposals.py [--quick] [--json out.json]
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import finish, fmt_seconds, interleaved, median, parser, table  # noqa: E402

import nora_widgets.conversation as conv  # noqa: E402
from nora_widgets.conversation import ROLES, trim_history, trim_to_budget  # noqa: E402
from nora_widgets.errors import HistoryError  # noqa: E402

# --------------------------------------------------------------------------- #
# the proposals


def _turn_groups(messages: list[dict]) -> list[list[dict]]:
    """Split non-system messages into turns, each starting at a user message (as conversation.py does)."""
    groups: list[list[dict]] = []
    for message in messages:
        if message["role"] == "user" or not groups:
            groups.append([message])
        else:
            groups[-1].append(message)
    return groups


def trim_history_fixed(history: list[dict], keep_last_n_turns: int = 3) -> list[dict]:
    """The current trim_history with its slice clamped at 0 (the reference for 1 and 4)."""
    system = [m for m in history if m["role"] == "system"]
    groups = _turn_groups([m for m in history if m["role"] != "system"])
    kept = groups[max(0, len(groups) - keep_last_n_turns):] if keep_last_n_turns else []
    return system + [m for group in kept for m in group]


def trim_history_walk_back(history: list[dict], keep_last_n_turns: int = 3) -> list[dict]:
    """Find where the last N turns start by walking back from the end: O(kept), not O(all)."""
    system = [m for m in history if m["role"] == "system"]
    if not keep_last_n_turns:
        return system
    start, users = 0, 0
    for i in range(len(history) - 1, -1, -1):
        if history[i]["role"] == "user":  # a turn starts at a user message
            users += 1
            if users == keep_last_n_turns:
                start = i
                break
    return system + [m for m in history[start:] if m["role"] != "system"]


def trim_to_budget_walk_back(history: list[dict], max_tokens: int, count) -> list[dict]:
    """trim_to_budget reading turns from the newest, stopping at the first that does not fit."""
    system = [m for m in history if m["role"] == "system"]
    used = sum(count(m) for m in system)
    first = next((i for i, m in enumerate(history) if m["role"] != "system"), None)
    start, cost = None, 0
    for i in range(len(history) - 1, -1, -1):
        m = history[i]
        if m["role"] == "system":
            continue
        cost += count(m)
        if m["role"] == "user" or i == first:  # the turn being read starts here
            if start is not None and used + cost > max_tokens:
                break
            used, cost, start = used + cost, 0, i
    return system + ([] if start is None else [m for m in history[start:] if m["role"] != "system"])


_ROLE_SET = frozenset(ROLES)


def validate_history_fast(history, _slow=conv.validate_history):
    """One comprehension for the common case; the current loop runs only to name what is wrong."""
    if type(history) is list:
        try:
            if not [1 for m in history if type(m) is not dict or m["role"] not in _ROLE_SET
                    or type(m["content"]) is not str]:
                return
        except (KeyError, TypeError):
            pass
    _slow(history)


def cache_closure(counter, per_message):
    """token_counter's proposed closure: two dict look-ups, the current path on a miss."""
    cache = counter.cache

    def count(m):
        try:
            return cache[m["role"]][m["content"]]
        except (KeyError, TypeError):
            return per_message(counter, [m])[0]
    return count


# --------------------------------------------------------------------------- #
# checks and timings


def random_histories(n: int, seed: int = 1):
    rng = random.Random(seed)
    for _ in range(n):
        roles = ["system", "user", "assistant", "user", "assistant"]
        yield [{"role": rng.choice(roles), "content": "x" * rng.randint(0, 9)} for _ in range(rng.randint(0, 12))]


def check_same_results(trials: int) -> None:
    """The walking-back trims return the very same messages as the current ones (slice fixed)."""
    rng = random.Random(2)
    count = lambda m: len(m["content"]) + 1  # noqa: E731
    for h in random_histories(trials):
        k, budget = rng.randint(0, 6), rng.randint(0, 40)
        assert trim_history_fixed(h, k) == trim_history_walk_back(h, k), (h, k)
        assert [id(m) for m in trim_to_budget(h, budget, count)] == \
               [id(m) for m in trim_to_budget_walk_back(h, budget, count)], (h, budget)
    for bad in (None, [1], [{"role": "bot", "content": ""}], [{"role": "user"}], [{"role": ["x"], "content": ""}],
                [{"role": "user", "content": 3}]):
        errors = []
        for f in (conv.validate_history, validate_history_fast):
            try:
                f(bad)
                errors.append(None)
            except HistoryError as exc:
                errors.append(str(exc))
        assert errors[0] and errors[0] == errors[1], (bad, errors)


def main(argv: list[str] | None = None) -> dict:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    from bench_core import NullClient, cases_for
    from bench_core import make_history as core_history
    from bench_trim import make_history as trim_history_data

    results: dict = {}
    check_same_results(200 if args.quick else 20_000)
    print(f"same results: walking-back trims vs current (slice fixed), fast vs current validation: "
          f"{200 if args.quick else 20_000} random histories")

    # 1. the slice
    two_turns = core_history(5)
    kept = len(trim_history(two_turns, 3))
    results["slice_bug_present"] = kept != len(two_turns)
    print(f"1. trim_history(2 turns, keep 3) keeps {kept} of {len(two_turns)} messages "
          f"({'BUG: drops a turn' if kept != len(two_turns) else 'ok'}); fixed: {len(trim_history_fixed(two_turns, 3))}")

    # 2. validation: run_turn's own cost against a null client
    rows, rounds = [], 3 if args.quick else 15
    original = conv.validate_history
    for size, batch in ({10: 20, 1000: 2} if args.quick else {10: 200, 100: 100, 1000: 20}).items():
        cost = {}
        for label, validate in (("now", original), ("proposed", validate_history_fast)):
            conv.validate_history = validate  # run_turn looks it up in the module at each call
            try:
                s = interleaved(cases_for(NullClient(), core_history(size)), rounds=rounds, batch=batch)
            finally:
                conv.validate_history = original
            cost[label] = median([a - b for a, b in zip(s["nora"], s["direct"])])
        rows.append([size, fmt_seconds(cost["now"]), fmt_seconds(cost["proposed"])])
        results.setdefault("run_turn_own_cost_s", {})[size] = cost
    print("2. run_turn's own cost (null client): validate_history now vs with a fast path")
    print(table(["messages", "now", "proposed"], rows))

    try:
        import llama_cpp  # noqa: F401

        from nora_widgets import tokens
        from nora_widgets.local import LocalClient
    except ImportError as exc:
        print(f"3-5: skipped: need the [local] extra ({exc})")
        return finish(args, "proposals", results)
    client = LocalClient()
    if not all(hasattr(tokens, name) for name in ("_local_default", "_COUNTERS", "_counter", "_per_message")):
        print("3-4: skipped: tokens.py no longer has the internals these proposals patch (adopted or changed)")
    else:
        proposals_3_4(args, tokens, client, trim_history_data, results)
    proposal_5(args, client, results)
    return finish(args, "proposals", results)


def proposals_3_4(args, tokens, client, trim_history_data, results: dict) -> None:
    """The default counter built once; counters x trims."""
    # 3. the default counter, built once
    sample = trim_history_data(60 if args.quick else 300)
    tokens.count_tokens(sample, client)
    now_s = median(interleaved({"x": lambda: [tokens.message_tokens(m) for m in sample]}, rounds=3)["x"])
    current = tokens._local_default

    def built_once(note):
        if "local-default-client" not in tokens._COUNTERS:
            return current(note)
        return tokens._COUNTERS["local-default-client"]
    tokens._local_default = built_once
    try:
        fixed_s = median(interleaved({"x": lambda: [tokens.message_tokens(m) for m in sample]}, rounds=3)["x"])
    finally:
        tokens._local_default = current
    results["message_tokens_no_client_s"] = {"now": now_s / len(sample), "proposed": fixed_s / len(sample)}
    print(f"3. message_tokens(m) without a client, per message: now {fmt_seconds(now_s / len(sample))}, "
          f"default counter built once {fmt_seconds(fixed_s / len(sample))}")

    # 4. counters x trims at 10,000 messages
    n = 1000 if args.quick else 10_000
    h = trim_history_data(n)
    tokens.count_tokens(h, client)
    counter = tokens._counter(client, None)
    counters = {"lambda m: message_tokens(m, client)": lambda m: tokens.message_tokens(m, client),
                "token_counter(client)": tokens.token_counter(client),
                "closure reading the cache": cache_closure(counter, tokens._per_message)}
    rows, rounds = [], 3 if args.quick else 9
    cases = {"trim_history 3 now": lambda: trim_history(h, 3),
             "trim_history 3 walking back": lambda: trim_history_walk_back(h, 3)}
    s = interleaved(cases, rounds=rounds)
    rows.append(["trim_history(h, 3)", *(fmt_seconds(median(s[k])) for k in cases), "", "", "", ""])
    for name, count in counters.items():
        cells, timed = [], {}
        for label, budget in (("1,500", 1500), ("128,000", 128_000), ("no limit", 10**12)):
            s = interleaved({"now": lambda b=budget, c=count: trim_to_budget(h, b, c),
                             "walk": lambda b=budget, c=count: trim_to_budget_walk_back(h, b, c)}, rounds=rounds)
            timed[label] = {"now": median(s["now"]), "proposed": median(s["walk"])}
            cells += [fmt_seconds(timed[label]["now"]), fmt_seconds(timed[label]["proposed"])]
        results.setdefault("trim_to_budget_s", {})[name] = timed
        rows.append([f"trim_to_budget, {name}", *cells])
    print(f"4. at {n:,} messages (now / walking back)")
    print(table(["", "1,500 now", "1,500 proposed", "128,000 now", "128,000 proposed", "no limit now",
                 "no limit proposed"], rows))


def proposal_5(args, client, results: dict) -> None:
    """Prompt reading with 2 threads (n_threads_batch) vs LocalClient's thread count."""
    from llama_cpp import Llama

    from nora_widgets.conversation import SYSTEM_PROMPT
    path = str(client.model_path)
    messages = [{"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": "Do you have any Ursula K. Le Guin novels?"}]
    models = {tb: Llama(model_path=path, n_ctx=2048, n_threads=client.n_threads, n_threads_batch=tb, verbose=False)
              for tb in sorted({client.n_threads, 2})}

    def first_token(llama):
        llama.reset()
        start = time.perf_counter()
        for chunk in llama.create_chat_completion(messages=messages, max_tokens=2, temperature=0, stream=True):
            if chunk["choices"][0]["delta"].get("content"):
                break
        return time.perf_counter() - start
    firsts = {tb: [] for tb in models}
    for r in range(2 if args.quick else 7):
        for tb in (list(models) if r % 2 == 0 else list(models)[::-1]):
            firsts[tb].append(first_token(models[tb]))
    results["first_token_by_batch_threads_s"] = {tb: median(xs) for tb, xs in firsts.items()}
    print(f"5. first token, {client.n_threads} generating thread(s), prompt read with: " +
          ", ".join(f"{tb} thread(s) {fmt_seconds(median(xs))}" for tb, xs in firsts.items()))


if __name__ == "__main__":
    main()
