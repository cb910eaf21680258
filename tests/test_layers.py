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
