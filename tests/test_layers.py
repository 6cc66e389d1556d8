"""The package's layers, checked from the source (every import statement, also those inside functions):

- cbtcompare/ui/ (the Gradio app) and cbtcompare/commands/ + cli.py + __main__.py (the CLI) sit above the
  headless core: no core module imports them;
- nothing in cbtcompare/ outside ui/ imports gradio (the CLI neither imports the app);
- cbtcompare/models/ (the backends) never imports study code: cbtcompare.study, .simulate, .ctrs, .rating,
  nor the ui.

An AST walk rather than import-linter: it needs no import of the package (a broken optional dependency
cannot hide a violation) and it reads function-level imports and literal importlib.import_module calls.
The planted-violation tests build a throwaway package of the same shape under tmp_path.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "cbtcompare"

UPPER_PACKAGES = ("cbtcompare.ui", "cbtcompare.commands", "cbtcompare.cli", "cbtcompare.__main__")
STUDY_CODE = ("cbtcompare.study", "cbtcompare.simulate", "cbtcompare.ctrs", "cbtcompare.rating", "cbtcompare.ui")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. cbtcompare.models.registry
    target: str  # the imported module, absolute, e.g. gradio or cbtcompare.study.plan
    where: str  # path:line


def _within(name: str, prefixes: tuple[str, ...] | str) -> bool:
    prefixes = (prefixes,) if isinstance(prefixes, str) else prefixes
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _module_name(path: Path, root: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(root: Path) -> list[Import]:
    """Every import under the package at `root` (a folder holding __init__.py), relative ones made absolute."""
    found: list[Import] = []
    for path in sorted(root.rglob("*.py")):
        module, is_package = _module_name(path, root)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(node, module, is_package)
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")]
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute | ast.Name)
                and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                targets = [node.args[0].value]
            where = f"{path.relative_to(root.parent)}:{getattr(node, 'lineno', 0)}"
            found.extend(Import(module, target, where) for target in targets if target)
    return found


def layer_violations(root: Path) -> list[str]:
    """Each import that breaks a layer rule, as 'path:line: module imports target (rule)'."""
    package = root.name
    upper = tuple(p.replace("cbtcompare", package, 1) for p in UPPER_PACKAGES)
    study_code = tuple(p.replace("cbtcompare", package, 1) for p in STUDY_CODE)
    ui = f"{package}.ui"
    problems = []
    for imp in imports_of(root):
        rule = None
        in_ui = _within(imp.module, ui)
        if not in_ui and _within(imp.target, "gradio"):
            rule = "only the ui imports gradio"
        elif not _within(imp.module, upper) and _within(imp.target, upper):
            rule = "the core never imports the ui or the CLI"
        elif not in_ui and _within(imp.module, upper) and _within(imp.target, ui):
            rule = "the CLI never imports the ui"
        elif _within(imp.module, f"{package}.models") and _within(imp.target, study_code):
            rule = "models never import study code"
        if rule:
            problems.append(f"{imp.where}: {imp.module} imports {imp.target} ({rule})")
    return sorted(set(problems))


def test_the_real_package_keeps_its_layers():
    assert imports_of(PACKAGE_DIR), "the walk found no imports at all: it is looking in the wrong place"
    assert layer_violations(PACKAGE_DIR) == []


def _plant(root: Path, files: dict[str, str]) -> Path:
    package = root / "cbtcompare"
    for relative, text in {"__init__.py": "", "models/__init__.py": "", "ui/__init__.py": "", **files}.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return package


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"stats.py": "import gradio as gr\n"}, "cbtcompare.stats imports gradio (only the ui imports gradio)"),
        (
            {"store.py": "def f():\n    from gradio import Blocks\n"},
            "cbtcompare.store imports gradio (only the ui imports gradio)",
        ),
        (
            {"models/registry.py": "from cbtcompare.study.plan import plan_study\n"},
            "cbtcompare.models.registry imports cbtcompare.study.plan (models never import study code)",
        ),
        (
            {"models/hf.py": "from ..rating import view\n"},
            "cbtcompare.models.hf imports cbtcompare.rating (models never import study code)",
        ),
        (
            {"models/gemini.py": "from .. import simulate\n"},
            "cbtcompare.models.gemini imports cbtcompare.simulate (models never import study code)",
        ),
        (
            {"report.py": "import importlib\nimportlib.import_module('cbtcompare.ui.results')\n"},
            "cbtcompare.report imports cbtcompare.ui.results (the core never imports the ui or the CLI)",
        ),
        (
            {"safety.py": "from cbtcompare.commands import crisis_cmd\n"},
            "cbtcompare.safety imports cbtcompare.commands (the core never imports the ui or the CLI)",
        ),
        (
            {"commands/__init__.py": "", "commands/x_cmd.py": "from cbtcompare.ui import AppContext\n"},
            "cbtcompare.commands.x_cmd imports cbtcompare.ui (the CLI never imports the ui)",
        ),
    ],
)
def test_a_planted_violation_is_caught(tmp_path, files, expected):
    package = _plant(tmp_path, files)
    assert any(line.endswith(expected) for line in layer_violations(package)), layer_violations(package)


def test_allowed_imports_are_not_flagged(tmp_path):
    package = _plant(
        tmp_path,
        {
            "ui/rate.py": "import gradio as gr\nfrom cbtcompare import rating\nfrom . import render\n",
            "ui/render.py": "",
            "cli.py": "import importlib\nimportlib.import_module('cbtcompare.commands.x_cmd')\n",
            "models/registry.py": "from cbtcompare.models.base import ChatModel\nfrom ..paths import REPO_ROOT\n",
            "study/__init__.py": "from cbtcompare.models.registry import Registry\n",
        },
    )
    assert layer_violations(package) == []
