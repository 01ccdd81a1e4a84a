"""Experiment files: the shipped ones validate, lookups name their candidates, errors name the line."""

from __future__ import annotations

import textwrap

import pytest

from coordstore.errors import InputError
from coordstore.graph import validate
from coordstore.templates import load_graph
from orchestrator.runs.experiment import find_variant, load_experiment
from orchestrator.runs.resources import experiment_files, find_template, template_files

SHIPPED_TEMPLATES = {"browser-parallel", "browser-phased", "tiny-feature", "medium-feature",
                     "large-refactor", "independent-batch", "pipeline"}


def test_every_shipped_experiment_validates_and_its_templates_load():
    files = experiment_files()
    assert {f.name for f in files} >= {"coordination.yaml", "baseline.yaml", "relay.yaml", "decomposition.yaml"}
    names = []
    for f in files:
        exp = load_experiment(f)
        for v in exp.variants:
            names.append(v.name)
            graph = load_graph(find_template(v.template or exp.template, f.parent))
            validate(graph)
    # the original experiment matrix
    assert {"push-4", "pull-4", "hybrid-4", "pull-1", "pull-2", "pull-8", "solo-1", "relay-4"} <= set(names)
    assert len(names) == len(set(names)), "variant names must be unique across experiments"


def test_shipped_templates_are_complete():
    assert SHIPPED_TEMPLATES <= set(template_files())
    for name in SHIPPED_TEMPLATES:
        g = load_graph(template_files()[name])
        ix = validate(g)
        for t in g.tasks:
            if ix.is_container(t.id):
                continue
            assert t.points and t.time_estimate_ms and t.file_scope, f"{name}: {t.id} lacks points/estimate/scope"


def test_unknown_variant_lists_candidates():
    with pytest.raises(InputError, match="no such variant.*coordination/push-4"):
        find_variant("push-99")


def test_ambiguous_variant_names_both(tmp_path, monkeypatch):
    body = textwrap.dedent("""\
        experiment: {id: %s}
        template: tiny-feature
        variants:
          - {name: twin, policy: pull, agents: 1}
        """)
    local = tmp_path / "experiments"  # a local ./experiments/ adds to the shipped ones
    local.mkdir()
    for n in ("a", "b"):
        (local / f"{n}.yaml").write_text(body % n)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="ambiguous: a/twin, b/twin"):
        find_variant("twin")
    assert find_variant("a/twin")[1].experiment.id == "a"
    assert find_variant("push-4")[1].experiment.id == "coordination"  # shipped ones still found


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("experiment: {id: x}\ntemplate: tiny-feature\nvariants:\n  - name: a\n    policy: [pull\n")
    with pytest.raises(InputError) as e:
        load_experiment(f)
    assert "bad.yaml" in str(e.value) and "line" in str(e.value)


def test_schema_error_names_key_path_and_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("experiment: {id: x}\ntemplate: tiny-feature\nvariants:\n  - name: a\n    policy: pull\n  - name: b\n    policy: sideways\n")
    with pytest.raises(InputError, match=r"bad.yaml: variants.1.policy \(line 7\)"):
        load_experiment(f)


