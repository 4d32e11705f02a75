"""The layout the developers' guide asks for, checked: layers in folders, no import circle, no oversized file,
an engine that knows nothing of Streamlit, and pages/ holding pages only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 520   # "no source file over about 500 lines"
LAYERS = ("engine", "studies", "infra", "presentation")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Modules of `known` that `path` imports at run time (imports under `if TYPE_CHECKING:` are only for type
    checkers and do not count), at module level or inside functions."""
    tree = ast.parse(path.read_text())
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in known else base)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {m for m in found if m in known}


def source_files() -> list[Path]:
    folders = [ROOT / "pruning_core", ROOT / "dashboard", ROOT / "pages"]
    return sorted(p for folder in folders for p in folder.rglob("*.py")) + [ROOT / "app.py"]


def test_the_core_is_split_into_its_four_layers():
    for layer in LAYERS:
        assert (ROOT / "pruning_core" / layer / "__init__.py").is_file(), layer
    loose = sorted(p.name for p in (ROOT / "pruning_core").glob("*.py"))
    assert loose == ["__init__.py", "__main__.py", "config.py", "registry.py"]


def test_no_import_circle():
    files = {module_name(p): p for p in source_files()}
    known = set(files)
    graph = {name: imported_modules(path, known) - {name, "pruning_core"} for name, path in files.items()}
    circles = []

    def visit(start: str, node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt == start:
                circles.append(" -> ".join(path + [start]))
            elif nxt > start and nxt not in path:
                visit(start, nxt, path + [nxt])

    for name in sorted(graph):
        visit(name, name, [name])
    assert circles == []


@pytest.mark.parametrize("path", source_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_source_file_is_oversized(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines: split it by what it holds"


def test_the_engine_knows_nothing_of_streamlit():
    for path in (ROOT / "pruning_core").rglob("*.py"):
        assert "streamlit" not in imported_modules(path, {"streamlit"}), path


def test_pages_hold_pages_only():
    # Streamlit lists every module of pages/ as a page: none may be a helper that something else imports.
    pages = {p.stem for p in (ROOT / "pages").glob("*.py")}
    assert "__init__" not in pages
    for path in source_files() + sorted((ROOT / "tests").glob("*.py")):
        text = path.read_text()
        for page in pages:
            assert f"pages.{page} import" not in text and f"from pages import {page}" not in text, (path, page)


def test_the_engine_imports_nothing_from_the_layers_built_on_it():
    files = {module_name(p): p for p in source_files()}
    above = {m for m in files if m.startswith(("pruning_core.studies", "pruning_core.infra",
                                               "pruning_core.presentation", "pruning_core.config"))}
    for path in (ROOT / "pruning_core" / "engine").rglob("*.py"):
        assert imported_modules(path, above) == set(), path
