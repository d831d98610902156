"""The engine behind LocalClient: one loaded llama.cpp model, shared by every client that asks for it.

It turns messages into the model's prompt (the GGUF's chat template), reads the
prompt, generates, and keeps llama.cpp's C-level log output out of the notebook.
What reading and generating cost, and why the KV cache is reused only for random
replies, is explained in local.py.  Private: LocalClient is the public face.
"""

from __future__ import annotations

import atexit
import codecs
import contextlib
import copy
import io
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Generator, Iterator

from ._abort import abort_on, aborted, gave_up
from ._cancel import CallCancelled
from .clients import ModelUnavailableError
from .errors import NoraError

GET_IT = "pip install 'nora-widgets[local]' (or set NORA_MODEL_PATH to a chat GGUF file)"


# --------------------------------------------------------------------------- #
# keeping llama.cpp quiet


@contextlib.contextmanager
def _quiet_native() -> Iterator[io.StringIO]:
    """Send what C code writes to file descriptor 2 (and Python's sys.stderr) to a buffer.

    llama.cpp logs from C, below Python: contextlib.redirect_stderr alone would not
    catch it, and Jupyter kernels forward fd 2 into the notebook.  What was caught
    is kept in the yielded buffer, to quote in an error message if loading fails.
    """
    caught = io.StringIO()
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (some embedded interpreters)
        with contextlib.redirect_stderr(caught):
            yield caught
        return
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            with contextlib.redirect_stderr(caught):
                yield caught
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            caught.write(sink.read().decode("utf-8", "replace"))


@contextlib.contextmanager
def _ctrl_c_held() -> Iterator[None]:
    """Hold a Ctrl-C that arrives during a C call and raise it when the call is over.

    llama.cpp logs through a ctypes callback into Python while it loads a model, and an
    exception raised inside a ctypes callback is printed and dropped: a Ctrl-C that
    lands there would be lost, and the turn would go on.  So while loading, Ctrl-C only
    notes that it was pressed.  Only in the main thread with Python's own handler in
    place (signals reach no other thread; a custom handler is left alone).
    """
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    pressed: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pressed:  # even if the call failed (a read that llama.cpp gave up): the Ctrl-C is what happened
            raise KeyboardInterrupt


def native_detail(caught: io.StringIO) -> str:
    """The last line llama.cpp logged, as ' (...)' to append to an error message, or ''."""
    lines = [line for line in caught.getvalue().splitlines() if line.strip()]
    return f" ({lines[-1].strip()[:120]})" if lines else ""


# --------------------------------------------------------------------------- #
# the engine: one loaded model, shared by every LocalClient that asks for it


