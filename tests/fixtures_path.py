"""Where the third-party task-graph-mcp fixtures live: ``shared/`` beside the repository.

CI clones the repository with ``shared/`` as its sibling, so the path is computed from this file,
never configured. A missing directory FAILS the test that needs it: silently skipping would let
the interop tests pass without ever reading a real task-graph-mcp file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TGMCP_FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "task-graph-mcp"


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
