"""The layers hold (README, "Layout"): the import-linter contracts of pyproject.toml are kept, no module
imports another that (directly or not) imports it back, and modules stay small enough to hold one
idea. A change that breaks a layer fails here, not in review."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("coordstore", "gitwork", "agents", "orchestrator")
MAX_LINES = 440  # "about 400": a module past this holds more than one idea


def test_import_linter_contracts_are_kept():
    r = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()",
                        "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout and "kept" in r.stdout


def import_cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.find_modules_directly_imported_by(w)))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    cycles.append(sorted(comp))
    return cycles


def test_no_import_cycles():
    graph = grimp.build_graph(*PACKAGES)
    assert import_cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle(tmp_path, monkeypatch):
    pkg = tmp_path / "cyc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from cyc import b\n")
    (pkg / "b.py").write_text("from cyc import c\n")
    (pkg / "c.py").write_text("import cyc.a\n")
    (pkg / "d.py").write_text("import cyc.a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_cycles(grimp.build_graph("cyc", cache_dir=None)) == [["cyc.a", "cyc.b", "cyc.c"]]


def python_sources(root: Path, packages=PACKAGES):
    """(path relative to root, its lines, its syntax tree) for every module of the packages."""
    import ast

    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            text = path.read_text()
            yield str(path.relative_to(root)), text.splitlines(), ast.parse(text)


def one_module(root: Path, package: str, source: str) -> None:
    """``root/package/x.py`` holding ``source``: a synthetic tree for a scanner's own test."""
    (root / package).mkdir()
    (root / package / "x.py").write_text(source)


def test_modules_hold_one_idea():
    big = {str(p.relative_to(ROOT)): n for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
           if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert big == {}


# Shared words have one home each (coordstore/models.py, coordstore/errors.py, agents/config.py):
# a set of them spelled out anywhere else is a second definition waiting to drift.
def _vocabulary() -> dict[frozenset, tuple[str, str]]:
    from agents import config
    from coordstore import models

    words = {name: ("coordstore/models.py", getattr(models, name)) for name in (
        "ROLES", "DISPATCH_ROLES", "TASK_STATUSES", "TERMINAL", "ACTIVE", "UNSUCCESSFUL", "REQUEUABLE",
        "VERDICT_KINDS", "FAILURES", "AGENT_STATUSES", "SETTLED", "UNAVAILABLE", "RUN_FINAL", "RUN_OVER")}
    words["MERGE_MODES"] = ("agents/config.py", config.MERGE_MODES)
    return {frozenset(value): (name, home) for name, (home, value) in words.items()}


MOVED_ON = {"InvalidTransition", "StaleAttempt", "NotFound"}  # coordstore/errors.py
# atomic replacement of a file: coordstore/private.py's write_private; the event writer's
# Maildir delivery (no-clobber link, rename where links fail) is a protocol of its own
REPLACERS = {"coordstore/private.py", "agents/events.py"}
def second_definitions(root: Path, packages=PACKAGES) -> list[str]:
    import ast

    vocabulary = _vocabulary()
    found: list[tuple[str, int, str]] = []
    for rel, _lines, tree in python_sources(root, packages):
        for node in ast.walk(tree):
            if isinstance(node, (ast.Tuple, ast.Set, ast.List)) and len(node.elts) >= 2:
                if all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
                    name, home = vocabulary.get(frozenset(e.value for e in node.elts), (None, None))
                    if name and rel != home:
                        found.append((rel, node.lineno, f"spells {name} ({home})"))
                if {getattr(e, "id", None) for e in node.elts} == MOVED_ON and rel != "coordstore/errors.py":
                    found.append((rel, node.lineno, "spells MOVED_ON (coordstore/errors.py)"))
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("replace", "rename")
                    and getattr(node.func.value, "id", None) == "os" and rel not in REPLACERS):
                found.append((rel, node.lineno, "replaces a file by hand (coordstore/private.py: write_private)"))
    return [f"{rel}:{line} {what}" for rel, line, what in sorted(found)]


def test_the_word_finder_finds_second_definitions(tmp_path):
    one_module(tmp_path, "orchestrator",
        "import os\n"
        "BUSY = {'working', 'assigned'}\n"
        "def works(role):\n    return role not in ('coordinator', 'lead')\n"
        "GONE = (StaleAttempt, InvalidTransition, NotFound)\n"
        "os.replace('a.tmp', 'a')\n"
        "WORDS = ('idle', 'busy')\n"
    )
    assert second_definitions(tmp_path, ("orchestrator",)) == [
        "orchestrator/x.py:2 spells ACTIVE (coordstore/models.py)",
        "orchestrator/x.py:4 spells DISPATCH_ROLES (coordstore/models.py)",
        "orchestrator/x.py:5 spells MOVED_ON (coordstore/errors.py)",
        "orchestrator/x.py:6 replaces a file by hand (coordstore/private.py: write_private)",
    ]


# Imports sit at the top of a module. One inside a function waits for a reason (the start-up of the
# runner or of `orch`, an optional dependency) and says so: a comment with "lazy" on its line, or
# just above it or above the group of imports it belongs to (no blank line in between).
def _says_lazy(line: str) -> bool:
    return "#" in line and "lazy" in line.split("#", 1)[1].lower()


def _lazy_reason_given(lines: list[str], lineno: int) -> bool:
    i = lineno - 1
    if _says_lazy(lines[i]):
        return True
    in_comment = False
    for above in reversed(lines[:i]):
        text = above.strip()
        if text.startswith("#"):
            in_comment = True
        elif in_comment or not text.startswith(("import ", "from ")):  # past the comment and the import group
            return False
        if _says_lazy(above):
            return True
    return False


def unexplained_inner_imports(root: Path, packages=PACKAGES) -> list[str]:
    import ast

    found = set()
    for rel, lines, tree in python_sources(root, packages):
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)) and not _lazy_reason_given(lines, node.lineno):
                        found.add((rel, node.lineno, lines[node.lineno - 1].strip()))
    return [f"{rel}:{line} {text}" for rel, line, text in sorted(found)]


def test_the_lazy_import_finder_finds_unexplained_ones(tmp_path):
    one_module(tmp_path, "agents",
        "import os\n"
        "try:\n    import yaml\nexcept ImportError:\n    yaml = None\n"
        "def habit():\n    import json\n    return json\n"
        "def said():\n    import re  # lazy: start-up\n    return re\n"
        "class K:\n    def method(self):\n        # lazy: the runner's start-up\n        from a import b\n        from c import d\n"
        "        # a comment that gives no reason\n        import shlex\n\n        import base64\n"
        "    async def nested(self):\n        def inner():\n            try:\n                import scipy\n"
        "            except ImportError:\n                pass\n"
    )
    assert unexplained_inner_imports(tmp_path, ("agents",)) == [
        "agents/x.py:7 import json",
        "agents/x.py:18 import shlex",
        "agents/x.py:20 import base64",
        "agents/x.py:24 import scipy",
    ]


@pytest.mark.parametrize("finder", [second_definitions, unexplained_inner_imports], ids=lambda f: f.__name__)
def test_the_tree_has_none(finder):
    """Shared words have one home; imports inside functions say why they are lazy."""
    assert finder(ROOT) == []
