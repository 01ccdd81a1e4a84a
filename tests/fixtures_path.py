"""Where test data lives: the repository, tests' own programs and fixtures, and the third-party
task-graph-mcp fixtures in ``shared/`` beside the repository.

CI clones the repository with ``shared/`` as its sibling, so the path is computed from this file,
never configured. A missing directory FAILS the test that needs it: silently skipping would let
the interop tests pass without ever reading a real task-graph-mcp file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO_ROOT = TESTS.parent
PROGS = TESTS / "progs"  # small programs the tests run as agents, CLIs and process trees
TEST_FIXTURES = TESTS / "fixtures"
TGMCP_FIXTURES = REPO_ROOT.parent / "shared" / "fixtures" / "task-graph-mcp"


def tgmcp_fixture(name: str) -> Path:
    """The path of one task-graph-mcp fixture file (``browser-flat.json``, ``browser-project.json``)."""
    path = TGMCP_FIXTURES / name
    if not path.is_file():
        pytest.fail(
            f"task-graph-mcp fixture {name!r} not found at {path}: the interop tests need the "
            f"repository's sibling directory shared/fixtures/task-graph-mcp/ (clone it beside the repo)",
            pytrace=False,
        )
    return path
