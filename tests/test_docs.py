"""The documentation against the code: links that lead somewhere, and options that exist.

README.md, docs/*.md and the lessons' sources are read with markdown-it-py (what the panel renders with), so a link or a
`--flag` inside a code span is told apart from prose.  The checks:

- every relative link and image reaches a file, and every #anchor a heading of that file (GitHub's
  anchors: the heading's text, lower case, punctuation dropped, spaces as hyphens);
- every `--flag` written after `nora chat|ask|models|serve` in code, and every flag in the first column
  of docs/cli.md's option tables, is an option of that command's parser; the same for `%chat` /
  `%%chat` and the magics' parsers;
- every option of those parsers is in its page (docs/cli.md, docs/magics.md), and every slash command
  of `nora chat` is in docs/cli.md's table, so none goes undocumented;
- every shown session (a code block of `$ nora ...` lines, each followed by what it prints) whose output is
  repeatable, that is run with `--backend scripted` or `--temperature 0` (on the embedded model), prints
  what the page shows: its `you: ` lines are the input;
- every function of docs/local-model.md's Public API block is written with its real parameters and defaults.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from nora_widgets import cli, magics
from nora_widgets._chat_session import COMMANDS

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
# the lessons' sources: their links are read from notebooks/, where the notebooks made of them live
LESSONS = sorted((ROOT / "notebooks" / "_build" / "lessons").glob("*.md"))
MD = MarkdownIt("commonmark").enable("table")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]*")
SUBCOMMANDS = ("chat", "ask", "models", "serve")
# `nora chat --model x | ...`: the flags up to where the shell (or the sentence) goes on to something else
NORA_LINE = re.compile(r"(?<![\w/.-])nora(?: (chat|ask|models|serve))?((?: [^|;&#`)\n]*)?)")
MAGIC_LINE = re.compile(r"(?<![\w%])(%%?)chat\b([^#`\n]*)")
NOT_NORA = {"--api-key"}  # named in the docs as the option there deliberately is not


def _tokens(page: Path) -> list:
    return MD.parse(page.read_text(encoding="utf-8"))


def _walk(tokens):
    for token in tokens:
        yield token
        if token.children:
            yield from _walk(token.children)


def _slug(text: str) -> str:
    """GitHub's anchor for a heading.  Example: '`nora serve`: the same model over HTTP' -> 'nora-serve-the-same-model-over-http'"""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    tokens, seen, found = _tokens(page), {}, set()
    for i, token in enumerate(tokens):
        if token.type == "heading_open":
            slug = _slug("".join(c.content for c in tokens[i + 1].children if c.type in ("text", "code_inline")))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(page: Path) -> list[str]:
    found = []
    for token in _walk(_tokens(page)):
        if token.type == "link_open":
            found.append(token.attrs["href"])
        elif token.type == "image":
            found.append(token.attrs["src"])
    return found


def code_texts(page: Path) -> list[str]:
    """The text of every code span and code block of page."""
    return [t.content for t in _walk(_tokens(page)) if t.type in ("code_inline", "fence", "code_block")]


def _options(parser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings if s.startswith("--")}


@pytest.fixture(scope="module")
def nora_options() -> dict[str | None, set[str]]:
    parser = cli.build_parser(with_serve=True)
    return {None: _options(parser), **{name: _options(p) for name, p in parser.subcommands.items()}}


@pytest.fixture(scope="module")
def magic_options() -> dict[str, set[str]]:
    return {"%": _options(magics._line_parser()), "%%": _options(magics._cell_parser())}


