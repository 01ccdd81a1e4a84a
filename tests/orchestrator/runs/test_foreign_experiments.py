"""task-graph-mcp's experiment shapes and seed 004's schema load as agent-driven variants; what orch
does not act on is noted once; what it cannot honour is one line naming file, key and line."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from cliruns import cli
from fixtures_path import TEST_FIXTURES
from coordstore.errors import InputError
from orchestrator.runs.experiment import find_variant, load_experiment
from orchestrator.runs.resources import template_files

FIX = TEST_FIXTURES / "experiments"
PARALLEL, PHASED = "browser-parallel", "browser-phased"


def shipped(name: str) -> str:
    return str(template_files()[name].resolve())


def agents_of(variant) -> list[tuple]:
    return [(a.id, a.count, a.role, a.tags) for a in variant.agents]


# (file, shape, experiment id, {variant: (policy, template, agents)}); agents as (id, count, role, tags)
SHAPES = [
    ("tgmcp-variants.yaml", "variants-mapping", "dispatch-styles", {
        "push-3": ("push", PARALLEL, [("dispatcher", 1, "coordinator", ["coordinator"]),
                                      ("builder-1", 1, "worker", ["worker", "code"]),
                                      ("builder-2", 1, "worker", ["worker", "code"]),
                                      ("builder-3", 1, "worker", ["worker", "code", "docs"])]),
        "swarm-3": ("pull", PARALLEL, [(f"bee-{n}", 1, "worker", ["worker"]) for n in (1, 2, 3)]),
        "hier-3": ("hybrid", PHASED, [("lead", 1, "lead", ["lead"])] + [(f"builder-{n}", 1, "worker", ["worker", "designer", "implementer", "tester"]) for n in (1, 2, 3)]),
        "solo-1": ("solo", PARALLEL, [("agent-{n}", 1, "solo", [])]),
    }),
    ("tgmcp-runs.yaml", "runs-list", "scaling-runs", {
        "swarm-2": ("pull", None, [("swarm-{n}", 2, "worker", ["worker", "code"])]),
        "swarm-6": ("pull", None, [("swarm-{n}", 6, "worker", ["worker"])]),
        "push-4": ("push", None, [("coordinator", 1, "coordinator", ["coordinator", "lead"]), ("worker-{n}", 3, "worker", ["worker", "code"])]),
        "hier-5": ("hybrid", PHASED, [("lead", 1, "lead", ["coordinator", "lead"]), ("worker-{n}", 4, "worker", ["worker", "designer", "implementer", "tester"])]),
    }),
    ("tgmcp-single.yaml", "single-variant", "single-hybrid", {
        "lead-and-three": ("hybrid", None, [("lead", 1, "lead", ["lead", "planner"]), ("impl-1", 1, "worker", ["worker", "designer"]),
                                            ("impl-2", 1, "worker", ["worker", "implementer"]), ("impl-3", 1, "worker", ["worker", "tester"])]),
    }),
    ("tgmcp-single-push.yaml", "single-variant", "one-dispatcher", {
        "one-dispatcher": ("push", None, [("coordinator", 1, "coordinator", ["coordinator"]), ("hand-{n}", 2, "worker", ["worker"])]),
    }),
    ("seed004.yaml", "seed-004", "seed004-styles", {
        "swarm-4": ("pull", None, [("swarm-{n}", 4, "worker", ["worker", "code"])]),
        "push-4": ("push", None, [("dispatcher", 1, "coordinator", ["coordinator"]), ("worker-{n}", 4, "worker", ["worker", "code"])]),
        "hierarchical-4": ("hybrid", PHASED, [("lead", 1, "lead", ["lead", "coordinator"]), ("worker-{n}", 4, "worker", ["worker", "designer", "implementer", "tester"])]),
    }),
]
TOP_TEMPLATE = {"tgmcp-variants.yaml": PARALLEL, "tgmcp-runs.yaml": PARALLEL, "tgmcp-single.yaml": PHASED,
                "tgmcp-single-push.yaml": PARALLEL, "seed004.yaml": PARALLEL}


@pytest.mark.parametrize("name,shape,exp_id,variants", SHAPES, ids=[s[0] for s in SHAPES])
def test_each_shape_loads_into_agent_driven_variants(name, shape, exp_id, variants):
    exp = load_experiment(FIX / name)
    assert exp.shape == shape and exp.experiment.id == exp_id
    assert exp.template == shipped(TOP_TEMPLATE[name])  # experiments/templates/x.json -> orch's shipped x
    assert [v.name for v in exp.variants] == list(variants)
    for v in exp.variants:
        policy, template, agents = variants[v.name]
        assert (v.policy, v.coordination) == (policy, "agents"), v.name
        assert v.template == (shipped(template) if template else None), v.name
        assert agents_of(v) == agents, v.name


@pytest.mark.parametrize("name,variants", [(s[0], s[3]) for s in SHAPES], ids=[s[0] for s in SHAPES])
def test_find_variant_finds_every_variant_of_every_shape(name, variants):
    for vname, (policy, _, _) in variants.items():
        path, exp, v = find_variant(vname, FIX / name)
        assert path == FIX / name and v.name == vname and v.policy == policy and v.coordination == "agents"


def test_instructions_and_prompts_are_kept_and_same_as_copies():
    exp = load_experiment(FIX / "tgmcp-variants.yaml")
    push = {a.id: a.instruction for a in exp.variant("push-3").agents}
    assert push["dispatcher"].startswith("Hand out every pending task with update(assignee=...)")
    assert push["builder-1"] == "Work only on what you are given; complete it, then wait for the next one."
    assert push["builder-2"] == push["builder-3"] == push["builder-1"]  # builder-3 copies builder-2, a copy itself
    hier = {a.id: a.instruction for a in exp.variant("hier-3").agents}  # its own builder-1, not push-3's
    assert hier["builder-3"] == hier["builder-1"] == "Start with what the lead gave you, then pull ready tasks inside it."
    single = {a.id: a.instruction for a in load_experiment(FIX / "tgmcp-single.yaml").variants[0].agents}
    assert single["impl-2"] == single["impl-3"] == single["impl-1"].strip() != ""
    push = load_experiment(FIX / "tgmcp-single-push.yaml").variants[0]
    assert [a.instruction for a in push.agents][1] == "Do what you are assigned, nothing else."
    seed = load_experiment(FIX / "seed004.yaml").variant("hierarchical-4").agents
    assert [a.instruction for a in seed] == ["Hand each component to a worker, then watch.",
                                              "Pull the ready tasks of the component you were handed."]


def test_settings_metrics_and_criteria_orch_can_act_on_are_kept():
    seed = load_experiment(FIX / "seed004.yaml")
    assert seed.execution.timeout_s == 1200
    assert seed.experiment.hypothesis.startswith("Workers that pull finish first")
    # dispatch_latency_ms comes with a query of its own: orch computes that metric itself, the query is ignored
    assert [(m.name, m.direction, m.query) for m in seed.metrics] == [
        ("wall_clock_ms", "lower", None), ("efficiency", "higher", None), ("claim_contention", "lower", None),
        ("dispatch_latency_ms", "lower", None)]
    assert [(c.metric, c.op, c.value) for c in seed.success_criteria] == [("completion_rate", ">=", 1.0), ("merge_conflicts", "==", 0.0)]
    # seed 004's comparison: its baseline is orch's, its hypotheses prose without claims
    assert seed.comparison.baseline == "swarm-4"
    assert [(h.id, h.text, h.claims) for h in seed.experiment.hypotheses] == [("speed", "the swarm finishes first", [])]
    assert load_experiment(FIX / "tgmcp-single.yaml").comparison.baseline is None  # `baseline: none`
    variants = load_experiment(FIX / "tgmcp-variants.yaml")
    assert variants.execution.timeout_s == 900  # run.timeout_seconds
    # a metric of the file's own, defined by a query, is kept and runs
    assert [(m.name, m.direction, m.query) for m in variants.metrics] == [
        ("wall_clock_ms", "lower", None), ("claim_contention", "lower", None), ("handoff_delay_ms", "neutral", "SELECT 1")]
    runs = load_experiment(FIX / "tgmcp-runs.yaml")  # task-graph-mcp's derivation: is derived:
    assert [(m.name, m.derived) for m in runs.metrics] == [("gini_tasks", None), ("busiest_agent_share", "max(tasks_per_agent) / tasks_completed")]


IGNORED = {
    "tgmcp-variants.yaml": ["protocol", "run.poll_interval_seconds", "metrics.headline.claim_contention.source",
                            "success_criteria.floor_completion_pct"],
    "tgmcp-runs.yaml": ["topology", "execution.sweep"],
    "tgmcp-single.yaml": ["workflow_overrides", "experiment.variables", "metrics.primary.efficiency.source",
                          "metrics.primary.lead_busy_pct"],
    "tgmcp-single-push.yaml": [],
    "seed004.yaml": ["execution.poll_interval_seconds", "execution.output_dir",
                     "template.instantiate_options.extra_tags", "metrics.primary.tasks_per_hour",
                     "metrics.coordination.dispatch_latency_ms.query", "success_criteria.target.efficiency",
                     "success_criteria.target.tasks_per_hour"],
}


@pytest.mark.parametrize("name", sorted(IGNORED))
def test_what_orch_does_not_act_on_is_listed_by_key(name):
    assert load_experiment(FIX / name).ignored == IGNORED[name]


def test_orch_files_are_orch_shaped_and_ignore_nothing():
    for f in ("coordination.yaml", "relay.yaml"):
        exp = find_variant(f"{Path(f).stem}/{'push-4' if f == 'coordination.yaml' else 'relay-4'}")[1]
        assert exp.shape == "orch" and exp.ignored == []


def test_orch_run_notes_the_ignored_keys_once(tmp_path, capsys):
    """Through the real CLI: the note is one line, printed once, before the run is refused for an
    unrelated reason (--results below a file) that leaves nothing behind."""
    afile = tmp_path / "afile"
    afile.write_text("")
    f = FIX / "seed004.yaml"
    code, out, err = cli(capsys, "run", "--experiment", str(f), "--variant", "push-4", "--results", str(afile / "r"))
    lines = err.splitlines()
    assert code == 1 and len(lines) == 2, err
    assert lines[0] == f"orch: note: {f}: ignored (orch does not act on them): " + ", ".join(IGNORED["seed004.yaml"])
    assert lines[1].startswith(f"orch: error: --results {afile / 'r'}")
    code, _, err = cli(capsys, "run", "--experiment", str(FIX / "tgmcp-single-push.yaml"), "--variant", "one-dispatcher",
                       "--results", str(afile / "r"))
    assert code == 1 and "orch: note" not in err  # nothing ignored: no note


BAD = [
    ("bad-max-claims.yaml", r"runs\.0\.agent_config\.max_claims \(line 9\): 3: an orch agent works one task at a time"),
    ("bad-workflow.yaml", r"variants\.rr-2\.workflow \(line 4\): unknown workflow 'round-robin'"),
    ("bad-count.yaml", r"variants\.0\.agents\.count \(line 8\): says 5, but the agents defined make 4"),
    ("bad-same-as.yaml", r"variants\.swarm-2\.launch\.1\.instruction \(line 8\): '\(same as bee-9\)': this variant has no agent 'bee-9'"),
    ("bad-mixed-workflow.yaml", r"agents\.definitions\.1\.workflow \(line 8\): 'swarm' is not the variant's workflow"),
    ("bad-template.yaml", r"template\.source \(line 3\): template 'experiments/templates/browser-nowhere\.json' is not beside the file"),
    ("bad-shape.yaml", r"not an experiment file orch knows; it reads: orch's own .*seed 004's"),
]


@pytest.mark.parametrize("name,needle", BAD, ids=[b[0] for b in BAD])
def test_a_key_orch_cannot_honour_is_one_line_and_nothing_is_written(name, needle, tmp_path, capsys):
    f = FIX / name
    results = tmp_path / "results"
    code, out, err = cli(capsys, "run", "--experiment", str(f), "--variant", "any", "--results", str(results))
    assert code == 1 and err.count("\n") == 1, err
    assert re.match(rf"orch: error: {re.escape(str(f))}: {needle}", err), err
    assert not results.exists()


def _write(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "x.yaml"
    f.write_text(text)
    return f


@pytest.mark.parametrize("text,needle", [
    # validated by orch's models, reported at the file's own key
    ("variants:\n  p-2:\n    workflow: swarm\n    template: browser-parallel\n    launch:\n      - {worker_id: a}\n      - {worker_id: w/1}\n",
     "variants.p-2.launch.1.worker_id (line 7): Value error, name 'w/1' contains a path separator"),
    ("variants:\n  s-2:\n    workflow: swarm\n    template: browser-parallel\n    launch:\n      - {worker_id: a}\n      - {worker_id: a}\n",
     "variants.s-2.launch.1.worker_id (line 7): agent id 'a' is given twice in this variant"),
    ("workflow: swarm\ntemplate: browser-parallel\nruns:\n  - {name: p, agents: 1, workflow: push}\n",
     "runs.0.agents (line 4): workflow 'push' has a coordinator but no worker"),
    ("workflow: swarm\ntemplate: browser-parallel\nruns:\n  - {name: p, agents: 3}\nvariants:\n  x: {}\n",
     "runs (line 4): a file has variants: or runs:, not both"),
    ("template: {source: browser-parallel}\nvariants:\n  - name: h\n    workflow: hierarchical\n    agents:\n      count: 2\n"
     "      definitions: [{id: lead, role: lead}, {id: boss, role: lead}]\n",
     "variants.0.agents.definitions.1 (line 7): a second coordinator or lead: orch runs one lead per variant"),
    ("template: {source: browser-parallel}\nvariants:\n  - name: h\n    workflow: hierarchical\n    agents: {count: 2, definitions: [{id: a}, {id: b}]}\n",
     "variants.0.agents (line 5): workflow 'hierarchical' needs one lead among its agents"),
    ("template: {source: browser-parallel}\nvariants:\n  - name: s\n    workflow: swarm\n    agents: {count: 2, definitions: [{id: lead}, {id: b}]}\n",
     "variants.0.agents.definitions.0.id (line 5): agent lead is a coordinator or lead (by its id, tags or role), but workflow 'swarm'"),
    ("template: {source: browser-parallel}\nvariants:\n  - name: s\n    workflow: swarm\n    agents: {count: 2, definitions: [{id: w, count: 2}]}\n",
     "variants.0.agents.definitions.0.id (line 5): 2 agents cannot share the id 'w': number them with {n}"),
    ("template: {source: browser-parallel, instantiate_options: {reset_status: false}}\nvariants:\n  - {name: s, workflow: swarm, agents: {count: 1}}\n",
     "template.instantiate_options.reset_status (line 1): False: orch always starts a run from the template's tasks reset to pending"),
    ("template: {source: browser-parallel}\nexecution: {timeout_seconds: 0}\nvariants:\n  - {name: s, workflow: swarm, agents: {count: 1}}\n",
     "execution.timeout_seconds (line 2): must be a number of seconds above 0, not 0"),
    ("name: one\nworkflow: push\ntemplate: browser-parallel\nagents:\n  total: 2\n  definitions:\n    - {id: c, role: coordinator}\n"
     "    - {id: w, role: specialist}\n", "agents.definitions.1.role (line 8): 'specialist': workflow 'push' (orch's push) has no such role"),
    ("name: one\nworkflow: push\ntemplate: browser-parallel\nagents:\n  total: 2\n  definitions:\n    - {id: c, role: boss}\n",
     "agents.definitions.0.role (line 7): unknown role 'boss': orch's are worker, coordinator, lead, solo, specialist"),
    ("name: one\nworkflow: solo\ntemplate: browser-parallel\nagents: {total: 2}\n", "agents (line 4): workflow 'solo' runs exactly one agent, not 2"),
    ("template: {source: browser-parallel}\nvariants:\n  - {name: s, workflow: swarm, agents: {count: 1}}\ncomparison: {baseline: t}\n",
     "comparison.baseline (line 4): 't' is not a variant of the experiment; it has: s"),
    ("name: one\nworkflow: push\ntemplate: browser-parallel\nagents:\n  total: 2\n  definitions:\n    - {id: c, role: coordinator}\n"
     "    - {id: w, role: worker, prompt: '(same as w)'}\n",
     "agents.definitions.1.prompt (line 8): '(same as w)': the instructions refer to each other in a circle"),
])
def test_bad_keys_are_named_with_their_line(tmp_path, text, needle):
    f = _write(tmp_path, text)
    with pytest.raises(InputError) as e:
        load_experiment(f)
    assert str(e.value).startswith(f"{f}: {needle}"), str(e.value)


def test_a_template_is_looked_up_beside_the_file_then_in_the_working_directory(tmp_path, monkeypatch):
    text = "workflow: swarm\ntemplate: experiments/templates/browser-parallel.json\nruns:\n  - {name: s, agents: 1}\n"
    here, cwd = tmp_path / "here", tmp_path / "cwd"
    for d in (here, cwd):
        (d / "experiments" / "templates").mkdir(parents=True)
    f = here / "x.yaml"
    f.write_text(text)
    monkeypatch.chdir(cwd)
    assert load_experiment(f).template == shipped(PARALLEL)  # neither beside nor here: the shipped one
    in_cwd = cwd / "experiments" / "templates" / "browser-parallel.json"
    shutil.copy(shipped(PHASED), in_cwd)
    assert load_experiment(f).template == str(in_cwd.resolve())
    beside = here / "experiments" / "templates" / "browser-parallel.json"
    shutil.copy(shipped(PHASED), beside)
    assert load_experiment(f).template == str(beside.resolve())  # beside the file comes first


def test_same_as_may_name_one_of_numbered_agents(tmp_path):
    f = _write(tmp_path, "template: {source: browser-parallel}\nvariants:\n  - name: s\n    workflow: swarm\n    agents:\n"
                         "      count: 3\n      definitions:\n        - {id: 'bee-{n}', count: 2, prompt: Claim and finish.}\n"
                         "        - {id: scout, prompt: '(same as bee-2)'}\n")
    assert [a.instruction for a in load_experiment(f).variants[0].agents] == ["Claim and finish.", "Claim and finish."]
