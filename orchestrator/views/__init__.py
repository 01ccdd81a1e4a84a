"""What orch shows of runs, computed from the store and the run directory, never from an
orchestrator's memory: metrics and success criteria, comparisons and reports, the status of runs
and the live view, and the git side of a run (branches, diffs, clean)."""
