"""The README is the user's manual: keep it true."""

import re
from pathlib import Path

from affinevae.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _quick_start_commands():
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, flags=re.S)


def test_quick_start_has_two_commands_and_ci_runs_the_test_one():
    cmds = _quick_start_commands()
    assert len(cmds) == 2
    assert "affinevae demo" in cmds[0]
    assert "pytest" in cmds[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert cmds[1].strip() in ci.splitlines()


def test_every_cli_command_is_documented_with_an_example():
    build_parser()
    for name in COMMANDS:
        assert re.search(rf"^affinevae {name}\b", README, flags=re.M) or re.search(rf"\naffinevae {name} ", README), \
            f"README has no example of `affinevae {name}`"


def test_readme_figures_exist():
    for path in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README):
        assert (ROOT / path).is_file(), path
