"""Whether the merged branch works: the variant's ``verify:`` command, run on the merged tree.

The orchestrator records each verification as a run note in the history (``action: "verify"``,
see ``orchestrator.runs.mergeverify``) with the commit it checked out, the exit status, the
output's tail and the duration; these metrics are read back from those notes like every other:

* ``merged_verified``: true when the command exited 0 on the merged branch's final tip, false
  when it failed, timed out or could not start; null when the variant has no ``verify:`` (or
  the run ended before its final merge). ``merged_verify_exit``, ``merged_verify_ms`` and
  ``merged_verify_sha`` say how, how long and on which commit.
* With ``after_each_merge: true``, every commit of the merged branch's first-parent line from
  the base on (the base, then each merge) is verified too: ``merges_verified`` counts them,
  ``merges_failing_verify`` those that failed, ``merges_broke_verify`` those that failed right
  after one that passed (a merge that broke the tree). Null without ``after_each_merge``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from coordstore.models import RunDump, Transition

VERIFY_ACTION = "verify"  # data.action of the run notes that record a verification
FINAL, MERGE = "final", "merge"  # a note's data.scope: the run's last tip, or one merge's
SCRATCH_DIR = "verify"  # under the run directory: the scratch worktrees, each removed after use
VERIFY_KEYS = ("merged_verified", "merged_verify_exit", "merged_verify_ms", "merged_verify_sha",
               "merges_verified", "merges_failing_verify", "merges_broke_verify")


def verifications(rows: Iterable[Transition], scope: str) -> list[dict[str, Any]]:
    """The verification notes' data of ``scope`` among history ``rows``, in order, each with its ``reason``."""
    return [{**r.data, "reason": r.reason} for r in rows
            if r.entity == "run" and r.is_note and r.data.get("action") == VERIFY_ACTION and r.data.get("scope") == scope]


def verify_metrics(dump: RunDump) -> dict[str, Any]:
    """The keys of ``VERIFY_KEYS``, in that order."""
    finals = verifications(dump.history, FINAL)
    last = finals[-1] if finals else None
    merges = verifications(dump.history, MERGE)
    broke, before = 0, None
    for v in merges:
        broke += bool(before) and not v["ok"]
        before = v["ok"]
    return {
        "merged_verified": None if last is None else bool(last["ok"]),
        "merged_verify_exit": None if last is None else last.get("exit"),
        "merged_verify_ms": None if last is None else last.get("ms"),
        "merged_verify_sha": None if last is None else last.get("sha"),
        "merges_verified": len(merges) if merges else None,
        "merges_failing_verify": sum(not v["ok"] for v in merges) if merges else None,
        "merges_broke_verify": broke if merges else None,
    }


def verify_line(m: dict[str, Any], reason: str | None = None) -> str | None:
    """One line for people, or None when nothing was verified. ``reason``: the final
    verification's failure reason, when the caller has the history at hand."""
    if m.get("merged_verified") is None and not m.get("merges_verified"):
        return None
    if m.get("merged_verified") is None:
        head = "merged_verified: - (the run ended before its final verification)"
    else:
        sha = (m.get("merged_verify_sha") or "")[:12]
        how = "passed" if m["merged_verified"] else (reason or f"exit {m.get('merged_verify_exit')}")
        head = (f"merged_verified: {'true' if m['merged_verified'] else 'false'} "
                f"({how}, at {sha}, {(m.get('merged_verify_ms') or 0) / 1000:.2f}s)")
    if m.get("merges_verified"):
        head += (f"; after each merge: {m['merges_verified']} verified, {m['merges_failing_verify']} failing, "
                 f"{m['merges_broke_verify']} broke it")
    return head
