"""nora_widgets.shapes: plain look-alikes of openai's response types, checked against openai itself.

The oracle is openai: clients.make_completion / make_chunk build the real pydantic
types from the same arguments, and every test compares what the two give.  No model
runs here (those tests are in tests/test_local.py), so the file takes well under a second.
"""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat import chat_completion, chat_completion_chunk
from openai.types.completion_usage import CompletionUsage, PromptTokensDetails

from nora_widgets import clients, shapes
from nora_widgets.clients import make_client
from nora_widgets.errors import NoraError
from nora_widgets.local import LocalClient

pytestmark = pytest.mark.timeout(60)


def same_ids(plain, real):
    """Give the real object the plain one's id and created time (both are made up per call)."""
    real.id, real.created = plain.id, plain.created
    return plain, real


def assert_same(plain, real):
    """Same data, same JSON, both ways of leaving out the empty fields."""
    for exclude_none in (False, True):
        assert plain.model_dump(exclude_none=exclude_none) == real.model_dump(exclude_none=exclude_none)
        for indent in (None, 2):
            assert plain.model_dump_json(indent=indent, exclude_none=exclude_none) == real.model_dump_json(
                indent=indent, exclude_none=exclude_none)


# --------------------------------------------------------------------------- #
# the field lists are openai's, in openai's order


@pytest.mark.parametrize("plain, real", [
    (shapes.ChatCompletion, ChatCompletion),
    (shapes.Choice, chat_completion.Choice),
    (shapes.ChatCompletionMessage, ChatCompletionMessage),
    (shapes.CompletionUsage, CompletionUsage),
    (shapes.PromptTokensDetails, PromptTokensDetails),
    (shapes.ChatCompletionChunk, ChatCompletionChunk),
    (shapes.ChunkChoice, chat_completion_chunk.Choice),
    (shapes.ChoiceDelta, chat_completion_chunk.ChoiceDelta),
])
def test_every_class_has_exactly_openais_fields_in_openais_order(plain, real):
    assert list(plain._fields) == list(real.model_fields)


# --------------------------------------------------------------------------- #
# whole replies


@pytest.mark.parametrize("text, finish", [
    ("Yes, we have The Dispossessed.", "stop"),
    ("", "length"),
    ("Ünïcödé — 本 📚, \"quotes\", back\\slash, tab\t, newline\n, escape \x1b[31m", "stop"),
])
@pytest.mark.parametrize("cached", [None, 0, 17])
def test_a_completion_dumps_exactly_like_openais(text, finish, cached):
    plain = shapes.make_completion(text, "SmolLM2", 40, 7, finish, cached_tokens=cached)
    real = clients.make_completion(text, "SmolLM2", 40, 7, finish)
    if cached is not None:
        real.usage.prompt_tokens_details = PromptTokensDetails(cached_tokens=cached)
    assert_same(*same_ids(plain, real))
    # and every attribute Nora reads gives the same value
    for get in (lambda r: r.choices[0].message.content, lambda r: r.choices[0].message.role,
                lambda r: r.choices[0].finish_reason, lambda r: r.choices[0].index, lambda r: r.object,
                lambda r: r.model, lambda r: r.usage.prompt_tokens, lambda r: r.usage.completion_tokens,
                lambda r: r.usage.total_tokens, lambda r: r.choices[0].message.refusal):
        assert get(plain) == get(real)
    assert plain.id.startswith("chatcmpl-") and isinstance(plain.created, int)


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=40), prompt=st.integers(0, 10_000), completion=st.integers(0, 10_000))
def test_any_text_and_counts_dump_like_openai(text, prompt, completion):
    plain = shapes.make_completion(text, "m", prompt, completion)
    real = clients.make_completion(text, "m", prompt, completion)
    assert_same(*same_ids(plain, real))


def test_several_candidates_dump_like_openai():
    """n > 1 as LocalClient builds it: copies of the first choice with their own index and text."""
    plain = shapes.make_completion("one", "m", 5, 6, cached_tokens=0)
    real = clients.make_completion("one", "m", 5, 6)
    real.usage.prompt_tokens_details = PromptTokensDetails(cached_tokens=0)
    for response in (plain, real):
        extra = copy.deepcopy(response.choices[0])
        extra.index, extra.message.content, extra.finish_reason = 1, "two", "length"
        response.choices.append(extra)
    assert_same(*same_ids(plain, real))
    assert plain.choices[0].message.content == "one"  # the copy is deep


