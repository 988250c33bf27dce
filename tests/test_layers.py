"""The portable layer (copied into deployments) imports nothing of tiesmerge.
Data flows one way: adapters → merge → configs → eval → calibration / export → train / sweep / agents → demo →
api (the one front door) → peft (the drop-in) / cli (flags → api → print). Each package
imports only packages on a lower layer (and the neutral top-level modules), never another package's private
names. Read from the source with ast, so a new upward import fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.core

ROOT = Path(__file__).resolve().parents[1] / "src" / "tiesmerge"
# "(init)": the package's own __init__.py, which lazily imports the API and the PEFT drop-in — the top of the house,
# so nothing may import from it (a module that did would close a circle through a lazy import).
LAYER = {"(init)": 11, "portable": -1, "(top)": 0,
         "adapters": 1, "merge": 2, "configs": 3, "eval": 4, "calibration": 5, "export": 5, "train": 6, "sweep": 6,
         "agents": 6, "demo": 7, "api": 8, "peft": 9, "cli": 10}


def lazy_imports(node) -> list[str]:
    """`import_module("tiesmerge…")` / `importlib.import_module(…)` calls with a literal name."""
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
            and isinstance(node.args[0].value, str) and node.args[0].value.startswith("tiesmerge"):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name == "import_module":
            return [node.args[0].value]
    return []


def package_of(module: str, names: list[str]) -> list[tuple[str, list[str]]]:
    """The layer names a `from module import names` reaches: a subpackage, a top-level module, or the package's
    __init__ itself (`from tiesmerge import __version__`)."""
    parts = module.split(".")
    if len(parts) > 1:
        return [(parts[1] if (ROOT / parts[1]).is_dir() else "(top)", names)]
    out = []
    for n in names or [""]:
        if (ROOT / n).is_dir():
            out.append((n, []))
        elif (ROOT / f"{n}.py").is_file():
            out.append(("(top)", []))
        else:
            out.append(("(init)", [n]))
    return out


def imports():
    """(importing package, imported package, imported names, file) for every tiesmerge import, the lazy ones
    (`import_module("tiesmerge.api")`) included."""
    for f in ROOT.rglob("*.py"):
        rel = f.relative_to(ROOT).parts
        pkg = (rel[0] if len(rel) > 1 else "cli" if rel == ("__main__.py",)  # `python -m tiesmerge`
               else "(init)" if rel == ("__init__.py",) else "(top)")
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "tiesmerge":
                mods = [(node.module, [a.name for a in node.names])]
            elif isinstance(node, ast.Import):
                mods = [(a.name, ["*"]) for a in node.names if a.name.split(".")[0] == "tiesmerge"]
            else:
                mods = [(m, ["*"]) for m in lazy_imports(node)]
            for module, names in mods:
                for target, reached in package_of(module, [] if names == ["*"] else names):
                    yield pkg, target, reached, f


def test_every_package_has_a_layer():
    packages = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages <= set(LAYER), f"give {packages - set(LAYER)} a layer"


def test_the_layering_sees_lazy_imports_and_the_package_init():
    """The rules above read `import_module("tiesmerge.api")` as an import, and `from tiesmerge import X` of a name
    defined in __init__.py as an import of the top of the house."""
    edges = {(pkg, target) for pkg, target, _, f in imports() if f.name == "__init__.py" and f.parent == ROOT}
    assert ("(init)", "api") in edges and ("(init)", "peft") in edges
    assert package_of("tiesmerge", ["__version__"]) == [("(init)", ["__version__"])]
    assert package_of("tiesmerge", ["atomic"]) == [("(top)", [])]


def test_no_upward_or_sideways_imports():
    bad = sorted({f"{pkg} -> {target} ({f.relative_to(ROOT)})" for pkg, target, _, f in imports()
                  if pkg != target and LAYER[target] >= LAYER[pkg]})
    assert bad == []


def test_no_private_names_across_packages():
    bad = sorted({f"{f.relative_to(ROOT)}: {n}" for pkg, target, names, f in imports()
                  if pkg != target for n in names if n.startswith("_") and n != "__version__"})
    assert bad == []


# what the deployed agents may import: the tournament image has these, and not tiesmerge
PORTABLE_ALLOWED = {"torch", "transformers", "peft", "bitsandbytes", "yaml"}


def test_portable_imports_only_the_standard_library_and_the_images_packages():
    import sys

    bad = []
    for f in (ROOT / "portable").glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [] if node.level else [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in PORTABLE_ALLOWED and top not in sys.stdlib_module_names and top != "__future__":
                    bad.append(f"{f.name}: {name}")
    assert bad == []
    assert not [p for p in (ROOT / "portable").iterdir() if p.is_dir() and p.name != "__pycache__"]  # flat: copied as is


def module_graph() -> dict[str, set[str]]:
    """tiesmerge module → the tiesmerge modules it imports (at the top or inside functions)."""
    graph: dict[str, set[str]] = {}
    names = {".".join(f.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
             for f in ROOT.rglob("*.py")}
    for f in ROOT.rglob("*.py"):
        me = ".".join(f.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
        out = graph.setdefault(me, set())
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tiesmerge"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    out.add(sub if sub in names else node.module)
            elif isinstance(node, ast.Import):
                out |= {a.name for a in node.names if a.name.startswith("tiesmerge")}
            out |= set(lazy_imports(node))
        out.discard(me)
    return graph


def test_no_import_cycles_between_modules():
    """e.g. core_space ⇄ truncated_svd: a module that needs another's function and is needed by it is one
    module too many or one too few."""
    graph = module_graph()
    cycles, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" → ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    # a package's __init__ importing its own submodules is not a cycle of logic
    cycles = [c for c in cycles if not any(c.startswith(p) and c.count(p) == len(c.split(" → "))
                                           for p in ("tiesmerge.portable",))]
    assert cycles == []


# what a CLI command may import: the API (every job goes through it), the CLI's own helpers, the neutral top-level
# modules (errors, devices, progress, version …) and the portable layer's warning filter
CLI_MAY_IMPORT = {"api", "cli", "(top)", "portable"}


def test_every_cli_command_goes_through_the_api():
    """A command reads its flags, calls tiesmerge.api, prints: no command reaches merge/, train/, eval/, … itself
    (so the API and the CLI check the same inputs in the same place)."""
    bad = sorted({f"{f.relative_to(ROOT)} imports {target}" for pkg, target, _, f in imports()
                  if pkg == "cli" and target not in CLI_MAY_IMPORT})
    assert bad == []
    commands = [f for f in (ROOT / "cli").glob("*.py")
                if "@guarded" in f.read_text() and f.name not in ("common.py",)]
    assert len(commands) >= 12
    for f in commands:
        assert "api." in f.read_text(), f"{f.name}: a command that does not call tiesmerge.api"


def test_the_cli_rule_catches_a_direct_import(tmp_path, monkeypatch):
    """The rule above, shown failing on a command that imports the merge driver itself."""
    import shutil
    import sys

    fake = tmp_path / "tiesmerge"
    shutil.copytree(ROOT / "cli", fake / "cli")
    for package in ("merge", "api"):
        (fake / package).mkdir()
        (fake / package / "__init__.py").write_text("")
    (fake / "cli" / "sneaky.py").write_text("def run():\n    from tiesmerge.merge import driver\n    return driver\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake)
    bad = {target for pkg, target, _, f in imports() if pkg == "cli" and target not in CLI_MAY_IMPORT}
    assert bad == {"merge"}
