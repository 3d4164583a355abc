"""The package's shape, read from its source with ``ast``: no import cycles, io.py a leaf, and no
module reaching into another module's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "affinevae"

# Calls of another module's private functions or methods that are known and outside this change:
# (calling module, private name). The lead empties this list; an entry that no longer occurs fails
# the test, so the list can only shrink. (A private name the calling module defines too counts as
# its own: AVAE calling ``self.vae._render`` is not seen, since AVAE has a ``_render`` of its own.)
ALLOWED_PRIVATE: set = set()  # nothing: no module uses another module's private names


def parse_package(root: Path) -> dict[str, tuple[Path, bool, ast.Module]]:
    """Dotted name -> (file, is a package __init__, parsed tree) for every module of the package at ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg, ast.parse(path.read_text(), str(path)))
    return out


MODULES = parse_package(SRC)


def _imported(modules: dict, name: str, is_pkg: bool, node: ast.Import | ast.ImportFrom) -> list[tuple[str, str]]:
    """(module imported, name bound) pairs of one import statement, relative imports resolved."""
    if isinstance(node, ast.Import):
        return [(a.name, a.asname or a.name.split(".")[0]) for a in node.names]
    if node.level:
        base = name.split(".") if is_pkg else name.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    # ``from pkg import sub`` imports the submodule; ``from mod import thing`` imports mod
    return [(f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target, a.asname or a.name)
            for a in node.names]


def import_graph(modules: dict = MODULES) -> dict[str, set[str]]:
    """Module -> the package modules it imports, at module level or inside functions. Importing
    ``pkg.sub.mod`` runs ``pkg/sub/__init__`` first, so the sub-packages above an imported module
    count as imported too, except those the importing module lies in (already running)."""
    graph = {}
    for name, (_, is_pkg, tree) in modules.items():
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for m, _ in _imported(modules, name, is_pkg, node):
                    parts = m.split(".")
                    deps |= {p for p in (".".join(parts[:i]) for i in range(1, len(parts) + 1))
                             if p in modules and p != name and not (name + ".").startswith(p + ".")}
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as [a, b, ..., a], or [] when the graph is acyclic (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(graph):
        if root in state:
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return []


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_uses(modules: dict = MODULES) -> set[tuple[str, str, int]]:
    """(module, private name, line) of each reach into another module's private names:
    ``from x import _y``, ``mod._y`` on an imported package module, and ``obj._f(...)`` calls of a
    private function or method that only other modules define (``self``/``cls`` calls excluded)."""
    defined: dict[str, set[str]] = {
        name: {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
               and _is_private(n.name)} for name, (_, _, tree) in modules.items()}
    found = set()
    for name, (_, is_pkg, tree) in modules.items():
        module_aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for (target, bound), alias in zip(_imported(modules, name, is_pkg, node), node.names):
                    if target in modules and isinstance(node, ast.ImportFrom) and target != name \
                            and not target.endswith("." + alias.name) and _is_private(alias.name):
                        found.add((name, alias.name, node.lineno))
                    if target in modules and (isinstance(node, ast.Import) or target.endswith("." + alias.name)):
                        module_aliases[bound] = target
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and _is_private(node.attr)):
                continue
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in module_aliases and module_aliases[owner.id] != name:
                found.add((name, node.attr, node.lineno))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and _is_private(node.func.attr)):
                continue
            owner = node.func.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super":
                continue
            attr = node.func.attr
            if attr not in defined[name] and any(attr in d for m, d in defined.items() if m != name):
                found.add((name, attr, node.lineno))
    return found


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 40 and "affinevae.runs" in graph["affinevae.report"]  # the scan sees the package
    cycle = find_cycle(graph)
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_find_cycle_reports_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_io_is_a_leaf():
    assert import_graph()["affinevae.io"] <= {"affinevae.errors"}


@pytest.mark.parametrize("module", ["affinevae.io", "affinevae.errors", "affinevae.config", "affinevae.registry"])
def test_leaf_modules_import_nothing_heavy(module):
    """Leaves import no model, data or analysis module, even inside functions."""
    heavy = {m for m in import_graph()[module]
             if m.startswith(("affinevae.models", "affinevae.data", "affinevae.analysis", "affinevae.runs"))}
    assert not heavy, f"{module} imports {sorted(heavy)}"


def test_no_module_reaches_into_another_modules_private_names():
    uses = private_uses()
    offenders = sorted(u for u in uses if (u[0], u[1]) not in ALLOWED_PRIVATE)
    assert not offenders, "private names used across modules (module, name, line): " + repr(offenders[:10])
    stale = ALLOWED_PRIVATE - {(m, n) for m, n, _ in uses}
    assert not stale, f"allow-listed but no longer used, remove from ALLOWED_PRIVATE: {sorted(stale)}"


