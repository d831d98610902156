"""The chat panel in a long session (10 / 100 / 1,000 / 5,000 messages), timed in the kernel.

    turn        Send to the end of the turn's redraw (panel.send.click(), panel.wait()), ScriptedClient
    refresh     one panel.refresh() (what every control change and every turn's end runs)
    sent        what one turn sends to the browser: every widget message (a widget opened, a change,
                a widget closed), its data as JSON
    split       the same, by the view the widget belongs to: transcript / inspector tables / wire view /
                side by side / the rest (header, gauge, cost chart, status lines)
    HTML        characters of the transcript, each inspector table and the wire view after the turn
                (each one's whole HTML: they go to the page in blocks, _blocks.py, of 50 messages, 10
                rows and 200 lines, and a turn sends the blocks it changed)
    twin        side by side alone, over 50 turns in a fresh panel (the memory-less twin grows with
                the turns taken): what the side-by-side view sends per turn, mean and at the last turn

All five views are open, side by side too (each turn also asks the memory-less twin and redraws
twice).  The history has user questions of ~20 words and markdown replies of ~80, all different.
Absolute numbers (no baseline); every cost should grow linearly with the messages.  The browser's
side (the page redrawing that HTML) is in docs/benchmarks.md, finding 14.

    python benchmarks/bench_panel.py [--quick] [--json out.json]
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import finish, fmt_seconds, median, parser, table  # noqa: E402

WORDS = ("the a model list message token call server reply context window send every turn again python "
         "code book shop paperback").split()
VIEWS = ("inspector", "wire", "gauge", "cost", "compare")
SPLIT = ("transcript", "inspector", "wire", "compare", "rest")  # what a turn sends, by the part of the panel it draws


def long_history(n: int, rng: random.Random) -> list[dict]:
    """The persona, then n - 1 alternating questions and markdown replies."""
    def words(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    history = [{"role": "system", "content": "You are a helpful assistant."}]
    while len(history) < n:
        history.append({"role": "user", "content": words(20) + "?"})
        history.append({"role": "assistant", "content": f"**{words(5)}**\n\n{words(60)}\n\n- {words(8)}\n- {words(8)}"})
    return history[:n]


def main(argv: list[str] | None = None) -> dict:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    import comm

    from nora_widgets.clients import ScriptedClient
    from nora_widgets.panel import ChatPanel

    sent: list[tuple[str, int]] = []  # (comm id, bytes)

    class CountingComm(comm.DummyComm):  # no kernel here: count what would go to the browser
        def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
            sent.append((self.comm_id, len(json.dumps(data)) + sum(len(b) for b in buffers or ())))

    from nora_widgets._blocks import BlockBox

    shown: dict[str, set[str]] = {}  # a BlockBox's model id -> every block it has drawn (closed ones too)
    real_draw = BlockBox.draw

    def draw(box, *args, **kwargs):  # a block opened and closed within one turn (a reply on its way) is counted
        changed = real_draw(box, *args, **kwargs)
        shown.setdefault(box.model_id, set()).update(b.model_id for b in box.blocks)
        return changed

    BlockBox.draw = draw

    def owned(widget) -> set[str]:
        """The model ids of a widget and of every widget it shows (children, blocks), as they are now,
        and every block it has shown."""
        ids = {widget.model_id, *shown.get(widget.model_id, ())}
        for part in [*getattr(widget, "children", ()), *getattr(widget, "blocks", ())]:
            ids |= owned(part)
        for name in ("last_html", "next_html", "body"):  # the views' drawing widgets
            if getattr(widget, name, None) is not None:
                ids |= owned(getattr(widget, name))
        return ids

    comm.create_comm = CountingComm  # every widget's comm: its opening, its changes, its closing
    sizes = [10, 100] if args.quick else [10, 100, 1_000, 5_000]
    turns = 2 if args.quick else 5
    rng = random.Random(1)
    results: dict = {"sizes": {}, "views": list(VIEWS)}
    rows = []
    for n in sizes:
        panel = ChatPanel(ScriptedClient(), history=long_history(n, rng), views=VIEWS)
        # the caches filled; and the first call in a panel finds every row new (nothing was sent before),
        # so the turn after it redraws every row of the "last call sent" table once: not a turn's cost
        panel.ask("a first question, to fill the caches")
        panel.ask("a second one")
        turn_s, refresh_s, sent_bytes = [], [], []
        split: dict[str, list[int]] = {k: [] for k in SPLIT}
        owner: dict[str, str] = {}  # model id -> the part it belongs to (a block closed keeps its part)

        def look() -> None:
            for part, widget in (("transcript", panel.transcript), ("inspector", panel.inspector),
                                 ("wire", panel.wire_view), ("compare", panel.compare)):
                owner.update(dict.fromkeys(owned(widget), part))

        for i in range(turns):
            look()
            sent.clear()
            panel.prompt.value = f"question {i}?"
            t = time.perf_counter()
            panel.send.click()
            panel.wait()
            turn_s.append(time.perf_counter() - t)
            look()
            sent_bytes.append(sum(size for _, size in sent))
            for part in SPLIT:
                split[part].append(sum(size for cid, size in sent if owner.get(cid, "rest") == part))
            t = time.perf_counter()
            panel.refresh()
            refresh_s.append(time.perf_counter() - t)
        html = {"transcript": len(panel.transcript.value), "last_sent_table": len(panel.inspector.last_html.value),
                "next_send_table": len(panel.inspector.next_html.value), "wire": len(panel.wire_view.body.value)}
        results["sizes"][str(n)] = {"turn_s": median(turn_s), "refresh_s": median(refresh_s),
                                    "sent_per_turn_bytes": median(sent_bytes), "html_chars": html,
                                    "sent_split_bytes": {k: median(v) for k, v in split.items()}}
        rows.append([f"{n:,}", fmt_seconds(median(turn_s)), fmt_seconds(median(refresh_s)),
                     f"{median(sent_bytes) / 1e6:.2f} MB",
                     " / ".join(f"{html[k] / 1e3:,.0f}" for k in html),
                     " / ".join(f"{median(split[k]) / 1e3:,.1f}" for k in SPLIT)])
    print(table(["messages", "turn", "refresh()", "sent per turn", "HTML kB: transcript / last / next / wire",
                 "sent kB: " + " / ".join(SPLIT)], rows))

    # side by side alone: the twin starts empty and grows by a turn each turn
    twin_turns = 5 if args.quick else 50
    panel = ChatPanel(ScriptedClient(), views=("compare",))
    panel.side_by_side.value = True
    per_turn = []
    for i in range(twin_turns):
        ids = owned(panel.compare)
        sent.clear()
        panel.ask(f"question {i}: " + long_history(2, rng)[1]["content"])
        ids |= owned(panel.compare)
        per_turn.append(sum(size for cid, size in sent if cid in ids))
    results["twin"] = {"turns": twin_turns, "sent_mean_bytes": sum(per_turn) / len(per_turn),
                       "sent_last_bytes": per_turn[-1], "html_chars": len(panel.compare.body.value)}
    print(f"side by side, {twin_turns} turns: sent per turn {sum(per_turn) / len(per_turn) / 1e3:,.1f} kB mean, "
          f"{per_turn[-1] / 1e3:,.1f} kB at the last turn (its transcript {len(panel.compare.body.value) / 1e3:,.0f} kB)")
    return finish(args, "panel", results)


if __name__ == "__main__":
    main()
