"""Every git operation of orch, for the agent side and the conductor alike (layer 2, above the store).

``repo``: the target repository (checks, refs, safe git commands, identities); ``worktrees``: the
per-agent worktrees and the cleanup that never deletes unmerged work; ``merging``: merges into a
run's merged ref without a checkout, and catch-up into a worktree; ``agentgit``: an agent's own
commits in its worktree (plain subprocess: runners start fast); ``demo``: the demo repository;
``history``: a replay template from a range of a repository's history.
"""
