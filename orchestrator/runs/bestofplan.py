"""What a best-of-N variant needs, checked at plan time (before anything is written)."""

from __future__ import annotations

from coordstore.errors import InputError

from agents.policies.bestof import n_option


def check_best_of(variant, merge_mode: str, workers: str, agents) -> None:
    """``policy: best_of`` runs with orch's own algorithm, local runners and immediate merges
    (deferred mode merges whole agent branches, losers' attempts with them), and at least ``n``
    working agents; no agent may be named ``bestof`` (its branch would be the directory the
    attempts are kept in). One line naming the variant and the key otherwise."""
    if variant.policy != "best_of":
        return
    where = f"variant {variant.name!r}"
    if variant.coordination != "orch":
        raise InputError(f"{where}: policy best_of runs with coordination: orch (its rounds are orch's algorithm)")
    if merge_mode != "immediate":
        raise InputError(f"{where}: policy best_of needs execution.merge_mode immediate (the winner alone is merged, "
                         f"when its round closes; deferred would merge the losers' branches too)")
    if workers != "local":
        raise InputError(f"{where}: policy best_of runs local runners only (not --workers {workers})")
    n = n_option(variant.policy_options)
    working = [a for a in agents if a.works]
    if n > len(working):
        raise InputError(f"{where}: policy_options.n={n} needs at least {n} working agents; the variant has {len(working)}")
    if any(a.id == "bestof" for a in working):
        raise InputError(f"{where}: agent id 'bestof' is reserved under policy best_of (its attempts' branches live there)")
