"""Every sub-package is in pyproject's package list: the list is written by hand (the remapped folders
cannot be discovered), and a package missing from it is missing from a built wheel."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_listed() -> None:
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(tool["packages"])
    folders = {name: ROOT / folder for name, folder in tool["package-dir"].items()}
    found = set()
    for name, folder in folders.items():
        for init in folder.rglob("__init__.py"):
            relative = init.parent.relative_to(folder)
            if "node_modules" in relative.parts or any(p.startswith(".") for p in relative.parts):
                continue
            found.add(".".join((name, *relative.parts)) if relative.parts else name)
    assert found - listed == set()
