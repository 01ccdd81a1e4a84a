"""The agent side of orch: the runner loop, distribution policies, agent kinds, the event writer."""
