"""Core overhead: `run_turn` vs the hand-written turn of the reference article.

Both sides do the same job on the same list and the same ScriptedClient:

    nora     run_turn(client, history, "How much is it?", model="m", temperature=0.7)
    article  article_run_turn(client, history, "How much is it?", model="m"): the article's own
             function (append the user turn, client.chat.completions.create(...), read
             .choices[0].message.content, append the reply), with no checks and no rollback

then both remove the two new messages so the next call sees the same list.
Histories of 10, 100 and 1,000 messages; target: nora / article <= 1.02.

Two estimates of the ratio, from the same run, and the noise of the first:
  measured  the median of the per-round ratios on the ScriptedClient, with a ~95% confidence
            interval for that median (single rounds are noisy here: one can be off by 10%);
            every case runs once untimed after each round's collection, and each case takes
            every place in the round's order equally often (timed cold, or always first, one
            side ran up to 1.6x slower: an identical pair of functions then read 1.05-1.10)
  derived   1 + run_turn's own cost / the article turn on the ScriptedClient; the own cost is
            timed on a "null" client that returns one prebuilt response, so that nothing but
            run_turn's extra work is measured (microseconds, with little noise)
  A/A       the article's turn against its own twin (the same code, a separate function), read as
            "measured" is: it should be 1.000, and how far it lands from that, and how wide its
            interval is, is what the measured reading can resolve on this machine at this time
  no guard  run_turn with its check of every message (validate_history) taken out, read as
            "measured" is: what the rest of run_turn costs in place, so that measured minus this is
            the guard's share.  It is run_turn's own source with the one validate_history(history)
            line replaced by `pass`, compiled in the conversation module's namespace: the same code
            minus the check, called directly (run_turn itself always checks; an earlier form swapped
            the module's validate_history around each call from a wrapper, and the wrapper's frame
            and the two swaps read as ~2% more at 10 messages than the check's absence saves)

    python benchmarks/bench_core.py [--quick] [--json out.json]
"""

from __future__ import annotations

import __future__
import inspect
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (finish, fmt_seconds, interleaved, make_history, median, median_ci, parser, table,  # noqa: E402
                     verdict)

from nora_widgets.clients import ScriptedClient, make_completion  # noqa: E402
from nora_widgets import conversation  # noqa: E402
from nora_widgets.conversation import run_turn, validate_history  # noqa: E402

TARGET = 1.02
QUESTION = "How much is it?"


def _twin(fn):
    """A separate function with the same code (its own code object, so its own specialisation caches)."""
    return types.FunctionType(fn.__code__.replace(co_name=fn.__name__ + "_twin"), fn.__globals__,
                              fn.__name__ + "_twin", fn.__defaults__)


class NullClient:
    """Returns the same prebuilt ChatCompletion every call: the cheapest possible client."""

    default_model = "null"

    def __init__(self) -> None:
        self._response = make_completion("It costs $12.", "null", 10, 5)
        self.chat = type("Chat", (), {})()
        self.chat.completions = type("Completions", (), {})()
        self.chat.completions.create = lambda **kwargs: self._response


def article_run_turn(client, history: list[dict], user_text: str, model: str) -> str:
    """The reference article's run_turn as printed there: the baseline."""
    history.append({"role": "user", "content": user_text})
    response = client.chat.completions.create(
        model=model,
        messages=history,
        temperature=0.7,
    )
    reply = response.choices[0].message.content
    history.append({"role": "assistant", "content": reply})
    return reply


article_twin = _twin(article_run_turn)


_CHECK = "        validate_history(history)\n"


def _without_check():
    """run_turn's own source with its one validate_history(history) call replaced by `pass`,
    compiled in conversation's namespace (a copy of it): the "no guard" case, in place, no wrapper."""
    source = inspect.getsource(run_turn)
    if source.count(_CHECK) != 1:  # run_turn changed shape: say so rather than time the wrong thing
        raise RuntimeError("bench_core: run_turn no longer has exactly one `validate_history(history)` line")
    source = source.replace("def run_turn(", "def unguarded_run_turn(", 1).replace(_CHECK, "        pass\n")
    namespace = dict(vars(conversation))
    exec(compile(source, "<run_turn without validate_history>", "exec", __future__.annotations.compiler_flag,
                 dont_inherit=True), namespace)
    return namespace["unguarded_run_turn"]


unguarded_run_turn = _without_check()


