"""The layout rules a newcomer relies on, checked so that they stay true.

- every import name is its path: one package, ``kiln``, with no ``package-dir`` remapping;
- ``component/``, ``stack/`` and ``software/`` hold profiles (and a release's ``test/``);
- ``kiln.common`` is the bottom floor (it imports no other kiln package) and the umbrella
  command ``kiln.cli`` the top one (nothing imports it);
- tests and code cite only documents that exist in the repository.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]


def python_files(folder: Path) -> list[Path]:
    return [
        p for p in folder.rglob("*.py") if "node_modules" not in p.parts and ".tox" not in p.parts
    ]


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_one_package_and_no_remapping() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools = config["tool"]["setuptools"]
    assert "package-dir" not in setuptools
    assert setuptools["packages"]["find"]["include"] == ["kiln*"]


def test_every_kiln_import_is_a_path() -> None:
    for path in python_files(ROOT):
        for module in imported_modules(path):
            if module.split(".")[0] != "kiln":
                continue
            target = ROOT / Path(*module.split("."))
            is_module = target.with_suffix(".py").is_file() or (target / "__init__.py").is_file()
            # `from kiln.x import name` may name a module or an attribute of kiln/x.
            assert (
                is_module
                or target.parent.with_suffix(".py").is_file()
                or (target.parent / "__init__.py").is_file()
            ), f"{path.relative_to(ROOT)} imports {module}, which is no path"


def test_profile_folders_hold_no_code_but_release_tests() -> None:
    for folder in ("component", "stack", "software"):
        for path in python_files(ROOT / folder):
            relative = path.relative_to(ROOT / folder)
            allowed = folder == "software" and (
                relative.parts == ("conftest.py",) or relative.parts[1:2] == ("test",)
            )
            assert allowed, f"{folder}/{relative} is code in a profile folder"
    for component in (ROOT / "component").iterdir():
        assert (component / "buildout.cfg").is_file(), f"{component.name} has no buildout.cfg"


def test_common_is_the_bottom_and_the_umbrella_command_the_top() -> None:
    for path in python_files(ROOT / "kiln" / "common"):
        others = {m for m in imported_modules(path) if m.startswith("kiln.")}
        assert all(m.startswith("kiln.common") for m in others), (path, others)
    for path in python_files(ROOT):
        if path != ROOT / "kiln" / "cli.py" and path != ROOT / "kiln" / "__main__.py":
            assert "kiln.cli" not in imported_modules(path) or "tests" in path.parts, path


# Notes that lived outside the repository once; docs/ holds their facts now.
EXTERNAL_NOTES = "PROTOCOLS" + ".md"


def test_cited_documents_exist() -> None:
    cited = re.compile(r"\b((?:docs|kiln|software|stack|component)/[\w./-]+\.(?:md|cfg|in))\b")
    for path in [*python_files(ROOT), *ROOT.glob("**/*.md")]:
        if "node_modules" in path.parts or ".tox" in path.parts:
            continue
        text = path.read_text()
        assert EXTERNAL_NOTES not in text, f"{path.relative_to(ROOT)} cites {EXTERNAL_NOTES}"
        for match in cited.findall(text):
            # Placeholders (software/NAME/..., <name>, *.cfg) are patterns, not citations.
            if "<" in match or "*" in match or re.search(r"(^|/)[A-Z]+(/|$)", match):
                continue
            assert (ROOT / match).exists(), f"{path.relative_to(ROOT)} cites {match}"
