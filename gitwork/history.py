"""A task-graph template from a range of a repository's history: one task per commit, for ``replay``.

``build(repo, "A..B", deps)``: one task per non-merge commit reachable from B and not from A,
oldest first (topological order, so a commit always comes after its parents):

* id: the sha's first ``SHORT_SHA`` hex digits (a fixed length, so the id never changes as the
  repository grows; lengthened in the rare case two commits of the range share a prefix);
* title: the subject; description: the body; ``file_scope``: every path the commit touches (a
  rename counts as its old and its new path; a name that is not UTF-8 C-quoted as git prints it,
  ``coordstore.paths.text_path``); ``meta.commit``: the full sha (what ``replay``
  applies), plus ``author``, ``insertions`` and ``deletions``;
* estimate: ``BASE_MS + PER_FILE_MS * files + PER_LINE_MS * (insertions + deletions)``, at most
  ``MAX_MS`` (a binary file counts as a file with no lines);
* points: the smallest ``POINT_STEPS`` bucket whose line bound holds the changed lines.

Dependencies (``blocks``), by ``deps``:
* ``none``: every commit is ready at once (conflicts show where history was sequential);
* ``linear``: each commit blocks the next (the history's own order, no parallelism);
* ``files``: a commit depends, for each of its paths, on the LATEST earlier commit touching that
  path. Every path's commits then run in history order, each on its predecessors' work, so with
  immediate merging the merged branch ends with B's tree (merge commits are skipped: B's tree is
  reproduced when they merged cleanly).

The run replays on A: ``orch run --repo REPO --base A --template FILE --set kind=replay``, or with no
file ``orch run --repo REPO --history A..B --set kind=replay`` (``orchestrator.runs.launch``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordstore import graph as graphs
from coordstore.errors import GitError, InputError, UsageError
from coordstore.models import Dependency, Task, TaskGraph
from coordstore.paths import text_path

from gitwork.repo import resolve_commit
from gitwork.runner import git, git_out, is_ancestor

DEPS_MODES = ("none", "files", "linear")
SHORT_SHA = 12  # git's own abbreviation length for large repositories; fixed so ids stay stable
# The estimate: reading and setting up a change costs a base, each file some context switching,
# each changed line some typing and checking. Tuned so a one-line fix is ~5 min and a 200-line
# change over 5 files is ~2 h; the cap keeps a vendored or generated drop from dominating a run.
BASE_MS = 5 * 60_000
PER_FILE_MS = 2 * 60_000
PER_LINE_MS = 30_000
MAX_MS = 8 * 3_600_000
# (max changed lines, points): a Fibonacci-like scale, as planning poker uses
POINT_STEPS = ((10, 1), (50, 2), (150, 3), (400, 5), (1000, 8))
MAX_POINTS = 13


@dataclass
class HistoryCommit:
    sha: str
    parents: list[str]
    author: str
    subject: str
    body: str
    paths: list[str] = field(default_factory=list)
    insertions: int = 0
    deletions: int = 0

    @property
    def is_merge(self) -> bool:
        return len(self.parents) > 1

    @property
    def lines(self) -> int:
        return self.insertions + self.deletions


@dataclass
class HistoryTemplate:
    graph: TaskGraph
    summary: dict[str, Any]


def estimate_ms(c: HistoryCommit) -> int:
    return min(MAX_MS, BASE_MS + PER_FILE_MS * len(c.paths) + PER_LINE_MS * c.lines)


def points(c: HistoryCommit) -> int:
    return next((p for bound, p in POINT_STEPS if c.lines <= bound), MAX_POINTS)


def parse_range(rev_range: str) -> tuple[str, str]:
    """``A..B`` -> (A, B); ``A..`` means ``A..HEAD``. UsageError for anything else."""
    if "..." in rev_range:
        raise UsageError(f"range {rev_range!r}: symmetric ranges (A...B) are not supported; use A..B")
    a, sep, b = rev_range.partition("..")
    if not sep or not a.strip():
        raise UsageError(f"range {rev_range!r}: expected A..B (the replay runs on A, so A is required)")
    return a.strip(), (b.strip() or "HEAD")


def open_repo(repo: str | os.PathLike) -> Path:
    """The repository at ``repo`` (any git repository, bare or not: only its history is read)."""
    p = Path(repo).expanduser()
    if not p.is_dir():
        raise GitError(f"repository {p} does not exist or is not a directory")
    found = git(p, "rev-parse", "--git-dir", ok=(0, 128))
    if found.returncode != 0 or not found.stdout.strip():
        raise GitError(f"{p} is not a git repository")
    return p.resolve()


def read_commits(repo: Path, base: str, head: str) -> list[HistoryCommit]:
    """Every commit of ``base..head``, oldest first (topological), with paths and line counts."""
    out = git_out(repo, "log", "-z", "--reverse", "--topo-order", "--format=%H%x00%P%x00%an <%ae>%x00%s%x00%b",
                  f"{base}..{head}", "--", what=f"git log {base[:12]}..{head[:12]}")
    fields = [_readable(f) for f in out.split("\0")]
    commits = [HistoryCommit(sha=f[0].strip(), parents=f[1].split(), author=f[2], subject=f[3], body=f[4].strip())
               for f in (fields[i:i + 5] for i in range(0, len(fields) - 4, 5))]
    _add_numstat(repo, [c for c in commits if not c.is_merge])
    return commits


def _readable(text: str) -> str:
    """A message or name as text: bytes that are not UTF-8 (an old commit with no encoding header)
    become U+FFFD. Titles and authors are for reading; ``replay`` applies the commit object itself,
    byte for byte."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _add_numstat(repo: Path, commits: list[HistoryCommit]) -> None:
    """Paths and line counts of each commit, from one ``git diff-tree --stdin`` for all of them."""
    if not commits:
        return
    out = git(repo, "diff-tree", "--stdin", "-r", "-z", "--numstat", "--no-renames", "--root",
              input="".join(c.sha + "\n" for c in commits)).stdout
    by_sha = {c.sha: c for c in commits}
    cur: HistoryCommit | None = None
    for entry in out.split("\0"):
        if not entry:
            continue
        if "\t" not in entry:  # a commit header: the sha alone
            cur = by_sha.get(entry.strip())
            continue
        added, deleted, path = entry.split("\t", 2)
        if cur is not None:
            cur.paths.append(text_path(path))
            cur.insertions += int(added) if added.isdigit() else 0  # "-": a binary file
            cur.deletions += int(deleted) if deleted.isdigit() else 0


