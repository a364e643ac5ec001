"""dvc.yaml is complete by construction: each stage lists exactly the code it runs and the params it reads.

The code check computes a stage's static import closure inside ``pipeline/`` and ``stages/`` (every
``import`` statement, also inside functions) from its ``selfment`` subcommand, and compares it with
the stage's ``.py`` deps. Remove any one code dep from dvc.yaml and
``test_code_deps_are_the_import_closure`` fails naming it (``test_every_dep_line_is_needed`` checks
that for each line). The params check compares each stage's ``params:`` with the keys its command
declares, which the command cannot exceed at run time (:class:`pipeline.core.params.ParamsView`).
"""
import ast
import importlib
import shlex
from pathlib import Path

import pytest
import yaml

from pipeline.core.runner import declared_reads
from stages.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "stages")
PIPELINE = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def module_file(module: str) -> Path | None:
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    path = ROOT.joinpath(*parts)
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imports_of(path: Path) -> set[str]:
    """Project modules imported anywhere in ``path`` (``from pkg import mod`` counts as ``pkg.mod``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if module_file(m) is not None and module_file(m).exists()}


def closure(module: str) -> set[str]:
    """Files run by importing ``module``: its own, its packages' ``__init__``, and all they import."""
    todo, seen = [module], set()
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        parts = m.split(".")
        todo += [".".join(parts[:k]) for k in range(1, len(parts))]  # parent packages run first
        todo += sorted(imports_of(module_file(m)))
    return {str(module_file(m).relative_to(ROOT)) for m in seen}


def expand(name: str, stage: dict) -> list[tuple[str, dict]]:
    """A foreach stage as one stage per key (or item) of its params.yaml collection, ${key}/${item} substituted."""
    if "foreach" not in stage:
        return [(name, stage)]
    text = yaml.safe_dump(stage["do"])
    keys = yaml.safe_load((ROOT / "params.yaml").read_text())
    for part in stage["foreach"].strip("${}").split("."):
        keys = keys[part]
    return [(f"{name}@{k}", yaml.safe_load(text.replace("${key}", k).replace("${item}", k))) for k in keys]


STAGES = dict(s for name, stage in PIPELINE.items() for s in expand(name, stage))


def command_of(stage: dict) -> tuple[str, list[str]]:
    words = shlex.split(stage["cmd"].replace("${launch}", ""))
    assert words[0] == "selfment", stage["cmd"]
    return words[1], words[2:]


def code_deps_problems(stage: dict) -> list[str]:
    sub, _ = command_of(stage)
    module = COMMANDS[sub].split(":")[0]
    needed = closure(module) | closure("stages.cli")
    listed = {d for d in stage.get("deps", []) if str(d).endswith(".py")}
    return ([f"missing dep {f}" for f in sorted(needed - listed)]
            + [f"dep {f} is not imported" for f in sorted(listed - needed)])


@pytest.mark.parametrize("name", sorted(STAGES))
def test_code_deps_are_the_import_closure(name):
    assert code_deps_problems(STAGES[name]) == []


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_dep_line_is_needed(name):
    """Removing any one code dep line from the stage makes the closure check fail."""
    stage = STAGES[name]
    for dep in [d for d in stage["deps"] if str(d).endswith(".py")]:
        cut = dict(stage, deps=[d for d in stage["deps"] if d != dep])
        assert code_deps_problems(cut) == [f"missing dep {dep}"]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_params_are_the_keys_the_command_declares(name):
    sub, args = command_of(STAGES[name])
    module, attr = COMMANDS[sub].split(":")
    command = getattr(importlib.import_module(module), attr)
    assert set(STAGES[name].get("params", [])) == declared_reads(command, args)


def test_no_stage_param_is_a_runtime_field():
    """Workers, batch sizes, devices and chunk sizes change speed, not results: they must not rerun a stage."""
    from pydantic import BaseModel

    from pipeline.core.params import Params, is_runtime

    def runtime_under(model: BaseModel, path: list[str]) -> list[str]:
        if not path:
            return [k for k in type(model).model_fields if is_runtime(model, k)] + [
                f"{k}.{r}" for k, v in model if isinstance(v, BaseModel) for r in runtime_under(v, [])]
        key, rest = path[0], path[1:]
        if is_runtime(model, key):
            return [key]
        value = getattr(model, key) if isinstance(model, BaseModel) else model[key]
        return runtime_under(value, rest) if isinstance(value, BaseModel) else []

    params = Params.model_validate(yaml.safe_load((ROOT / "params.yaml").read_text()))
    for name, stage in STAGES.items():
        for key in stage.get("params", []):
            assert runtime_under(params, key.split(".")) == [], (name, key)


def test_extract_does_not_import_what_only_later_stages_run():
    extract = closure("stages.extract")
    assert not {"pipeline/core/arrays.py", "pipeline/bipartition/ncut.py", "pipeline/head/model.py", "pipeline/core/metrics.py"} & extract
