"""Transcripts: atomic save, validated load that changes nothing on failure (fuzzed with hypothesis);
a .md name saves a Markdown document to read, checked by rendering it, which never loads back."""

import json
import os
import re
from html import unescape
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from nora_widgets import SYSTEM_PROMPT, ScriptedClient, load_transcript, run_turn, save_transcript
from nora_widgets.render import markdown_to_html
from nora_widgets import transcript
from nora_widgets.transcript import MAX_TRANSCRIPT_BYTES, TranscriptError


def _history():
    client = ScriptedClient(["Yes.", "14.50 euros."])
    history = [{"role": "system", "content": SYSTEM_PROMPT}]
    run_turn(client, history, "Le Guin? ünïcödé ✓")
    run_turn(client, history, "How much is it?")
    return history


def test_round_trip_keeps_the_literal_list_and_metadata(tmp_path):
    history = _history()
    path = save_transcript(tmp_path / "chat.json", history, model="SmolLM2", temperature=0.7, api_key="sk-secret")
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["messages"] == history
    assert document["format"] == "nora-transcript" and document["version"] == 1
    assert "api_key" not in document and "sk-secret" not in path.read_text()
    messages, meta = load_transcript(path)
    assert messages == history
    assert meta == {"model": "SmolLM2", "temperature": 0.7}


def test_a_bare_list_loads_too(tmp_path):
    path = tmp_path / "bare.json"
    path.write_text(json.dumps(_history()))
    assert load_transcript(path)[0] == _history()


def test_a_read_only_file_is_not_saved_over(tmp_path):
    path = tmp_path / "t.json"
    save_transcript(path, [{"role": "user", "content": "first"}])
    path.chmod(0o444)
    with pytest.raises(TranscriptError, match=r"^not saved: .*t\.json is read-only \(make it writable"):
        save_transcript(path, [{"role": "user", "content": "second"}])
    assert json.loads(path.read_text())["messages"] == [{"role": "user", "content": "first"}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json"]  # no temp file left
    path.chmod(0o644)
    save_transcript(path, [{"role": "user", "content": "second"}])  # writable again: saved
    assert json.loads(path.read_text())["messages"] == [{"role": "user", "content": "second"}]


def test_a_file_that_is_not_a_saved_conversation_is_never_saved_over(tmp_path):
    """A save replaces the file whole: `/save notes.md` over one's own notes, or over a data file, lost
    it silently (and a FIFO became a regular file; as root, so would /dev/null)."""
    notes, data, pipe = tmp_path / "notes.md", tmp_path / "data.json", tmp_path / "pipe"
    notes.write_text("# My notes\n\nDo not lose these.\n")
    data.write_text('{"scores": [1, 2, 3]}')
    os.mkfifo(pipe)
    for path, words in ((notes, "holds something other than a conversation saved by Nora"),
                        (data, "holds something other than a conversation saved by Nora"),
                        (pipe, "is not a regular file")):
        with pytest.raises(TranscriptError, match=f"^not saved: {re.escape(str(path))} {words}"):
            save_transcript(path, _history())
    assert notes.read_text() == "# My notes\n\nDo not lose these.\n" and data.read_text() == '{"scores": [1, 2, 3]}'
    assert pipe.is_fifo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.json", "notes.md", "pipe"]  # no temp file left


def test_what_nora_wrote_or_can_load_is_saved_over(tmp_path):
    """Nora's own JSON and Markdown (--save writes over its file after every turn), a transcript written by
    hand (a bare list, a BOM), and an empty file may be replaced."""
    history = _history()
    hand = tmp_path / "hand.json"
    hand.write_text("\ufeff" + json.dumps([{"role": "user", "content": "hi"}]), encoding="utf-8")
    empty = tmp_path / "empty.md"
    empty.write_text("")
    for name in ("own.json", "own.md"):
        save_transcript(tmp_path / name, history[:3])
    for path in (tmp_path / "own.json", tmp_path / "own.md", hand, empty):
        save_transcript(path, history)
    assert load_transcript(tmp_path / "own.json")[0] == history and load_transcript(hand)[0] == history
    assert "## 4 · assistant" in (tmp_path / "own.md").read_text() and "## 4 · assistant" in empty.read_text()


def test_metadata_cannot_overwrite_the_files_own_header(tmp_path):
    path = tmp_path / "t.json"
    save_transcript(path, [{"role": "user", "content": "hi"}], format="mine", version=99, model="m")
    document = json.loads(path.read_text())
    assert list(document)[:2] == ["format", "version"] and document["model"] == "m"
    messages, meta = load_transcript(path)  # a version 99 file would be refused as written by a newer Nora
    assert messages == [{"role": "user", "content": "hi"}]


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "chat.json"
    save_transcript(path, _history())
    first = path.read_bytes()
    with pytest.raises(TranscriptError):
        save_transcript(path, [{"role": "wizard", "content": "x"}])
    assert path.read_bytes() == first  # a refused save changes nothing
    save_transcript(path, _history()[:1])
    assert os.listdir(tmp_path) == ["chat.json"]


def test_save_into_a_missing_folder_is_one_clear_error(tmp_path):
    with pytest.raises(TranscriptError, match="does not exist"):
        save_transcript(tmp_path / "nope" / "chat.json", _history())


@pytest.mark.parametrize("path", ["chat.json", Path("chat.json")], ids=["str", "Path"])
def test_the_arguments_in_the_other_order_are_said_so_and_nothing_is_written(tmp_path, monkeypatch, path):
    # it said "the conversation must be a list of messages, not str", about the file name
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TranscriptError) as refused:
        save_transcript(_history(), path)
    assert str(refused.value) == ('not saved: save_transcript takes (path, history) in that order - e.g. '
                                  'save_transcript("chat.json", history)')
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TranscriptError, match="must be a list of messages, not str"):  # a bad list is still said so
        save_transcript("chat.json", "hello")


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b'{"messages": [{"role": "hacker", "content": "x"}]}', "role must be one of"),
        (b'[{"role": "user", "content": 42}]', "content must be a string"),
        (b'{"hello": 1}', "expected a list of messages"),
        (b'{"format": "other", "messages": []}', "unknown format"),
        (b'{"format": "nora-transcript", "version": 99, "messages": []}',  # it loaded without a word
         "written by a newer Nora: transcript version 99, this one reads version 1"),
        (b'{"version": "one", "messages": []}', "unknown transcript version 'one'"),
        (b'"just a string"', "expected a list of messages"),
        (b"[" * 100000 + b"]" * 100000, "not valid JSON"),
    ],
)
def test_bad_files_are_refused_and_untouched(tmp_path, content, fragment):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(TranscriptError, match=fragment) as info:
        load_transcript(path)
    assert "\n" not in str(info.value)
    assert path.read_bytes() == content