@pytest.mark.parametrize("page", PAGES + LESSONS, ids=lambda p: p.name)
def test_every_link_reaches_a_file_and_every_anchor_a_heading(page):
    broken = []
    folder = ROOT / "notebooks" if page in LESSONS else page.parent
    for href in links(page):
        if re.match(r"[a-z][a-z+.-]*:", href):  # https:, mailto: ... (not checked: no network)
            continue
        path, _, fragment = href.partition("#")
        target = (folder / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{href}: no file {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")
        elif fragment and target.suffix == ".md" and fragment not in anchors(target):
            broken.append(f"{href}: no heading #{fragment} in {target.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_the_anchor_check_knows_a_broken_anchor_and_a_missing_file(tmp_path):
    """The check above, shown to fail: a page with a wrong #anchor and a link to a file that is not there."""
    page = tmp_path / "p.md"
    page.write_text("# The `nora serve` page: a test\n\n## Keys, again\n\n## Keys, again\n\n"
                    "[ok](#the-nora-serve-page-a-test) [ok](#keys-again-1) [bad](#keys) [gone](missing.md)\n")
    assert anchors(page) == {"the-nora-serve-page-a-test", "keys-again", "keys-again-1"}
    with pytest.raises(AssertionError, match=r"#keys: no heading #keys in p\.md; missing\.md: no file"):
        test_every_link_reaches_a_file_and_every_anchor_a_heading(page)


@pytest.mark.parametrize("page", PAGES + LESSONS, ids=lambda p: p.name)
def test_every_nora_flag_in_the_docs_exists(page, nora_options, magic_options):
    unknown = []
    for text in code_texts(page):
        for command, rest in NORA_LINE.findall(text):
            for flag in FLAG.findall(rest.split("  ")[0]):  # two spaces: a description column follows
                if flag not in nora_options[command or None] and flag not in NOT_NORA:
                    unknown.append(f"nora {command} {flag}".replace("  ", " "))
        for percent, rest in MAGIC_LINE.findall(text):
            unknown += [f"{percent}chat {flag}" for flag in FLAG.findall(rest) if flag not in magic_options[percent]]
    assert not unknown, f"{page.name} names options the parsers do not have: {sorted(set(unknown))}"


def table_flags(page: Path) -> list[tuple[str, str, list[str]]]:
    """(what the table is for, the flag, the commands it is for) for each flag in the first column of a
    table headed 'option'.  A table is for the commands named in the paragraph just before it when that
    starts with 'Only' ('Only `nora chat`:'), else in the heading above it ('Options (`nora chat` and `nora ask`)')."""
    tokens, heading, paragraph, found = _tokens(page), "", "", []
    for i, token in enumerate(tokens):
        if token.type == "inline" and tokens[i - 1].type == "heading_open":
            heading, paragraph = token.content, ""
        elif token.type == "inline" and tokens[i - 1].type == "paragraph_open":
            paragraph = token.content
        elif token.type == "table_open":
            end = next(j for j in range(i, len(tokens)) if tokens[j].type == "table_close")
            first_cells = [tokens[j + 2] for j in range(i, end) if tokens[j].type == "tr_open"]
            if not first_cells or first_cells[0].content != "option":
                continue
            where = paragraph if paragraph.startswith("Only") else heading
            commands = re.findall(r"nora (chat|ask|models|serve)\b", where)
            commands = list(dict.fromkeys(commands + [p + "chat" for p in re.findall(r"(%%?)chat\b", where)]))
            for cell in first_cells[1:]:
                for child in cell.children:
                    if child.type == "code_inline" and child.content.startswith("--"):
                        found += [(where, flag, commands) for flag in FLAG.findall(child.content)]
    return found


@pytest.mark.parametrize("page", [ROOT / "docs" / "cli.md", ROOT / "docs" / "magics.md"], ids=lambda p: p.name)
def test_every_flag_in_an_option_table_is_an_option_of_its_commands(page, nora_options, magic_options):
    rows = table_flags(page)
    assert len(rows) > 10 and all(commands for _where, _flag, commands in rows), rows
    options = {**nora_options, "%chat": magic_options["%"], "%%chat": magic_options["%%"]}
    wrong = [f"{flag} ({where}): not an option of {command}" for where, flag, commands in rows
             for command in commands if flag not in options[command]]
    assert not wrong, wrong


def test_every_option_and_slash_command_is_documented(nora_options, magic_options):
    cli_page = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    magics_page = (ROOT / "docs" / "magics.md").read_text(encoding="utf-8")
    missing = [f"nora {command} {flag}" for command, flags in nora_options.items() for flag in sorted(flags)
               if flag != "--help" and not re.search(rf"`[^`\n]*{re.escape(flag)}\b", cli_page)]
    missing += [f"{p}chat {flag}" for p, flags in magic_options.items() for flag in sorted(flags)
                if flag != "--help" and not re.search(rf"`[^`\n]*{re.escape(flag)}\b", magics_page)]
    missing += [f"nora chat {name}" for name in COMMANDS if not re.search(rf"`{re.escape(name)}\b", cli_page)]
    assert not missing, f"options and commands with no word in their docs page: {missing}"


def sessions() -> list:
    """pytest params (page, the commands, the lines they print) for each repeatable session in the docs."""
    found = []
    for page in PAGES:
        for token in _tokens(page):
            lines = token.content.splitlines() if token.type == "fence" else []
            if not lines or not lines[0].startswith("$ ") or not any(
                    "--backend scripted" in line or "--temperature 0 " in line for line in lines if line.startswith("$ ")):
                continue
            model = not any("--backend scripted" in line for line in lines if line.startswith("$ "))
            found.append(pytest.param(page, lines, id=f"{page.name}:{token.map[0] + 1}",
                                      marks=[pytest.mark.model] * model + [pytest.mark.skipif(
                                          model and importlib.util.find_spec("llama_cpp") is None,
                                          reason="needs the embedded model ([local])")]))
    return found


@pytest.mark.parametrize("page,lines", sessions())
def test_the_sessions_shown_in_the_docs_print_what_they_show(page, lines, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nora").write_text(f'#!/bin/sh\nexec {sys.executable} -m nora_widgets.cli "$@"\n')
    (bin_dir / "nora").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "NORA_"))}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(ROOT), NORA_N_THREADS="1")
    printed, shown = [], []
    starts = [i for i, line in enumerate(lines) if line.startswith("$ ")] + [len(lines)]
    for start, end in zip(starts, starts[1:]):
        expected = lines[start + 1:end]
        typed = "".join(line[len("you: "):] + "\n" for line in expected if line.startswith("you: "))
        result = subprocess.run(["bash", "-c", lines[start][2:] + " 2>&1"], input=typed, env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=120)
        printed += result.stdout.splitlines()
        shown += expected
    model = not any("--backend scripted" in line for line in lines if line.startswith("$ "))
    if model:  # the model's words, and so the tokens of the replies resent, differ between processors
        printed, shown = _words_aside(printed), _words_aside(shown)
    assert printed == shown, f"{page.name}: the session prints otherwise now"


