"""Planning agent-driven variants (``coordination: agents``): who the agents are, what their runners
are told, and the one-line errors for what cannot run -- all before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from coordstore.errors import AgentError, InputError
from orchestrator.runs.experiment import load_experiment
from orchestrator.runs.launch import RunRequest, plan_runs
from orchestrator.runs.resources import experiment_files
from orchestrator.supervision.control import RunController


def plan(tmp_path: Path, variant: dict, **top):
    exp = {"experiment": {"id": "p"}, "template": "browser-parallel", "execution": {"runs": 1},
           "variants": [{"name": "v", "coordination": "agents", **variant}], **top}
    f = tmp_path / "exp.yaml"
    f.write_text(yaml.safe_dump(exp))
    [(spec, paths, *_)] = plan_runs(RunRequest(variant="v", experiment=f, results=tmp_path / "results"))
    assert not (tmp_path / "results").exists()  # planning writes nothing
    return spec, paths


def roster(spec) -> list[tuple]:
    return [(a.id, a.role, a.kind, a.tags, a.instruction) for a in spec.agents]


def test_a_number_of_agents_gets_the_dispatcher_the_policy_has_played_by_the_variants_kind(tmp_path):
    spec, _ = plan(tmp_path, {"policy": "push", "agents": 2})
    assert spec.coordination == "agents"
    assert roster(spec) == [("coordinator", "coordinator", "sim", None, ""), ("w1", "worker", "sim", None, ""),
                            ("w2", "worker", "sim", None, "")]
    spec, _ = plan(tmp_path, {"policy": "hybrid", "agents": 1})
    assert [a.id for a in spec.agents] == ["lead", "w1"]
    spec, _ = plan(tmp_path, {"policy": "pull", "agents": 3})
    assert [a.role for a in spec.agents] == ["worker"] * 3


def test_definitions_keep_their_ids_numbering_roles_tags_and_instructions(tmp_path):
    agents = [{"id": "boss", "role": "coordinator", "instruction": "assign everything", "options": {"turn_s": 2}},
              {"id": "dev-{n}", "count": 2, "tags": ["code"], "instruction": "wait for work"},
              {"count": 1}]
    spec, paths = plan(tmp_path, {"policy": "push", "agents": agents})
    assert roster(spec) == [("boss", "coordinator", "sim", None, "assign everything"),
                            ("dev-1", "worker", "sim", ["code"], "wait for work"),
                            ("dev-2", "worker", "sim", ["code"], "wait for work"), ("w1", "worker", "sim", None, "")]
    # what each runner is told: its coordination, its role and instruction, the options of its kind
    ctl = RunController(spec, paths, store=None)
    boss = ctl.runner_config(spec.agents[0])
    assert (boss.coordination, boss.role, boss.policy, boss.instruction, boss.worktree) == ("agents", "coordinator", "push",
                                                                                           "assign everything", None)
    assert boss.kind_options["turn_s"] == 2
    dev = ctl.runner_config(spec.agents[1])
    assert dev.coordination == "agents" and dev.worktree and dev.worktree.endswith("dev-1")


@pytest.mark.parametrize("variant,words", [
    ({"policy": "pull", "agents": [{"id": "same", "count": 2}]}, "'same' names 2 agents (count); number them with {n}"),
    ({"policy": "pull", "agents": [{"id": "x"}, {"id": "x"}]}, "agent id 'x' is used twice"),
    ({"policy": "relay", "agents": 2}, "plays no specialist under policy relay"),
    ({"policy": "pull", "agents": 2, "kind": "script"}, "'script' cannot play a role in agent-driven variants"),
    ({"policy": "pull", "agents": 2, "kind_options": {"choose_among": 0}}, "choose_among=0"),
    ({"policy": "push", "agents": 2, "policy_options": {"dispatch_latency_ms": 150}}, "policy_options (dispatch_latency_ms) do not apply"),
    ({"policy": "pull", "agents": [{"role": "lead"}, {"count": 2}]}, "plays no lead under policy pull"),
])
def test_what_cannot_run_agent_driven_is_one_line_before_anything_is_written(tmp_path, variant, words):
    with pytest.raises((InputError, AgentError)) as e:
        plan(tmp_path, variant)
    msg = str(e.value)
    assert words in msg and "\n" not in msg and "'v'" in msg
    assert not (tmp_path / "results").exists()


def test_the_shipped_agent_driven_variants_plan(tmp_path):
    [f] = [f for f in experiment_files() if f.name == "agents.yaml"]
    exp = load_experiment(f)
    driven = [v.name for v in exp.variants if v.coordination == "agents"]
    assert {"agents-push-4", "agents-pull-4", "agents-hybrid-4", "agents-pull-8", "agents-self-decomposed"} <= set(driven)
    for name in driven:
        [(spec, *_)] = plan_runs(RunRequest(variant=name, experiment=f, results=tmp_path / "results", runs=1))
        assert spec.coordination == "agents" and all(a.kind == "sim" for a in spec.agents)


@pytest.mark.parametrize("coordination", ["agents", "orch"])
def test_a_task_whose_needed_tags_no_agent_has_is_one_line_at_plan_time(tmp_path, coordination):
    """browser-phased's tasks need designer, implementer or tester: workers tagged only 'worker'
    would poll until the run timed out."""
    variant = {"policy": "pull", "coordination": coordination, "agents": [{"count": 2, "tags": ["worker"]}],
               "template": "browser-phased"}
    with pytest.raises(InputError) as e:
        plan(tmp_path, variant)
    line = str(e.value)
    assert "variant 'v'" in line and "needs tags designer that no agent has" in line and "w1: worker" in line
    assert "\n" not in line and not (tmp_path / "results").exists()
    fitting = {**variant, "agents": [{"tags": ["designer", "implementer"]}, {"tags": ["tester"]}]}
    spec, _ = plan(tmp_path, fitting)  # every task fits some agent: it plans
    assert [a.tags for a in spec.agents] == [["designer", "implementer"], ["tester"]]