def test_missing_and_huge_files(tmp_path):
    with pytest.raises(TranscriptError, match="no such file"):
        load_transcript(tmp_path / "missing.json")
    huge = tmp_path / "huge.json"
    with open(huge, "wb") as f:
        f.truncate(MAX_TRANSCRIPT_BYTES + 1)
    with pytest.raises(TranscriptError, match="limit"):
        load_transcript(huge)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(lambda s: s.encode("utf-8")))
def test_fuzzed_bytes_either_load_valid_messages_or_raise_transcript_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "t.json"
    path.write_bytes(data)
    try:
        messages, meta = load_transcript(path)
    except TranscriptError as exc:
        assert str(exc).startswith("cannot load")
    else:
        assert all(m["role"] in ("system", "user", "assistant") and isinstance(m["content"], str) for m in messages)
    assert path.read_bytes() == data


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["role", "content", "name"]), _json_values | st.sampled_from(["user", "assistant", "system"]), max_size=3), max_size=5))
def test_fuzzed_json_shapes(tmp_path_factory, messages):
    path = tmp_path_factory.mktemp("fuzz") / "t.json"
    path.write_text(json.dumps({"messages": messages}))
    try:
        loaded, _ = load_transcript(path)
    except TranscriptError:
        return
    assert [(m["role"], m["content"]) for m in loaded] == [(m["role"], m["content"]) for m in messages]


def test_a_tilde_is_the_home_folder_and_a_folder_is_refused_in_one_line(tmp_path, monkeypatch):
    # every face (nora chat, %chat, the panel) passes what was typed; the ~ and the folder are handled here
    monkeypatch.setenv("HOME", str(tmp_path))
    history = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert save_transcript("~/chat.json", history) == tmp_path / "chat.json"
    assert load_transcript("~/chat.json")[0] == history
    with pytest.raises(TranscriptError, match=f"^not saved: {tmp_path} is a folder$"):
        save_transcript(tmp_path, history)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat.json"]  # no temp file left behind


