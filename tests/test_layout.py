"""The library's layout follows the pipeline: one sub-package per phase, each importing only the phases
before it in the DAG, each saying what it owns."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PHASES = ["core", "features", "bipartition", "head", "evaluation", "project"]  # import order, bottom first


def phase_imports(path: Path) -> set[str]:
    """The phases (sub-packages of ``pipeline``) a module imports anywhere, also inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
        found |= {n.split(".")[1] for n in names if n.startswith("pipeline.") and n.count(".") >= 1}
    return found


def test_the_top_level_is_the_phases():
    entries = sorted(p.name for p in (ROOT / "pipeline").iterdir() if p.name != "__pycache__")
    assert entries == sorted(["__init__.py", *PHASES]) and len(entries) <= 8


@pytest.mark.parametrize("phase", PHASES)
def test_no_phase_imports_one_after_it(phase):
    later = set(PHASES[PHASES.index(phase) + 1:])
    for module in sorted((ROOT / "pipeline" / phase).glob("*.py")):
        assert not phase_imports(module) & later, module.relative_to(ROOT)


@pytest.mark.parametrize("phase", PHASES)
def test_every_phase_says_what_it_owns_and_names_every_module(phase):
    init = ROOT / "pipeline" / phase / "__init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text()))
    assert doc and len(doc) > 100
    for module in (ROOT / "pipeline" / phase).glob("*.py"):
        assert module.name == "__init__.py" or f":mod:`.{module.stem}`" in doc, module.name


def test_the_order_check_can_fail(tmp_path):
    """A core module importing the head is seen."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from pipeline.head.model import Head\n")
    assert phase_imports(bad) == {"head"}
