"""The architecture as tests: the import-linter contract, no import cycles, and an engine that
imports without the app's packages."""

from __future__ import annotations

import ast
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import dynacor

ROOT = Path(__file__).resolve().parents[1]


def lint_imports() -> str:
    found = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(found).exists():
        pytest.skip("import-linter is not installed (it is in the dev extra)")
    return found


def test_import_linter_contract_is_kept():
    done = subprocess.run([lint_imports(), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "BROKEN" not in done.stdout and done.stdout.count("KEPT") >= 3


def test_no_module_imports_itself_back():
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("dynacor")
    cycles = []
    for importer in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(importer):
            # A package's __init__ re-exporting its own modules is not a cycle of concepts.
            if imported.startswith(importer + ".") or importer.startswith(imported + "."):
                continue
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is not None:
                cycles.append(f"{importer} -> {imported} -> ... -> {importer}: {' -> '.join(back)}")
    assert not cycles, "\n".join(cycles)


def test_engine_imports_without_streamlit_plotly_or_umap():
    modules = [m.name for m in pkgutil.walk_packages(dynacor.__path__, "dynacor.")]
    assert "dynacor.method.pipeline" in modules and "dynacor.cli.main" in modules
    code = (
        "import sys, importlib\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('streamlit', 'plotly', 'umap'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for name in {modules!r}:\n"
        "    if name != 'dynacor.__main__':\n"
        "        importlib.import_module(name)\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr



def imported_modules(source: str) -> set[str]:
    """Every module ``source`` imports (``import a.b``; ``from a.b import c``: ``a.b`` and
    ``a.b.c``), wherever the statement stands (module level, in a function, under a condition)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def cli_imports(source: str) -> list[str]:
    return sorted(n for n in imported_modules(source) if n == "dynacor.cli" or n.startswith("dynacor.cli."))


def test_the_app_sits_beside_the_cli_not_above_it():
    """The app (app.py and pages/) and the CLI are two front ends of the same engine: no page
    imports `dynacor.cli`; what both need lives below it (`dynacor.runs`, `dynacor.review`)."""
    files = [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py"))]
    assert len(files) > 5
    offending = {str(p.relative_to(ROOT)): cli_imports(p.read_text(encoding="utf-8")) for p in files}
    assert not {p: names for p, names in offending.items() if names}
    # The check sees such imports in every form.
    probe = "import dynacor.cli.main\nfrom dynacor import cli\ndef f():\n    from dynacor.cli.detect import x\n"
    assert cli_imports(probe) == ["dynacor.cli", "dynacor.cli.detect", "dynacor.cli.detect.x", "dynacor.cli.main"]
