"""Store URLs: the backend is chosen by scheme; an unknown scheme is one clear line listing the known."""

from __future__ import annotations

import pytest

from coordstore import BACKENDS, open_store
from coordstore.errors import StoreURLError
from orchestrator.cli.main import main
from fixtures_path import tgmcp_fixture


@pytest.mark.parametrize("url", ["redis://localhost/0", "postgres-ish:///x", "no-scheme-at-all"])
def test_unknown_scheme_lists_the_known_ones(url):
    with pytest.raises(StoreURLError) as e:
        open_store(url)
    msg = str(e.value)
    assert url in msg and all(f"{s}://" in msg for s in BACKENDS)


def test_cli_unknown_scheme_is_one_line_and_creates_nothing(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["import", str(tgmcp_fixture("browser-flat.json")), "--store", f"nosuch://{tmp_path}/x"])
    out, err = capsys.readouterr()
    assert e.value.code == 1
    assert len(err.strip().splitlines()) == 1 and "unknown scheme" in err and "sqlite://" in err
    assert list(tmp_path.iterdir()) == []