def test_a_file_with_a_byte_order_mark_loads(tmp_path):
    # Notepad and some editors start UTF-8 with EF BB BF: it was "not valid JSON (line 1, column 1)"
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(_history(), ensure_ascii=False).encode("utf-8"))
    assert load_transcript(path)[0] == _history()


def test_saving_over_a_file_keeps_its_mode_and_writes_through_a_link(tmp_path):
    # the temp-file-then-rename save made a 0644 file 0600, and replaced a symlink by a file
    shared = tmp_path / "shared.json"
    save_transcript(shared, _history()[:1])
    assert shared.stat().st_mode & 0o777 == 0o600  # new transcripts are private to their owner
    shared.chmod(0o644)
    save_transcript(shared, _history())
    assert shared.stat().st_mode & 0o777 == 0o644 and load_transcript(shared)[0] == _history()
    link = tmp_path / "latest.json"
    link.symlink_to(shared)
    assert save_transcript(link, _history()[:3]) == link
    assert link.is_symlink() and load_transcript(shared)[0] == _history()[:3]
    assert sorted(os.listdir(tmp_path)) == ["latest.json", "shared.json"]


@pytest.mark.parametrize("name, why", [("chat\x00.json", "a NUL character"),
                                       ("chat\ud800.json", "a character the file system cannot encode")],
                         ids=["nul", "lone-surrogate"])
def test_a_name_no_file_can_have_is_one_line_on_save_and_load(tmp_path, name, why):
    # a NUL read from a pipe (nora chat's /save, the panel's file box) was ValueError: embedded null byte
    path = str(tmp_path / name)
    with pytest.raises(TranscriptError, match=f"^not saved: the file name contains {why}$"):
        save_transcript(path, _history())
    with pytest.raises(TranscriptError, match=f"^cannot load {re.escape(path)}: the file name contains {why}$"):
        load_transcript(path)
    assert os.listdir(tmp_path) == []


def test_a_value_json_cannot_hold_is_one_line_and_nothing_is_written(tmp_path):
    # a message edited by hand in a notebook (nora_history[1]["when"] = date(...)) raised TypeError from json
    import datetime

    path = tmp_path / "chat.json"
    history = _history()
    history[1]["when"] = datetime.date(2024, 1, 1)
    with pytest.raises(TranscriptError, match=r"^not saved: message 1: Object of type date is not JSON serializable$"):
        save_transcript(path, history)
    looped = [{"role": "system", "content": "x"}]
    looped[0]["again"] = looped
    with pytest.raises(TranscriptError, match=r"^not saved: message 0: Circular reference detected$"):
        save_transcript(path, looped)
    with pytest.raises(TranscriptError, match=r"^not saved: model: Object of type object is not JSON serializable$"):
        save_transcript(path, _history(), model=object())
    assert os.listdir(tmp_path) == []