class _Engine:
    """One llama.cpp model in memory, its chat template, and the lock that serializes it.

    Created once per (model file, n_ctx) and shared: loading is lazy (first use),
    generation holds ``lock`` so two threads never drive the model at once.  n_threads is
    the number it loads with; each generation may ask for its own (generate(n_threads=...)).
    """

    def __init__(self, path: Path, n_ctx: int, n_threads: int, vocab_only: bool = False) -> None:
        self.path, self.n_ctx, self.n_threads = path, n_ctx, n_threads
        self.vocab_only = vocab_only            # template and tokenizer only, no weights: counting, not generating
        self.lock = threading.Lock()
        self.owner: int | None = None          # thread id holding lock (to catch same-thread re-entry)
        self._load_lock = threading.Lock()
        self._llama: Any = None
        self._probe: int | None = None          # tokens of [_PROBE_SYSTEM] alone (see message_tokens)
        self._overheads: dict[str, int] = {}
        self._split_exact: bool | None = None
        self.load_seconds: float | None = None
        self.prompt_tokens_read = 0             # prompt tokens the model really evaluated (cached ones excluded)

    # -- loading ---------------------------------------------------------------
    @property
    def llama(self) -> Any:
        if self._llama is None:
            with self._load_lock:
                if self._llama is None:
                    self._load()
        return self._llama

    def _load(self) -> None:
        try:
            import llama_cpp
            from llama_cpp import llama_chat_format
        except ImportError as exc:
            raise ModelUnavailableError(f"the embedded model needs llama-cpp-python: {GET_IT}") from exc
        start = time.perf_counter()
        with _ctrl_c_held(), _quiet_native() as caught:
            try:
                llama = llama_cpp.Llama(
                    model_path=str(self.path), n_ctx=self.n_ctx, n_threads=self.n_threads,
                    n_threads_batch=self.n_threads, vocab_only=self.vocab_only, verbose=False,
                )
            except Exception as exc:  # llama.cpp says ValueError("Failed to load model from file")
                raise ModelUnavailableError(
                    f"could not load {self.path.name}: {exc}{native_detail(caught)}; is it a chat GGUF file?") from exc
        self.load_seconds = time.perf_counter() - start
        self._formatter = self._make_formatter(llama, llama_chat_format)
        self.bos_text = llama._model.token_get_text(llama.token_bos()) if llama.token_bos() != -1 else ""
        self._llama = llama
        atexit.register(self.close)  # free it while llama_cpp still exists (not during interpreter teardown)

    def close(self) -> None:
        """Free the model's memory; the next call loads it again.  Skipped while a reply
        is still being generated (at exit the operating system frees it anyway)."""
        if not self.lock.acquire(timeout=2):
            return
        try:
            with self._load_lock:
                llama, self._llama = self._llama, None
            if llama is not None:
                llama.close()
        finally:
            self.lock.release()

    @staticmethod
    def _make_formatter(llama: Any, llama_chat_format: Any) -> Any:
        """The same chat formatter llama-cpp-python picks in Llama.__init__ for this file.

        A GGUF with a `tokenizer.chat_template` gets it rendered by Jinja2
        (Jinja2ChatFormatter); a few well-known templates are mapped to built-in
        formatters instead; files with no template fall back to 'llama-2'.
        """
        builtin = {
            "chatml": llama_chat_format.format_chatml,
            "llama-2": llama_chat_format.format_llama2,
            "llama-3": llama_chat_format.format_llama3,
            "mistral-instruct": llama_chat_format.format_mistral_instruct,
        }
        if llama.chat_format in builtin:
            return builtin[llama.chat_format]
        template = llama.metadata.get("tokenizer.chat_template")
        if llama.chat_format == "chat_template.default" and template:
            eos, bos = llama.token_eos(), llama.token_bos()
            return llama_chat_format.Jinja2ChatFormatter(
                template=template,
                eos_token=llama._model.token_get_text(eos) if eos != -1 else "",
                bos_token=llama._model.token_get_text(bos) if bos != -1 else "",
                stop_token_ids=[eos],
            )
        raise ModelUnavailableError(f"{Path(llama.model_path).name}: chat format {llama.chat_format!r} is not supported by Nora")

    # -- the prompt ------------------------------------------------------------
    def render(self, messages: list[dict], add_generation_prompt: bool = True,
               template_args: dict | None = None) -> tuple[str, bool, list[str]]:
        """messages -> (prompt text, whether tokenizing adds BOS, stop strings), as llama-cpp-python does.
        template_args: what else its server gives the template (tools, tool_choice, functions, function_call)."""
        llama = self.llama
        formatter = self._formatter
        if not add_generation_prompt and hasattr(formatter, "add_generation_prompt"):
            formatter = copy.copy(formatter)  # Jinja2ChatFormatter: the list alone, no reply primer
            formatter.add_generation_prompt = False
        result = formatter(messages=messages, **(template_args or {}))
        stop = result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
        add_bos = (not result.added_special) and llama._model.add_bos_token() and llama.token_bos() != -1
        return result.prompt, add_bos, stop

    def prompt(self, messages: list[dict]) -> tuple[str, list[int], list[str]]:
        """messages -> (the prompt as text, special tokens visible; its token ids; stop strings),
        from one rendering of the template (it walks the whole list: render it once per call)."""
        text, add_bos, stop = self.render(messages)
        ids = self.llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)
        return self._shown(text, add_bos), ids, stop

    def _shown(self, text: str, add_bos: bool) -> str:
        """The prompt text with the BOS token the tokenizer adds, so what is shown is what is read."""
        return (self.bos_text + text) if add_bos and not text.startswith(self.bos_text) else text

    def tokens(self, messages: list[dict], add_generation_prompt: bool = True,
               template_args: dict | None = None) -> list[int]:
        """The token ids the model reads for these messages (exactly what generation uses)."""
        text, add_bos, _ = self.render(messages, add_generation_prompt, template_args)
        return self.llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def prompt_text(self, messages: list[dict]) -> str:
        """The prompt as text, special tokens visible (with the BOS token if the tokenizer adds one)."""
        text, add_bos, _ = self.render(messages)
        return self._shown(text, add_bos)

    # -- exact per-message counts (see nora_widgets.tokens) --------------------
    def message_tokens(self, message: dict) -> int:
        """Tokens one message adds to the prompt, wherever it stands in the list.

        Measured as a difference: render [probe, message] and [probe]; the probe is a
        fixed system message.  Chat templates that frame each message the same way
        (ChatML, Llama 3) make this exact; probe_ok() checks it for this model.
        """
        base = self._probe_base()
        return len(self.tokens([_PROBE_SYSTEM, message], add_generation_prompt=False)) - base

    def _probe_base(self) -> int:
        if self._probe is None:
            self._probe = len(self.tokens([_PROBE_SYSTEM], add_generation_prompt=False))
        return self._probe

    def overhead(self, first_role: str | None) -> int:
        """Tokens the prompt has beyond its messages: the reply primer ("<|im_start|>assistant\\n"),
        a BOS token if any, and the default system prompt some templates add when the
        list does not start with one (SmolLM2's does)."""
        key = "system" if first_role == "system" else ("none" if first_role is None else "other")
        cache = self._overheads
        if key not in cache:
            if key == "none":
                cache[key] = len(self.tokens([]))
            else:
                probe = _PROBE_SYSTEM if key == "system" else _PROBE_USER
                cache[key] = len(self.tokens([probe])) - self.message_tokens(probe)
        return cache[key]

    def split_is_exact(self) -> bool:
        """Does sum(message_tokens) + overhead equal the real prompt length for this template?

        Checked once on a small conversation in both shapes (with and without a system
        message).  True for ChatML templates like SmolLM2's; templates that fold the system
        prompt into the first user turn (Mistral, Gemma) fail it, and callers then count
        the whole prompt instead.
        """
        if self._split_exact is None:
            convos = [
                [_PROBE_SYSTEM, {"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"},
                 {"role": "user", "content": " two\n\nlines "}],
                [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yes."},
                 {"role": "user", "content": "ok"}],
            ]
            try:
                self._split_exact = all(
                    sum(self.message_tokens(m) for m in c) + self.overhead(c[0]["role"]) == len(self.tokens(c))
                    for c in convos)
            except Exception:  # a template that refuses some shapes (raise_exception in Jinja)
                self._split_exact = False
        return self._split_exact

    # -- generation --------------------------------------------------------------
    @contextlib.contextmanager
    def hold(self, timeout: float) -> Iterator[None]:
        """Hold the model for one generation; refuse re-entry from the same thread."""
        me = threading.get_ident()
        if self.owner == me:
            raise NoraError("a streamed reply from the local model is still open in this thread: "
                            "read it to the end or call .close() on it first")
        if not self.lock.acquire(timeout=timeout):
            raise TimeoutError(f"the local model stayed busy for {timeout:g} s (another reply is being generated)")
        self.owner = me
        try:
            yield
        finally:
            self.owner = None
            self.lock.release()

    def threads(self) -> int:
        """How many CPU threads the loaded model computes with now (what llama.cpp reports)."""
        import llama_cpp

        return llama_cpp.llama_n_threads(self.llama._ctx.ctx)

    def generate(self, prompt_tokens: list[int], max_tokens: int, params: dict, stop: list[str],
                 seed: int, result: dict, reuse: bool = False, n_threads: int | None = None,
                 cancel: threading.Event | None = None) -> Iterator[str]:
        """Yield the reply's text pieces; fill result['finish_reason'], result['completion_tokens']
        and result['cached_tokens'] (prompt tokens taken from the KV cache instead of read).

        The caller holds the lock.  reuse=False: start from an empty cache (same input ->
        same output).  reuse=True: keep the longest start of the prompt that is already
        in the cache and read only the rest.  n_threads: the CPU threads to read and generate
        with (None: as the last call left them); the model is shared, so its threads are set per
        call.  Stops at an end-of-generation token, at a stop string (never shown), or after
        max_tokens tokens (finish_reason 'length').  cancel: an Event looked at before the prompt is read
        and before each token; once it is set, CallCancelled is raised there (the caller's lock then freed).
        A Cancel (_cancel.py) is also seen inside the prompt read: llama.cpp gives up the batch it is on
        (_abort.py), the batches read before stay in the KV cache (llama.n_tokens says how many tokens),
        and CallCancelled is raised at once instead of after the whole prompt.  Ctrl-C in the main thread is
        raised between two of llama's steps (_abortable), and the cache is kept then too; any other exception
        half-way through empties it (llama.n_tokens might count a batch the cache does not hold).
        """
        import llama_cpp

        llama = self.llama
        if n_threads is not None and n_threads != self.threads():
            llama._ctx.set_n_threads(n_threads, n_threads)  # generation and prompt reading alike
        with _ctrl_c_held():             # not between dropping the cache's tail and saying so in n_tokens
            cached = _reusable_prefix(llama, prompt_tokens) if reuse else 0
            if cached:
                llama.n_tokens = cached  # the cache now holds exactly prompt_tokens[:cached]
            else:
                llama.reset()            # an empty cache: the whole prompt is read
        self.prompt_tokens_read += len(prompt_tokens) - cached
        llama.set_seed(seed)
        vocab = llama._model.vocab
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        held = ""                # decoded text not yet given out (it may be the start of a stop string)
        result.update(finish_reason="length", completion_tokens=0, cached_tokens=cached)
        if max_tokens <= 0:
            return
        if cancel is not None and cancel.is_set():  # cancelled while it waited for the lock: read nothing
            raise CallCancelled("the caller stopped waiting before the model started")
        # reset=False: the cache was prepared above; llama only reads the tail and samples
        tokens = llama.generate(prompt_tokens[cached:], reset=False, temp=params["temperature"],
                                top_p=params["top_p"], top_k=params["top_k"], min_p=params["min_p"],
                                repeat_penalty=params["repeat_penalty"],
                                presence_penalty=params.get("presence_penalty", 0.0),
                                frequency_penalty=params.get("frequency_penalty", 0.0),
                                grammar=params.get("grammar"))
        step = _Step()               # is llama's own Python code in the middle of a step? (_abortable says)
        steps = _abortable(tokens, llama, cancel, step)
        try:
            for token in steps:
                if cancel is not None and cancel.is_set():  # one token's work at most after the cancel
                    raise CallCancelled("the caller stopped waiting for this reply")
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    result["finish_reason"] = "stop"
                    break
                result["completion_tokens"] += 1
                held += decoder.decode(llama.detokenize([token]))
                cut = min((held.find(s) for s in stop if s and s in held), default=-1)
                if cut >= 0:
                    held = held[:cut]
                    result["finish_reason"] = "stop"
                    break
                keep = max((_partial_suffix(held, s) for s in stop if s), default=0)
                if len(held) > keep:
                    yield held[: len(held) - keep]
                    held = held[len(held) - keep:]
                if result["completion_tokens"] >= max_tokens:
                    break
        except (GeneratorExit, CallCancelled):
            raise                # closed or cancelled: llama's cache still matches llama.input_ids[:n_tokens]
        except KeyboardInterrupt:
            if step.running:     # it may have landed between a decode and llama's n_tokens update
                llama.reset()
            raise                # else between two steps (nora chat's Ctrl-C): the cache is kept, as for a close
        except BaseException:
            llama.reset()        # failed half-way: the next call starts from an empty cache
            raise
        finally:
            steps.close()        # finish llama's generator now, while the caller still holds the lock,
            tokens.close()       # and take the abort callback off (steps: started or not, tokens too)
        held += decoder.decode(b"", final=True)
        if held:
            yield held


