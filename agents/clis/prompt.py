"""The prompt a CLI agent gets for one task: built from the task's title, description, file scope,
tags and the agent's role.

A ``prompt_template`` option replaces the built-in text; it is a ``str.format`` string with the
fields ``agent``, ``role``, ``task_id``, ``title``, ``description``, ``scope`` (the file-scope
paragraph), ``files`` (comma-separated paths), ``tags``, ``attempt`` and ``previous`` (why the
last attempt ended, or empty).
"""

from __future__ import annotations

from typing import Any

FIELDS = ("agent", "role", "task_id", "title", "description", "scope", "files", "tags", "attempt", "previous")

DEFAULT_TEMPLATE = """\
You are {agent}, a coding agent (role: {role}) working in a git worktree of a shared repository. \
Other agents work on other tasks in parallel, each in its own worktree.

Task {task_id}: {title}

{description}

{scope}{tags}{previous}
Make the change in the current directory and stop when the task is done. Do not commit, push, \
create branches or touch anything outside this worktree: orch commits your changes when you exit.
"""


def _fields(task, agent: str, role: str, attempt: int) -> dict[str, Any]:
    scope = list(task.file_scope or [])
    if scope:
        scope_text = "Files in scope (change these; leave other files alone unless the task needs it):\n" + \
                     "".join(f"- {p}\n" for p in scope)
    else:
        scope_text = "No file scope was given: keep the change as small as the task allows.\n"
    tags = sorted(set(task.needed_tags or []) | set(task.wanted_tags or []) | set(task.tags or []))
    previous = ""
    if attempt > 1 and task.reason:
        previous = f"\nThis is attempt {attempt}; the previous attempt ended with: {task.reason}\n"
    return {
        "agent": agent,
        "role": role,
        "task_id": task.id,
        "title": (task.title or task.id).strip(),
        "description": (task.description or "(no description)").strip(),
        "scope": scope_text,
        "files": ", ".join(scope),
        "tags": f"\nTask tags: {', '.join(tags)}\n" if tags else "",
        "attempt": attempt,
        "previous": previous,
    }


def build_prompt(task, agent: str, role: str = "worker", attempt: int = 1, template: str | None = None) -> str:
    """The prompt for ``task``, from ``template`` (or the built-in one)."""
    return (template or DEFAULT_TEMPLATE).format(**_fields(task, agent, role, attempt))


def check_template(template: str) -> None:
    """ValueError naming the problem if ``template`` uses an unknown field or bad braces."""
    try:
        template.format(**{f: "" for f in FIELDS})
    except KeyError as e:
        raise ValueError(f"unknown field {{{e.args[0]}}}; known: {', '.join(FIELDS)}") from e
    except (ValueError, IndexError) as e:
        raise ValueError(f"not a valid format string ({e}); write literal braces as {{{{ and }}}}") from e
