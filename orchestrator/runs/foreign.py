"""Experiment files written for task-graph-mcp, and seed 004's schema, run as written: recognised
by their keys and translated into orch's experiment (as data, which ``load_experiment`` then
validates like an orch file). Every variant they define is agent-driven (``coordination: agents``).

The shapes, by the keys that tell them apart:

* ``variants:`` a mapping of name -> ``{workflow, template, agents: {total, coordinator, workers},
  launch: [{worker_id, tags, workflow, instruction}]}`` (task-graph-mcp's push experiment);
* ``runs:`` a list of ``{name, agents: N, agent_config: {workflow, tags, max_claims}}`` under a
  top-level ``workflow:`` and ``template:`` (task-graph-mcp's pull experiment);
* one variant: top-level ``name``, ``workflow``, ``agents: {total, definitions: [{id, role, tags,
  workflow, prompt}]}``, ``template: {source}`` (task-graph-mcp's hybrid experiment);
* seed 004's: ``experiment: {id}``, ``template: {source, instantiate_options}``, ``variants:`` a list
  of ``{name, workflow, agents: {count, config: {tags, max_claims}} | {count, definitions}}``.

Shared by all: ``experiment: {id, name, hypothesis}`` (the id falls back to the experiment's name,
the file's top-level name, the file name), ``comparison: {baseline, alpha, hypotheses}`` (seed
004's; ``baseline: none`` is no baseline, its hypotheses are text), ``metrics:`` and ``success_criteria:`` as
``views.asks`` reads them, ``execution:``/``run:`` settings (``foreignkit.settings_of``). A
variant's workflow is its own, else the file's; an agent's or a config's must agree with it.
Agents: ``foreignagents``. Everything else is listed as ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.runs.foreignagents import Agent, check_max_claims, declared_counts, entry, finish, numbered, policy_of
from orchestrator.runs.foreignkit import ForeignError, Key, Out, as_count, as_list, as_map, as_str, as_tags, settings_of, template_of
from orchestrator.views.asks import asked_criteria, asked_metrics, defined_names

VARIANT_MAP, RUNS, SINGLE, SEED004 = "variants-mapping", "runs-list", "single-variant", "seed-004"
SHAPES = {
    VARIANT_MAP: "task-graph-mcp's variants as a mapping (variants: {NAME: {workflow, launch: [...]}})",
    RUNS: "task-graph-mcp's runs list (workflow:, template:, runs: [{name, agents: N, agent_config}])",
    SINGLE: "task-graph-mcp's single variant (name:, workflow:, agents: {total, definitions: [...]})",
    SEED004: "seed 004's (template: {source}, variants: [{name, workflow, agents: {count, ...}}])",
}
ORCH_SHAPE = "orch's own (experiment: {id}, template:, variants: [{name, policy, agents}])"
KNOWN_SHAPES = "; ".join([ORCH_SHAPE, *SHAPES.values()])
TOP_KEYS = {"experiment", "template", "execution", "run", "metrics", "success_criteria", "name", "workflow", "comparison"}


@dataclass
class Translation:
    shape: str
    data: dict  # orch's experiment schema
    ignored: list[str]  # key paths orch does not act on, in the order met
    origin: dict[Key, Key]  # orch key path -> the file's key path


def shape_of(data: dict) -> str | None:
    """The foreign shape of ``data`` by its keys; None for orch's own (or nothing orch knows)."""
    marks = []
    variants = data.get("variants")
    if isinstance(variants, dict):
        marks.append(("variants", VARIANT_MAP))
    elif isinstance(variants, list):
        by_workflow = any(isinstance(v, dict) and "workflow" in v for v in variants)
        by_policy = any(isinstance(v, dict) and "policy" in v for v in variants)
        foreign = isinstance(data.get("template"), dict) or (by_workflow and not by_policy)
        marks.append(("variants", SEED004 if foreign else None))
    if "runs" in data:
        marks.append(("runs", RUNS))
    if isinstance(data.get("agents"), dict):
        marks.append(("agents", SINGLE))
    if len(marks) > 1:
        raise ForeignError((marks[1][0],), f"a file has {marks[0][0]}: or {marks[1][0]}:, not both "
                                           "(they are two different shapes of experiment file)")
    return marks[0][1] if marks else None