def task_ids(commits: list[HistoryCommit]) -> dict[str, str]:
    """sha -> task id: ``SHORT_SHA`` digits, more where two commits of the range share them."""
    n = SHORT_SHA
    while len({c.sha[:n] for c in commits}) < len(commits):
        n += 2
    return {c.sha: c.sha[:n] for c in commits}


def dependencies(commits: list[HistoryCommit], ids: dict[str, str], mode: str) -> list[Dependency]:
    """The ``blocks`` edges between the commits' tasks for ``mode`` (see the module docstring)."""
    if mode not in DEPS_MODES:
        raise InputError(f"--deps: unknown mode {mode!r} (known: {', '.join(DEPS_MODES)})")
    deps: list[Dependency] = []
    if mode == "linear":
        deps = [Dependency(from_id=ids[a.sha], to_id=ids[b.sha], type="blocks") for a, b in zip(commits, commits[1:])]
    elif mode == "files":
        last: dict[str, str] = {}  # path -> task id of its latest toucher so far
        for c in commits:
            tid = ids[c.sha]
            blockers = dict.fromkeys(last[p] for p in c.paths if p in last)
            deps += [Dependency(from_id=b, to_id=tid, type="blocks") for b in blockers if b != tid]
            last.update(dict.fromkeys(c.paths, tid))
    return deps


def to_task(c: HistoryCommit, tid: str) -> Task:
    return Task(
        id=tid, title=c.subject, description=c.body, points=points(c), time_estimate_ms=estimate_ms(c),
        file_scope=sorted(set(c.paths)),
        meta={"commit": c.sha, "author": c.author, "insertions": c.insertions, "deletions": c.deletions},
    )


def build(repo: str | os.PathLike, rev_range: str, deps: str = "files") -> HistoryTemplate:
    """The template of ``rev_range`` in ``repo`` and a summary of it (see the module docstring)."""
    if deps not in DEPS_MODES:
        raise UsageError(f"--deps: unknown mode {deps!r} (known: {', '.join(DEPS_MODES)})")
    a, b = parse_range(rev_range)
    root = open_repo(repo)
    base, head = resolve_commit(root, a), resolve_commit(root, b)
    every = read_commits(root, base, head)
    commits = [c for c in every if not c.is_merge]
    if not commits:
        what = "only merge commits" if every else "no commits"
        raise InputError(f"range {rev_range!r} in {root} holds {what}; nothing to replay")
    ids = task_ids(commits)
    graph = TaskGraph(tasks=[to_task(c, ids[c.sha]) for c in commits], dependencies=dependencies(commits, ids, deps))
    graphs.validate(graph)  # edges only point forward in history; a failure here is a bug, said loudly
    warnings = []
    if not is_ancestor(root, base, head):
        warnings.append(f"{a} is not an ancestor of {b}: replaying on {a} will not reproduce {b}")
    skipped = len(every) - len(commits)
    if skipped:
        warnings.append(f"{skipped} merge commit{'s' * (skipped != 1)} skipped: {b}'s tree is reproduced only if "
                        f"{'they' if skipped != 1 else 'it'} merged without edits")
    summary = {
        "version": 1, "repo": str(root), "range": rev_range, "base": base, "head": head, "deps": deps,
        "tasks": len(commits), "dependencies": len(graph.dependencies), "skipped_merges": skipped,
        "total_estimate_ms": sum(t.time_estimate_ms or 0 for t in graph.tasks),
        "points": sum(t.points or 0 for t in graph.tasks), "warnings": warnings,
    }
    return HistoryTemplate(graph, summary)


def run_hint(summary: dict[str, Any], file: str | None) -> str:
    """The `orch run` line that replays the template (the variant must use the replay kind)."""
    return (f"orch run --repo {summary['repo']} --base {summary['base'][:SHORT_SHA]} "
            f"--template {file or 'FILE'} --variant pull-4 --set kind=replay  (any variant; or, with no file: "
            f"--history {summary['range']} instead of --base and --template)")