class _Step:
    """Is llama-cpp-python's own Python code in the middle of a step (a decode, then its n_tokens and
    input_ids update, then a sample)?  An exception that lands there may leave n_tokens counting a batch the
    KV cache does not hold, so the cache is emptied.  Between two steps llama's generator waits at its
    yield: n_tokens counts what the cache holds (the prompt and the reply tokens read; the token just
    sampled is not read yet), and a Ctrl-C there can leave the cache as it is.
    Example: step.running -> True from just before llama's generator goes on until that step is over"""

    def __init__(self) -> None:
        self.running = False


def _abortable(tokens: Iterator[int], llama: Any, cancel: threading.Event | None,
               step: _Step | None = None) -> Generator[int, None, None]:
    """llama's token generator, with llama.cpp told to give up a computation (the prompt read above all,
    one C call per 512 tokens) once cancel is set: CallCancelled then, the KV cache holding the batches
    read before (llama.n_tokens of them; llama.cpp drops the batch it gave up).  The abort callback is
    C code with no Python in it (_abort.py): generation runs at full speed.

    Ctrl-C is held while llama computes (_ctrl_c_held) and raised when each step returns: llama.cpp logs
    the batch it gave up through llama-cpp-python's Python log callback, and a KeyboardInterrupt raised
    inside that callback would be printed as "Exception ignored" and lost (the turn would go on).
    step.running is True while a step may be half done: from just before llama's generator goes on until
    it has yielded a token or ended, or llama.cpp gave up a batch whole.  A held Ctrl-C is raised after
    that, so the caller sees step.running False and may keep the cache; one that landed inside llama's
    Python code (no held handler: another thread, or a handler of someone else's) finds it True."""
    step = step if step is not None else _Step()
    with abort_on(llama, cancel):
        while True:
            try:
                with _ctrl_c_held():  # a Ctrl-C meanwhile is raised here, once the step is over
                    step.running = True
                    try:
                        token = next(tokens)
                    except (StopIteration, RuntimeError) as exc:
                        step.running = not (isinstance(exc, StopIteration) or gave_up(exc))
                        raise
                    step.running = False
            except StopIteration:
                return
            except RuntimeError as exc:
                if aborted(exc, cancel):
                    raise CallCancelled("the caller stopped waiting while the model read the prompt") from None
                raise
            yield token


