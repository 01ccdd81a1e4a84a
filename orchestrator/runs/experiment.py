"""Experiment definitions: YAML files validated into pydantic models, and finding a variant by name.

An error names the file, the key path and the line, e.g.
``experiments/x.yaml: variants.1.agents.0.count (line 14): Input should be ...``.

Besides orch's own schema, the files written for task-graph-mcp and seed 004's schema load too
(``foreign``): translated into the same models, their errors naming the file's own keys, and what
orch does not act on noted once on stderr when such a file is run (``find_variant``).

Every number is finite and in range here, once, for whatever sets it: the YAML, a variant's
``execution`` override, or an `orch run` flag layered on top (``launch.plan_runs``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, Tag, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from coordstore.errors import InputError, UsageError
from coordstore.models import BlockerFailurePolicy, Coordination, Role
from coordstore.paths import PathEscape, path_component
from coordstore.snapshot import read_text

from agents.config import MergeMode

from orchestrator.runs.foreign import KNOWN_SHAPES, ForeignError, Translation, shape_of, translate
from orchestrator.runs.hypotheses import Comparison, Hypothesis, unknown_name
from orchestrator.runs.mergeverify import VerifySpec
from orchestrator.runs.resources import experiment_files
from orchestrator.views.asks import DIRECTIONS, default_direction
from orchestrator.views.custommetrics import Definition, DefinitionError, check
from orchestrator.supervision.verdicts import SupervisionConfig

Policy = Literal["pull", "push", "hybrid", "solo", "relay", "best_of"]
# working agents per variant: each is a process with its own git worktree (a full checkout), so a
# typo like 4000 would fork thousands of processes and checkouts before anyone noticed; 256 is far
# past the parallelism any task graph here offers (and a few hundred processes fit one machine)
MAX_AGENTS = 256
# replications per variant: statistics want tens; a typo of millions would plan millions of runs
MAX_RUNS = 1000
MAX_SEED = 2**32 - 1  # a 32-bit seed, what most random generators take; replication i uses seed + i - 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _one_directory(name: str) -> str:
    """Experiment ids and variant names are directories of the results (``<exp>/<variant>/<run>``)
    and parts of run ids: a ``/`` or ``..`` would put a run outside them."""
    try:
        return path_component(name, "name")
    except PathEscape as e:
        raise ValueError(str(e)) from None


class AgentDef(_Strict):
    """One agent of a variant, or ``count`` identical ones."""

    count: int = Field(default=1, ge=1, le=MAX_AGENTS)
    role: Role = "worker"
    tags: list[str] = Field(default_factory=list)
    kind: str | None = None  # None: the variant's kind
    options: dict[str, Any] = Field(default_factory=dict)
    # the agent's id (``{n}`` numbers each of ``count``); None: orch names it (w1, w2, ...)
    id: str | None = None
    instruction: str = ""  # agent-driven variants: what the agent is told its role is

    @field_validator("id")
    @classmethod
    def _id_is_a_directory(cls, v: str | None) -> str | None:
        if v is not None:
            _one_directory(v.replace("{n}", "1"))  # checked as numbered; kept with its {n}
        return v


# ``agents: 4`` or a list of AgentDefs; the discriminator validates only the form given, so an
# error speaks of that form (``agents.0.count``), not of both
Agents = Annotated[
    Annotated[int, Field(ge=1, le=MAX_AGENTS), Tag("number")] | Annotated[list[AgentDef], Field(min_length=1), Tag("list")],
    Discriminator(lambda v: "list" if isinstance(v, list) else "number"),
]


class Variant(_Strict):
    name: str = Field(min_length=1)
    policy: Policy
    # orch: the policy's own algorithm decides who does what; agents: the agents decide, through
    # the coordination tools, playing the roles the policy has (coordinator, lead, workers)
    coordination: Coordination = "orch"
    agents: Agents = 4
    kind: str = "sim"
    kind_options: dict[str, Any] = Field(default_factory=dict)
    policy_options: dict[str, Any] = Field(default_factory=dict)
    template: str | None = None  # overrides the experiment's template
    # sim | replay | a script file: orch runs `orch model-server` with it and points every agent at it
    model_server: str | None = None
    execution: dict[str, Any] = Field(default_factory=dict)  # per-variant execution overrides
    # a command run on the merged tree at the end (and after each merge, if asked): merged_verified
    verify: VerifySpec | None = None

    _name_is_a_directory = field_validator("name")(_one_directory)

    @model_validator(mode="after")
    def _bounded(self) -> "Variant":
        total = sum(d.count for d in self.worker_defs())
        if total > MAX_AGENTS:
            raise PydanticCustomError("too_many_agents", "agents: {total} in all, at most {most}", {"total": total, "most": MAX_AGENTS})
        return self

    def worker_defs(self) -> list[AgentDef]:
        if isinstance(self.agents, int):
            return [AgentDef(count=self.agents)]
        return self.agents


class Budget(_Strict):
    """What one run may spend: once its usage reaches either, no new task is dispatched."""

    usd: float | None = Field(default=None, gt=0)
    tokens: int | None = Field(default=None, gt=0)  # tokens.total: in + out + cached + thinking

    @model_validator(mode="after")
    def _some_limit(self) -> "Budget":
        if self.usd is None and self.tokens is None:
            raise PydanticCustomError("empty_budget", "give usd:, tokens: or both")
        return self


class Execution(_Strict):
    runs: int = Field(default=1, ge=1, le=MAX_RUNS)
    seed: int = Field(default=42, ge=0, le=MAX_SEED)
    # simulated ms per estimated ms; 1 runs each task for its estimate: slower has no use
    time_scale: float = Field(default=0.001, gt=0, le=1)
    timeout_s: float = Field(default=600, gt=0)
    store: str = "sqlite"  # a scheme (store inside the run dir) or a full URL
    merge_mode: MergeMode = "immediate"
    on_blocker_failure: BlockerFailurePolicy = "cancel"
    supervision: dict[str, Any] = Field(default_factory=dict)
    # failed or cancelled tasks fail the run (status failed, exit 1) unless the experiment accepts
    # them, as a fault-injection experiment does
    allow_failures: bool = False
    # rate limits: one AIMD limiter per provider shared by its agents, or each agent pausing alone
    backpressure: Literal["shared", "agent"] = "shared"
    budget: Budget | None = None  # per run (orchestrator.runs.budget)

    @field_validator("supervision")
    @classmethod
    def _thresholds(cls, v: dict[str, Any]) -> dict[str, Any]:
        SupervisionConfig.model_validate(v)  # checked here, at load, before any run directory exists
        return v


class Criterion(_Strict):
    metric: str
    op: Literal["<", "<=", ">", ">=", "==", "!="]
    value: float


class MetricSpec(_Strict):
    """A metric the experiment shows: one orch computes (by name), or its own, defined by a
    read-only SQL ``query`` over the run's view or a ``derived`` expression over other metrics
    (``views.custommetrics``). ``compare`` (seed 004's words) or ``direction`` says which way it is
    better; without either, orch's own metrics get their natural direction and defined ones none."""

    name: str = Field(min_length=1)
    query: str | None = Field(default=None, min_length=1)
    derived: str | None = Field(default=None, min_length=1)
    compare: Literal["lower_is_better", "higher_is_better", "neutral"] | None = None
    direction: Literal["lower", "higher", "neutral"] | None = None
    description: str = ""

    @model_validator(mode="after")
    def _one_direction(self) -> "MetricSpec":
        if self.compare is not None and self.direction is not None:
            raise PydanticCustomError("two_directions", "give compare: or direction:, not both")
        self.direction = DIRECTIONS[self.compare] if self.compare else self.direction or default_direction(self.name)
        return self

    def definition(self) -> Definition:
        return Definition(self.name, self.query, self.derived)


class ExperimentHead(_Strict):
    id: str = Field(min_length=1)
    name: str = ""
    hypothesis: str = ""
    hypotheses: list[Hypothesis] = Field(default_factory=list)  # testable claims, judged by the comparison

    _id_is_a_directory = field_validator("id")(_one_directory)


class Experiment(_Strict):
    experiment: ExperimentHead
    template: str
    repo: str | None = None
    execution: Execution = Field(default_factory=Execution)
    variants: list[Variant] = Field(min_length=1)
    verify: VerifySpec | None = None  # every variant's verify: unless it has its own
    metrics: list[MetricSpec] = Field(default_factory=list)
    success_criteria: list[Criterion] = Field(default_factory=list)
    comparison: Comparison = Field(default_factory=Comparison)
    # set by load_experiment, never by a file: the shape the file was written in, and (foreign
    # shapes) the keys orch does not act on, which `orch run` notes once
    _shape: str = PrivateAttr(default="orch")
    _ignored: list[str] = PrivateAttr(default_factory=list)

    @property
    def shape(self) -> str:
        return self._shape

    @property
    def ignored(self) -> list[str]:
        return list(self._ignored)

    @model_validator(mode="after")
    def _unique_variants(self) -> "Experiment":
        names = [v.name for v in self.variants]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"variant names repeat: {', '.join(sorted(dup))}")
        return self

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise UsageError(f"--variant {name!r}: experiment {self.experiment.id!r} has no such variant; it has: {', '.join(v.name for v in self.variants)}")

    def execution_for(self, variant: Variant) -> Execution:
        """The experiment's execution settings with the variant's overrides merged in (checked
        by ``load_experiment``; a ValidationError here means an experiment built in code)."""
        return Execution.model_validate(self.execution_data(variant))

    def execution_data(self, variant: Variant) -> dict[str, Any]:
        """``execution_for``'s input: the experiment's settings, the variant's merged in (a mapping
        such as ``supervision`` key by key)."""
        merged = self.execution.model_dump()
        for k, v in variant.execution.items():
            if isinstance(v, dict) and isinstance(merged.get(k), dict):
                merged[k] = {**merged[k], **v}
            else:
                merged[k] = v
        return merged


