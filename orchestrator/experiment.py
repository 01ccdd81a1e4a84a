"""Experiment definitions: YAML files validated into pydantic models, and finding a variant by name.

An error names the file, the key path and the line, e.g.
``experiments/x.yaml: variants.1.agents (line 14): Input should be ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from coordstore.errors import InputError
from coordstore.paths import PathEscape, path_component

from .resources import experiment_files

Policy = Literal["pull", "push", "hybrid", "solo", "relay"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _one_directory(name: str) -> str:
    """Experiment ids and variant names are directories of the results (``<exp>/<variant>/<run>``)
    and parts of run ids: a ``/`` or ``..`` would put a run outside them."""
    try:
        return path_component(name, "name")
    except PathEscape as e:
        raise ValueError(str(e)) from None


class AgentDef(_Strict):
    """One agent of a variant, or ``count`` identical ones."""

    count: int = Field(default=1, ge=1)
    role: str = "worker"
    tags: list[str] = Field(default_factory=list)
    kind: str | None = None  # None: the variant's kind
    options: dict[str, Any] = Field(default_factory=dict)


class Variant(_Strict):
    name: str = Field(min_length=1)
    policy: Policy
    agents: int | list[AgentDef] = Field(default=4)
    kind: str = "sim"
    kind_options: dict[str, Any] = Field(default_factory=dict)
    policy_options: dict[str, Any] = Field(default_factory=dict)
    template: str | None = None  # overrides the experiment's template
    # sim | replay | a script file: orch runs `orch model-server` with it and points every agent at it
    model_server: str | None = None
    execution: dict[str, Any] = Field(default_factory=dict)  # per-variant execution overrides

    _name_is_a_directory = field_validator("name")(_one_directory)

    @model_validator(mode="after")
    def _positive(self) -> "Variant":
        if isinstance(self.agents, int) and self.agents < 1:
            raise ValueError("agents must be at least 1")
        return self

    def worker_defs(self) -> list[AgentDef]:
        if isinstance(self.agents, int):
            return [AgentDef(count=self.agents)]
        return self.agents


class Execution(_Strict):
    runs: int = Field(default=1, ge=1)
    seed: int = 42
    time_scale: float = Field(default=0.001, gt=0)  # simulated ms per estimated ms
    timeout_s: float = Field(default=600, gt=0)
    store: str = "sqlite"  # a scheme (store inside the run dir) or a full URL
    merge_mode: Literal["immediate", "deferred"] = "immediate"
    on_blocker_failure: Literal["cancel", "wait"] = "cancel"
    supervision: dict[str, Any] = Field(default_factory=dict)


class Criterion(_Strict):
    metric: str
    op: Literal["<", "<=", ">", ">=", "==", "!="]
    value: float


class MetricSpec(_Strict):
    name: str
    direction: Literal["lower", "higher"] = "lower"


class ExperimentHead(_Strict):
    id: str = Field(min_length=1)
    name: str = ""
    hypothesis: str = ""

    _id_is_a_directory = field_validator("id")(_one_directory)


class Experiment(_Strict):
    experiment: ExperimentHead
    template: str
    repo: str | None = None
    execution: Execution = Field(default_factory=Execution)
    variants: list[Variant] = Field(min_length=1)
    metrics: list[MetricSpec] = Field(default_factory=list)
    success_criteria: list[Criterion] = Field(default_factory=list)

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
        raise InputError(f"experiment {self.experiment.id!r} has no variant {name!r}; it has: {', '.join(v.name for v in self.variants)}")

    def execution_for(self, variant: Variant) -> Execution:
        """The experiment's execution settings with the variant's overrides merged in."""
        merged = self.execution.model_dump()
        for k, v in variant.execution.items():
            if isinstance(v, dict) and isinstance(merged.get(k), dict):
                merged[k] = {**merged[k], **v}
            else:
                merged[k] = v
        try:
            return Execution.model_validate(merged)
        except ValidationError as e:
            raise InputError(f"variant {variant.name!r}: execution: {e.errors()[0]['msg']}") from e


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


def load_experiment(path: Path) -> Experiment:
    """Parse and validate an experiment file; InputError names file, key path and line."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise InputError(f"{path}: cannot read experiment file ({e.strerror})") from e
    try:
        data = yaml.safe_load(text)
        tree = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise InputError(f"{path}{where}: invalid YAML: {getattr(e, 'problem', e)}") from e
    if not isinstance(data, dict):
        raise InputError(f"{path}: an experiment file must be a mapping with experiment/template/variants")
    try:
        return Experiment.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(err["loc"])
        line = _line_of(tree, loc)
        where = f" (line {line})" if line else ""
        key = ".".join(str(p) for p in loc) or "(top)"
        raise InputError(f"{path}: {key}{where}: {err['msg']}") from e


def find_variant(name: str, experiment_file: Path | None = None) -> tuple[Path, Experiment, Variant]:
    """The variant ``name`` in ``experiment_file``, or searched across every known experiment file.

    Unknown or ambiguous names list the candidates.
    """
    if experiment_file is not None:
        exp = load_experiment(experiment_file)
        return experiment_file, exp, exp.variant(name)
    hits, every = [], []
    for f in experiment_files():
        exp = load_experiment(f)
        for v in exp.variants:
            every.append(f"{exp.experiment.id}/{v.name}")
            if v.name == name or f"{exp.experiment.id}/{v.name}" == name:
                hits.append((f, exp, v))
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise InputError(f"--variant {name!r}: no such variant; known: {', '.join(sorted(every)) or '(none)'}")
    raise InputError(
        f"--variant {name!r} is ambiguous: {', '.join(f'{e.experiment.id}/{v.name}' for _, e, v in hits)}; "
        "name one as EXPERIMENT/VARIANT or pass --experiment FILE"
    )
