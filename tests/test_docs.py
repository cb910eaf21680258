"""The docs stay buildable and true to the code: the mkdocs site builds strictly, README's links land,
README stays short, user docs name no issue or commit, and every route and setting is documented."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
USER_DOCS = [README, *sorted(DOCS.rglob("*.md"))]
#: Markdown links and images: [text](target) — the target up to a space or the closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s[^)]*)?\)")
#: What means nothing to a user: an issue number or a commit hash.
PROJECT_HISTORY = re.compile(r"\bissues? #?\d+|\bcommit [0-9a-f]{7,40}\b", re.IGNORECASE)


def mkdocs_build(root: Path, site: Path) -> subprocess.CompletedProcess:
    """`mkdocs build --strict` as `make docs` runs it (never -q: mkdocs counts no warnings then)."""
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (the `docs` extra: pip install -e '.[docs]')")
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
                          cwd=root, capture_output=True, text=True, timeout=300)


def test_docs_site_builds_strictly(tmp_path: Path) -> None:
    build = mkdocs_build(ROOT, tmp_path / "site")
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.stdout}\n{build.stderr}"
    assert (tmp_path / "site" / "index.html").is_file()


def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    """The check above can fail: the same site with one broken link does not build."""
    import shutil

    shutil.copytree(DOCS, tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    with open(tmp_path / "docs" / "index.md", "a", encoding="utf-8") as f:
        f.write("\nSee [the missing page](no-such-page.md).\n")
    build = mkdocs_build(tmp_path, tmp_path / "site")
    assert build.returncode != 0 and "no-such-page.md" in build.stdout + build.stderr


def test_readme_links_point_at_files() -> None:
    broken = []
    for target in LINK.findall(README.read_text(encoding="utf-8")):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor in README itself
        path = target.split("#", 1)[0]
        if not (README.parent / path).exists():
            broken.append(target)
    assert not broken, f"README.md links to files that do not exist: {broken}"


def test_readme_stays_short() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines < 250, f"README.md has {lines} lines; keep it to the first ten minutes and move the rest to docs/"


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_user_docs_name_no_issue_or_commit(doc: Path) -> None:
    found = [f"line {n}: {line.strip()}" for n, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1)
             if PROJECT_HISTORY.search(line)]
    assert not found, f"{doc.relative_to(ROOT)} names an issue or a commit, which means nothing to a user: {found}"


def test_every_route_is_in_the_http_reference(tmp_path: Path) -> None:
    from whitevec.service.http.app import create_app
    from whitevec.service.engine.settings import Settings

    reference = (DOCS / "reference" / "http-api.md").read_text(encoding="utf-8")
    paths = create_app(Settings(data_dir=tmp_path)).openapi()["paths"]
    missing = [f"{method.upper()} {path}" for path, methods in paths.items() for method in methods
               if f"`{method.upper()} {path}`" not in reference]
    assert not missing, f"docs/reference/http-api.md does not document: {missing}"


def test_every_setting_is_in_the_settings_page() -> None:
    from whitevec.service.engine.settings import Settings

    page = (DOCS / "operations" / "settings.md").read_text(encoding="utf-8")
    missing = [f"WHITEVEC_{name.upper()}" for name in Settings.model_fields
               if f"`WHITEVEC_{name.upper()}`" not in page]
    assert not missing, f"docs/operations/settings.md does not document: {missing}"