def _line_of(node: yaml.Node | None, path: tuple) -> int | None:
    """The 1-based line of the key path in a composed YAML node tree (the deepest part found)."""
    line = None
    for part in path:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            if nxt is None:
                break
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line


def _key_path(loc: tuple, data: Any, missing: bool) -> tuple:
    """The part of a pydantic error location that exists in the file: a union's branch labels
    (the ``number``/``list`` tags of ``agents``) are not keys anyone wrote."""
    out, node = [], data
    for i, part in enumerate(loc):
        if isinstance(node, dict) and (part in node or (missing and i == len(loc) - 1)):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            continue
        out.append(part)
    return tuple(out)


def _schema_error(path: Path, tree: yaml.Node | None, data: Any, e: ValidationError, prefix: tuple = ()) -> InputError:
    err = e.errors()[0]
    loc = _key_path(prefix + tuple(err["loc"]), data, err["type"] == "missing")
    return _error_at(path, tree, loc, err["msg"])


def _error_at(path: Path, tree: yaml.Node | None, key: tuple, msg: str) -> InputError:
    """``FILE: key.path (line N): msg``."""
    line = _line_of(tree, key)
    where = f" (line {line})" if line else ""
    return InputError(f"{path}: {'.'.join(str(p) for p in key) or '(top)'}{where}: {msg}")