def translate(path: Path, data: dict, shape: str, most: int) -> Translation:
    """``data`` of ``shape`` as orch's experiment; ``most``: agents per variant at most."""
    out = Out(path)
    build, keys = {VARIANT_MAP: (_variants_mapping, {"variants"}), RUNS: (_runs, {"runs"}),
                   SINGLE: (_single, {"agents"}), SEED004: (_variants_list, {"variants"})}[shape]
    out.rest(data, (), TOP_KEYS | keys)  # whole sections first, in the file's order
    _head(out, data)
    run_template = None
    for k in ("execution", "run"):
        if k in data:
            run_template = settings_of(out, data[k], (k,)) or run_template
    template = None
    if "template" in data:
        template = template_of(out, data["template"], ("template",))
        out.came_from(("template",), ("template",))
        if run_template:  # a second template the top-level one overrides
            out.ignore(run_template)
    elif run_template:
        template = template_of(out, data[run_template[0]][run_template[1]], run_template)
        out.came_from(("template",), run_template)
    variants = build(out, data, most)
    if "comparison" in data:
        _comparison(out, data["comparison"])
    if template is None:
        if not all("template" in v for v in variants):
            raise ForeignError(("template",), "missing: name the task template (template: PATH or template: {source: PATH})")
        template = variants[0]["template"]
    metrics = asked_metrics(data.get("metrics"))
    criteria = asked_criteria(data.get("success_criteria"), defined_names(data.get("metrics")))
    out.data.update(template=template, variants=variants, metrics=metrics.items, success_criteria=criteria.items)
    for j, key in enumerate(metrics.keys):  # a defined metric's errors name the file's own keys
        out.came_from(("metrics", j), key)
    for item in metrics.ignored + criteria.ignored:
        out.ignore(item)
    return Translation(shape, out.data, out.ignored, out.origin)


def _head(out: Out, data: dict) -> None:
    head = as_map(data.get("experiment", {}), ("experiment",))
    out.rest(head, ("experiment",), {"id", "name", "hypothesis"})
    for key, value in ((("experiment", "id"), head.get("id")), (("experiment", "name"), head.get("name")),
                       (("name",), data.get("name"))):
        if value is not None:
            out.came_from(("experiment", "id"), key)
            break
    else:
        value = out.path.stem
    name = head.get("name", data.get("name", ""))
    out.data["experiment"] = {"id": str(value), "name": str(name), "hypothesis": str(head.get("hypothesis", "")).strip()}


def _comparison(out: Out, raw: Any) -> None:
    """Seed 004's ``comparison: {baseline, hypotheses: {name: text}}`` (and orch's ``alpha``)."""
    body = as_map(raw, ("comparison",))
    out.rest(body, ("comparison",), {"baseline", "alpha", "hypotheses"})
    into = {}
    base = body.get("baseline")
    if base is not None and not (isinstance(base, str) and base.strip().lower() == "none"):
        into["baseline"] = as_str(base, ("comparison", "baseline"))
        out.came_from(("comparison", "baseline"), ("comparison", "baseline"))
    if "alpha" in body:
        into["alpha"] = body["alpha"]
        out.came_from(("comparison", "alpha"), ("comparison", "alpha"))
    out.data["comparison"] = into
    hypotheses = as_map(body.get("hypotheses", {}), ("comparison", "hypotheses"))
    out.data["experiment"]["hypotheses"] = [{"id": str(k), "text": " ".join(str(v).split())} for k, v in hypotheses.items()]


def _workflow(body: dict, key: Key, data: dict) -> tuple[Any, str, Key]:
    """A variant's workflow (its own, else the file's) as (workflow, policy, key)."""
    if "workflow" in body:
        return body["workflow"], policy_of(body["workflow"], key + ("workflow",)), key + ("workflow",)
    if "workflow" in data:
        return data["workflow"], policy_of(data["workflow"], ("workflow",)), ("workflow",)
    raise ForeignError(key + ("workflow",), "missing: one of swarm, push, hierarchical, relay, solo")


def _variant(out: Out, i: int, name: Any, name_key: Key, key: Key, policy: str, agents: list[dict],
             template: str | None, wf_key: Key) -> dict:
    v = {"name": name, "policy": policy, "coordination": "agents", "agents": agents}
    if template is not None:
        v["template"] = template
        out.came_from(("variants", i, "template"), key + ("template",))
    out.came_from(("variants", i), key)
    out.came_from(("variants", i, "name"), name_key)
    out.came_from(("variants", i, "policy"), wf_key)
    return v


def _own_template(out: Out, body: dict, key: Key) -> str | None:
    return template_of(out, body["template"], key + ("template",)) if "template" in body else None


def _config_tags(out: Out, cfg: Any, key: Key, policy: str) -> list[str]:
    """``agent_config`` / ``agents.config``: what every agent given by number has."""
    cfg = as_map(cfg, key)
    if "max_claims" in cfg:
        check_max_claims(cfg["max_claims"], key + ("max_claims",))
    if "workflow" in cfg and policy_of(cfg["workflow"], key + ("workflow",)) != policy:
        raise ForeignError(key + ("workflow",), f"{cfg['workflow']!r} is not the variant's workflow: orch runs one workflow per variant")
    out.rest(cfg, key, {"tags", "max_claims", "workflow"})
    return as_tags(cfg.get("tags", []), key + ("tags",))


