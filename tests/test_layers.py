"""The layers hold: imports follow http → engine → index → models (cli beside them), and docs/design.md
lists exactly the modules that exist, so a newcomer can trust it."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Where each installed package lives in the repository.
PACKAGES = {"whitevec.models": ROOT / "models", "whitevec.index": ROOT / "index", "whitevec.service": ROOT / "service"}
#: A module under the first prefix must import nothing under any of the others.
FORBIDDEN = [
    ("whitevec.models", ("whitevec.index", "whitevec.service")),
    ("whitevec.index", ("whitevec.service",)),
    ("whitevec.service.engine", ("whitevec.service.http", "whitevec.service.cli")),
    ("whitevec.service.http", ("whitevec.service.cli",)),
]


def modules() -> dict[str, Path]:
    """Every source module by dotted name."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


def imports(name: str, path: Path) -> set[str]:
    """What a module imports, relative imports resolved; imports under TYPE_CHECKING count too."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            out.add(base)
            out |= {f"{base}.{alias.name}" for alias in node.names}
    return out


def test_imports_follow_the_layers():
    wrong = []
    for name, path in sorted(modules().items()):
        for prefix, banned in FORBIDDEN:
            if name == prefix or name.startswith(prefix + "."):
                wrong += [f"{name} imports {imp}" for imp in sorted(imports(name, path))
                          if any(imp == b or imp.startswith(b + ".") for b in banned)]
    assert not wrong, "\n".join(wrong)


def test_the_layer_check_sees_a_wrong_import(tmp_path):
    """The check itself: an engine module importing the HTTP layer is caught, relative or absolute."""
    bad = tmp_path / "collection.py"
    bad.write_text("from ..http.errors import respond\nimport whitevec.service.cli.main\n")
    found = imports("whitevec.service.engine.collection", bad)
    assert "whitevec.service.http.errors" in found and "whitevec.service.cli.main" in found


def test_the_design_page_lists_exactly_the_modules_there_are():
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    listed = set()
    for heading, table in re.findall(r"^#{3,4} `([a-z/]+)/`[^\n]*\n((?:\|.*\n)+)", text, re.MULTILINE):
        for cell in re.findall(r"^\| ([^|]+) \|", table, re.MULTILINE):
            listed |= {f"{heading}/{m}" for m in re.findall(r"`([a-z_]+\.py)`", cell)}
    present = {str(p.relative_to(ROOT)) for p in modules().values() if p.name != "__init__.py"}
    assert present - listed == set(), f"modules missing from docs/design.md: {sorted(present - listed)}"
    assert listed - present == set(), f"docs/design.md lists modules that do not exist: {sorted(listed - present)}"


def import_graph() -> dict[str, set[str]]:
    """Module → the whitevec modules it imports (a name imported from a module counts as that module)."""
    found = modules()
    graph = {}
    for name, path in found.items():
        targets = set()
        for imp in imports(name, path):
            while imp and imp not in found:
                imp = imp.rpartition(".")[0]
            if imp and imp != name:
                targets.add(imp)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan): each is an import circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    """A part gets what it needs at construction, so nothing imports its owner back (TYPE_CHECKING included)."""
    found = cycles(import_graph())
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_circle_check_sees_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


#: The runtime's accessors that hand out a collection without a caller's pass (for the engine and local commands).
PASSLESS = {"collection", "collections", "default"}


def passless_uses(source: str) -> list[str]:
    """Where code asks the runtime (`rt`, `runtime`, `….runtime`) for a collection without a pass."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in PASSLESS:
            owner = node.value
            if (isinstance(owner, ast.Name) and owner.id in ("rt", "runtime")) or \
                    (isinstance(owner, ast.Attribute) and owner.attr == "runtime"):
                found.append((node.lineno, f"line {node.lineno}: .{node.attr}"))
    return [where for _, where in sorted(found)]


def test_the_http_layer_reaches_collections_only_through_the_gate():
    """Every route gets its collection from the engine's gate with the caller's pass: none can forget the check."""
    wrong = []
    for path in sorted((ROOT / "service" / "http").rglob("*.py")):
        wrong += [f"{path.relative_to(ROOT)} {where}" for where in passless_uses(path.read_text(encoding="utf-8"))]
    assert not wrong, "routes that skip the access check:\n" + "\n".join(wrong)


def test_the_gate_check_sees_a_route_that_skips_it():
    source = "def route(request, rt):\n    a = rt.collection('x')\n    b = request.app.state.runtime.default\n"
    assert passless_uses(source) == ["line 2: .collection", "line 3: .default"]