_PROBE_SYSTEM = {"role": "system", "content": "."}
_PROBE_USER = {"role": "user", "content": "."}


def _reusable_prefix(llama: Any, prompt_tokens: list[int]) -> int:
    """How many leading prompt tokens can be taken from llama's KV cache (0: read them all).

    The cache holds the keys and values of llama.input_ids[:llama.n_tokens] (the last
    prompt and the reply tokens that were read).  The new prompt may reuse them up to
    the first token that differs, minus one: the last prompt token is always read,
    because its output picks the first reply token.  Everything after the kept part is
    dropped from the cache here.
    Example: cache [1, 5, 9, 4], prompt [1, 5, 9, 7, 8] -> 3; prompt [1, 5] -> 1
    """
    same = 0
    for cached, new in zip(llama.input_ids[: llama.n_tokens].tolist(), prompt_tokens):
        if cached != new:
            break
        same += 1
    same = min(same, len(prompt_tokens) - 1)
    if same > 0 and not llama._ctx.kv_cache_seq_rm(-1, same, -1):
        return 0  # this model's cache cannot drop just its tail (recurrent models): read it all
    return same


def _partial_suffix(text: str, stop: str) -> int:
    """Length of the longest end of text that is a beginning of stop (held back until we know)."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0


_ENGINES: dict[tuple[str, int], _Engine] = {}
_ENGINES_LOCK = threading.Lock()


def _engine_for(path: Path, n_ctx: int, n_threads: int) -> _Engine:
    """The shared engine for (file, n_ctx): one copy of the model in memory.  The first caller's
    n_threads is the one it loads with; each LocalClient's calls then run with its own (generate)."""
    key = (str(path.resolve()), n_ctx)
    with _ENGINES_LOCK:
        if key not in _ENGINES:
            _ENGINES[key] = _Engine(path, n_ctx, n_threads)
        return _ENGINES[key]
