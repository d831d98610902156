"""nora chat's input history file (_input_history.py): two sessions leaving at once keep both their lines."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from nora_widgets._input_history import HISTORY_LINES, keep_lines

pytest.importorskip("fcntl")  # where there is none (Windows) the file is added to unlocked, as before
readline = pytest.importorskip("readline")

ROUNDS = 25  # the old save (append, then trim through one shared HISTORY.new, unlocked) failed 3 to 10 of 25
# rounds in each of 5 runs: a session's 5 lines gone without a word, or a HistoryError from HISTORY.new
SESSIONS = 3
TYPED = 5  # lines each session typed


def _session(path: str, name: str, ready) -> None:
    """One nora chat leaving: the lines it typed are in readline's history, saved when all are ready."""
    from pathlib import Path

    from nora_widgets._input_history import save_history

    readline.clear_history()
    for i in range(TYPED):
        readline.add_history(f"{name} line {i}")
    ready.wait()
    save_history(Path(path), 0)


def test_sessions_leaving_at_the_same_moment_all_keep_their_lines(tmp_path):
    fork = multiprocessing.get_context("fork")
    lost = []
    for round_ in range(ROUNDS):
        path = tmp_path / f"history-{round_}"
        path.write_text("".join(f"old {i}\n" for i in range(HISTORY_LINES)))  # full: every save trims
        ready = fork.Barrier(SESSIONS)
        names = [f"s{n}" for n in range(SESSIONS)]
        sessions = [fork.Process(target=_session, args=(str(path), name, ready)) for name in names]
        for session in sessions:
            session.start()
        for session in sessions:
            session.join(30)
        lines = path.read_text().splitlines()
        typed = {f"{name} line {i}" for name in names for i in range(TYPED)}
        failed = [session.exitcode for session in sessions if session.exitcode]  # a HistoryError: lines lost too
        if failed or not typed <= set(lines):
            lost.append((round_, len(typed - set(lines)), failed))
            continue
        assert len(lines) == HISTORY_LINES and lines[0] == f"old {SESSIONS * TYPED}"
        for name in names:  # each session's lines together and in the order typed
            start = lines.index(f"{name} line 0")
            assert lines[start:start + TYPED] == [f"{name} line {i}" for i in range(TYPED)]
        assert path.stat().st_mode & 0o777 == 0o600
    assert lost == [], f"{len(lost)} of {ROUNDS} rounds lost lines (round, lines lost, exit codes): {lost[:3]}"
    assert sorted(os.listdir(tmp_path)) == sorted(f"history-{r}{end}" for r in range(ROUNDS) for end in ("", ".lock"))


def test_new_lines_go_after_what_the_file_holds_now_not_what_it_held_at_the_start(tmp_path):
    # another session saved while this one ran: its lines stay, this one's go after them
    path = tmp_path / "state" / "history"
    keep_lines(path, ["first"])
    assert (path.parent.stat().st_mode & 0o777, path.stat().st_mode & 0o777) == (0o700, 0o600)
    keep_lines(path, ["other session"])
    keep_lines(path, ["this session", "again"])
    keep_lines(path, [])
    assert path.read_text() == "first\nother session\nthis session\nagain\n"


def test_a_history_file_that_is_a_link_stays_a_link(tmp_path):
    real = tmp_path / "dotfiles" / "nora-history"
    real.parent.mkdir()
    real.write_text("kept\n")
    link = tmp_path / "history"
    link.symlink_to(real)
    keep_lines(link, ["new"])
    assert link.is_symlink() and real.read_text() == "kept\nnew\n"
    assert sorted(os.listdir(real.parent)) == ["nora-history"]  # no temporary file left behind
