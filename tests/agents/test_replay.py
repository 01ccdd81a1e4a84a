"""The ``replay`` kind and `orch template from-history`, on a real repository built here.

The history (a few dozen commits after the tag ``A``, up to ``B``) has new files, edits far apart
in shared files, a deletion, a rename, a mode change, a binary file, a path with spaces, an
empty commit, a side branch merged with a merge commit, and one pair of commits that edit the
same lines of ``shared.txt``, the second on top of the first. The template of ``A..B`` is then
replayed by ``orch run`` (pull, 4 agents, ``--repo``, ``--base A``): with ``--deps files`` the
merged branch must end with exactly B's tree; with ``--deps none`` the pair must conflict.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from agents.events import EventWriter
from agents.kinds import KindContext, resolve_kind
from agents.kinds.replay import ReplayKind
from coordstore import open_store
from coordstore.errors import AgentError
from coordstore.models import Task
from coordstore.templates import load_graph
from gitwork import history as fromhistory
from orchestrator.cli.main import main
from orchestrator.runs.launch import RunRequest, plan_runs, run_one

AUTHORS = [("Alice Archer", "alice@example.org"), ("Bob Baker", "bob@example.org"), ("Carol Cruz", "carol@example.org")]
T0 = 1_700_000_000  # author dates: fixed, so the history is the same on every machine
FAST_SUPERVISION = {"stall_after_ms": 5000, "busy_grace_ms": 0, "kill_grace_s": 0.5,
                    "respawn_backoff_ms": 100, "respawn_backoff_max_ms": 400, "max_retries": 2}
TIME_SCALE = 0.0002  # paced replay: a 5-minute estimate takes 60 ms
GIT_IDENTITY_VARS = ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL")


# ------------------------------------------------------------------------------ the history
def _env(n: int = 0, author: tuple[str, str] = AUTHORS[0]) -> dict[str, str]:
    """git cut off from the machine's configuration, with an explicit identity and date."""
    env = {k: v for k, v in os.environ.items() if k not in GIT_IDENTITY_VARS}
    env.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1",
               GIT_AUTHOR_NAME=author[0], GIT_AUTHOR_EMAIL=author[1], GIT_AUTHOR_DATE=f"{T0 + n * 60} +0100",
               GIT_COMMITTER_NAME="Maintainer", GIT_COMMITTER_EMAIL="maint@example.org",
               GIT_COMMITTER_DATE=f"{T0 + n * 60 + 5} +0100")
    return env


def git(repo: Path, *args: str, env: dict | None = None) -> str:
    return subprocess.run(["git", *args], cwd=repo, env=env or _env(), check=True, capture_output=True, text=True).stdout


def lines(prefix: str, n: int = 40) -> str:
    return "".join(f"{prefix} line {i}\n" for i in range(n))


