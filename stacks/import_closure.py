"""The project modules a Lambda entry point can import: its asset is exactly these files.

Why: a function asset built from whole package folders ships whatever else lives in them (the local
stand-ins, the CLI, the demo), code that never runs in AWS and widens what a deploy carries. The
closure is read from the source with `ast` (no import, no side effects), following every
``import``/``from ... import`` of a project package, function-level imports included, so a lazy
import cannot be missed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def module_file(module: str, root: Path = REPO_ROOT) -> Path | None:
    """The source file of a project module or package, or None when it is not one."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported(tree: ast.AST, packages: Sequence[str]) -> Iterable[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] in packages)
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and node.module
            and node.module.split(".")[0] in packages
        ):
            yield node.module
            # ``from pkg import mod`` names a submodule as often as an attribute
            yield from (f"{node.module}.{a.name}" for a in node.names)


def module_closure(
    entries: Sequence[str], packages: Sequence[str], root: Path = REPO_ROOT
) -> list[Path]:
    """Repo-relative source files of ``entries`` and every project module they import,
    transitively (parent packages' ``__init__`` included), sorted."""
    seen: dict[str, Path] = {}
    todo = list(entries)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        path = module_file(module, root)
        if path is None:
            continue  # an attribute named in ``from pkg import name``, not a module
        seen[module] = path
        parts = module.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        todo.extend(_imported(ast.parse(path.read_text(encoding="utf-8")), packages))
    return sorted(p.relative_to(root) for p in seen.values())
