"""The documentation's commands and links work: every `python -m MODULE` and `python SCRIPT.py` that
README.md or docs/*.md quote answers `--help`, the front page stays short, and every relative link
(and the heading it points at) exists."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

DOCUMENTS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
FRONT_PAGE_LINES = 150

# `python`, `python3`, `.venv/bin/python`, then `-m a.b` or `path/to/script.py` (across a line break too)
COMMAND = re.compile(r"(?<![\w/.-])(?:[\w./-]*/)?python3?\s+"
                     r"(?:-m\s+(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)|(?P<script>[\w./-]+\.py)\b)")
FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.M | re.S)
INLINE_CODE = re.compile(r"(`+)(?!`).*?(?<!`)\1", re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def quoted_commands() -> dict[tuple[str, ...], list[str]]:
    """Each distinct command (as argv after the interpreter) with the documents that quote it."""
    commands: dict[tuple[str, ...], list[str]] = {}
    for path in DOCUMENTS:
        for match in COMMAND.finditer(path.read_text()):
            argv = ("-m", match["module"]) if match["module"] else (match["script"],)
            commands.setdefault(argv, [])
            name = path.relative_to(REPO_ROOT).as_posix()
            if name not in commands[argv]:
                commands[argv].append(name)
    return commands


COMMANDS = quoted_commands()


def test_the_documentation_quotes_the_original_commands():
    """The parser above still finds the commands the front page is about."""
    expected = {("run_intermediate_source_GPT2.py",), ("run_target_task_GPT2_sst2_multiple.py",), ("maml_qa.py",),
                ("TaskDiversity.py",), ("-m", "task2vec"), ("-m", "utils.seed_statistics")}
    assert expected <= set(COMMANDS), sorted(expected - set(COMMANDS))


@pytest.mark.slow
@pytest.mark.parametrize("argv", sorted(COMMANDS), ids=" ".join)
def test_every_quoted_command_answers_help(argv):
    if not argv[0] == "-m":
        assert (REPO_ROOT / argv[0]).is_file(), f"{', '.join(COMMANDS[argv])} quote {argv[0]}, which does not exist"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, *argv, "--help"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120, env=env)
    where = ", ".join(COMMANDS[argv])
    assert done.returncode == 0, f"`python {' '.join(argv)} --help` (quoted in {where}) exited {done.returncode}:\n" \
                                 f"{done.stderr[-2000:]}"
    assert "usage" in done.stdout.lower(), f"`python {' '.join(argv)} --help` printed no usage:\n{done.stdout[:500]}"


def test_the_front_page_is_short():
    lines = len((REPO_ROOT / "README.md").read_text().splitlines())
    assert lines < FRONT_PAGE_LINES, f"README.md has {lines} lines; reference material belongs in docs/"


def _prose(text: str) -> str:
    """The text without code, where brackets and parentheses are not links."""
    return INLINE_CODE.sub("code", FENCE.sub("", text))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text())):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links() -> list[tuple[Path, str]]:
    links = []
    for path in DOCUMENTS:
        for target in LINK.findall(_prose(path.read_text())):
            if not re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
                links.append((path, target))
    return links


def test_the_documents_have_links():
    assert len(relative_links()) > 20  # the parser finds the front page's links to docs/


def test_every_relative_link_points_to_a_file_that_exists():
    broken = []
    for path, target in relative_links():
        file = target.split("#", 1)[0]
        if file and not (path.parent / file).exists():
            broken.append(f"{path.relative_to(REPO_ROOT)}: {target}")
    assert not broken, "links to missing files:\n" + "\n".join(broken)


def test_every_link_to_a_heading_finds_it():
    broken = []
    for path, target in relative_links():
        file, _, anchor = target.partition("#")
        destination = (path.parent / file) if file else path
        if anchor and destination.suffix == ".md" and destination.is_file() and anchor not in anchors(destination):
            broken.append(f"{path.relative_to(REPO_ROOT)}: {target}")
    assert not broken, "links to headings that do not exist:\n" + "\n".join(broken)