def _file_key(tr: Translation | None, key: tuple) -> tuple:
    """An orch key path as the file wrote it: a translated file's own key it came from."""
    for cut in range(len(key), -1, -1) if tr else ():
        if key[:cut] in tr.origin:
            return tr.origin[key[:cut]] + key[cut:]
    return key


def _translated_error(path: Path, tree: yaml.Node | None, tr: Translation, e: ValidationError) -> InputError:
    """A validation error of a translated file, at the file's own key it came from."""
    err = e.errors()[0]
    return _error_at(path, tree, _file_key(tr, _key_path(tuple(err["loc"]), tr.data, err["type"] == "missing")), err["msg"])


def _check_metrics(path: Path, tree: yaml.Node | None, data: dict, exp: Experiment, tr: Translation | None) -> None:
    """The metrics the file names, as ``custommetrics.check`` judges them, refused at their key."""
    try:
        check([m.definition() for m in exp.metrics])
    except DefinitionError as e:
        key = _file_key(tr, ("metrics", e.index, e.field))
        entry = data
        for part in key[:-1]:
            entry = entry[part] if isinstance(entry, (dict, list)) else None
        if e.field == "derived" and isinstance(entry, dict) and "derived" not in entry and "derivation" in entry:
            key = key[:-1] + ("derivation",)  # task-graph-mcp's word for it
        raise _error_at(path, tree, key, str(e)) from e


