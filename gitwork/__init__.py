"""Every git operation of orch, for the agent side and the conductor alike (layer 2, above the store).

``runner``: the one way git is run (plain subprocess, cheap to import: runners start fast), its
``GitError``, environment, identities and ``is_ancestor``; ``repo``: the target repository (checks,
refs, worktree list); ``worktrees``: the per-agent worktrees and the cleanup that never deletes
unmerged work; ``merging``: merges into a run's merged ref without a checkout, and catch-up into a
worktree; ``agentgit``: an agent's own commits in its worktree; ``demo``: the demo repository;
``history``: a replay template from a range of a repository's history.
"""
