"""Every kind of file a real repository holds, through `orch template from-history` and `orch run`.

The repository (``tests/filekinds.py``) has a PNG, symbolic links in and out, a file without a
final newline, CRLF, a name that is not UTF-8, a large file, a Git LFS pointer, a submodule, an
executable bit, a rename and a deletion, each added, changed or removed in the history ``A..B``.
Its template replayed by several agents ends with exactly B's tree; a sim run on the same
template completes every task, editing text companions instead of what a text edit would break.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from coordstore import open_store
from orchestrator.cli.main import main
from orchestrator.runs.launch import RunRequest, plan_runs, run_one

from filekinds import LFS_POINTER, every_kind_repo, fgit

FAST_SUPERVISION = {"stall_after_ms": 5000, "busy_grace_ms": 0, "kill_grace_s": 0.5,
                    "respawn_backoff_ms": 100, "respawn_backoff_max_ms": 400, "max_retries": 2}


@pytest.fixture(scope="module")
def ek(tmp_path_factory):
    return every_kind_repo(tmp_path_factory.mktemp("kinds"))


def orch(*args: str) -> int:
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    return exit_.value.code


@pytest.fixture(scope="module")
def template(ek, tmp_path_factory) -> Path:
    tpl = tmp_path_factory.mktemp("tpl") / "every-kind.json"
    assert orch("template", "from-history", str(ek.repo), "A..B", "--deps", "files", "-o", str(tpl)) == 0
    return tpl


def launch(ek, tmp_path: Path, tpl: Path, kind: str, base: str, agents: int = 4, store: str | None = None):
    exp = {"experiment": {"id": "kinds"}, "template": str(tpl),
           "execution": {"runs": 1, "seed": 3, "time_scale": 0.00005, "timeout_s": 60, "supervision": FAST_SUPERVISION},
           "variants": [{"name": "v", "policy": "pull", "agents": agents, "kind": kind}]}
    f = tmp_path / "exp.yaml"
    f.write_text(yaml.safe_dump(exp))
    [plan] = plan_runs(RunRequest(variant="v", experiment=f, repo=ek.repo, base=base, results=tmp_path / "results",
                                   store=store))
    out = run_one(*plan)
    with open_store(out.spec.store_url) as s:
        return out, s.dump_run(out.spec.run_id)


def test_template_names_every_kind_of_path_as_text(template):
    """A name that is not UTF-8 is C-quoted as git prints it: the template is UTF-8 JSON."""
    doc = json.loads(template.read_bytes().decode("utf-8"))
    scopes = {p for row in doc["tables"]["tasks"] for p in row["file_scope"]}
    assert {'"caf\\351.txt"', '"renamed-caf\\351.txt"', "img/logo.png", "link-in", "docs/link-out", "noeol.txt",
            "crlf.txt", "data/large.txt", "data/model.bin", ".gitattributes", ".gitmodules", "vendor/sub",
            "tool.sh", "old-name.txt", "new-name.txt", "gone.txt"} <= scopes


def test_replay_by_several_agents_reproduces_b_tree(ek, template, tmp_path, no_git_identity):
    out, dump = launch(ek, tmp_path, template, "replay", "A")
    failed = {t.id: t.reason for t in dump.tasks if t.status != "completed"}
    assert out.status == "finished" and not failed, failed
    assert len({t.completed_by for t in dump.tasks}) > 1  # it really ran in parallel
    merged = out.spec.merged_branch
    assert fgit(ek.repo, "rev-parse", f"{merged}^{{tree}}") == ek.tree("B")
    # the submodule as a gitlink, the links as links: never smudged, followed or checked out
    assert fgit(ek.repo, "ls-tree", merged, "vendor/sub").split()[:3] == fgit(ek.repo, "ls-tree", "B", "vendor/sub").split()[:3]
    assert fgit(ek.repo, "cat-file", "-p", f"{merged}:data/model.bin") == LFS_POINTER.replace("12345", "54321").strip()
    assert fgit(ek.repo, "status", "--porcelain") == ""
    # B's message is Latin-1 with no encoding header: replayed byte for byte
    [done] = [r for r in dump.history if r.entity == "task" and r.to_state == "completed"
              and next(t for t in dump.tasks if t.id == r.entity_id).meta["commit"] == ek.B]
    message = lambda sha: subprocess.run(["git", "-C", str(ek.repo), "cat-file", "commit", sha], capture_output=True,  # noqa: E731
                                         check=True).stdout.split(b"\n\n", 1)[1]
    assert message(done.data["replay"]["applied"]) == message(ek.B) and b"caf\xe9:" in message(ek.B)


def test_sim_run_completes_every_task_and_breaks_no_file(ek, template, tmp_path, no_git_identity, store_url):
    """On B, where every kind of file exists, each task's scope is one of them: the PNG, the LFS
    pointer, the links and the submodule are left as they were (their edits go to the task's own
    file); text files are edited, keeping their line endings and their bytes. Every store holds
    the events naming the file whose name is not UTF-8."""
    out, dump = launch(ek, tmp_path, template, "sim", "B", store=store_url)
    failed = {t.id: t.reason for t in dump.tasks if t.status != "completed"}
    assert out.status == "finished" and not failed, failed
    merged = out.spec.merged_branch
    for path in ("img/logo.png", "data/model.bin", "link-in", "vendor/sub"):
        assert fgit(ek.repo, "ls-tree", merged, path) == fgit(ek.repo, "ls-tree", "B", path), path
    why = {}
    for row in dump.history:
        if row.entity == "task" and row.to_state == "completed":
            why.update(row.data.get("sim", {}).get("not_edited", {}))
    assert why == {"img/logo.png": "it is a binary file", "data/model.bin": "it is a Git LFS pointer",
                   "link-in": "it is a symbolic link", "vendor/sub": "it is not a regular file"}
    crlf = fgit(ek.repo, "cat-file", "blob", f"{merged}:crlf.txt").encode()
    assert b"[sim " in crlf and crlf.count(b"\r\n") == crlf.count(b"\n")
    latin = fgit(ek.repo, "cat-file", "blob", f"{merged}:renamed-caf\udce9.txt")  # the name's bytes: b"...\xe9"
    assert latin.startswith("caf\udce9 noir\n") and "[sim " in latin
    changed = {e.data["path"] for e in dump.events if e.type == "file_changed"}
    assert {'"renamed-caf\\351.txt"', "crlf.txt", "noeol.txt"} <= changed
    noeol = fgit(ek.repo, "cat-file", "blob", f"{merged}:noeol.txt")
    assert noeol.startswith("still no final newline\n") and "[sim " in noeol


def test_sim_run_on_a_completes_every_task(ek, template, tmp_path, no_git_identity):
    """From A, the files of the history do not exist yet: a task would create them. A PNG (or any
    file whose name says binary) is not made up as text; the task's own file takes the edit."""
    out, dump = launch(ek, tmp_path, template, "sim", "A")
    failed = {t.id: t.reason for t in dump.tasks if t.status != "completed"}
    assert out.status == "finished" and not failed, failed
    why = {}
    for row in dump.history:
        if row.entity == "task" and row.to_state == "completed":
            why.update(row.data.get("sim", {}).get("not_edited", {}))
    assert why["img/logo.png"] == why["data/model.bin"] == "it would be a binary file (by its name)"
    assert fgit(ek.repo, "ls-tree", out.spec.merged_branch, "img/logo.png") == ""
