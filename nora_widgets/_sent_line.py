"""What one call sent, in words: the line after a reply with `nora chat --show-sent`
and `%%chat --show-sent`.

The facts are counted here once (system messages, a greeting, earlier turns, tokens, what
trimming left out, a retry with fewer turns); each face only names its trimming
setting in its own words: `/trim 2` in `nora chat`, `--keep-turns 2` in the magics.
No terminal, no notebook: both faces import this.
"""

from __future__ import annotations

from typing import Any

from .conversation import _earlier_turns
from .errors import count_of
from .tokens import context_window, count_tokens

__all__ = ["describe_sent"]


def describe_sent(sent: list[dict], before: list[dict], keep_turns: int | None, trim: str,
                  client: Any = None, model: str | None = None) -> str:
    """One line (no brackets) on what the call sent.

    sent:       the list the successful call sent (TurnResult.sent)
    before:     the history as it was before this turn (so what trimming left out)
    keep_turns: the turns the turn was asked to keep (None: no trimming)
    trim:       how this face names that setting; {n} becomes keep_turns, e.g. '/trim {n}'
    Example: q = {"role": "user", "content": "Do you have Dune?"}
             describe_sent([persona, q], [persona], None, '/trim {n}', ScriptedClient())
             -> 'this call sent 2 messages: the persona and your message; ~40 tokens'
             (a model whose window is known adds its share: '...; 148 tokens, 7% of the 2,048-token window')
    """
    system = sum(1 for m in sent if m["role"] == "system")
    opening = _before_first_user(sent)
    earlier = _earlier_turns(sent)  # as trimming counts turns: an unanswered message is one
    unanswered = _unanswered(sent[:-1])
    one = "the persona" if sent[0]["role"] == "system" else "a system message"  # one further down is no persona
    parts = ([one if system == 1 else f"{system} system messages"] if system else []) + \
            (["a greeting" if opening == 1 else f"{opening} greetings"] if opening else []) + \
            ([count_of(earlier - unanswered, "earlier turn")] if earlier > unanswered else []) + \
            ([f"{count_of(unanswered, 'earlier message')} with no reply"] if unanswered else []) + ["your message"]
    what = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    count = count_tokens(sent, client, model)
    tokens = f"{'' if count.exact else '~'}{count.total:,} tokens" + _share_of_window(count.total, client, model)
    left_out = len(before) - (len(sent) - 1)
    trimmed = ""
    if left_out > 0 and keep_turns is not None:
        name = trim.format(n=keep_turns)
        trimmed = f"; {name} left out {count_of(left_out, 'older message')}"
        turns_before = sum(1 for m in before if m["role"] == "user")
        if earlier < min(keep_turns, turns_before):  # too long for the window: retried with fewer
            trimmed = (f"; with {name} it did not fit the model's context window, so it went "
                       f"again with the last {count_of(earlier, 'turn')}: "
                       f"{count_of(left_out, 'older message')} left out")
    return f"this call sent {count_of(len(sent), 'message')}: {what}; {tokens}{trimmed}"


def _share_of_window(tokens: int, client: Any, model: str | None) -> str:
    """', 7% of the 2,048-token window' when the model's window is known (context_window), else ''.
    Watching it grow turn by turn shows where the conversation is heading.
    Example: _share_of_window(148, LocalClient(), None) -> ', 7% of the 2,048-token window'"""
    window = context_window(client, model) if client is not None else None
    if not window:
        return ""
    share = 100 * tokens / window
    said = "under 1%" if 0 < share < 1 else f"{share:.0f}%"
    return f", {said} of the {window:,}-token window"


def _before_first_user(messages: list[dict]) -> int:
    """Assistant messages before the first user message: a greeting the program put in the list
    (a loaded transcript may start with one); it is sent, but answers no message of yours.
    Example: [sys, greeting, u1, a1, u2] -> 1; [sys, u1, a1, u2] -> 0"""
    count = 0
    for m in messages:
        if m["role"] == "user":
            break
        count += m["role"] == "assistant"
    return count


def _unanswered(messages: list[dict]) -> int:
    """User messages with no reply before the next user message (or the end), e.g. the last one of
    a transcript saved after a failed turn.  Example: [sys, u1, a1, u2] -> 1; [sys, u1, u2, a2] -> 1"""
    count, waiting = 0, False
    for m in messages:
        if m["role"] == "user":
            count += waiting
            waiting = True
        elif m["role"] == "assistant":
            waiting = False
    return count + waiting
