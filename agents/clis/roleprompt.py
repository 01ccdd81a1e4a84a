"""The prompt of a CLI that plays a role for a whole agent-driven run (``agents.kinds.cliplay``).

Two parts: the role's instruction -- the agent's own (``instruction:`` in the experiment, e.g.
task-graph-mcp's instruction text) or orch's default for the role under the variant's policy --
then a paragraph that says who the agent is (agent, run, role, policy) and how to use orch's
coordination tools (the MCP server ``orch``). The session's role script on orch's model server
(``ROLE_SCRIPTS``) plays the same role when no real model is reachable.
"""

from __future__ import annotations

# (policy, role) -> what a competent agent in that role does; "decomposer": a worker that splits
DEFAULT_INSTRUCTIONS: dict[tuple[str, str], str] = {
    ("push", "coordinator"): (
        "You are the coordinator. You do not write code: you hand out work. Look at the ready tasks "
        "(list_tasks ready=true) and the workers (list_agents); assign each ready task to an idle worker "
        "whose tags fit it (update task=<id> assignee=<worker>), one task per worker at a time. When "
        "nothing can be assigned, wait a little (sleep in the shell) and look again."),
    ("hybrid", "lead"): (
        "You are the lead. You do not write code: you split the work among the workers. Hand each "
        "worker a subtree of the graph (update task=<container> assignee=<worker>) so that every "
        "top-level container has an owner, then keep watching until the run is over."),
    ("push", "worker"): (
        "You are a worker. The coordinator assigns tasks to you: look for them (list_tasks owner=<you> "
        "status=assigned), start each with claim, do the work in your worktree, then complete it. When "
        "nothing is assigned to you, wait a little (sleep in the shell) and look again."),
    ("pull", "worker"): (
        "You are a worker in a swarm. Look for ready tasks (list_tasks ready=true) that fit your tags, "
        "claim one (another worker may win it: then pick another), do the work in your worktree, then "
        "complete it. When nothing is ready, wait a little (sleep in the shell) and look again."),
    ("hybrid", "worker"): (
        "You are a worker. The lead gives you subtrees of the graph (containers you own): claim and do "
        "the ready tasks inside them, completing each. Once they hold nothing ready, take any ready task "
        "that fits you. When nothing is ready, wait a little (sleep in the shell) and look again."),
    ("any", "decomposer"): (
        "You are a worker who decomposes. Claim a ready task; if it is too coarse to do in one go, give "
        "it back (update status=pending) and split it: create_tree parent=<task> with its parts as "
        "children. Otherwise do the work in your worktree and complete it."),
}


def default_instruction(policy: str, role: str, script: str | None = None) -> str:
    """orch's instruction for ``role`` under ``policy`` (a decomposing worker: ``script`` decomposer)."""
    if script == "decomposer":
        return DEFAULT_INSTRUCTIONS[("any", "decomposer")]
    return DEFAULT_INSTRUCTIONS.get((policy, role), f"You are the {role} of this run under policy {policy}.")


def role_prompt(*, agent: str, run: str, role: str, policy: str, instruction: str = "", script: str | None = None,
                tags: list[str] | None = None, works: bool = True) -> str:
    """The whole prompt of the agent's CLI session."""
    head = instruction.strip() or default_instruction(policy, role, script)
    tagged = f" Your tags: {', '.join(tags)}." if tags else ""
    where = ("Your current directory is your own git worktree: do a task's work there, orch commits it."
             if works else "Your current directory is a private scratch directory; you change no files.")
    tools = (
        f"You are agent {agent} in orch run {run}: role {role}, policy {policy}.{tagged} Coordinate only "
        f"through the tools of the MCP server `orch`. First call connect with worker_id={agent}. "
        + ("Take a task with claim task=<id>; when its work is done call update task=<id> status=completed "
           "(orch commits your worktree, runs the task's verify command and merges it), or status=failed "
           "with a reason if you cannot do it; one task at a time. " if works else "")
        + f"{where} Keep going until every task of the run is terminal (completed, failed or cancelled) in "
        "list_tasks; only then stop, saying \"The run is over.\""
    )
    return f"{head}\n\n{tools}\n"
