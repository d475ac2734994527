"""The package layout of scripts/: each module lives with its stage and imports only downwards.

Stages: the top-level modules every stage uses (labels, errors, options, ...), ``data`` (reading and checking a
case), then ``prepare``, ``training``, ``inference`` and ``report``, which share nothing but ``data`` and the top;
``phantom`` (test and demo data) leans on the top alone; ``tools`` measure the bundle and may use anything. A
piece two stages need goes down to ``data`` or the top, so no stage imports a sibling or a later one.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

STAGES = ("data", "prepare", "training", "inference", "report", "phantom", "tools")
ALLOWED = {
    "top": {"top"},
    "data": {"top", "data"},
    "prepare": {"top", "data", "prepare"},
    "training": {"top", "data", "training"},
    "inference": {"top", "data", "inference"},
    "report": {"top", "data", "report"},
    "phantom": {"top", "phantom"},
    "tools": {"top", *STAGES},
}


def stage_of(module: str) -> str:
    """The stage of a dotted module path under ``scripts``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else "top"


def imports(path: Path) -> list[str]:
    """Every ``scripts`` module that ``path`` imports, at any depth of the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "scripts":
            found += [
                f"{node.module}.{alias.name}" if node.module == "scripts" else node.module for alias in node.names
            ]
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.split(".")[0] == "scripts"]
    return found


def test_no_module_imports_a_sibling_or_later_stage():
    wrong = []
    for path in sorted((REPO / "scripts").rglob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        own = stage_of(module)
        wrong += [
            f"{module} ({own}) imports {target}" for target in imports(path) if stage_of(target) not in ALLOWED[own]
        ]
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_a_wrong_import(tmp_path: Path):
    """The rule catches what the layout forbids: a report module reaching into inference."""
    wrong = tmp_path / "confidence.py"
    wrong.write_text("from scripts.inference.input_grid import argmax_on_box\nimport scripts.phantom\n")
    assert [stage_of(t) for t in imports(wrong)] == ["inference", "phantom"]
    assert not {"inference", "phantom"} & ALLOWED["report"]


def test_every_stage_says_what_enters_and_leaves():
    for stage in STAGES:
        docstring = ast.get_docstring(ast.parse((REPO / "scripts" / stage / "__init__.py").read_text(encoding="utf-8")))
        assert docstring and len(docstring) > 80, stage
