"""Other libraries are used through their public names only.

A library's underscore names (``executor._threads``, ``channel._brpop_read``, an override
of ``Transport._deliver``) change without notice in its next release. This reads every
module of the three packages and refuses an underscore attribute that the project does
not define itself, and an underscore method that overrides one of a library's. (A name
the project also defines somewhere passes: the check is a net for the common case, not a
type checker.)

One module is exempt, and only one: ``webhooks_worker/compat.py``, which overrides
two of kombu's private methods for a measured gain, behind a version check, with its own
test (tests/webhooks_worker/test_compat.py) and an upper bound on kombu.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("shared", "webhooks_api", "webhooks_worker")
# The one compatibility module allowed to use a library's private names.
COMPAT_MODULES = frozenset({Path("webhooks_worker/compat.py")})
# Hooks a library documents for subclasses to implement: marshmallow's custom fields.
DOCUMENTED_HOOKS = frozenset({"_serialize", "_deserialize"})


def _trees() -> dict[Path, ast.AST]:
    return {
        path: ast.parse(path.read_text())
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.relative_to(ROOT) not in COMPAT_MODULES
    }


def _own_underscore_names(trees: dict[Path, ast.AST]) -> set[str]:
    """Every underscore name the project defines: functions, classes, assignments, attributes."""
    names: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.alias):
                names.add(node.asname or node.name.split(".")[-1])
            elif isinstance(node, ast.arg):
                names.add(node.arg)
    return {name for name in names if name.startswith("_") and not name.startswith("__")}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _borrowed(trees: dict[Path, ast.AST]) -> list[str]:
    own = _own_underscore_names(trees)
    # A method the project defines counts as its own unless it sits in a class built on
    # another library's class: then it overrides (or adds to) that library's internals.
    overrides: list[str] = []
    for path, tree in trees.items():
        where = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and _private(node.attr)
                and node.attr not in own
                and node.attr not in DOCUMENTED_HOOKS
            ):
                overrides.append(f"{where}:{node.lineno} reads .{node.attr}")
            if isinstance(node, ast.ClassDef) and node.bases:
                for item in node.body:
                    if (
                        isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                        and _private(item.name)
                        and item.name not in DOCUMENTED_HOOKS
                        and _overrides_a_library(node, item.name, trees)
                    ):
                        overrides.append(f"{where}:{item.lineno} overrides {item.name}")
    return sorted(overrides, key=lambda line: int(line.split(":")[1].split()[0]))


def _project_classes(trees: dict[Path, ast.AST]) -> dict[str, ast.ClassDef]:
    return {
        node.name: node
        for tree in trees.values()
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
    }


def _overrides_a_library(cls: ast.ClassDef, method: str, trees: dict[Path, ast.AST]) -> bool:
    """Whether ``method`` of ``cls`` may override a library's: some base is not ours."""
    ours = _project_classes(trees)
    for base in cls.bases:
        name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", None)
        if name in (None, "object", "Exception", "NamedTuple", "Protocol", "Generic"):
            continue
        if name not in ours:
            return True
    return False


def test_no_module_uses_another_librarys_underscore_names():
    assert _borrowed(_trees()) == []


def test_the_check_sees_a_borrowed_attribute_and_an_override():
    source = (
        "import concurrent.futures\n"
        "class Pool(concurrent.futures.ThreadPoolExecutor):\n"
        "    def _adjust_thread_count(self):\n"
        "        return len(self._threads)\n"
        "def peek(executor):\n"
        "    return executor._work_queue\n"
    )
    found = _borrowed({ROOT / "shared" / "example.py": ast.parse(source)})
    assert found == [
        "shared/example.py:3 overrides _adjust_thread_count",
        "shared/example.py:4 reads ._threads",
        "shared/example.py:6 reads ._work_queue",
    ]


def test_the_exempt_module_exists_and_is_the_only_one():
    # An exemption must not outlive its module, nor grow quietly.
    assert len(COMPAT_MODULES) == 1
    (module,) = COMPAT_MODULES
    assert (ROOT / module).is_file()
    tree = ast.parse((ROOT / module).read_text())
    # It does use private names (else it should not be exempt)...
    assert _borrowed({ROOT / module: tree})
    # ...and says which versions it was checked against.
    assert "CHECKED_KOMBU" in {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
