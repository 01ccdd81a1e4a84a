"""Both real controllers (local runner processes, runners on external workers) give the supervisor
every verb of its ``Controller`` protocol: the supervisor's fake in its own tests cannot tell."""

from __future__ import annotations

import inspect

import pytest

from orchestrator.runs.external import ExternalController
from orchestrator.supervision.control import RunController
from orchestrator.supervision.supervisor import Controller

VERBS = sorted(n for n, f in vars(Controller).items() if inspect.isfunction(f) and not n.startswith("_"))


def test_the_protocol_names_the_verbs_the_supervisor_calls():
    assert VERBS == ["agents", "avoid", "degrade", "kill", "observe", "respawn"]


@pytest.mark.parametrize("cls", [RunController, ExternalController])
def test_each_controller_has_every_verb_with_its_parameters(cls):
    for verb in VERBS:
        impl = getattr(cls, verb, None)
        assert callable(impl), f"{cls.__name__} lacks {verb}"
        want = list(inspect.signature(getattr(Controller, verb)).parameters)
        have = list(inspect.signature(impl).parameters)
        assert len(have) >= len(want), f"{cls.__name__}.{verb}{inspect.signature(impl)}"
