"""Read the git side of a run: agent branches against the base and the merged branch, an agent's
diff and commits, and the cleanup plan that never deletes unmerged work.

The base is the run's frozen base commit; an agent's changes are ``base..branch`` (its catch-up
merges bring its blockers' work in too, so those show there as well). Task ids come from the
commit subjects agents write (``task <id>: <title>``) and from the store's ``completed_by``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from coordstore.errors import GitError, InputError

from gitwork.repo import full_ref, ref_exists, resolve_commit
from gitwork.runner import git_out, is_ancestor
from orchestrator.views.runinfo import SCHEMA_VERSION, RunRef, live_processes, liveness, merge_summary
from gitwork.worktrees import CleanItem, CleanReport, clean, clear_scratch
from orchestrator.views.verified import SCRATCH_DIR

TASK_SUBJECT = re.compile(r"^task (?P<id>\S+?): ")
_SHORTSTAT = re.compile(r"(\d+) files? changed(?:, (\d+) insertions?\(\+\))?(?:, (\d+) deletions?\(-\))?")
_SEP = "\x1f"  # field separator in git log formats: never in a subject


def _repo(ref: RunRef) -> Path:
    repo = Path(ref.spec.repo)
    if not repo.is_dir():
        raise GitError(f"repository {repo} of run {ref.run_id} does not exist any more")
    return repo


def _base(ref: RunRef, repo: Path) -> str:
    return resolve_commit(repo, ref.spec.base)


def diffstat(repo: Path, a: str, b: str) -> dict[str, int]:
    out = git_out(repo, "diff", "--shortstat", "--no-color", a, b, what="git diff --shortstat").strip()
    m = _SHORTSTAT.search(out)
    files, ins, dels = (int(x or 0) for x in m.groups()) if m else (0, 0, 0)
    return {"files": files, "insertions": ins, "deletions": dels}


def commits(repo: Path, base: str, tip: str) -> list[dict[str, Any]]:
    """Commits in ``base..tip``, newest first, with the task id of ``task <id>: ...`` subjects."""
    fmt = _SEP.join(["%H", "%an", "%at", "%P", "%s"])
    out = git_out(repo, "log", f"--format={fmt}", f"{base}..{tip}", "--", what="git log")
    rows = []
    for line in out.splitlines():
        sha, author, ts, parents, subject = line.split(_SEP, 4)
        m = TASK_SUBJECT.match(subject)
        rows.append({"sha": sha, "author": author, "time": int(ts), "merge": len(parents.split()) > 1,
                     "task": m.group("id") if m else None, "subject": subject})
    return rows


def _branch_view(ref: RunRef, repo: Path, base: str, agent: str, merged_sha: str | None, store_tasks, merges) -> dict[str, Any]:
    branch = ref.spec.agent_branch(agent)
    view: dict[str, Any] = {"agent": agent, "branch": branch, "exists": ref_exists(repo, full_ref(branch))}
    conflicts = [c for c in merges["conflicts"] if c["agent"] == agent]
    done = sorted(t.id for t in store_tasks if t.completed_by == agent and t.status == "completed")
    if not view["exists"]:
        return {**view, "sha": None, "commits": 0, "tasks": done, "diffstat": None, "merged": None,
                "unmerged_commits": None, "conflicts": conflicts}
    sha = resolve_commit(repo, full_ref(branch))
    # its own commits: not merges, and not other agents' work brought in by catching up
    others = {a.id for a in ref.spec.agents} - {agent}
    own = [c for c in commits(repo, base, sha) if not c["merge"] and c["author"] not in others]
    tasks = sorted({*done, *(c["task"] for c in own if c["task"])})
    unmerged = None
    if merged_sha is not None:
        unmerged = int(git_out(repo, "rev-list", "--count", "--no-merges", f"{merged_sha}..{sha}").strip() or 0)
    merged = None if merged_sha is None else is_ancestor(repo, sha, merged_sha)
    return {**view, "sha": sha, "commits": len(own), "tasks": tasks, "diffstat": diffstat(repo, base, sha),
            "merged": merged, "unmerged_commits": unmerged, "conflicts": conflicts}


def branches_view(ref: RunRef) -> dict[str, Any]:
    repo = _repo(ref)
    base = _base(ref, repo)
    with ref.open_store() as store:
        tasks = store.list_tasks(ref.run_id)
        rows = store.history(ref.run_id, entity="merge")
    merges = merge_summary(ref, rows)
    mref = full_ref(ref.spec.merged_branch)
    merged_sha = resolve_commit(repo, mref) if ref_exists(repo, mref) else None
    agents = [_branch_view(ref, repo, base, a.id, merged_sha, tasks, merges) for a in ref.spec.agents if a.works]
    merged: dict[str, Any] = {"branch": ref.spec.merged_branch, "exists": merged_sha is not None, "sha": merged_sha}
    if merged_sha is not None:
        log = commits(repo, base, merged_sha)
        merged.update(commits=sum(not c["merge"] for c in log), merges=sum(c["merge"] for c in log),
                      diffstat=diffstat(repo, base, merged_sha))
    return {"version": SCHEMA_VERSION, "run_id": ref.run_id, "repo": str(repo), "base": base,
            "merge_mode": ref.spec.merge_mode, "agents": agents, "merged": merged,
            "merge_rows": merges["states"], "conflicts": merges["conflicts"]}


def _agent_tip(ref: RunRef, repo: Path, agent: str) -> str:
    ref.check_agent(agent, working=True)
    branch = ref.spec.agent_branch(agent)
    if not ref_exists(repo, full_ref(branch)):
        raise GitError(f"branch {branch} of agent {agent} does not exist in {repo} (cleaned up?)")
    return resolve_commit(repo, full_ref(branch))


def agent_diff(ref: RunRef, agent: str, stat: bool = False) -> str:
    """The agent's changes, ``base..branch``, as git prints them (no colour)."""
    repo = _repo(ref)
    tip = _agent_tip(ref, repo, agent)
    args = ["diff", "--no-color", *(["--stat"] if stat else []), _base(ref, repo), tip, "--"]
    return git_out(repo, *args, what=f"git diff for agent {agent}")


