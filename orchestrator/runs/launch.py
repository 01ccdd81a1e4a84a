"""From `orch run` arguments to finished run directories: resolve, validate, set up, run, export.

Every check on user input happens before the first run directory is created, so a bad argument
leaves nothing behind.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from coordstore.errors import AgentError, InputError, UsageError
from coordstore.graph import GraphIndex, tags_fit, work_ids
from coordstore.snapshot import read_text

from gitwork.remote import is_local, local_path
from gitwork.repo import check_repo, resolve_commit

from agents.clis.serverurl import agent_env
from agents.kinds import preflight, preflight_player
from agents.kinds.command import CLI_KINDS
from agents.policies import check_options

from orchestrator.runs.bestofplan import check_best_of
from orchestrator.runs.experiment import Execution, find_variant
from orchestrator.runs.overrides import apply_sets, parse_sets
from orchestrator.runs.resources import find_template
from orchestrator.rundir import RunPaths, RunSpec
from orchestrator.runs.prepare import agents_for, load_graph, prepare_run
from orchestrator.runs.slots import SAME_MACHINE_ENV
from orchestrator.runs.loop import Orchestrator
from orchestrator.supervision.interrupts import Interrupted

HEADLINE = ("wall_clock_ms", "lower_bound_ms", "efficiency", "tasks_completed", "tasks_failed", "tasks_cancelled",
            "tasks_total", "claim_contention", "dispatch_latency_ms", "merge_conflicts", "retries", "cost_usd",
            "merged_verified")


@dataclass
class RunRequest:
    variant: str
    experiment: Path | None = None
    template: str | None = None
    repo: Path | None = None
    runs: int | None = None
    seed: int | None = None
    time_scale: float | None = None
    store: str | None = None
    results: Path = Path("experiments/results")
    base: str | None = None  # None: HEAD (or, with ``history``, the range's start)
    overrides: dict = field(default_factory=dict)
    sets: list[str] = field(default_factory=list)  # `--set KEY=VALUE`s, in order (``runs.overrides``)
    history: str | None = None  # `--history A..B`: the template is built from the range of ``repo``, the run based on A
    history_deps: str = "files"  # how its tasks depend on each other (``gitwork.history.DEPS_MODES``)
    note_ignored: bool = True  # say once what a foreign experiment file asks that orch ignores
    workers: str = "local"  # external: `orch worker`s on any host take the agents' slots
    remote: str | None = None  # the git URL of the bare repository coordinator and workers share


@dataclass
class RunOutcome:
    run_id: str
    run_dir: Path
    status: str
    metrics: dict
    spec: RunSpec
    criteria: list = field(default_factory=list)


def _run_id(variant: str, i: int) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{variant}-{stamp}-r{i}-{secrets.token_hex(2)}"


# `orch run` flags that set an execution key: checked by the same model as the YAML's keys
FLAGS = {"runs": "--runs", "seed": "--seed", "time_scale": "--time-scale"}


def _with_flags(execu: Execution, req: "RunRequest") -> Execution:
    """The experiment's execution with the flags given laid over it; a bad value is a UsageError
    naming the flag (the experiment's own values were checked when it loaded)."""
    given = {k: getattr(req, k) for k in FLAGS if getattr(req, k) is not None}
    try:
        return Execution.model_validate({**execu.model_dump(), **given})
    except ValidationError as e:
        err = e.errors()[0]
        key = err["loc"][0] if err["loc"] else None
        if key not in given:
            raise
        raise UsageError(f"{FLAGS[key]} {given[key]}: {err['msg']}") from e


def _check_results(results: Path) -> None:
    """--results must be, or be creatable as, a directory orch can write in."""
    p = Path(os.path.abspath(results))
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        raise InputError(f"--results {results}: {p} is not a directory")
    if not os.access(p, os.W_OK | os.X_OK):
        raise InputError(f"--results {results}: cannot write in {p}")


def _every_task_has_a_taker(graph, agents) -> None:
    """A work task whose needed tags no working agent has would wait until the run times out:
    one line naming it, before anything is written (tasks agents add mid-run are theirs to fit)."""
    workers = [a for a in agents if a.works]
    ix = GraphIndex(graph.tasks, graph.dependencies)
    for tid in work_ids(ix):
        t = ix.tasks[tid]
        if not any(tags_fit(t, a.tags) for a in workers):
            having = "; ".join(f"{a.id}: {', '.join(a.tags or []) or '(none)'}" for a in workers)
            raise InputError(f"task {tid!r} needs tags {', '.join(t.needed_tags)} that no agent has (agents' tags: {having})")


def _preflight(variant, agents) -> None:
    """Every working agent's kind can run (CLI present, credentials set, options valid), checked
    before any run directory or worktree exists; in agent-driven variants, every agent's kind can
    play its role."""
    served = {}
    if variant.model_server:  # the run's own server will provide base URLs and keys
        from orchestrator.modelserver.scripts import make_script  # lazy: the model server only for variants that use one

        make_script(variant.model_server, None)  # an unknown script or missing file fails now
        served = agent_env("http://127.0.0.1:1", "the run's key")
    if variant.coordination == "agents":
        _preflight_driven(variant, agents, served)
        return
    check_options(variant.policy, variant.policy_options)
    for a in agents:
        if a.works:
            try:
                preflight(a.kind, _served_options({**variant.kind_options, **a.options}, served))
            except AgentError as e:
                raise AgentError(f"variant {variant.name!r}, agent {a.id}: {e}") from e


def _served_options(opts: dict, served: dict) -> dict:
    """A CLI agent's options with the model server's variables under its own ``env``."""
    return {**opts, "env": {**served, **opts.get("env", {})}} if served else opts


def _preflight_driven(variant, agents, served: dict) -> None:
    """Agent-driven: no policy runs, so its options would change nothing (refused, not ignored);
    each agent's kind must play its role under the policy with its options: a real CLI needs a
    role script for its role (and a model server for role faults), aider only executes assigned
    tasks (``agents.kinds.cliexec``)."""
    if variant.policy_options:
        keys = ", ".join(sorted(variant.policy_options))
        raise InputError(f"variant {variant.name!r}: policy_options ({keys}) do not apply with coordination: agents "
                         f"(the agents decide through the tools; their rhythm is in kind_options, e.g. turn_s)")
    clis = [a for a in agents if a.kind in CLI_KINDS]
    if variant.model_server and not clis:
        raise InputError(f"variant {variant.name!r}: model_server is for CLI agents; no agent of this variant is one "
                         f"(kinds: {', '.join(sorted({a.kind for a in agents}))})")
    for a in agents:
        opts = {**variant.kind_options, **a.options}
        try:
            preflight_player(a.kind, variant.policy, a.role, _served_options(opts, served) if a in clis else opts)
            if a in clis and opts.get("faults"):
                _check_role_faults(a, opts["faults"], served)
        except (AgentError, InputError) as e:
            raise type(e)(f"variant {variant.name!r}, agent {a.id}: {e}") from e


def _check_role_faults(a, faults: list, served: dict) -> None:
    """Role-session faults are the model server's: it must run, and each must be one it knows."""
    from orchestrator.modelserver.conversation import role_faults  # lazy: the model server only for variants that use one

    if not served:
        raise InputError(f"kind {a.kind} ({a.role}): kind_options.faults need the variant's model_server (they are its faults)")
    role_faults(faults, f"kind {a.kind} ({a.role}): kind_options.faults", a.id)  # as the server will read them


def _check_external(req: RunRequest, variant, store: str) -> None:
    """``--workers external``: a remote, a store every worker's host can reach (PostgreSQL; a
    sqlite/file URL only when ORCH_SAME_MACHINE=1 says every worker runs on this machine), and no
    server of the run's own that only local runners could reach."""
    if req.workers not in ("local", "external"):
        raise UsageError(f"--workers {req.workers}: one of local, external")
    if req.workers == "local":
        if req.remote is not None:
            raise UsageError("--remote is for --workers external (the git remote the workers push to)")
        return
    if not req.remote:
        raise UsageError("--workers external needs --remote URL (a bare git repository every worker can reach)")
    scheme = store.split("://", 1)[0] if "://" in store else None
    if scheme is None:
        raise UsageError(f"--workers external: store {store!r} would live in the run directory; give a URL every worker can reach (postgresql://...)")
    if scheme in ("sqlite", "file") and os.environ.get(SAME_MACHINE_ENV) != "1":
        raise UsageError(f"--workers external: a {scheme}:// store cannot be reached from another host; use postgresql://... "
                         f"(or set {SAME_MACHINE_ENV}=1 when every worker runs on this machine)")
    if variant.coordination == "agents" or variant.model_server:
        raise UsageError(f"--workers external: variant {variant.name!r} runs a server of its own (coordination: agents or "
                         f"model_server) that only local runners reach")
    if is_local(req.remote):
        parent = Path(os.path.abspath(local_path(req.remote))).parent
        if not parent.is_dir():
            raise UsageError(f"--remote {req.remote}: directory {parent} does not exist")


def _history_template(req: RunRequest, repo: Path | None) -> tuple[str, object, str]:
    """``--history A..B``: (what the run records as its template, the graph, the base A), the
    template built from the repository's history as `orch template from-history` builds it; its
    warnings (A not an ancestor of B, merges skipped) said once on stderr."""
    from gitwork import history  # lazy: only runs that replay a history read one

    if repo is None:
        raise UsageError(f"--history {req.history}: give the repository whose history it is with --repo PATH")
    if req.template is not None:
        raise UsageError("--history builds the run's template from the history; give --template or --history, not both")
    if req.base is not None:
        raise UsageError(f"--base {req.base}: --history {req.history} runs on the range's start; give one of them")
    if req.history_deps not in history.DEPS_MODES:
        raise UsageError(f"--history-deps {req.history_deps}: one of {', '.join(history.DEPS_MODES)}")
    made = history.build(repo, req.history, req.history_deps)
    for w in made.summary["warnings"]:
        print(f"orch: note: --history {req.history}: {w}", file=sys.stderr)
    return f"{req.history} of {repo} (deps {req.history_deps})", made.graph, made.summary["base"]


def plan_runs(req: RunRequest) -> list[tuple[RunSpec, RunPaths, object, str | None, bool]]:
    """Validate the request and return, per replication, what setup needs. Writes nothing."""
    exp_file, exp, variant = find_variant(req.variant, req.experiment, note=req.note_ignored)
    exp, variant = apply_sets(exp, variant, parse_sets(req.sets))
    execu = _with_flags(exp.execution_for(variant), req)
    _check_results(req.results)
    repo = None
    if req.repo is not None or exp.repo:
        repo = check_repo(Path(req.repo or exp.repo))
    if req.history is not None:
        template, graph, base = _history_template(req, repo)
    else:
        tref = req.template or variant.template or exp.template
        template = str(find_template(tref, exp_file.parent).resolve())
        graph = load_graph(Path(template))
        if repo is not None:
            base = resolve_commit(repo, req.base or "HEAD")
    try:
        agents = agents_for(variant.policy, variant.worker_defs(), variant.kind, variant.coordination)
        _every_task_has_a_taker(graph, agents)
    except InputError as e:
        raise InputError(f"{exp_file}: variant {variant.name!r}: {e}") from e
    _preflight(variant, agents)
    store = req.store or execu.store
    _check_external(req, variant, store)
    check_best_of(variant, execu.merge_mode, req.workers, agents)
    exp_text = read_text(exp_file)  # as load_experiment read it: UTF-8 whatever the locale
    verify = variant.verify or exp.verify  # the variant's own, else the experiment's
    out = []
    for i in range(1, execu.runs + 1):
        run_id = _run_id(variant.name, i)
        paths = RunPaths(req.results / exp.experiment.id / variant.name / run_id)
        demo = repo is None
        spec = RunSpec(
            run_id=run_id,
            experiment_id=exp.experiment.id,
            variant=variant.name,
            policy=variant.policy,
            policy_options=variant.policy_options,
            coordination=variant.coordination,
            kind_options=variant.kind_options,
            agents=agents,
            template=template,
            repo=str(paths.demo_repo if demo else repo),
            base="main" if demo else base,
            store_url=paths.store_url(store),
            seed=execu.seed + i - 1,  # replication i uses seed + i - 1: distinct, reproducible
            time_scale=execu.time_scale,
            timeout_s=execu.timeout_s,
            merge_mode=execu.merge_mode,
            on_blocker_failure=execu.on_blocker_failure,
            supervision=execu.supervision,
            allow_failures=execu.allow_failures,
            model_server=variant.model_server,
            workers=req.workers,
            remote=req.remote,
            verify=verify.model_dump() if verify else None,
            backpressure=execu.backpressure,
            budget=execu.budget.model_dump(exclude_none=True) if execu.budget else None,
        )
        out.append((spec, paths, graph, exp_text, demo))
    return out


def run_one(spec: RunSpec, paths: RunPaths, graph, exp_text: str | None, demo: bool, progress=None) -> RunOutcome:
    prepare_run(spec, paths, graph, exp_text, demo)
    orch = Orchestrator(spec, paths)
    orch.progress = progress
    try:
        status = orch.conduct()
    except Interrupted:
        raise  # conduct stopped the runners and recorded the run interrupted: resumable, not failed
    except BaseException:
        orch.controller.stop_all(grace_s=1.0)
        orch.store.finish_run(spec.run_id, "failed", reason="orchestrator error")
        raise
    finally:
        orch.close()
    metrics = json.loads(paths.metrics.read_text())
    criteria = json.loads(paths.criteria.read_text()) if paths.criteria.is_file() else []
    return RunOutcome(spec.run_id, paths.root, status, metrics, spec, criteria)