def _agents_block(out: Out, block: Any, key: Key, policy: str, most: int, tags: list[str] | None = None) -> list[Agent]:
    """``agents: N`` or ``agents: {total|count, coordinator, workers, definitions | config}``."""
    if isinstance(block, int) and not isinstance(block, bool):
        return numbered(policy, as_count(block, key, most), tags or [], key)
    block = as_map(block, key, "a number or a mapping")
    if "definitions" in block:
        if "config" in block:
            raise ForeignError(key + ("config",), "agents have definitions or a config, not both")
        items = as_list(block["definitions"], key + ("definitions",))
        agents = [entry(out, e, key + ("definitions", j), policy, "id", most) for j, e in enumerate(items)]
    else:
        if "config" in block:
            tags = _config_tags(out, block["config"], key + ("config",), policy)
        total_key = next((k for k in ("total", "count") if k in block), None)
        dispatchers = as_count(block["coordinator"], key + ("coordinator",), most, 0) if "coordinator" in block else None
        if total_key is not None:
            total = as_count(block[total_key], key + (total_key,), most)
        elif dispatchers is not None and "workers" in block:
            total = dispatchers + as_count(block["workers"], key + ("workers",), most, 0)
        else:
            raise ForeignError(key, "give the number of agents (total: or count:), or coordinator: and workers:")
        agents = numbered(policy, total, tags or [], key, dispatchers)
    declared_counts(out, agents, block, key)
    return agents


def _variants_mapping(out: Out, data: dict, most: int) -> list[dict]:
    variants = []
    for i, (name, body) in enumerate(data["variants"].items()):
        key = ("variants", name)
        body = as_map(body, key)
        workflow, policy, wf_key = _workflow(body, key, data)
        own = _own_template(out, body, key)
        if "launch" in body:
            launch = as_list(body["launch"], key + ("launch",))
            agents = [entry(out, e, key + ("launch", j), policy, "worker_id", most) for j, e in enumerate(launch)]
            if "agents" in body:
                declared_counts(out, agents, as_map(body["agents"], key + ("agents",)), key + ("agents",))
            akey = key + ("launch",)
        elif "agents" in body:
            agents, akey = _agents_block(out, body["agents"], key + ("agents",), policy, most), key + ("agents",)
        else:
            raise ForeignError(key + ("launch",), "missing: the variant's agents (launch: [...] or agents: {total, ...})")
        out.rest(body, key, {"workflow", "template", "agents", "launch"})
        defs = finish(out, agents, policy, workflow, akey, ("variants", i, "agents"), most)
        variants.append(_variant(out, i, name, key, key, policy, defs, own, wf_key))
    return variants


def _runs(out: Out, data: dict, most: int) -> list[dict]:
    variants = []
    for i, body in enumerate(as_list(data["runs"], ("runs",))):
        key = ("runs", i)
        body = as_map(body, key)
        name = as_str(body.get("name"), key + ("name",))
        workflow, policy, wf_key = _workflow(body, key, data)
        tags = _config_tags(out, body["agent_config"], key + ("agent_config",), policy) if "agent_config" in body else []
        if "agents" not in body:
            raise ForeignError(key + ("agents",), "missing: the number of agents")
        agents = _agents_block(out, body["agents"], key + ("agents",), policy, most, tags)
        out.rest(body, key, {"name", "workflow", "agents", "agent_config", "template"})
        defs = finish(out, agents, policy, workflow, key + ("agents",), ("variants", i, "agents"), most)
        variants.append(_variant(out, i, name, key + ("name",), key, policy, defs, _own_template(out, body, key), wf_key))
    return variants


def _single(out: Out, data: dict, most: int) -> list[dict]:
    workflow, policy, wf_key = _workflow({}, (), data)
    agents = _agents_block(out, data["agents"], ("agents",), policy, most)
    defs = finish(out, agents, policy, workflow, ("agents",), ("variants", 0, "agents"), most)
    name = data.get("name", out.data["experiment"]["id"])
    return [_variant(out, 0, name, ("name",) if "name" in data else ("experiment", "id"), (), policy, defs, None, wf_key)]


def _variants_list(out: Out, data: dict, most: int) -> list[dict]:
    variants = []
    for i, body in enumerate(data["variants"]):
        key = ("variants", i)
        body = as_map(body, key)
        name = as_str(body.get("name"), key + ("name",))
        workflow, policy, wf_key = _workflow(body, key, data)
        if "agents" not in body:
            raise ForeignError(key + ("agents",), "missing: the variant's agents (agents: {count, config | definitions})")
        agents = _agents_block(out, body["agents"], key + ("agents",), policy, most)
        out.rest(body, key, {"name", "workflow", "agents", "template"})
        defs = finish(out, agents, policy, workflow, key + ("agents",), ("variants", i, "agents"), most)
        variants.append(_variant(out, i, name, key + ("name",), key, policy, defs, _own_template(out, body, key), wf_key))
    return variants
