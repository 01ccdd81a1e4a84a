"""The coordination tools agents call (MCP): the task graph as tools, one server per run."""
