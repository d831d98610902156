"""Transcripts: atomic save, validated load that changes nothing on failure (fuzzed with hypothesis)."""

import json
import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nora_widgets import SYSTEM_PROMPT, ScriptedClient, load_transcript, run_turn, save_transcript
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