# --------------------------------------------------------------------------- #
# streamed chunks


@pytest.mark.parametrize("kwargs", [
    {"content": "", "role": "assistant"},        # the first chunk
    {"content": " Dune"},                         # a piece of text
    {"finish_reason": "stop"},                    # the last choice chunk
    {"finish_reason": "length"},
    {"usage": {"prompt_tokens": 51, "completion_tokens": 9, "total_tokens": 60}},
    {"usage": {"prompt_tokens": 51, "completion_tokens": 9, "total_tokens": 60,
               "prompt_tokens_details": {"cached_tokens": 32}}},
])
def test_a_chunk_dumps_exactly_like_openais(kwargs):
    plain = shapes.make_chunk("chatcmpl-abc", 1_700_000_000, "SmolLM2", **kwargs)
    real = clients.make_chunk("chatcmpl-abc", 1_700_000_000, "SmolLM2", **kwargs)
    assert_same(plain, real)
    assert (plain.usage is None) == (real.usage is None) and len(plain.choices) == len(real.choices)
    if plain.choices:
        for get in (lambda c: c.choices[0].delta.content, lambda c: c.choices[0].delta.role,
                    lambda c: c.choices[0].finish_reason, lambda c: c.choices[0].index):
            assert get(plain) == get(real)
    else:
        assert plain.usage.total_tokens == real.usage.total_tokens == 60


# --------------------------------------------------------------------------- #
# behaving like a small record


def test_repr_shows_what_is_there_and_hides_the_empty_fields():
    reply = shapes.make_completion("Hi!", "m", 10, 2, cached_tokens=0)
    reply.id, reply.created = "chatcmpl-1", 1
    assert repr(reply) == (
        "ChatCompletion(id='chatcmpl-1', choices=[Choice(finish_reason='stop', index=0, "
        "message=ChatCompletionMessage(content='Hi!', role='assistant'))], created=1, model='m', "
        "object='chat.completion', usage=CompletionUsage(completion_tokens=2, prompt_tokens=10, total_tokens=12, "
        "prompt_tokens_details=PromptTokensDetails(cached_tokens=0)))")


def test_fields_can_be_changed_copied_and_compared():
    reply = shapes.make_completion("Hi!", "m", 10, 2)
    twin = copy.deepcopy(reply)
    assert twin == reply and twin is not reply
    twin.choices[0].message.content = "Bye!"  # what GuardedClient does with a replaced reply
    assert twin != reply and reply.choices[0].message.content == "Hi!"
    assert reply != clients.make_completion("Hi!", "m", 10, 2)  # never equal to a different type
    with pytest.raises(TypeError, match="ChoiceDelta has no field colour"):
        shapes.ChoiceDelta(colour="red")


def test_importing_shapes_or_the_local_client_loads_neither_openai_nor_pydantic():
    code = ("import sys, nora_widgets.shapes, nora_widgets.local\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('openai', 'pydantic', 'httpx', 'httpx2')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- #
# choosing them


@pytest.mark.parametrize("bad", ["pydantic", "Plain", "", None, True])
def test_a_bad_responses_value_is_one_clear_line(bad):
    with pytest.raises(NoraError) as caught:
        LocalClient(responses=bad)
    assert str(caught.value) == ("responses must be 'openai' (openai's types) or 'plain' (nora_widgets.shapes), "
                                 f"not {bad!r}")
    with pytest.raises(NoraError, match="^responses must be"):
        make_client("local", local_responses=bad)


def test_the_other_backends_keep_openais_types(monkeypatch):
    scripted = make_client("scripted", replies=["Hi!"], local_responses="plain")
    assert isinstance(scripted.chat.completions.create(model="m", messages=[]), ChatCompletion)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    remote = make_client("auto", local_responses="plain", base_url="http://127.0.0.1:9/v1")
    assert type(remote).__module__.startswith("openai")
