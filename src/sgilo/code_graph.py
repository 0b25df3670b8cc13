"""The source files a module runs: its own and every module of its package that it imports, transitively, read from
the source with `ast` (nothing is imported or executed). The Snakefile lists them as each rule's code inputs, so that
editing any file a stage runs reruns that stage and nothing else; `sgilo dvc-sync` copies the rules' inputs into
dvc.yaml, so DVC's stages depend on the same files.

Imports inside functions count (they run when the function does), and so do the `__init__.py` of every package on
the way (importing `a.b.c` runs `a/__init__.py` and `a/b/__init__.py`). Modules outside the package (torch, numpy) are
not followed: they change with the environment, which the lock file pins, not with this repository's code.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path


def module_file(name: str, root: Path) -> Path | None:
    """The file of the dotted module `name` under `root` (a module file or a package's `__init__.py`), or None."""
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_inits(name: str, root: Path) -> list[Path]:
    parts = name.split(".")
    return [init for i in range(1, len(parts)) if (init := root.joinpath(*parts[:i], "__init__.py")).is_file()]


def _imported_names(path: Path, name: str) -> set[str]:
    """Every dotted module name the file at `path` (module `name`) may import: `from a import b` names both `a` and
    `a.b`, since `b` may be a submodule; names that are no file under the root are dropped by the caller."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: `from . import x`, `from ..a import b`
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


@functools.cache  # the Snakefile asks for a stage's files once per rule it runs; each parse is paid at start-up
def sources(module: str, root: Path) -> tuple[Path, ...]:
    """The files module `module` (dotted, e.g. "sgilo.stages.invert") runs from the package tree under `root` (the
    folder holding the top-level package, e.g. src/): its own file, the modules it imports from that package,
    transitively, and their packages' `__init__.py`, sorted."""
    top = module.split(".")[0]
    first = module_file(module, root)
    if first is None:
        raise FileNotFoundError(f"module {module} has no source file under {root}")
    seen: dict[Path, str] = {}
    todo = [(module, first)]
    while todo:
        name, path = todo.pop()
        if path in seen:
            continue
        seen[path] = name
        for init in _package_inits(name, root):
            todo.append((str(init.parent.relative_to(root)).replace("/", "."), init))
        for imported in _imported_names(path, name):
            if imported.split(".")[0] == top and (found := module_file(imported, root)) is not None:
                todo.append((imported, found))
    return tuple(sorted(seen))
