"""Trimming and token counting on long histories (1k, 10k, 100k messages).

    by turns          trim_history(history, keep_last_n_turns=3)
    by token budget   trim_to_budget(history, budget, count) with budget 1,500 (what fits SmolLM2's
                      2,048-token window with room to reply), 128,000 (gpt-4o's window) and no
                      limit (every message counted: the worst case); count is token_counter(client)
                      (what tokens.py recommends) and, for comparison with earlier runs,
                      lambda m: message_tokens(m, client)
    whole count       count_tokens(history, client)

The counts are exact (the local model's tokenizer and chat template) when
llama-cpp-python is installed, else tokens.py's estimate.  Target: < 5 ms at 10,000
messages with the per-message count cache warm; the cost per message should stay
flat from 1k to 100k (linear growth).  The cold count (cache empty) is shown too.

Histories draw their contents from a pool of at most 10,000 different texts (a cold
count with the exact tokenizer costs 0.25-0.5 ms per new text here, so 100,000
distinct ones would take up to a minute just to fill the cache).

    python benchmarks/bench_trim.py [--quick] [--json out.json]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import finish, fmt_seconds, interleaved, make_history, median, parser, table  # noqa: E402

from nora_widgets.conversation import trim_history, trim_to_budget  # noqa: E402

TARGET_S = 0.005
BUDGET = 1500          # fits SmolLM2's 2,048-token window with room for a reply
BIG_BUDGET = 128_000   # gpt-4o's window: about half of a 10,000-message history
POOL = 10_000


def pool_texts(pool: int = POOL) -> tuple[list[str], list[str]]:
    """`pool` distinct user texts and `pool` distinct replies, for make_history(n, texts=...).

    Example: pool_texts(2)[0] -> ["Turn 0: do you have ...", "Turn 1: do you have ..."]
    """
    return ([f"Turn {k}: do you have the second Earthsea book in paperback, and how much is it?" for k in range(pool)],
            [f"Reply {k}: yes, 'The Tombs of Atuan' is in stock in paperback for $12." for k in range(pool)])


# Made once and shared by every history below, as in a real chat, where each message's content
# is the very string the counter saw (and cached: the cache is keyed by the content) when it was counted.
TEXTS = pool_texts()


def pick_client():
    """The local model (exact counts) when it can run here, else None (tokens.py's estimate)."""
    try:
        import llama_cpp  # noqa: F401

        from nora_widgets.local import LocalClient

        return LocalClient().load()  # loaded here, so the cold count below times counting only
    except Exception:
        return None


def main(argv: list[str] | None = None) -> dict:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    from nora_widgets.tokens import count_tokens, message_tokens, token_counter

    client = pick_client()
    model = None if client is not None else "gpt-4o-mini"

    def count(m):
        return message_tokens(m, client, model)

    bound = token_counter(client, model)

    sizes = [100, 1000] if args.quick else [1_000, 10_000, 100_000]
    # cold: the first count of every distinct text fills the cache
    cold_n = min(sizes[-1], POOL + 1)
    filler = make_history(cold_n, TEXTS)
    start = time.perf_counter()
    count_tokens(filler, client, model)
    cold_s = time.perf_counter() - start
    method = count_tokens(filler[:2], client, model).method

    cases = {"trim_history (3 turns)": lambda h: trim_history(h, 3)}
    for label, budget in ((f"{BUDGET:,}", BUDGET), (f"{BIG_BUDGET:,}", BIG_BUDGET), ("no limit", 10**12)):
        cases[f"trim_to_budget ({label}), token_counter"] = lambda h, b=budget: trim_to_budget(h, b, bound)
        cases[f"trim_to_budget ({label}), message_tokens"] = lambda h, b=budget: trim_to_budget(h, b, count)
    cases["count_tokens (whole list)"] = lambda h: count_tokens(h, client, model)
    rounds = 3 if args.quick else 9
    results: dict = {"target_s": TARGET_S, "method": method, "cold_s": cold_s, "cold_messages": cold_n,
                     "sizes": {}}
    per_size, best = {}, {}  # median and fastest round: a busy neighbour only ever adds time
    for n in sizes:
        history = make_history(n, TEXTS)  # one history alive at a time, as in a process holding one chat
        samples = interleaved({name: (lambda f=f: f(history)) for name, f in cases.items()},
                              rounds=rounds if n < 100_000 else max(3, rounds // 3))
        per_size[n] = {name: median(xs) for name, xs in samples.items()}
        best[n] = {name: min(xs) for name, xs in samples.items()}
        results["sizes"][n] = per_size[n]
        results.setdefault("best_sizes", {})[n] = best[n]
    ref = 10_000 if 10_000 in per_size else sizes[-1]
    rows = []
    for name in cases:
        row = [name] + [f"{fmt_seconds(per_size[n][name])} ({fmt_seconds(best[n][name])})" for n in sizes]
        row.append(" / ".join(f"{per_size[n][name] / n * 1e9:.0f}" for n in sizes))
        at_ref = per_size[ref][name]
        row.append(f"{'meets' if at_ref < TARGET_S else 'MISSES'} (< 5 ms at {ref:,})")
        rows.append(row)
    print(f"Trimming and counting, median of {rounds} interleaved rounds (fastest round in brackets); "
          f"counts: {method}; the verdict uses the median")
    print(table(["", *[f"{n:,} msgs" for n in sizes], "ns per message", "verdict"], rows))
    print(f"cold count (cache empty) of {cold_n:,} distinct messages: {fmt_seconds(cold_s)} "
          f"({fmt_seconds(cold_s / cold_n)} per message)")

    # the ways of calling the counter, per message (cache warm), on the largest history
    sample = make_history(2000, TEXTS)
    forms = {"message_tokens(m, client)": count, "token_counter(client)(m)": bound,
             "message_tokens(m)  (no client: resolved per call)": message_tokens}
    for f in forms.values():  # each form's counter exists and its cache is warm
        for m in sample:
            f(m)
    t = interleaved({name: (lambda f=f: [f(m) for m in sample]) for name, f in forms.items()}, rounds=3)
    form_cost = {name: median(t[name]) / len(sample) for name in forms}
    results["counter_forms_s_per_message"] = form_cost
    print("the counter, per message, cache warm: " +
          "; ".join(f"{k}: {fmt_seconds(v)}" for k, v in form_cost.items()))
    return finish(args, "trim", results)


if __name__ == "__main__":
    main()
