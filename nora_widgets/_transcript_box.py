"""The chat panel's transcript in blocks of messages: a turn sends the page the block it changed.

    box = TranscriptBox()
    box.show(history)          # draws it; returns how many blocks went to the page
    box.show(history + two)    # a turn later: 1 (the last block), or 1 new block
    box.value                  # the whole HTML: == views.transcript_html(history)
    box.show(history, "hi", "Hel")   # the turn in progress too, in a block of its own (the side-by-side view)

    box = TranscriptBox(live=True)   # the chat panel's: the turn in progress streams into its last block
    box.show_live("hi", "Hel")       # sends that block only
    box.show(history, keep_live=True)   # the messages redrawn, the turn in progress left as it is

Why: one HTML widget holding the whole chat sent it whole after every turn, 735 kB at 1,000
messages and 3.7 MB at 5,000, and the page parsed it all again (benchmarks/bench_panel.py).  Here
the messages go in blocks of BLOCK; each block is a model of its own (``_Block``, a value and no
view), and a block whose messages are the ones it shows is not touched.  A turn changes the last
block, or starts a new one; Clear, Load or a new persona change the blocks whose messages changed.

The page draws what ``views.transcript_html`` draws, the same message HTML in the same box:

    <div class="nora-transcript" role="region" aria-label="conversation" style="...column-reverse...">
      <div> <div>block 1's messages</div> <div>block 2's messages</div> ... </div>
    </div>

one region named "conversation" around all blocks, scrolled to the newest message by the same
column-reverse box.  A block's <div> has no style of its own: the messages lay out as in one list.
With live=True the last block is the turn in progress (the message on its way, the reply so far):
inside the region, so the keys that scroll the conversation reach the reply being written too (in a
scrolling box of its own under the region, the start of a long reply could not be reached from the
keyboard), and it is no second region or Tab stop.
The blocks and the page's JavaScript are _blocks.BlockBox's (the inspector's tables and the wire view
go the same way), and so does the side-by-side view's (views.CompareView).  The browser tests draw it
in JupyterLab.
"""

from __future__ import annotations

from typing import Any, Sequence

from ._blocks import KEEP, PLACE, BlockBox
from .views import EMPTY_TRANSCRIPT, TRANSCRIPT_HEIGHT, live_html, message_html, transcript_frame

__all__ = ["TranscriptBox", "BLOCK"]

# Messages per block.  A turn sends one block, half full on average: at ~0.7 kB a message (the
# benchmark's chat), 50 is ~18 kB a turn, and 5,000 messages are 100 blocks (benchmarks/bench_panel.py).
BLOCK = 50


def _key(messages: Sequence[dict]) -> tuple:
    """What a block shows, to compare with what it should show.  Example: [user("hi")] -> (("user", "hi"),)"""
    return tuple((m.get("role", "?"), m.get("content") or "") for m in messages)


class TranscriptBox(BlockBox):
    """The transcript as blocks; ``show(messages)`` redraws the blocks whose messages changed."""

    def __init__(self, block_size: int = BLOCK, max_height: str = TRANSCRIPT_HEIGHT,
                 label: str = "conversation", live: bool = False, **kwargs) -> None:
        super().__init__(block_tag="div", **kwargs)
        if block_size < 1:
            raise ValueError(f"block_size must be a whole number >= 1 (got {block_size!r})")
        self.block_size = block_size
        # live: the turn in progress is drawn here too, in a last block kept between turns (empty then),
        # so that a turn does not change the list of blocks twice (a list of 40 blocks is ~1.8 kB)
        self.live = live
        self.max_height = max_height
        self.label = label  # the region's name for screen readers
        self.show([])

    def show(self, messages: Sequence[dict], pending: str | None = None, streaming: str | None = None,
             keep_live: bool = False) -> int:
        """Draw messages; only blocks whose messages changed are sent.  Returns how many were.
        pending, streaming: the turn in progress (views.live_html), drawn after the messages in a block
        of its own, so that each piece of a streamed reply sends that block only (with live=True the
        block is always there).  keep_live: that block keeps what it shows (the panel streams into it
        with show_live, and redraws the messages meanwhile).
        Example: 120 messages drawn, then 122 -> 1 (the third block: messages 100-121)."""
        n = self.block_size
        live = live_html(pending, streaming)
        chunks = [messages[i:i + n] for i in range(0, len(messages), n)] or ([] if live else [[]])
        keys: list = [_key(c) for c in chunks]
        anchors: list = list(range(len(chunks)))
        if live or self.live:  # named apart from the messages' blocks
            keys.append(KEEP if keep_live else live)
            anchors.append("live")
        return self.draw(transcript_frame(PLACE, self.max_height, self.label), keys,
                         lambda i: ("".join(message_html(m) for m in chunks[i]) or EMPTY_TRANSCRIPT)
                         if i < len(chunks) else live, anchors=anchors)

    def show_live(self, pending: str | None = None, streaming: str | None = None) -> bool:
        """The turn in progress only (live=True): the message on its way and the reply so far, in the last
        block; the messages' blocks are not looked at.  show_live() empties it.  Returns whether it was sent.
        Example: box.show_live("hi", "Hel"); box.live_block.value.count('class="nora-msg ') -> 2"""
        html = live_html(pending, streaming)
        return self.redraw("live", html, html)

    @property
    def live_block(self) -> Any:
        """The block the turn in progress is drawn in (live=True): its ``value`` is that HTML, "" between turns."""
        return self._shown["live"][0]

    @property
    def value(self) -> str:
        """The whole transcript's HTML, as the page shows it: views.transcript_html of what was shown."""
        return transcript_frame("".join(b.value for b in self.blocks), self.max_height, self.label)
