"""How the packages import: no cycles, every module on its own, and no import that wires
the broker as a side effect."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("shared", "webhooks_api", "webhooks_worker")

# An entry here would be a cycle still to break, not a design.
KNOWN_CYCLES: set[frozenset[str]] = set()


def _modules() -> dict[str, tuple[Path, bool]]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:  # Alembic's scripts run inside Alembic
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            found[".".join(parts)] = (path, is_package)
    return found


def _import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere, function bodies included."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, (path, is_package) in modules.items():
        package = name if is_package else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [source] + [f"{source}.{alias.name}" for alias in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for child in graph[node]:
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in on_stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_module_reaches_itself_through_its_imports():
    # Imports inside functions count: they hide a cycle, they do not break it.
    cycles = [sorted(c) for c in _cycles(_import_graph()) if c not in KNOWN_CYCLES]
    assert cycles == []


def test_the_cycle_check_sees_a_cycle_hidden_in_a_function_body():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [frozenset({"a", "b", "c"})]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _libraries() -> list[str]:
    """The other libraries' modules the project's modules import at module level."""
    found = set()
    for path, _is_package in _modules().values():
        pending = list(ast.parse(path.read_text()).body)
        while pending:
            node = pending.pop()
            if isinstance(node, ast.If | ast.Try):
                pending.extend(ast.iter_child_nodes(node))
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                found.add(node.module)
    ours = (*PACKAGES, "__future__")
    return sorted(name for name in found if name.split(".")[0] not in ours)


# Imports the libraries once, then forks a child per module that imports that module first
# of the project's: the same check as a fresh interpreter per module, without paying for
# SQLAlchemy's, Celery's and Flask's imports a hundred times over.
_FORK_PER_MODULE = """
import importlib, os, sys, traceback
libraries, names = sys.argv[1].split(","), sys.argv[2].split(",")
for library in libraries:
    try:
        importlib.import_module(library)
    except Exception:
        pass  # the child that needs it reports the failure
ours = ("shared", "webhooks_api", "webhooks_worker")
assert not any(module.split(".")[0] in ours for module in sys.modules)
for name in names:
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException:
            print(name, traceback.format_exc().strip().splitlines()[-1], sep="\t", flush=True)
            os._exit(1)
        os._exit(0)
    _pid, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        print(name, "exit", os.waitstatus_to_exitcode(status), sep="\t", flush=True)
print("checked", len(names))
"""


def test_every_module_imports_first_in_a_fresh_interpreter():
    # A cycle through module-level imports fails for whichever module is imported first.
    names = [n for n in _modules() if not n.endswith("__main__")]
    result = subprocess.run(
        [sys.executable, "-c", _FORK_PER_MODULE, ",".join(_libraries()), ",".join(names)],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"checked {len(names)}"]


def test_importing_the_worker_sends_nothing_until_a_process_installs_the_sender():
    result = _run(
        "from shared import queue\n"
        "import webhooks_worker.celery_app, webhooks_worker.tasks, webhooks_api.app\n"
        "print(queue.enqueue('webhooks.sweep'))\n"
        "webhooks_worker.celery_app.install_sender()\n"
        "print(queue.enqueue('webhooks.sweep'))\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]
    assert "no broker configured" in result.stderr


def test_the_api_factory_installs_the_sender():
    result = _run(
        "from shared import queue\n"
        "from webhooks_api.app import create_app\n"
        "create_app()\n"
        "print(queue.enqueue('webhooks.sweep'))\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True"]