class History:
    """Builds the repository one commit at a time, with varied authors and fixed dates."""

    def __init__(self, root: Path):
        self.root, self.n = root, 0
        root.mkdir(parents=True)
        git(root, "init", "-q", "-b", "main")

    def write(self, rel: str, text: str | bytes) -> None:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text if isinstance(text, bytes) else text.encode())

    def edit_line(self, rel: str, i: int, new: str) -> None:
        text = (self.root / rel).read_text().splitlines(keepends=True)
        text[i] = new + "\n"
        self.write(rel, "".join(text))

    def commit(self, subject: str, body: str = "", files: dict[str, str | bytes] | None = None) -> str:
        for rel, text in (files or {}).items():
            self.write(rel, text)
        self.n += 1
        git(self.root, "add", "-A")
        msg = subject + (f"\n\n{body}" if body else "")
        git(self.root, "commit", "-q", "--allow-empty", "-m", msg, env=_env(self.n, AUTHORS[self.n % len(AUTHORS)]))
        return git(self.root, "rev-parse", "HEAD").strip()

    def edited(self, rel: str, *edits) -> str:
        """``rel``'s text with lines replaced: ``edited(f, 3, "x", 4, "y")``."""
        text = (self.root / rel).read_text().splitlines(keepends=True)
        for i, new in zip(edits[::2], edits[1::2]):
            text[i] = new + "\n"
        return "".join(text)


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> dict:
    h = History(tmp_path_factory.mktemp("hist") / "repo")
    h.write("README.md", "# demo\n")
    for k in range(4):
        h.write(f"src/m{k}.txt", lines(f"m{k}"))
    h.write("shared.txt", lines("shared", 10))
    h.write("old.txt", "to be deleted\n")
    h.write("tool.sh", "#!/bin/sh\necho tool\n")
    h.write("mv_src.txt", lines("moved", 5))
    h.commit("base")
    git(h.root, "tag", "A")
    pair = {}
    h.commit("Add n0", "The first new file.\nSecond body line.", {"new/n0.txt": "n0\n"})
    h.commit("Edit m0 near the top", files={"src/m0.txt": h.edited("src/m0.txt", 5, "m0 top edit")})
    h.commit("Add a file with spaces", files={"dir with space/a b.txt": "spaced\n"})
    pair["first"] = h.commit("Reword shared lines 3-4", files={"shared.txt": h.edited("shared.txt", 3, "first 3", 4, "first 4")})
    h.commit("Add n1", files={"new/n1.txt": "n1\n"})
    h.commit("Edit m1 near the top", files={"src/m1.txt": h.edited("src/m1.txt", 5, "m1 top edit")})
    h.commit("Edit m0 near the bottom", files={"src/m0.txt": h.edited("src/m0.txt", 30, "m0 bottom edit")})
    (h.root / "old.txt").unlink()
    h.commit("Delete old.txt")
    pair["second"] = h.commit("Reword shared lines 3-4 again",
                              files={"shared.txt": h.edited("shared.txt", 3, "second 3", 4, "second 4")})
    (h.root / "tool.sh").chmod(0o755)
    h.commit("Make tool.sh executable")
    (h.root / "moved").mkdir()
    (h.root / "mv_src.txt").rename(h.root / "moved" / "dst.txt")
    h.commit("Move mv_src.txt to moved/dst.txt")
    h.commit("Add a binary blob", files={"bin/data.bin": bytes(range(256)) * 4})
    h.commit("Extend n0", files={"new/n0.txt": "n0\nmore n0\n"})
    h.commit("Record a decision (no change)", "An empty commit: replaying it changes nothing.")
    git(h.root, "checkout", "-q", "-b", "side")
    h.commit("Side: add s0", files={"side/s0.txt": "s0\n"})
    h.commit("Side: add s1", files={"side/s1.txt": "s1\n"})
    git(h.root, "checkout", "-q", "main")
    h.commit("Edit m2 near the top", files={"src/m2.txt": h.edited("src/m2.txt", 2, "m2 top edit")})
    h.n += 1
    git(h.root, "merge", "-q", "--no-ff", "-m", "Merge branch side", "side", env=_env(h.n))
    for i in range(2, 10):
        h.commit(f"Add n{i}", files={f"new/n{i}.txt": f"n{i}\n"})
    h.commit("Edit m3 top and bottom", files={"src/m3.txt": h.edited("src/m3.txt", 1, "m3 top", 35, "m3 bottom")})
    h.commit("Edit m2 near the bottom", files={"src/m2.txt": h.edited("src/m2.txt", 36, "m2 bottom edit")})
    h.commit("Rewrite moved file", files={"moved/dst.txt": "rewritten\n"})
    h.commit("Edit m1 in the middle", files={"src/m1.txt": h.edited("src/m1.txt", 20, "m1 middle edit")})
    h.commit("Extend n3", files={"new/n3.txt": "n3\nmore n3\n"})
    git(h.root, "tag", "B")
    h.commit("After B", files={"new/after.txt": "after\n"})  # not in the range
    return {"repo": h.root, "A": git(h.root, "rev-parse", "A").strip(), "B": git(h.root, "rev-parse", "B").strip(), **pair}


def orch(*args: str) -> int:
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    return exit_.value.code