def _words_aside(lines: list[str]) -> list[str]:
    """A session on the embedded model with its replies' words and the token counts set aside: greedy decoding
    repeats on one machine, but llama.cpp's AVX2 and AVX-512 kernels can pick a different token where two are
    nearly tied.  What Nora prints (the prompts, which messages each call sent, what a trim left out) stays.
    A reply runs from "nora: " to the next line of Nora's own ("you: ", "(...", "$ ").
    Example: ["nora: Hi!", "More.", "(this call sent 2 messages: the persona and your message; 44 tokens, 2% of the
        2,048-token window)"] -> ["nora: <reply>", "(this call sent 2 messages: the persona and your message; N tokens,
        P% of the 2,048-token window)"]"""
    kept, in_reply = [], False
    for line in lines:
        if line.startswith("nora: ") and line[len("nora: "):].strip():
            kept.append("nora: <reply>")
            in_reply = True
        elif in_reply and not line.startswith(("you: ", "(", "$ ")):
            continue
        else:
            in_reply = False
            kept.append(re.sub(r"(\b[\d,]+ tokens\b)(, (under 1|\d+)% of)?", lambda m: "N tokens" + (", P% of" if m.group(2) else ""),
                               line) if line.startswith("(this call sent") else line)
    return kept


def test_every_module_is_in_the_readmes_layout():
    """_browser.py (nora serve's CORS) was missing from the table that says where each part lives."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout"):readme.index("## Documentation")]
    missing = [m.name for m in sorted((ROOT / "nora_widgets").glob("*.py"))
               if m.name != "__init__.py" and f"`{m.name}`" not in layout and f"nora_widgets/{m.name}`" not in layout]
    assert not missing, f"README.md's Layout names no {missing}"


def test_every_setting_nora_reads_is_in_the_readmes_table():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    read = {name for module in (ROOT / "nora_widgets").glob("*.py")
            for name in re.findall(r"\b(NORA_[A-Z_]+|OPENAI_API_KEY|OPENAI_BASE_URL)\b", module.read_text(encoding="utf-8"))}
    assert {"NORA_MODEL", "OPENAI_API_KEY", "NORA_SERVE_API_KEY"} <= read
    missing = [name for name in sorted(read) if f"| `{name}` |" not in readme]
    assert not missing, f"settings nora_widgets reads with no row in the README's table: {missing}"


IMPORT_LINE = re.compile(r"^\s*from (nora_widgets(?:\.\w+)*) import (\([^)]*\)|[\w, ]+)", re.MULTILINE)
DOTTED = re.compile(r"(?<![\w.])(nora_widgets(?:\.\w+)+)")


def _documented_imports(text: str) -> list[tuple[str, str]]:
    """(module, name) for every `from nora_widgets... import a, b` in a page.
    Example: 'from nora_widgets.magics import use_client, conversation' -> [('nora_widgets.magics', 'use_client'), ...]"""
    return [(found.group(1), name) for found in IMPORT_LINE.finditer(text)
            for name in re.findall(r"\w+", found.group(2).split("#")[0])]


def _is_module(dotted: str) -> bool:
    try:
        importlib.import_module(dotted)
    except ModuleNotFoundError:
        return False
    return True


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_name_the_docs_import_imports_from_where_they_say(page):
    """A developer copies `from nora_widgets.x import y` out of the docs: y must be there, and public (in x's __all__);
    `nora_widgets.x.y` written in the prose must exist too."""
    text = page.read_text(encoding="utf-8")
    wrong = []
    for module_name, name in _documented_imports(text):
        module = importlib.import_module(module_name)
        if name not in getattr(module, "__all__", ()) or not hasattr(module, name):
            wrong.append(f"from {module_name} import {name}")
    for dotted in set(DOTTED.findall(text)):
        parts = dotted.split(".")
        at = next(i for i in range(len(parts), 0, -1) if _is_module(".".join(parts[:i])))
        value = importlib.import_module(".".join(parts[:at]))
        for attribute in parts[at:]:
            if not hasattr(value, attribute):
                wrong.append(dotted)
                break
            value = getattr(value, attribute)
    assert not wrong, f"{page.name} names what does not import: {wrong}"


def test_the_import_check_knows_a_name_that_is_not_there():
    assert _documented_imports("from nora_widgets.guard import (EMAIL,\n    GuardedClient)  # x\nfrom nora_widgets import nope") \
        == [("nora_widgets.guard", "EMAIL"), ("nora_widgets.guard", "GuardedClient"), ("nora_widgets", "nope")]
    assert not hasattr(importlib.import_module("nora_widgets"), "nope")


def api_signatures(text: str) -> list[tuple[str, str, list[tuple[str, str | None]]]]:
    """(module, function, [(parameter, default as written or None)]) for each call written at the start of a line of
    the code block under "## Public API" (a '# nora_widgets.x' line names the module of the lines after it; a
    call may go on over several lines; indented lines are methods, not read).
    Example: '# nora_widgets.tokens\\ncontext_window(client, model=None) -> int | None'
        -> [('nora_widgets.tokens', 'context_window', [('client', None), ('model', 'None')])]"""
    heading = text.index("## Public API")
    block = next(t.content for t in MD.parse(text[heading:]) if t.type == "fence")
    found, module, pending = [], None, ""
    for line in block.splitlines():
        if line.startswith("# nora_widgets."):
            module = line[2:].split()[0]
            continue
        line = line.split("  #")[0].rstrip()
        if not pending and (not line or line[0].isspace()):
            continue
        pending += " " + line.strip() if pending else line
        if pending.count("(") > pending.count(")"):
            continue
        for entry in re.split(r"\s{2,}", pending):
            call = re.match(r"(\w+)\(([^()]*)\)", entry)
            if call:
                params = [p.strip().partition("=") for p in call.group(2).split(",") if p.strip() not in ("", "*")]
                found.append((module, call.group(1), [(name, default if eq else None) for name, eq, default in params]))
        pending = ""
    return found


def signature_mismatches(text: str) -> list[str]:
    """Each call of the Public API block whose parameters (names, order, defaults) are not the function's."""
    required, wrong = inspect.Parameter.empty, []
    for module, name, written in api_signatures(text):
        real = inspect.signature(getattr(importlib.import_module(module), name)).parameters.values()
        real = [(p.name, p.default) for p in real]
        if [(p, required if d is None else ast.literal_eval(d)) for p, d in written] != real:
            wrong.append(f"{module}.{name}({', '.join(p + ('' if d is None else '=' + d) for p, d in written)}): "
                         f"the function takes ({', '.join(p if d is required else f'{p}={d!r}' for p, d in real)})")
    return wrong


def test_the_public_api_block_gives_each_function_its_real_parameters():
    """docs/local-model.md said context_window(client) (the function also takes model=None, as the same page's
    prose says) and find_model_path(model_path=None) (it also takes given_as, which nora serve passes)."""
    text = (ROOT / "docs" / "local-model.md").read_text(encoding="utf-8")
    assert len(api_signatures(text)) >= 12
    assert not signature_mismatches(text)


def test_the_signature_check_knows_a_missing_parameter_and_a_wrong_default():
    page = ("## Public API\n\n```python\n# nora_widgets.tokens\ncontext_window(client) -> int | None\n"
            "# nora_widgets.local\nLocalClient(model_path=None, n_ctx=4096, n_threads=None, seed=None,\n"
            "            timeout=300.0, reuse_prefix=None, responses=\"openai\")   # a comment\n"
            "    .describe() -> str\nmodel_name_for(path) -> str    prompt_text(messages, client=None) -> str\n```\n")
    assert [f for _m, f, _p in api_signatures(page)] == ["context_window", "LocalClient", "model_name_for", "prompt_text"]
    assert [w.split("(")[0] for w in signature_mismatches(page)] == ["nora_widgets.tokens.context_window",
                                                                    "nora_widgets.local.LocalClient"]


# `%chat WORD` at the start of a code line: a command run as the docs show it (an error message quoted mid-sentence,
# `... check %chat --base-url and your network`, is not read; nor `%chat trim: takes N ...`, a message too)
CHAT_COMMAND_LINE = re.compile(r"^\s*%chat\b([^#`\n]*)", re.MULTILINE)
NOT_A_COMMAND = {"..."}  # README.md's `%chat ...`: any command


def unknown_chat_commands(text: str) -> list[str]:
    """The `%chat` lines of a code text whose command (the first word that is not an option or its value) is none.
    Example: '%chat --keep-turns 1 history' -> []; '%chat histroy' -> ['%chat histroy']"""
    takes_value = {s for action in magics._line_parser()._actions for s in action.option_strings if action.nargs != 0}
    unknown = []
    for rest in CHAT_COMMAND_LINE.findall(text):
        try:
            words = iter(shlex.split(rest))
        except ValueError:  # an unclosed quote: the words as they stand
            words = iter(rest.split())
        for word in words:
            if word.startswith("--"):
                if word in takes_value:
                    next(words, None)
                continue
            if not word.endswith(":") and word.lower() not in magics.COMMANDS and word not in NOT_A_COMMAND:
                unknown.append(f"%chat{rest}".strip())
            break
    return unknown


@pytest.mark.parametrize("page", PAGES + LESSONS, ids=lambda p: p.name)
def test_every_chat_command_the_docs_run_exists(page):
    unknown = [line for text in code_texts(page) for line in unknown_chat_commands(text)]
    assert not unknown, f"{page.name} runs %chat commands the magics do not have: {unknown}"


def test_the_chat_command_check_knows_a_command_that_is_not_there():
    assert unknown_chat_commands("%chat --keep-turns 1 history\n%chat HISTORY\n%chat save 'my chat.json'") == []
    assert unknown_chat_commands("%chat --system 'a pirate' histroy\n%chat trim: takes N\n%chat clear") \
        == ["%chat --system 'a pirate' histroy", "%chat clear"]
    assert unknown_chat_commands("check %chat --base-url and your network") == []  # a message, mid-sentence


def panel_labels() -> set[str]:
    """The words on the panel's controls: every description of a widget in a ChatPanel (buttons, view toggles,
    the checkbox, the text boxes, the slider)."""
    from nora_widgets import ChatPanel, ScriptedClient

    labels, todo = set(), [ChatPanel(ScriptedClient())]
    while todo:
        widget = todo.pop()
        todo += list(getattr(widget, "children", ()))
        if getattr(widget, "description", ""):
            labels.add(widget.description)
    return labels


def controls_named(text: str) -> list[str]:
    """The controls docs/panel.md tells the reader to find or press: the bold names in the first column of its tables,
    at the head of each item of "The views" list, after press / turn on / tick / untick / click / look at, and the
    quoted names in "Icon buttons are named by their words".
    Example: 'Press **Amnesia** (it turns red)' -> ['Amnesia']"""
    named = [bold for line in text.splitlines() if line.startswith("| **")
             for bold in re.findall(r"\*\*([^*]+)\*\*", line.split("|")[1])]
    views = re.search(r"^## The views.*?(?=^## )", text, re.MULTILINE | re.DOTALL)
    named += re.findall(r"^\d+\. \*\*([^*]+?)\.?\*\*", views.group(0) if views else "", re.MULTILINE)
    named += re.findall(r"(?i)\b(?:press|turn on|tick|untick|click|look at)\s+\*\*([^*\n]+)\*\*", text)
    icons = re.search(r"named by their words:\*\*(.*?)ipywidgets draws", text, re.DOTALL)
    named += re.findall(r'"([^"]+)"', icons.group(1)) if icons else []
    return named


def test_every_control_the_panel_page_names_is_on_the_panel():
    """A control renamed in panel.py (or a label mistyped in the page) leaves the reader pressing a button that is not
    there. "keep last N turns" is the checkbox "keep last", then the number box and "turns"."""
    labels = panel_labels()
    named = controls_named((ROOT / "docs" / "panel.md").read_text(encoding="utf-8"))
    assert len(named) >= 30
    missing = sorted({n for n in named if not any(n == label or n.startswith(label + " ") for label in labels)})
    assert not missing, f"docs/panel.md names controls the panel does not have: {missing} (it has {sorted(labels)})"


def test_the_control_check_knows_a_label_that_is_not_there():
    page = ("| **Reset** | x |\n## The views\n\n1. **Inspector.** x\n2. **Memory.** y\n\n## Next\n\n"
            "Press **Forget** and turn on **Wire**. **Icon buttons are named by their words:** \"Send\", \"Erase\". "
            "ipywidgets draws")
    assert controls_named(page) == ["Reset", "Inspector", "Memory", "Forget", "Wire", "Send", "Erase"]
    labels = panel_labels()
    assert [n for n in controls_named(page) if n not in labels] == ["Reset", "Memory", "Forget", "Erase"]


TEST_NAME = re.compile(r"(?<![\w/.:])(test_\w+)")  # a bare name; after "::" it is read with its file
TEST_PATH = re.compile(r"\b(tests/[\w/]+\.py)(?:::(test_\w+))?")


def missing_tests(text: str) -> list[str]:
    """The tests a page names (`tests/x.py`, `tests/x.py::test_y`, a bare `test_y`) that are not there.
    Example: 'test_docs.py::test_nope' -> ['test_nope']"""
    defined = {name for path in ROOT.glob("tests/**/*.py")
               for name in re.findall(r"^\s*(?:async )?def (test_\w+)", path.read_text(encoding="utf-8"), re.MULTILINE)}
    missing = [name for name in TEST_NAME.findall(text) if name not in defined]
    for path, name in TEST_PATH.findall(text):
        if not (ROOT / path).is_file():
            missing.append(path)
        elif name and not re.search(rf"def {name}\b", (ROOT / path).read_text(encoding="utf-8")):
            missing.append(f"{path}::{name}")
    return sorted(set(missing))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_test_the_docs_name_exists(page):
    """The docs prove their claims by naming tests: a test renamed or moved must take its name in the docs along."""
    missing = missing_tests(page.read_text(encoding="utf-8"))
    assert not missing, f"{page.name} names tests that are not there: {missing}"


def test_the_test_name_check_knows_a_test_that_is_not_there():
    assert missing_tests("`tests/test_docs.py::test_every_test_the_docs_name_exists`, `test_docs_nope`") \
        == ["test_docs_nope"]
    assert missing_tests("tests/test_nope.py and tests/test_docs.py::test_the_import_check_knows_a_name_that_is_not") \
        == ["tests/test_docs.py::test_the_import_check_knows_a_name_that_is_not", "tests/test_nope.py"]
