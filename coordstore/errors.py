"""The one exception tree of orch, drawn once here.

    OrchError                    anything orch reports to a user as one line
    ├── InputError               bad input: a file, key, argument or URL (exit 1, names what is wrong)
    │   ├── UsageError           the command line itself is wrong (exit 2): a value out of range, a
    │   │                        name that names nothing, options that exclude each other
    │   ├── GraphError           a task graph that is not a valid DAG (cycle, dangling edge, ...)
    │   └── StoreURLError        unknown scheme or missing driver for a store URL
    ├── StoreError               the store refused or failed an operation
    │   ├── NotFound             no such run / task / agent
    │   ├── InvalidTransition    the task is not in a state that allows the operation
    │   ├── StaleAttempt         a write from an attempt (or owner) that has been replaced
    │   └── StoreDamaged         the store's files are empty, torn, foreign or corrupt
    ├── GitError                 a git operation failed (repo missing, dirty, ref unknown, ...)
    │   └── ReplayError          a recorded commit cannot be replayed (replay kind, replay script)
    └── AgentError               an agent process or kind could not be run

Lower-level errors (sqlite3, OSError, json, pydantic, git) are translated at the boundary
that sees them and re-raised ``from`` the original, so the CLI can print one line.
"""

from __future__ import annotations

from collections.abc import Sequence


class OrchError(Exception):
    """Base of every error orch reports; ``str(err)`` is the one line shown to the user."""


class InputError(OrchError):
    """Bad input from the user: the message names the file, key or argument."""


class UsageError(InputError):
    """The command line is wrong, whatever the files say: a number out of range, a name (variant,
    agent, task, choice) that names nothing, options that exclude each other or go together.
    The CLI exits 2 for it, as for the parser's own usage errors; files, repositories and stores
    that are missing or bad stay ``InputError`` (exit 1)."""


class GraphError(InputError):
    """A task graph that cannot be used: cycle (named), dangling edge, unknown type, bad value."""


class StoreURLError(InputError):
    """A store URL with an unknown scheme, or whose driver is not installed."""


class StoreError(OrchError):
    """The store refused or could not complete an operation."""


class NotFound(StoreError):
    """The named run, task or agent does not exist in the store."""


class InvalidTransition(StoreError):
    """The task's current status does not allow the requested change."""


class StaleAttempt(StoreError):
    """A write from an attempt or owner that is no longer current (the task was requeued)."""


class StoreDamaged(StoreError):
    """The store's files cannot be what orch wrote: empty, cut short, not a store, corrupt records.
    The message names the file and what is wrong; a reader leaves the files as they are."""


class GitError(OrchError):
    """A git operation failed or the repository is not usable.

    Raised for a failed git command (by ``gitwork.runner``, the one place orch runs git), it also
    carries ``command`` (the argv), ``code`` (git's exit status) and ``last_line`` (the line git
    failed with); for other failures (a path that is no repository, an unknown ref) they are None.
    """

    def __init__(self, message: str, *, command: Sequence[str] | None = None, code: int | None = None,
                 last_line: str | None = None) -> None:
        super().__init__(message)
        self.command = tuple(command) if command is not None else None
        self.code = code
        self.last_line = last_line


class ReplayError(GitError):
    """A recorded commit cannot be replayed: not in the repository, unreadable, a git step of the
    replay failed, or its change conflicts with the files it lands on; the message says which."""


class AgentError(OrchError):
    """An agent kind or process could not be started or run."""


# The task moved on under whoever acted on an older view of it: another attempt holds it, it is in
# another status now, or it is gone. The supervisor, the dispatchers and a runner reporting its
# work catch these and drop that one action; the loop goes on.
MOVED_ON: tuple[type[StoreError], ...] = (InvalidTransition, StaleAttempt, NotFound)