def test_private_use_detection(tmp_path):
    """The checker sees the three forms on a toy package, and not a module's calls of its own private names."""
    pkg = tmp_path / "affinevae"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("def _helper():\n    pass\n\nclass K:\n    def _m(self):\n        pass\n")
    (pkg / "b.py").write_text("from .sub.a import _helper\nfrom .sub import a as A\n\n"
                              "def f(k):\n    A._helper()\n    k._m()\n")
    (pkg / "c.py").write_text("def _own():\n    pass\n\nclass C:\n    def g(self, o):\n        self._own()\n"
                              "        o._own()\n        _own()\n")
    toy = parse_package(pkg)
    assert sorted((m, n, line) for m, n, line in private_uses(toy)) == [
        ("affinevae.b", "_helper", 1), ("affinevae.b", "_helper", 5), ("affinevae.b", "_m", 6)]
    assert import_graph(toy)["affinevae.b"] == {"affinevae.sub.a", "affinevae.sub"}  # sub/__init__ runs first
    assert import_graph(toy)["affinevae.sub.a"] == set()  # its own package is running already


def test_command_line_defaults_are_the_python_defaults():
    """Defaults have one source: each option's default is read from the Python function or config
    it feeds, so that the two cannot drift apart."""
    from affinevae.cli import build_parser
    from affinevae.cli.common import default_of
    from affinevae.cli.train import resume_options
    from affinevae.data.objects import DETECT_THRESHOLD, detect_objects
    from affinevae.data.patches import iter_patches
    from affinevae.encoding import encode_dataset, encode_patchset
    from affinevae.mapping import write_maps
    from affinevae.napari_plugin.pipeline import LearnSettings
    from affinevae.report import REPORT_SWEEP_ROTATIONS, write_report
    from affinevae.sweep import parse_angles
    from affinevae.training import TrainConfig
    import numpy as np

    p = build_parser()
    a = p.parse_args(["train", "--model", "vae", "--data", "mnist", "--out", "x"])
    assert resume_options(a) == ""  # not resumed: the trainer's defaults fill what was not given
    assert (a.weight_decay, a.schedule, a.val_split, a.seed) == (TrainConfig.weight_decay, TrainConfig.schedule,
                                                                 TrainConfig.val_split, TrainConfig.seed)
    assert p.parse_args(["encode", "r", "--data", "d", "--out", "x.npz"]).batch_size == default_of(encode_dataset,
                                                                                                 "batch_size")
    assert (p.parse_args(["map", "r", "--image", "i", "--patches", "q", "--out", "x"]).batch_size
            == default_of(encode_patchset, "batch_size") == default_of(write_maps, "batch_size"))
    a = p.parse_args(["patches", "img.tif", "--window", "16", "--out", "x.npz"])
    # None: auto, one rule (data.patches.default_threshold: DETECT_THRESHOLD, or 0 on a stretched sparse field)
    assert a.threshold is None and default_of(iter_patches, "threshold") is None and LearnSettings.threshold is None
    assert default_of(detect_objects, "threshold") == DETECT_THRESHOLD
    a = p.parse_args(["report", "r", "--out", "x.html"])
    assert (a.n, a.sweep_n) == (None, None)  # "up to" the report's defaults, which the command passes
    from affinevae.report import REPORT_N, REPORT_SWEEP_N
    assert (REPORT_N, REPORT_SWEEP_N) == (default_of(write_report, "n"), default_of(write_report, "sweep_n"))
    np.testing.assert_allclose(np.radians(parse_angles(a.sweep_angles)), REPORT_SWEEP_ROTATIONS)
    with pytest.raises(TypeError, match="no default for 'model'"):
        default_of(encode_dataset, "model")


def undocumented(modules: dict) -> list[str]:
    """Public functions, classes and public methods of public classes without a docstring, as
    'module.name' (a method that overrides one documented elsewhere in the package counts as documented)."""
    documented_methods = set()
    for _, _, tree in modules.values():
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
            documented_methods |= {m.name for m in cls.body
                                   if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)) and ast.get_docstring(m)}
    missing = []
    for name, (_, _, tree) in modules.items():
        for node in tree.body:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or node.name.startswith("_"):
                continue
            if not ast.get_docstring(node):
                missing.append(f"{name}.{node.name}")
            if isinstance(node, ast.ClassDef):
                missing += [f"{name}.{node.name}.{m.name}" for m in node.body
                            if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)) and not m.name.startswith("_")
                            and not ast.get_docstring(m) and m.name not in documented_methods]
    return missing


def test_every_public_function_and_class_has_a_docstring():
    """The developers' guide: every public function has a docstring (with shapes and units)."""
    missing = undocumented(MODULES)
    assert not missing, f"{len(missing)} public names without a docstring: {missing[:20]}"


def test_the_docstring_scan_sees_a_missing_one(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text(
        'def shown(x):\n    """Doc."""\n\ndef bare(x):\n    return x\n\ndef _private(x):\n    return x\n\n'
        'class Thing:\n    """Doc."""\n    def method(self):\n        return 1\n    def shown(self):\n        return 2\n')
    assert undocumented(parse_package(tmp_path / "pkg")) == ["pkg.bare", "pkg.Thing.method", "pkg.Thing.shown"]
