"""sgilo.code_graph: which source files a module runs, read from its imports, on a package built to hold every kind
of import a stage uses or might."""

from __future__ import annotations

from pathlib import Path

import pytest

from sgilo.code_graph import sources

FILES = {
    "pkg/__init__.py": "",
    "pkg/a.py": "import os\nfrom pkg import b\nimport numpy as np\n",
    "pkg/b.py": "def lazy():\n    from pkg.sub import c  # runs only when lazy() does, and then it runs\n    return c\n",
    "pkg/sub/__init__.py": "from . import d\n",
    "pkg/sub/c.py": "from ..e import value\n",
    "pkg/sub/d.py": "",
    "pkg/e.py": "import pkg.f as f\nfrom pkg.a import *  # a cycle back to the start\nvalue = 1\n",
    "pkg/f.py": "",
    "pkg/unused.py": "import pkg.a\n",
    "other/__init__.py": "",
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for name, text in FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_every_import_kind_is_followed_and_nothing_else(tree):
    found = {str(path.relative_to(tree)) for path in sources("pkg.a", tree)}
    assert found == set(FILES) - {"pkg/unused.py", "other/__init__.py"}


def test_a_leaf_runs_its_packages_inits(tree):
    assert [str(path.relative_to(tree)) for path in sources("pkg.sub.d", tree)] == [
        "pkg/__init__.py",
        "pkg/sub/__init__.py",
        "pkg/sub/d.py",
    ]


def test_a_missing_module_is_named(tree):
    with pytest.raises(FileNotFoundError, match="pkg.nothing"):
        sources("pkg.nothing", tree)