# ------------------------------------------------------------------------------ from-history
def test_template_has_one_task_per_non_merge_commit_with_scope_meta_and_deps(history, tmp_path, capsys):
    repo = history["repo"]
    out = tmp_path / "replay.json"
    assert orch("template", "from-history", str(repo), "A..B", "--deps", "files", "-o", str(out), "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    expected = git(repo, "rev-list", "--reverse", "--topo-order", "--no-merges", "A..B").split()
    assert len(expected) >= 25
    g = load_graph(out)  # the task-graph-mcp file reads back through orch's own loader
    assert [t.meta["commit"] for t in g.tasks] == expected
    assert [t.id for t in g.tasks] == [s[:fromhistory.SHORT_SHA] for s in expected]
    assert summary["tasks"] == len(expected) and summary["skipped_merges"] == 1
    assert summary["warnings"] == ["1 merge commit skipped: B's tree is reproduced only if it merged without edits"]
    assert summary["base"] == history["A"] and summary["head"] == history["B"]
    assert "--base" in summary["run"] and history["A"][:12] in summary["run"]
    doc = json.loads(out.read_text())
    assert doc["schema_version"] == 3 and all(row["orch_meta"]["commit"] for row in doc["tables"]["tasks"])
    by_commit = {t.meta["commit"]: t for t in g.tasks}
    for sha in expected:
        t = by_commit[sha]
        assert t.title == git(repo, "show", "-s", "--format=%s", sha).strip()
        assert t.description == git(repo, "show", "-s", "--format=%b", sha).strip()
        assert t.meta["author"] == git(repo, "show", "-s", "--format=%an <%ae>", sha).strip()
        paths = sorted(p for p in git(repo, "diff-tree", "-r", "--no-renames", "--root", "--name-only", "--no-commit-id", sha).splitlines())
        assert t.file_scope == paths
        changed = t.meta["insertions"] + t.meta["deletions"]
        assert t.time_estimate_ms == min(fromhistory.MAX_MS, fromhistory.BASE_MS + fromhistory.PER_FILE_MS * len(paths)
                                         + fromhistory.PER_LINE_MS * changed)
    assert by_commit[expected[0]].description == "The first new file.\nSecond body line."
    rename = next(t for t in g.tasks if t.title.startswith("Move mv_src"))
    assert rename.file_scope == ["moved/dst.txt", "mv_src.txt"]  # a rename touches both paths
    empty = next(t for t in g.tasks if t.title.startswith("Record a decision"))
    assert empty.file_scope == [] and empty.time_estimate_ms == fromhistory.BASE_MS
    # files: each commit depends on the latest earlier commit touching each of its paths
    ids = {t.meta["commit"]: t.id for t in g.tasks}
    edges = {(d.from_id, d.to_id) for d in g.dependencies}
    assert all(d.type == "blocks" for d in g.dependencies)
    assert (ids[history["first"]], ids[history["second"]]) in edges
    extend_n0 = next(t.id for t in g.tasks if t.title == "Extend n0")
    add_n0 = next(t.id for t in g.tasks if t.title == "Add n0")
    assert {b for b, t in edges if t == extend_n0} == {add_n0}
    rewrite = next(t.id for t in g.tasks if t.title == "Rewrite moved file")
    assert {b for b, t in edges if t == rewrite} == {rename.id}
    assert not any(t == ids[expected[0]] for _, t in edges)


def test_deps_modes_none_and_linear(history, tmp_path):
    none = fromhistory.build(history["repo"], "A..B", "none").graph
    linear = fromhistory.build(history["repo"], "A..B", "linear").graph
    assert none.dependencies == []
    order = [t.id for t in linear.tasks]
    assert [(d.from_id, d.to_id) for d in linear.dependencies] == list(zip(order, order[1:]))
    assert [t.id for t in none.tasks] == order


def test_stdout_template_and_one_line_errors(history, tmp_path, capsys):
    repo = str(history["repo"])
    assert orch("template", "from-history", repo, "A..B", "--deps", "none") == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["tables"]["dependencies"] == []
    assert "tasks" in captured.err
    bad = [  # a missing or unusable repository or ref exits 1; a malformed argument is a usage error (2)
        ((str(tmp_path), "A..B"), f"{tmp_path} is not a git repository", 1),
        ((str(tmp_path / "missing"), "A..B"), "does not exist", 1),
        ((repo, "nope..B"), "unknown git ref 'nope'", 1),
        ((repo, "A"), "expected A..B", 2),
        ((repo, "A...B"), "symmetric ranges", 2),
        ((repo, "B..B"), "holds no commits", 1),
        ((repo, "A..B", "--deps", "tree"), "--deps: unknown mode 'tree'", 2),
    ]
    for args, needle, code in bad:
        assert orch("template", "from-history", *args) == code, args
        err = capsys.readouterr().err
        assert err.startswith("orch: error: ") and needle in err, (args, err)
        assert len(err.strip().splitlines()) == 1, err


# ------------------------------------------------------------------------------ the kind alone
def _ctx(tmp_path: Path, wt: Path, agent: str = "w1") -> KindContext:
    from gitwork.runner import identity_env

    return KindContext("r", agent, wt, 1, TIME_SCALE, 1, EventWriter(tmp_path / "events" / agent, agent), None,
                       identity_env(agent))


def _worktree(history: dict, tmp_path: Path, at: str) -> Path:
    wt = tmp_path / "wt"
    git(history["repo"], "worktree", "add", "-q", "--detach", str(wt), at)
    return wt


def test_kind_replays_onto_its_parent_reproducing_the_commit(history, tmp_path, no_git_identity):
    second = history["second"]
    wt = _worktree(history, tmp_path, f"{second}^")
    try:
        res = ReplayKind({"committer": "original", "pace": False}).run(Task(id="t", meta={"commit": second}), _ctx(tmp_path, wt))
        assert res.ok, res.reason
        # same parent, same tree, same author, committer and message: the very same commit
        assert git(wt, "rev-parse", "HEAD").strip() == second == res.data["replay"]["applied"]
        assert git(wt, "status", "--porcelain") == ""
    finally:
        git(history["repo"], "worktree", "remove", "--force", str(wt))


def test_kind_conflict_fails_naming_the_path_and_leaves_the_worktree_clean(history, tmp_path, no_git_identity):
    wt = _worktree(history, tmp_path, "A")  # A lacks the first of the pair: the second conflicts
    try:
        before = git(wt, "rev-parse", "HEAD").strip()
        kind = resolve_kind("replay")({"pace": False})
        res = kind.run(Task(id="t", meta={"commit": history["second"]}), _ctx(tmp_path, wt))
        assert not res.ok and "conflict in shared.txt" in res.reason
        assert res.data["replay"]["conflicts"] == ["shared.txt"]
        assert git(wt, "rev-parse", "HEAD").strip() == before
        assert git(wt, "status", "--porcelain", "--untracked-files=all") == ""
        # the agent is the committer, the original author stays; the message is byte for byte
        res = kind.run(Task(id="t", meta={"commit": history["first"]}), _ctx(tmp_path, wt, "w7"))
        assert res.ok, res.reason
        got = git(wt, "show", "-s", "--format=%an|%ae|%ad|%cn|%B", "--date=raw", "HEAD")
        want = git(wt, "show", "-s", "--format=%an|%ae|%ad|w7|%B", "--date=raw", history["first"])
        assert got == want
        assert git(wt, "rev-parse", "HEAD^").strip() == before
        # applied again: its change is already in, so it completes without a commit
        head = git(wt, "rev-parse", "HEAD").strip()
        res = kind.run(Task(id="t", meta={"commit": history["first"]}), _ctx(tmp_path, wt, "w7"))
        assert res.ok and res.data["replay"]["empty"] and git(wt, "rev-parse", "HEAD").strip() == head
        for meta, needle in (({}, "has no meta.commit"), ({"commit": "f" * 40}, "is not in the repository")):
            res = kind.run(Task(id="t", meta=meta), _ctx(tmp_path, wt))
            assert not res.ok and needle in res.reason, res.reason
        with pytest.raises(AgentError, match="committer 'nobody'"):
            ReplayKind({"committer": "nobody"})
        assert ReplayKind({"pace": False, "speed": 2}).unknown == ["speed"]
    finally:
        git(history["repo"], "worktree", "remove", "--force", str(wt))


@pytest.mark.parametrize("name,problem", [(".GIT", "is inside .git"), ("..", "leads out through '..'")])
def test_kind_refuses_a_commit_whose_paths_leave_the_worktree(history, tmp_path, no_git_identity, name, problem):
    """git never makes such a tree, but plumbing can (``git mktree``): the replay checks every path
    it would write before it writes anything, and names the one that is out of bounds."""
    repo = history["repo"]
    blob = subprocess.run(["git", "-C", str(repo), "hash-object", "-w", "--stdin"], input=b"evil\n",
                          capture_output=True, check=True).stdout.decode().strip()
    listing = git(repo, "ls-tree", history["B"]) + f"100644 blob {blob}\t{name}\n"
    tree = subprocess.run(["git", "-C", str(repo), "mktree"], input=listing.encode(), capture_output=True,
                          check=True).stdout.decode().strip()
    evil = git(repo, "commit-tree", tree, "-p", history["B"], "-m", "crafted").strip()
    wt = _worktree(history, tmp_path, history["B"])
    try:
        res = ReplayKind({"pace": False}).run(Task(id="t", meta={"commit": evil}), _ctx(tmp_path, wt))
        assert not res.ok
        assert res.reason == f"replay of {evil[:12]}: commit {evil[:12]}: path {name!r} {problem}: it must be a path within the worktree"
        assert git(wt, "rev-parse", "HEAD").strip() == history["B"]
        assert git(wt, "status", "--porcelain", "--untracked-files=all") == ""
    finally:
        git(repo, "worktree", "remove", "--force", str(wt))


# ------------------------------------------------------------------------------ through orch run
def make_template(history: dict, tmp_path: Path, deps: str, capsys) -> Path:
    tpl = tmp_path / f"replay-{deps}.json"
    assert orch("template", "from-history", str(history["repo"]), "A..B", "--deps", deps, "-o", str(tpl)) == 0
    capsys.readouterr()
    return tpl


def launch(history: dict, tmp_path: Path, tpl: Path, agents):
    exp = {"experiment": {"id": "replay"}, "template": str(tpl),
           "execution": {"runs": 1, "seed": 1, "time_scale": TIME_SCALE, "timeout_s": 50, "supervision": FAST_SUPERVISION},
           "variants": [{"name": "v", "policy": "pull", "agents": agents, "kind": "replay"}]}
    f = tmp_path / "exp.yaml"
    f.write_text(yaml.safe_dump(exp))
    [plan] = plan_runs(RunRequest(variant="v", experiment=f, repo=history["repo"], base="A", results=tmp_path / "results"))
    out = run_one(*plan)
    with open_store(out.spec.store_url) as s:
        dump = s.dump_run(out.spec.run_id)
    return out, dump


def test_files_deps_replay_reproduces_b_exactly(history, tmp_path, capsys, no_git_identity):
    tpl = make_template(history, tmp_path, "files", capsys)
    out, dump = launch(history, tmp_path, tpl, 4)
    repo = history["repo"]
    assert out.spec.base == history["A"]
    failed = {t.id: t.reason for t in dump.tasks if t.status != "completed"}
    assert out.status == "finished" and not failed, failed
    merges = [r for r in dump.history if r.entity == "merge"]
    assert merges and not [r for r in merges if r.to_state != "merged"], [(r.entity_id, r.reason) for r in merges]
    merged = out.spec.merged_branch
    assert git(repo, "rev-parse", f"{merged}^{{tree}}").strip() == git(repo, "rev-parse", "B^{tree}").strip()
    assert len({t.completed_by for t in dump.tasks}) > 1  # it really ran in parallel
    # each replayed commit keeps its author and message and names the agent as committer
    for t in dump.tasks:
        done = next(r for r in dump.history if r.entity == "task" and r.entity_id == t.id and r.to_state == "completed")
        applied = done.data["replay"]["applied"]
        if applied is None:  # the empty commit
            assert t.title.startswith("Record a decision")
            continue
        got = git(repo, "show", "-s", "--format=%an <%ae>|%ad|%B", "--date=raw", applied)
        assert got == git(repo, "show", "-s", "--format=%an <%ae>|%ad|%B", "--date=raw", t.meta["commit"])
        assert git(repo, "show", "-s", "--format=%cn", applied).strip() == t.completed_by
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
    assert git(repo, "status", "--porcelain") == ""


def test_no_deps_replay_hits_the_known_conflict(history, tmp_path, capsys, no_git_identity):
    tpl = make_template(history, tmp_path, "none", capsys)
    # Without dependencies nothing orders the pair. If one agent happened to run both in history
    # order its branch would hold the first and the second would apply cleanly (correctly), so
    # the two are routed to different agents: then the conflict is certain, not likely.
    doc = json.loads(tpl.read_text())
    for row in doc["tables"]["tasks"]:
        if row["orch_meta"]["commit"] in (history["first"], history["second"]):
            row["needed_tags"] = json.dumps(["x" if row["orch_meta"]["commit"] == history["first"] else "y"])
            doc["tables"]["task_needed_tags"].append({"task_id": row["id"], "tag": json.loads(row["needed_tags"])[0]})
    tpl.write_text(json.dumps(doc))
    # (an agent without tags takes any task, so every agent gets one)
    out, dump = launch(history, tmp_path, tpl, [{"tags": ["x"]}, {"tags": ["y"]}, {"count": 2, "tags": ["z"]}])
    second = next(t for t in dump.tasks if t.meta["commit"] == history["second"])
    conflicts = [r for r in dump.history if r.entity == "merge" and r.to_state == "conflict"]
    failed_on_shared = second.status == "failed" and "conflict in shared.txt" in (second.reason or "")
    merge_on_shared = any("shared.txt" in r.data.get("conflicts", []) for r in conflicts)
    assert failed_on_shared or merge_on_shared, (second.status, second.reason, [r.data for r in conflicts])
    first = next(t for t in dump.tasks if t.meta["commit"] == history["first"])
    ran_second = {r.agent for r in dump.history if r.entity == "task" and r.entity_id == second.id and r.to_state == "working"}
    assert first.status == "completed" and first.completed_by == "w1" and ran_second == {"w2"}
    merged = out.spec.merged_branch
    assert git(history["repo"], "rev-parse", f"{merged}^{{tree}}").strip() != git(history["repo"], "rev-parse", "B^{tree}").strip()
