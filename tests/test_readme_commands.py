"""The documentation's commands and links work: every `python -m MODULE` and `python SCRIPT.py` that
README.md, docs/*.md or benchmarks/README.md quote answers `--help`, every `bash` script they quote exists, the Quick start
is the two commands of the project's contract (set-up + demo, then the tests that CI runs), the prose
stays short, and every relative link (and the heading it points at) exists."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

DOCUMENTS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md")), REPO_ROOT / "benchmarks" / "README.md"]
FRONT_PAGE_LINES = 150
PROSE_WORDS = 10_000   # README.md, docs/*.md and benchmarks/README.md together
QUICK_START = ["bash scripts/quickstart.sh", "bash scripts/run_tests.sh"]

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
    assert lines <= FRONT_PAGE_LINES, f"README.md has {lines} lines; reference material belongs in docs/"


def test_the_prose_is_short():
    words = sum(len(path.read_text().split()) for path in DOCUMENTS)
    assert words <= PROSE_WORDS, f"README.md, docs/*.md and benchmarks/README.md have {words} words"


def test_the_quick_start_is_set_up_and_demo_then_the_tests_ci_runs():
    section = (REPO_ROOT / "README.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = FENCE.findall(section)
    assert len(blocks) == 1, "the Quick start shows one code block"
    block = FENCE.search(section).group(0).splitlines()[1:-1]
    commands = [line.split("#", 1)[0].strip() for line in block if line.split("#", 1)[0].strip()]
    assert commands == QUICK_START, commands
    first = (REPO_ROOT / "scripts" / "quickstart.sh").read_text()
    assert "bash scripts/setup.sh" in first and "bash scripts/demo.sh" in first
    assert QUICK_START[1] in (REPO_ROOT / ".ci" / "run").read_text(), ".ci/run must run the README's test command"


def test_every_quoted_shell_script_exists():
    quoted = {script for path in DOCUMENTS for script in re.findall(r"\bbash\s+([\w./-]+\.sh)\b", path.read_text())}
    assert {"scripts/quickstart.sh", "scripts/run_tests.sh"} <= quoted
    missing = sorted(script for script in quoted if not (REPO_ROOT / script).is_file())
    assert not missing, f"the documentation quotes scripts that do not exist: {missing}"


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