def test_variant_execution_overrides_merge(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text(textwrap.dedent("""\
        experiment: {id: x}
        template: tiny-feature
        execution: {runs: 3, time_scale: 0.01, supervision: {stall_after_ms: 1000, loop_repeats: 4}}
        variants:
          - name: a
            policy: pull
            execution: {runs: 1, supervision: {stall_after_ms: 50}}
        """))
    exp = load_experiment(f)
    ex = exp.execution_for(exp.variant("a"))
    assert ex.runs == 1 and ex.time_scale == 0.01
    assert ex.supervision == {"stall_after_ms": 50, "loop_repeats": 4}


BASE = "experiment: {id: x}\ntemplate: tiny-feature\n"


@pytest.mark.parametrize("body,needle", [
    ("execution: {time_scale: .nan}\nvariants:\n  - {name: a, policy: pull}\n", "execution.time_scale (line 3): Input should be a finite number"),
    ("execution: {time_scale: .inf}\nvariants:\n  - {name: a, policy: pull}\n", "execution.time_scale (line 3): Input should be a finite number"),
    ("execution: {time_scale: 2}\nvariants:\n  - {name: a, policy: pull}\n", "execution.time_scale (line 3): Input should be less than or equal to 1"),
    ("execution: {timeout_s: .inf}\nvariants:\n  - {name: a, policy: pull}\n", "execution.timeout_s (line 3): Input should be a finite number"),
    ("execution: {runs: 1001}\nvariants:\n  - {name: a, policy: pull}\n", "execution.runs (line 3)"),
    ("execution: {seed: -1}\nvariants:\n  - {name: a, policy: pull}\n", "execution.seed (line 3)"),
    ("execution: {supervision: {kill_grace_s: .inf}}\nvariants:\n  - {name: a, policy: pull}\n",
     "execution.supervision.kill_grace_s (line 3): Input should be a finite number"),
    ("variants:\n  - {name: a, policy: pull}\nsuccess_criteria:\n  - {metric: efficiency, op: '>', value: .nan}\n",
     "success_criteria.0.value (line 6): Input should be a finite number"),
    ("variants:\n  - {name: a, policy: pull, agents: 0}\n", "variants.0.agents (line 4): Input should be greater than or equal to 1"),
    ("variants:\n  - {name: a, policy: pull, agents: 257}\n", "variants.0.agents (line 4): Input should be less than or equal to 256"),
    ("variants:\n  - name: a\n    policy: pull\n    agents: [{count: 0}]\n",
     "variants.0.agents.0.count (line 6): Input should be greater than or equal to 1"),
    ("variants:\n  - {name: a, policy: pull, agents: [{count: 200}, {count: 100}]}\n", "variants.0 (line 4): agents: 300 in all, at most 256"),
    ("variants:\n  - name: a\n    policy: pull\n    execution: {time_scale: .nan}\n",
     "variants.0.execution.time_scale (line 6): Input should be a finite number"),
    ("variants:\n  - name: a\n    policy: pull\n    execution: {supervision: {stall_after_ms: 0}}\n",
     "variants.0.execution.supervision.stall_after_ms (line 6): Input should be greater than 0"),
])
def test_numbers_are_finite_and_in_range(tmp_path, body, needle):
    """Each bad number is named by file, key path and line, whichever key or override carries it."""
    f = tmp_path / "x.yaml"
    f.write_text(BASE + body)
    with pytest.raises(InputError) as e:
        load_experiment(f)
    assert str(e.value).startswith(f"{f}: {needle}"), str(e.value)


def test_a_binary_experiment_file_is_named(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    with pytest.raises(InputError, match=r"x.yaml: not a text file \(not UTF-8 at byte 0\)"):
        load_experiment(f)


def test_an_unknown_role_is_named_at_load(tmp_path):
    """A role is one of the roles runners know, checked with the file, before any run exists
    (it used to reach the runner, whose agent then died at every respawn)."""
    f = tmp_path / "x.yaml"
    f.write_text(BASE + "variants:\n  - name: a\n    policy: pull\n    agents: [{count: 2}, {role: boss}]\n")
    with pytest.raises(InputError) as e:
        load_experiment(f)
    assert str(e.value).startswith(f"{f}: variants.0.agents.1.role (line 6): Input should be 'worker', 'coordinator'"), str(e.value)


def test_numbered_agent_ids_keep_their_n(tmp_path):
    """``{n}`` is checked as a directory name once numbered, and kept, for whoever numbers the agents
    (the check used to return the numbered text, so every agent of the definition was ``w-1``)."""
    f = tmp_path / "x.yaml"
    f.write_text(BASE + "variants:\n  - name: a\n    policy: pull\n    agents: [{id: 'w-{n}', count: 3}]\n")
    assert load_experiment(f).variants[0].agents[0].id == "w-{n}"
    f.write_text(BASE + "variants:\n  - name: a\n    policy: pull\n    agents: [{id: 'w/{n}', count: 3}]\n")
    with pytest.raises(InputError, match=r"variants.0.agents.0.id \(line 6\): Value error, name 'w/1' contains a path separator"):
        load_experiment(f)