def test_saving_over_a_file_where_modes_cannot_be_set_still_saves_and_leaks_no_descriptor(tmp_path, monkeypatch):
    # FAT and some network shares refuse chmod (EPERM): saving over a file failed there, and the
    # temp file's descriptor was never closed
    path = tmp_path / "chat.json"
    save_transcript(path, _history()[:1])

    def refuse(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chmod", refuse)
    open_before = len(os.listdir("/proc/self/fd"))
    assert save_transcript(path, _history()) == path
    assert len(os.listdir("/proc/self/fd")) == open_before
    assert load_transcript(path)[0] == _history() and os.listdir(tmp_path) == ["chat.json"]


# --------------------------------------------------------------------------- #
# a name ending in .md: a Markdown document to read and hand out, which never loads back

_BLOCK = re.compile(r'<pre[^>]*><code class="language-text">(.*?)</code></pre>', re.DOTALL)
_HEADING = re.compile(r"<h(\d)>(.*?)</h\1>", re.DOTALL)

TRICKY = [  # what a reply (or a learner) may write that would break a naive document
    "# A heading of its own\n\nand a paragraph",
    "Here:\n```python\nprint('hi')\n```\nand ````four```` too, and ~~~ tildes",
    "<script>alert(1)</script><img src=x onerror=alert(2)> </code></pre> <!-- a comment",
    "[x]: https://example.com/link-definition\n\nTitle\n=====\n> quoted\n- a list\n\n    indented code",
    "  leading spaces\tand a tab\n\n\ntrailing blank lines\n\n",
    "",
    "```",
    "`one` ``two`` ```three``` ````````nine`````````",
]


def _blocks(document: str) -> tuple[list[str], list[tuple[int, str]]]:
    """What the package's renderer makes of a document: the code blocks' texts, and the headings."""
    html = markdown_to_html(document)
    return [unescape(b) for b in _BLOCK.findall(html)], [(int(n), unescape(t)) for n, t in _HEADING.findall(html)]


def _assert_each_message_is_one_intact_block(document: str, history: list[dict]) -> None:
    blocks, headings = _blocks(document)
    assert blocks == [m["content"] + "\n" for m in history]  # one block each, its text exactly
    assert [h for h in headings if h[0] == 1] == [(1, "A conversation, saved by Nora")]  # no heading of a reply's
    assert [t.split(" · ")[0] for n, t in headings if n == 2] == [str(i) for i in range(len(history))]


def test_a_md_name_saves_a_document_whose_messages_render_as_one_block_each(tmp_path):
    history = [{"role": "system", "content": SYSTEM_PROMPT}]
    for i, text in enumerate(TRICKY):
        history.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    path = save_transcript(tmp_path / "notes.md", history, model="SmolLM2-135M-Instruct", temperature=0.7)
    document = path.read_text(encoding="utf-8")
    _assert_each_message_is_one_intact_block(document, history)
    headings = [t for n, t in _blocks(document)[1] if n == 2]
    assert headings[:3] == ["0 · system (the persona)", "1 · user", "2 · assistant"]
    assert "Model `SmolLM2-135M-Instruct`, temperature 0.7, 9 messages." in document.splitlines()
    # a renderer that passes raw HTML through (a Markdown preview) still shows the <script> as text
    raw = MarkdownIt("commonmark").render(document)
    assert "<script" not in raw and "<img" not in raw and "&lt;script&gt;" in raw
    assert "<a " not in raw  # the reply's link definition stayed text: it defines nothing for the page


_ALPHABET = "`~#<>[]:=-*_! \t\naé✓"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=_ALPHABET, max_size=40), min_size=1, max_size=4))
def test_fuzzed_contents_each_come_back_as_one_intact_block(contents):
    history = [{"role": ("user", "assistant")[i % 2], "content": text} for i, text in enumerate(contents)]
    _assert_each_message_is_one_intact_block(transcript.markdown_text(history), history)


def _note(document: str) -> str:
    """The paragraph that says what the list is and what each call sent."""
    return next(p for p in document.split("\n\n") if p.startswith("The model remembers nothing"))


