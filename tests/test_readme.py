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


def test_python_api_example_compiles_and_names_exist():
    """The README's Python example (run by hand in about a minute) uses only names that exist."""
    import affinevae as av

    code = README.split("## Python API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    compile(code, "README Python API", "exec")
    for dotted in sorted(set(re.findall(r"\bav\.([A-Za-z_][\w.]*)", code))):
        obj = av
        for part in dotted.split("."):
            assert hasattr(obj, part), f"README uses av.{dotted}, which does not exist"
            obj = getattr(obj, part)
    for module, name in re.findall(r"from (affinevae[\w.]*) import (\w+)", code):
        import importlib

        assert hasattr(importlib.import_module(module), name), f"{module}.{name}"


def test_every_option_in_the_cli_examples_exists():
    """Each ``--option`` of an ``affinevae COMMAND ...`` example line is one that COMMAND accepts."""
    from affinevae.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", README, flags=re.S)
    text = "\n".join(blocks).replace("\\\n", " ")  # shell blocks only, continued lines joined
    seen = 0
    for cmd, rest in re.findall(r"^affinevae (\w+)([^\n]*)", text, flags=re.M):
        options = {o for a in sub.choices[cmd]._actions for o in a.option_strings}
        for opt in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", rest.split("#", 1)[0]):
            assert opt in options, f"README: `affinevae {cmd}` has no option {opt}"
            seen += 1
    assert seen > 20