def cases_for(client, history: list[dict], null: "NullClient", repeat_null: int) -> dict:
    """The two ways to run one turn on `history`, each leaving it as it found it, on the
    ScriptedClient and (repeat_null times per call, it is that fast) on the null client."""
    n = len(history)

    def nora():
        run_turn(client, history, QUESTION, model="m", temperature=0.7)
        del history[n:]

    def article():
        article_run_turn(client, history, QUESTION, model="m")
        del history[n:]

    def twin():
        article_twin(client, history, QUESTION, model="m")
        del history[n:]

    def unguarded():
        unguarded_run_turn(client, history, QUESTION, model="m", temperature=0.7)
        del history[n:]

    def nora_null():
        for _ in range(repeat_null):
            run_turn(null, history, QUESTION, model="m", temperature=0.7)
            del history[n:]

    def article_null():
        for _ in range(repeat_null):
            article_run_turn(null, history, QUESTION, model="m")
            del history[n:]

    return {"nora": nora, "article": article, "twin": twin, "unguarded": unguarded, "nora_null": nora_null,
            "article_null": article_null}


def paired(samples: dict, how, a: str = "nora", b: str = "article") -> list[float]:
    """One number per round from two cases timed in the same round, e.g. how=lambda x, y: x / y."""
    return [how(x, y) for x, y in zip(samples[a], samples[b])]  # a, b: which two cases


def main(argv: list[str] | None = None) -> dict:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    sizes = {10: 20, 100: 6, 1000: 1}  # history length -> calls per side per round (ScriptedClient)
    rounds = 204  # a multiple of 12: each of the six cases runs in each position equally often
    if args.quick:
        sizes, rounds = {10: 2, 100: 2, 1000: 1}, 3
    rows, results = [], {"target": TARGET, "rounds": rounds, "sizes": {}}
    repeat_null = 20
    for size, batch in sizes.items():
        client, history = ScriptedClient(model="m"), make_history(size)  # fresh "Message {i}: ..." contents
        # All four cases run in every round, so a machine that speeds up or slows down between
        # rounds (this one does, by up to 1.7x within a minute) moves them together.
        # The ScriptedClient keeps a deep copy of every call: its log is emptied between batches.
        samples = interleaved(cases_for(client, history, NullClient(), repeat_null), rounds=rounds, batch=batch,
                              setup=client.calls.clear, warm_up=True)
        ratios = paired(samples, lambda x, y: x / y)
        own = paired(samples, lambda x, y: (x - y) / repeat_null, "nora_null", "article_null")
        derived = [1 + o / a for o, a in zip(own, samples["article"])]
        twin_ratios = paired(samples, lambda x, y: x / y, "twin", "article")
        bare = paired(samples, lambda x, y: x / y, "unguarded", "article")
        entry = {"nora_s": median(samples["nora"]), "article_s": median(samples["article"]),
                 "ratio": median(ratios), "ratio_ci95": median_ci(ratios),
                 "own_cost_s": median(own), "derived_ratio": median(derived), "derived_ci95": median_ci(derived),
                 "aa_ratio": median(twin_ratios), "aa_ci95": median_ci(twin_ratios),
                 "unguarded_ratio": median(bare), "unguarded_ci95": median_ci(bare),
                 "samples": samples}
        # where run_turn's own time goes: checking every message of the list (the bad-input guard)
        check = interleaved({"validate_history": lambda: validate_history(history)}, rounds=min(rounds, 41),
                            batch=batch * repeat_null)
        entry["validate_history_s"] = median(check["validate_history"])
        lo, hi = entry["ratio_ci95"]
        dlo, dhi = entry["derived_ci95"]
        alo, ahi = entry["aa_ci95"]
        ulo, uhi = entry["unguarded_ci95"]
        rows.append([size, fmt_seconds(entry["article_s"]), fmt_seconds(entry["nora_s"]),
                     f"{entry['ratio']:.3f} ({lo:.3f}-{hi:.3f})", f"{entry['derived_ratio']:.3f} ({dlo:.3f}-{dhi:.3f})",
                     f"{entry['aa_ratio']:.3f} ({alo:.3f}-{ahi:.3f})",
                     f"{entry['unguarded_ratio']:.3f} ({ulo:.3f}-{uhi:.3f})",
                     verdict(max(entry["ratio"], entry["derived_ratio"]), TARGET), fmt_seconds(entry["own_cost_s"]),
                     fmt_seconds(entry["validate_history_s"])])
        results["sizes"][size] = entry
    print(f"Core overhead: run_turn vs the article's run_turn on the ScriptedClient, {rounds} interleaved rounds "
          f"(measured: median of per-round ratios; derived: median of per-round 1 + run_turn's own cost on a null "
          f"client / article turn; A/A: the article's turn / its twin, read as measured is, the noise of that reading; "
          f"no guard: run_turn with its validate_history line taken out / article turn, read as measured is; "
          f"~95% intervals in brackets; the verdict takes the worse of measured and derived)")
    print(table(["messages", "article turn", "run_turn", "measured ratio", "derived ratio", "A/A (noise)",
                 "no guard (measured)", "verdict",
                 "run_turn's own cost", "of which validate_history"], rows))
    return finish(args, "core", results)


if __name__ == "__main__":
    main()