def test_what_the_document_says_is_true_of_every_kind_of_conversation(tmp_path):
    persona = transcript.markdown_text(_history(), model="m", temperature=0.7)
    assert _note(persona) == (
        "The model remembers nothing between calls. Below is the list of messages the program keeps, numbered "
        "from 0 as the panel's inspector numbers them, the persona first. Each reply the model wrote came from "
        "one call, which sent the whole list as it stood just before that reply: all of it, unless trimming was "
        "on (then the persona and only the latest turns that trimming kept).")
    # no persona: nothing speaks of one
    bare = transcript.markdown_text([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello."}])
    assert "with no persona (no system message first)" in _note(bare)
    assert "(then only the latest turns that trimming kept)" in _note(bare) and "the persona" not in bare
    assert "Model" not in bare and "2 messages." in bare  # no model, no temperature: not guessed
    # a greeting before the first user message was not a reply to anything: it is named as what it is
    greeted = transcript.markdown_text([{"role": "system", "content": "S"}, {"role": "assistant", "content": "Hi!"},
                                        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello."}])
    assert [line for line in greeted.splitlines() if line.startswith("## ")] == [
        "## 0 · system (the persona)", "## 1 · assistant (a greeting, before any user message)",
        "## 2 · user", "## 3 · assistant"]
    # a loaded conversation ending on a message with no reply
    waiting = transcript.markdown_text([{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}])
    assert [line for line in waiting.splitlines() if line.startswith("## ")][-1] == "## 1 · user (no reply yet)"
    # system messages further down, and none first
    later = transcript.markdown_text([{"role": "user", "content": "u"}, {"role": "system", "content": "S"}])
    assert "with no persona" in _note(later) and "(then the system messages and only the latest" in _note(later)
    empty = transcript.markdown_text([])
    assert "0 messages." in empty and "The list is empty: there are no messages yet." in empty


def test_the_model_name_is_one_code_span_whatever_it_holds():
    document = transcript.markdown_text([], model="we`ird ``name`` <b>", temperature=1)
    line = markdown_to_html(document.split("\n\n")[2])
    assert re.fullmatch(r"<p>Model <code[^>]*>(.*)</code>, temperature 1, 0 messages\.</p>\n", line)
    assert unescape(re.search(r"<code[^>]*>(.*)</code>", line).group(1)) == "we`ird ``name`` <b>"


def test_a_md_save_keeps_every_guarantee_of_the_json_one(tmp_path):
    history = _history()
    notes = tmp_path / "notes.md"
    save_transcript(notes, history, model="m", api_key="sk-secret-0123456789", base_url="http://u:pw@h/v1",
                    secret="do-not-write-me")
    text = notes.read_text(encoding="utf-8")
    assert notes.stat().st_mode & 0o777 == 0o600  # a new file is private
    assert "sk-secret" not in text and "pw@" not in text and "do-not-write-me" not in text  # only model, temperature
    notes.chmod(0o644)
    save_transcript(notes, history[:3])
    assert notes.stat().st_mode & 0o777 == 0o644 and "3 messages." in notes.read_text()  # the mode is kept
    link = tmp_path / "latest.md"
    link.symlink_to(notes)
    save_transcript(link, history)
    assert link.is_symlink() and "5 messages." in notes.read_text()  # written through the link
    before = notes.read_bytes()
    notes.chmod(0o444)
    with pytest.raises(TranscriptError, match=r"^not saved: .*notes\.md is read-only \(make it writable"):
        save_transcript(notes, history[:1])
    with pytest.raises(TranscriptError, match=r"^not saved: message 0: role must be one of"):
        save_transcript(tmp_path / "other.md", [{"role": "wizard", "content": "x"}])
    with pytest.raises(TranscriptError, match=r"^not saved: folder .* does not exist$"):
        save_transcript(tmp_path / "nope" / "notes.md", history)
    assert notes.read_bytes() == before and history == _history()  # refused saves change nothing
    assert sorted(os.listdir(tmp_path)) == ["latest.md", "notes.md"]  # and leave no temp file
    # half an emoji from a server: written as U+FFFD, the file is UTF-8
    save_transcript(tmp_path / "half.markdown", [{"role": "assistant", "content": "ok \ud83d"}])
    assert "ok \ufffd\n" in (tmp_path / "half.markdown").read_text(encoding="utf-8")


MARKDOWN_LINE = "it is a Markdown export, for reading: load the conversation's .json transcript instead"


@pytest.mark.parametrize("name", ["notes.md", "NOTES.Markdown", "renamed.txt", "renamed.json"])
def test_a_markdown_export_does_not_load_and_says_why_in_one_line(tmp_path, name):
    exported = save_transcript(tmp_path / "notes.md", _history(), model="m")
    path = tmp_path / name
    if path != exported:
        exported.rename(path)
    before = path.read_bytes()
    with pytest.raises(TranscriptError) as info:
        load_transcript(path)
    assert str(info.value) == f"cannot load {path}: {MARKDOWN_LINE}"
    assert path.read_bytes() == before


def test_a_md_file_holding_a_json_transcript_still_loads(tmp_path):
    # a transcript saved under a .md name before .md meant Markdown: it is JSON, and loads as ever
    path = tmp_path / "old.md"
    path.write_text(json.dumps({"format": "nora-transcript", "version": 1, "messages": _history()}))
    assert load_transcript(path)[0] == _history()
    other = tmp_path / "readme.md"
    other.write_text("# Some notes\n\nnot a transcript\n")
    with pytest.raises(TranscriptError, match=f"^cannot load {re.escape(str(other))}: {re.escape(MARKDOWN_LINE)}$"):
        load_transcript(other)


def test_the_sample_in_docs_panel_md_is_what_nora_writes():
    page = (Path(__file__).resolve().parent.parent / "docs" / "panel.md").read_text(encoding="utf-8")
    sample = re.search(r"^````markdown\n(.*?)^````$", page, re.DOTALL | re.MULTILINE).group(1)
    history = [{"role": "system", "content": SYSTEM_PROMPT},
               {"role": "user", "content": "My name is Ada. Do you have any Ursula K. Le Guin novels?"},
               {"role": "assistant", "content": "a"}, {"role": "user", "content": "b"},
               {"role": "assistant", "content": "c"}]
    assert transcript.markdown_text(history, model="SmolLM2-135M-Instruct", temperature=0.0).startswith(sample)