def load_experiment(path: Path) -> Experiment:
    """Parse and validate an experiment file of any shape orch reads; InputError names file, key
    path and line."""
    text = read_text(path)
    try:
        data = yaml.safe_load(text)
        tree = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise InputError(f"{path}{where}: invalid YAML: {getattr(e, 'problem', e)}") from e
    known = f"{path}: not an experiment file orch knows; it reads: {KNOWN_SHAPES}"
    if not isinstance(data, dict):
        raise InputError(known)
    try:
        shape = shape_of(data)
        if shape is None and "variants" not in data:
            raise InputError(known)
        tr = translate(path, data, shape, MAX_AGENTS) if shape else None
    except ForeignError as e:
        raise _error_at(path, tree, e.key, str(e)) from e
    try:
        exp = Experiment.model_validate(tr.data if tr else data)
    except ValidationError as e:
        raise (_translated_error(path, tree, tr, e) if tr else _schema_error(path, tree, data, e)) from e
    for i, v in enumerate(exp.variants):  # each variant's overrides on top of the experiment's
        try:
            exp.execution_for(v)
        except ValidationError as e:
            raise _schema_error(path, tree, data, e, ("variants", i, "execution")) from e
    _check_metrics(path, tree, data, exp, tr)
    unknown = unknown_name([v.name for v in exp.variants], [m.name for m in exp.metrics], exp.experiment.hypotheses, exp.comparison)
    if unknown:
        key, msg = unknown
        raise _error_at(path, tree, tr.origin.get(key, key) if tr else key, msg)
    if tr:
        exp._shape, exp._ignored = tr.shape, tr.ignored
    return exp


def note_ignored(path: Path, exp: Experiment) -> None:
    """One line on stderr naming what a foreign file asks that orch does not act on."""
    if exp.ignored:
        print(f"orch: note: {path}: ignored (orch does not act on them): {', '.join(exp.ignored)}", file=sys.stderr)


def find_variant(name: str, experiment_file: Path | None = None, note: bool = True) -> tuple[Path, Experiment, Variant]:
    """The variant ``name`` in ``experiment_file``, or searched across every known experiment file.

    Unknown or ambiguous names list the candidates. ``note``: say what the file asks that orch
    ignores (off for the later variants of one `--all`, which read the same file).
    """
    if experiment_file is not None:
        exp = load_experiment(experiment_file)
        variant = exp.variant(name)
        if note:
            note_ignored(experiment_file, exp)
        return experiment_file, exp, variant
    hits, every = [], []
    for f in experiment_files():
        exp = load_experiment(f)
        for v in exp.variants:
            every.append(f"{exp.experiment.id}/{v.name}")
            if v.name == name or f"{exp.experiment.id}/{v.name}" == name:
                hits.append((f, exp, v))
    if len(hits) == 1:
        note_ignored(hits[0][0], hits[0][1])
        return hits[0]
    if not hits:
        raise UsageError(f"--variant {name!r}: no such variant; known: {', '.join(sorted(every)) or '(none)'}")
    raise UsageError(
        f"--variant {name!r} is ambiguous: {', '.join(f'{e.experiment.id}/{v.name}' for _, e, v in hits)}; "
        "name one as EXPERIMENT/VARIANT or pass --experiment FILE"
    )