def agent_log(ref: RunRef, agent: str) -> dict[str, Any]:
    repo = _repo(ref)
    tip = _agent_tip(ref, repo, agent)
    base = _base(ref, repo)
    return {"version": SCHEMA_VERSION, "run_id": ref.run_id, "agent": agent, "branch": ref.spec.agent_branch(agent),
            "base": base, "commits": commits(repo, base, tip)}


# ---------------------------------------------------------------------------------- clean
def _clean_args(ref: RunRef) -> tuple[list[str], str, list[Path]]:
    """(branches, merged ref, worktree paths); the merged branch goes last, so agent branches are
    judged against it while it still exists."""
    workers = [a.id for a in ref.spec.agents if a.works]
    branches = [ref.spec.agent_branch(a) for a in workers] + [ref.spec.merged_branch]
    return branches, ref.spec.merged_branch, [ref.paths.worktree_of(a) for a in workers]


def _explain_merged(report: CleanReport, merged: str) -> CleanReport:
    """The merged branch is the run's result: say so when it is kept for its own commits."""
    name = full_ref(merged)
    for item in report.kept:
        if item.kind == "branch" and item.name == name and "not merged anywhere" in item.reason:
            item.reason = f"the run's merged result ({item.reason}); merge it or delete it with git branch -D"
    return report


def clean_run(ref: RunRef, delete_branches: bool, apply: bool, remove_ignored: bool = False) -> dict[str, Any]:
    """Remove the run's worktrees (and, with ``delete_branches``, its branches), keeping every one
    that holds unmerged work or (unless ``remove_ignored``) git-ignored files; ``apply=False``
    only reports what would happen. Refused while any process of the run is alive."""
    with ref.open_store() as store:
        live = live_processes(ref, store)  # runners outlive a killed orchestrator: they count too
        status, evidence = liveness(ref, store, store.get_run(ref.run_id))
    if live or status == "running":
        why = f"{', '.join(map(str, live))} alive" if live else evidence
        raise InputError(f"run {ref.run_id} is still running ({why}); clean it once every process of the run has ended")
    repo = _repo(ref)
    branches, merged, trees = _clean_args(ref)
    report = _explain_merged(clean(repo, branches, merged, trees, delete_branches, apply=apply, remove_ignored=remove_ignored), merged)
    report.removed += [CleanItem(kind="worktree", name=str(p), reason="scratch checkout of a verification cut short")
                       for p in clear_scratch(repo, ref.paths.root / SCRATCH_DIR, apply=apply)]
    return {"version": SCHEMA_VERSION, "run_id": ref.run_id, "repo": str(repo), "dry_run": not apply,
            "branches": delete_branches, **report.model_dump()}
