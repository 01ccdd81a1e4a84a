"""Setting a run up: the run directory, the store with the graph, the repository, the worktrees.

Nothing is half-made: every check that can fail on user input (template, repo, base ref, run dir)
runs before anything is written, and a failure during setup removes what setup created.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from coordstore import open_store, templates
from coordstore.clock import wall_clock_ms
from coordstore.errors import GitError, InputError
from coordstore.models import Run, TaskGraph
from coordstore.private import private_dir, write_private

from gitwork.demo import build_demo_repo
from gitwork.merging import Merger
from gitwork.repo import resolve_commit
from gitwork.runner import git
from gitwork.worktrees import Worktrees

from orchestrator.coordination.tokens import ensure_tokens
from orchestrator.runs.phases import note_phase
from orchestrator.runs.remotemerge import publish_base
from orchestrator.rundir import AgentSpec, RunPaths, RunSpec


DISPATCHER = {"push": "coordinator", "hybrid": "lead"}  # the role that hands work out, per policy


def agents_for(policy: str, defs: list, default_kind: str, coordination: str = "orch") -> list[AgentSpec]:
    """The agents a variant runs, from its definitions (``AgentDef``s; ``agents: 4`` is one of 4
    workers). ``orch``: the workers, plus the coordinator (push) or lead (hybrid) that orch's
    policy plays (kind ``none``). ``agents``: every definition as written, coordinators and leads
    too, each played by its kind, plus a coordinator (push) or lead (hybrid) of the variant's kind
    when none is defined. Ids: a definition's ``id`` (``{n}`` numbers each of its ``count``), else
    ``w1, w2, ...`` for workers and the role's name for the others; instructions are kept."""
    out: list[AgentSpec] = []
    dispatcher = DISPATCHER.get(policy)
    driven = coordination == "agents"
    if dispatcher and not (driven and any(d.role == dispatcher for d in defs)):
        out.append(AgentSpec(id=dispatcher, role=dispatcher, kind=default_kind if driven else "none"))
    n = 0
    for i, d in enumerate(defs):
        for k in range(1, d.count + 1):
            role = "solo" if policy == "solo" else ("specialist" if policy == "relay" else d.role)
            if d.id is not None:
                if d.count > 1 and "{n}" not in d.id:
                    raise InputError(f"agents.{i}.id: {d.id!r} names {d.count} agents (count); number them with {{n}}")
                aid = d.id.replace("{n}", str(k))
            elif role in DISPATCHER.values():
                aid = role if not any(a.id == role for a in out) else f"{role}{sum(a.role == role for a in out) + 1}"
            else:
                n += 1
                aid = f"w{n}"
            if any(a.id == aid for a in out):
                raise InputError(f"agents.{i}: agent id {aid!r} is used twice in the variant")
            out.append(AgentSpec(id=aid, role=role, tags=d.tags or None, kind=d.kind or default_kind, options=d.options,
                                 instruction=d.instruction))
    workers = sum(a.works for a in out)
    if policy == "solo" and workers != 1:
        raise InputError(f"policy solo runs exactly one agent, the variant defines {workers}")
    return out


def load_graph(template: Path) -> TaskGraph:
    """A template or snapshot file as a TaskGraph (either format; errors name the file)."""
    return templates.load_graph(template)


def prepare_run(spec: RunSpec, paths: RunPaths, graph: TaskGraph, experiment_text: str | None, demo: bool) -> None:
    """Create the run directory, the demo repo (``demo``), the store's run and graph, the merged
    branch and the worktrees. The user's repository was checked by the caller (check_repo). The
    time it took is the run's ``setup`` phase, noted in its history once everything stands."""
    start_ms = wall_clock_ms()
    if paths.root.exists() and any(paths.root.iterdir()):
        raise InputError(f"{paths.root}: run directory exists and is not empty")
    created_root = not paths.root.exists()
    private_dir(paths.root)  # the run's files are its owner's alone (coordstore.private)
    try:
        for d in (paths.events, paths.logs, paths.agent_configs, paths.worktrees):
            private_dir(d)
        if demo:
            build_demo_repo(Path(spec.repo), graph, Path(spec.template).stem)
        paths.write_spec(spec)
        if spec.coordination == "agents":  # the agents' tokens for the coordination tools, kept for resumes
            ensure_tokens(paths, spec)
        if experiment_text is not None:
            write_private(paths.experiment, experiment_text)
        with open_store(spec.store_url) as store:
            store.create_run(
                Run(
                    id=spec.run_id,
                    experiment=spec.experiment_id,
                    variant=spec.variant,
                    seed=spec.seed,
                    on_blocker_failure=spec.on_blocker_failure,
                    config=_run_config(spec),
                )
            )
            store.add_graph(spec.run_id, graph)
            repo = Path(spec.repo)
            Merger(repo, f"refs/heads/{spec.merged_branch}").create(resolve_commit(repo, spec.base))
            if spec.workers == "external":  # the workers' worktrees are theirs, made from the remote's base
                publish_base(spec)
            else:
                trees = Worktrees(repo, paths.worktrees)
                for a in spec.agents:
                    if a.works:
                        trees.add(a.id, spec.agent_branch(a.id), spec.base)
            note_phase(store, spec.run_id, "setup", start_ms, wall_clock_ms())
    except BaseException:
        # leave nothing half-made: worktrees and branches of this run, then the directory
        _undo(spec, paths, created_root)
        raise


def _run_config(spec: RunSpec) -> dict:
    """The run's ``config`` in the store; with external workers the whole RunSpec, which is all a
    worker on another host reads (``orchestrator.runs.worker``)."""
    config = {"policy": spec.policy, "agents": len(spec.agents), "template": spec.template}
    if spec.workers == "external":
        config.update(workers="external", remote=spec.remote, spec=spec.model_dump(mode="json"))
    return config


def _undo(spec: RunSpec, paths: RunPaths, created_root: bool) -> None:
    def best_effort(*args: str) -> None:  # what was never made cannot be removed: any outcome will do
        try:
            git(spec.repo, *args, ok=None)
        except GitError:
            pass

    for a in spec.agents:
        wt = paths.worktree_of(a.id)
        if wt.exists():
            best_effort("worktree", "remove", "--force", str(wt))
        best_effort("branch", "-D", spec.agent_branch(a.id))
    best_effort("branch", "-D", spec.merged_branch)
    best_effort("worktree", "prune")
    if created_root:
        shutil.rmtree(paths.root, ignore_errors=True)
