"""Core overhead: `run_turn` vs calling `.chat.completions.create` yourself.

Both sides do the same job on the same list and the same ScriptedClient:

    nora    run_turn(client, history, "How much is it?")
    direct  history.append(user); r = client.chat.completions.create(messages=history, ...);
            history.append({"role": "assistant", "content": r.choices[0].message.content})

(the hand-written turn from the reference article), then both remove the two new
messages so the next call sees the same list.  Histories of 10, 100 and 1,000
messages; target: nora / direct <= 1.02.  A "null" client (returns one prebuilt
response, records nothing) shows what run_turn itself costs in microseconds.

    python benchmarks/bench_core.py [--quick] [--json out.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import finish, fmt_seconds, interleaved, median, parser, table, verdict  # noqa: E402

from nora_widgets.clients import ScriptedClient, make_completion  # noqa: E402
from nora_widgets.conversation import SYSTEM_PROMPT, run_turn, validate_history  # noqa: E402

TARGET = 1.02
QUESTION = "How much is it?"


def make_history(n_messages: int) -> list[dict]:
    """system + alternating user/assistant turns, n_messages in all, ~80-character contents.

    Example: make_history(5) -> [system, user, assistant, user, assistant]
    """
    history = [{"role": "system", "content": SYSTEM_PROMPT}]
    i = 0
    while len(history) < n_messages:
        role = "user" if len(history) % 2 == 1 else "assistant"
        history.append({"role": role, "content": f"Message {i}: do you have the second Earthsea book in paperback?"})
        i += 1
    return history


class NullClient:
    """Returns the same prebuilt ChatCompletion every call: the cheapest possible client."""

    default_model = "null"

    def __init__(self) -> None:
        self._response = make_completion("It costs $12.", "null", 10, 5)
        self.chat = type("Chat", (), {})()
        self.chat.completions = type("Completions", (), {})()
        self.chat.completions.create = lambda **kwargs: self._response


def cases_for(client, history: list[dict]) -> dict:
    """The two ways to run one turn on `history`, each leaving it as it found it."""
    n = len(history)
    create = client.chat.completions.create

    def nora():
        run_turn(client, history, QUESTION, model="m", temperature=0.7)
        del history[n:]

    def direct():
        history.append({"role": "user", "content": QUESTION})
        response = create(model="m", messages=history, temperature=0.7)
        history.append({"role": "assistant", "content": response.choices[0].message.content})
        del history[n:]

    return {"nora": nora, "direct": direct}


def paired_ratio(samples: dict) -> float:
    """Median of the per-round ratios nora/direct (each round timed both sides back to back)."""
    return median([a / b for a, b in zip(samples["nora"], samples["direct"])])


def main(argv: list[str] | None = None) -> dict:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    sizes = {10: 50, 100: 20, 1000: 3}  # history length -> calls per timed batch
    rounds = 41
    if args.quick:
        sizes, rounds = {10: 2, 100: 2, 1000: 1}, 3
    rows, results = [], {"target": TARGET, "sizes": {}}
    for size, batch in sizes.items():
        entry = {}
        for label, client in (("scripted", ScriptedClient(model="m")), ("null", NullClient())):
            history = make_history(size)
            # the ScriptedClient keeps a deep copy of every call: empty that log between batches
            setup = (lambda c=client: c.calls.clear()) if label == "scripted" else None
            samples = interleaved(cases_for(client, history), rounds=rounds, batch=batch, setup=setup)
            nora, direct = median(samples["nora"]), median(samples["direct"])
            entry[label] = {"nora_s": nora, "direct_s": direct, "ratio": paired_ratio(samples),
                            "overhead_s": nora - direct, "samples": samples}
        # where run_turn's own time goes: checking every message of the list (the bad-input guard)
        history = make_history(size)
        check = interleaved({"validate_history": lambda: validate_history(history)}, rounds=rounds,
                            batch=batch * 10)
        entry["validate_history_s"] = median(check["validate_history"])
        s, z = entry["scripted"], entry["null"]
        rows.append([size, fmt_seconds(s["direct_s"]), fmt_seconds(s["nora_s"]), f"{s['ratio']:.3f}",
                     verdict(s["ratio"], TARGET), fmt_seconds(z["overhead_s"]),
                     fmt_seconds(entry["validate_history_s"])])
        results["sizes"][size] = entry
    print(f"Core overhead: run_turn vs a hand-written turn on the ScriptedClient "
          f"({rounds} interleaved rounds; ratio = median of per-round ratios)")
    print(table(["messages", "direct", "run_turn", "ratio", "verdict", "run_turn's own cost (null client)",
                 "of which validate_history"], rows))
    return finish(args, "core", results)


if __name__ == "__main__":
    main()
