"""Scripts: what the model says at each turn of a conversation.

A script is an object with ``turn(index, view) -> Turn``: ``index`` counts the assistant turns
already in the conversation the client sent (so a retried request gets the same answer), and
``view`` (``RequestView``) is what the request tells about itself (session context, offered
tools, the client's working directory, the last tool result). Scripts are stateless between
requests; fault bookkeeping lives in the server.

- ``file``: a YAML/JSON list of turns (``turns.parse_turn``), for tests and demos.
- ``sim``: the sim agent's plan for the session's task (``agents.kinds.simplan``) as tool calls:
  its steps, its real edits, its token counts, its faults.
- ``replay``: the task's recorded commit (``meta.commit``) as a ``git apply`` of its patch (and,
  optionally, a commit with the original author and message).

A session whose context names a role script (``roles``) is played by it for a whole agent
session; the work on each task it claims is the server's own script's.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from coordstore.errors import InputError
from coordstore.models import Task
from coordstore.snapshot import read_text

from agents.kinds.simplan import SimOptions, comment_marker, edit_text, make_plan, task_line

from orchestrator.modelserver import textedits
from orchestrator.modelserver.changes import replay_changes, replay_git, sim_changes
from orchestrator.modelserver.confine import Worktrees, confine_to
from orchestrator.modelserver.history import ToolUse
from agents.clis.serverurl import SessionContext
from orchestrator.modelserver.tools import heredoc, write_command
from orchestrator.modelserver.turns import DONE, Fault, ToolCall, Turn, Usage, done_turn, parse_fault, parse_turn

SCRIPT_NAMES = ("sim", "replay", "file")
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"  # git's well-known empty tree: diff base of a root commit
# how clients state their working directory: claude, opencode ("Working directory: ..."), codex
# (<cwd>...</cwd>), gemini ("Workspace Directories:" then "  - PATH")
_CWD = re.compile(r"(?:^|\n)\s*(?:CWD|Working directory|cwd):\s*(\S[^\n]*)|<cwd>([^<]+)</cwd>"
                  r"|Workspace Directories:\**\s*\n\s*- (\S[^\n]*)")


@dataclass
class RequestView:
    """What a script may know about one request, whatever its API."""

    api: str  # anthropic | chat | responses | gemini
    model: str
    ctx: SessionContext
    tools: list[str]  # tool names the client offered
    turn: int  # assistant turns already in the conversation
    messages: int  # items in the conversation
    stream: bool
    system: str = ""  # system prompt / instructions text, for the working directory
    last_result: str | None = None  # text of the last tool result, if the request ends with one
    last_error: bool = False  # ... and whether the client marked it an error
    json_schema: dict | None = None  # a structured-output schema the client asked for
    prompt_chars: int = 0  # size of the request, for estimated token counts
    prompt: str = ""  # text of the conversation's first user message (names the task: tasksource)
    extra: dict[str, Any] = field(default_factory=dict)
    calls: list[ToolUse] = field(default_factory=list)  # the conversation's tool calls, results included (history)
    worktrees: Worktrees = field(default_factory=Worktrees)  # where it may read (the server sets it)

    @property
    def edit_format(self) -> str | None:
        """``whole`` / ``diff`` when the client edits by text (aider: no tools, a format in its
        system prompt), else None."""
        return None if self.tools else textedits.edit_format(self.system)

    @property
    def cwd(self) -> str | None:
        """The client's working directory: the context's worktree, else what its prompt says; a
        ``PathRefused`` when it is not inside the server's worktrees (``confine``)."""
        if self.ctx.worktree:
            return str(self.worktrees.confine(self.ctx.worktree, "the session's worktree"))
        m = _CWD.search(self.system)
        if m is None:
            return None
        return str(self.worktrees.confine(next(g for g in m.groups() if g).strip(), "the working directory in the prompt"))


class Script(Protocol):
    name: str

    def turn(self, index: int, view: RequestView) -> Turn: ...


# ---------------------------------------------------------------- file
class FileScript:
    name = "file"

    def __init__(self, turns: list[Turn], source: str = "(inline)"):
        self.turns = turns
        self.source = source

    def turn(self, index: int, view: RequestView) -> Turn:
        return self.turns[index] if index < len(self.turns) else done_turn()

    @classmethod
    def from_data(cls, data: Any, source: str) -> "FileScript":
        """``[turn, ...]`` or ``{turns: [turn, ...]}``. A turn with only a fault attaches it to the
        turn after it: ``[{fault: rate_limit}, {bash: ...}]`` is one turn, refused once with 429."""
        if isinstance(data, dict):
            unknown = sorted(set(data) - {"turns"})
            if unknown:
                raise InputError(f"{source}: key {unknown[0]!r}: unknown (a script is a list of turns or {{turns: [...]}})")
            data = data.get("turns")
        if not isinstance(data, list) or not data:
            raise InputError(f"{source}: a script is a non-empty list of turns (or {{turns: [...]}})")
        turns: list[Turn] = []
        pending: Fault | None = None
        for i, raw in enumerate(data):
            t = parse_turn(raw, f"{source}: turns.{i}")
            if pending is not None:
                if t.fault is not None:
                    raise InputError(f"{source}: turns.{i}: follows a fault-only turn and has its own fault; merge them")
                t.fault, pending = pending, None
            if t.fault is not None and not t.text and not t.tool_calls:
                pending = t.fault
                continue
            turns.append(t)
        if pending is not None:
            turns.append(Turn(text=DONE, fault=pending))
        return cls(turns, source)

    @classmethod
    def load(cls, path: str | Path) -> "FileScript":
        p = Path(path)
        try:
            text = read_text(p)
        except InputError as e:
            raise InputError(f"script {e}") from e
        try:
            data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as e:
            raise InputError(f"script {p}: not valid {'JSON' if p.suffix == '.json' else 'YAML'} ({e})") from e
        return cls.from_data(data, str(p))


# ---------------------------------------------------------------- helpers shared by sim and replay
def _task(view: RequestView, script: str):
    raw = dict(view.ctx.task or {})
    if not raw.get("id"):
        raise InputError(f"script {script}: the request carries no task (use a /ctx/... base URL from context.session_url)")
    try:
        return Task(**raw)
    except Exception as e:  # pydantic's message names the field
        raise InputError(f"script {script}: the session's task is not valid: {e}") from e


def _faults_of(task, start: int = 0) -> dict[int, Fault]:
    """Faults asked for by ``meta.model_faults: [{turn: N, kind: ...}]`` (faults on demand)."""
    out: dict[int, Fault] = {}
    for i, raw in enumerate((task.meta or {}).get("model_faults") or []):
        where = f"task {task.id}: meta.model_faults.{i}"
        if not isinstance(raw, dict) or not isinstance(raw.get("turn", start), int):
            raise InputError(f"{where}: must be a mapping with an integer 'turn'")
        rest = {k: v for k, v in raw.items() if k != "turn"}
        fault = parse_fault(rest, where)
        fault.scope = f"task:{task.id}"  # "one 429 for this task", not one per attempt
        out[raw.get("turn", start)] = fault
    return out


def _with_fault(turn: Turn, fault: Fault | None) -> Turn:
    if fault is not None and turn.fault is None:
        turn.fault = fault
    return turn


# ---------------------------------------------------------------- sim
# plan step name -> a read-only shell command standing for it ({path} is the step's file)
SIM_COMMANDS = {
    "read_file": "cat -- {path} 2>/dev/null || ls",
    "grep": "grep -rn -- 'task {task}' . 2>/dev/null | head -n 20 || true",
    "edit_file": "git status --short",
    "bash": "ls",
    "run_tests": "git diff --stat",
}


class SimScript:
    """The sim kind's plan as a conversation: one turn per plan step, then a closing text."""

    name = "sim"

    def __init__(self, options: dict[str, Any] | None = None):
        self.options = dict(options or {})
        SimOptions.build(self.options)  # bad options fail at start-up, naming the key

    def plan(self, view: RequestView):
        task = _task(view, "sim")
        opts, _ = SimOptions.build(self.options, task.meta.get("sim") or {})
        c = view.ctx
        return task, make_plan(task, c.seed, c.attempt, c.time_scale, opts)

    def turn(self, index: int, view: RequestView) -> Turn:
        task, plan = self.plan(view)
        demanded = _faults_of(task)
        if index >= len(plan.steps):
            return _with_fault(Turn(text=f"Task {task.id} is done: {len(plan.steps)} steps."), demanded.get(index))
        step = plan.steps[index]
        tin, tout, cached, think = step.tokens
        turn = Turn(usage=Usage(input=tin, output=tout, cached=cached, thinking=think))
        edits = plan.edits.get(index, [])
        for rel in edits:
            turn.tool_calls.append(ToolCall("bash", {"command": self._edit_command(view, task, rel, plan.digest),
                                                     "description": f"Edit {rel}"}))
        if not edits:
            cmd = SIM_COMMANDS.get(step.name, "ls").format(path=shlex.quote(str(step.args.get("path", "."))), task=task.id)
            turn.tool_calls.append(ToolCall("bash", {"command": cmd, "description": step.name.replace("_", " ")}))
        return _with_fault(turn, demanded.get(index) or self._plan_fault(plan, index))

    @staticmethod
    def _plan_fault(plan, index: int) -> Fault | None:
        """The fault the sim plan puts at step ``index``, as the server serves it."""
        if index == plan.rate_limit_step:
            return Fault("rate_limit", times=1, retry_after_s=plan.retry_after_s)
        if index == plan.fault_step:
            return {"stall": Fault("hang", times=1), "loop": Fault("loop"),
                    "fail": Fault("error", times=None, status=400, message=f"sim: injected failure at step {index + 1}"),
                    "crash": Fault("cut", times=None)}.get(plan.fault or "")
        return None

    def changes(self, view: RequestView):
        """(the plan's edits as whole files, the first of its faults, the plan's tokens summed) for a
        client that edits by text (``textedits``): the whole task in one answer."""
        task, plan = self.plan(view)
        cwd = view.cwd
        if not cwd or not Path(cwd).is_dir():
            raise InputError(f"script sim: task {task.id}: a text-edit client must say its worktree "
                             "(a /ctx/... base URL with 'worktree', from context.session_url)")
        fault = _faults_of(task).get(0)
        for i in range(len(plan.steps)):
            fault = fault or self._plan_fault(plan, i)
        sums = [sum(s.tokens[k] for s in plan.steps) for k in range(4)]
        return sim_changes(cwd, task, plan), fault, Usage(input=sums[0], output=sums[1], cached=sums[2], thinking=sums[3])

    @staticmethod
    def _edit_command(view: RequestView, task, rel: str, digest: str) -> str:
        """The edit the sim kind would make, as a shell command. The new content is computed from
        the file as it is now when the worktree is known; otherwise the task's line is appended."""
        cwd = view.cwd
        if cwd and Path(cwd).is_dir():
            path = confine_to(cwd, rel, f"task {task.id}: file_scope")
            old = path.read_text() if path.is_file() else None
            new, _ = edit_text(old, rel, task, digest)
            return write_command(rel, new)
        q, parent = shlex.quote(rel), str(Path(rel).parent)
        line = shlex.quote(f"{comment_marker(rel)} {task_line(task, digest)}")
        return (f"mkdir -p {shlex.quote(parent)} && " if parent != "." else "") + f"printf '\\n%s\\n' {line} >> {q}"


# ---------------------------------------------------------------- replay
class ReplayScript:
    """Turn 0: ``git apply --3way`` of the commit's patch (the patch text inside the tool call),
    then a closing text; orch's runner commits the change, as it does for any agent. With the
    option ``commit: true`` a turn 1 commits it with the original author, date and message
    (committer: the agent's environment), for a branch that reads like the original history."""

    name = "replay"

    def __init__(self, options: dict[str, Any] | None = None):
        opts = dict(options or {})
        unknown = sorted(set(opts) - {"repo", "commit"})
        if unknown:
            raise InputError(f"script replay: option {unknown[0]!r} is unknown (known: commit, repo)")
        self.repo = opts.get("repo")
        self.commit = bool(opts.get("commit", False))

    def _commit(self, view: RequestView):
        """(task, repository, commit sha, raw commit object, parent or the empty tree) of a request."""
        task = _task(view, "replay")
        ref = (task.meta or {}).get("commit")
        if not isinstance(ref, str) or not ref:
            raise InputError(f"script replay: task {task.id} has no meta.commit")
        repo = view.cwd or self.repo
        if not repo:
            raise InputError("script replay: no repository (no worktree in the session, no CWD in the prompt, no --repo)")
        sha = replay_git(repo, "rev-parse", "--verify", f"{ref}^{{commit}}").decode().strip()
        raw = replay_git(repo, "cat-file", "commit", sha)
        parents = [ln.split()[1].decode() for ln in raw.split(b"\n\n", 1)[0].split(b"\n") if ln.startswith(b"parent ")]
        return task, repo, sha, raw, parents[0] if parents else EMPTY_TREE

    def changes(self, view: RequestView):
        """(the commit's change as whole files, the fault demanded at turn 0, no usage) for a client
        that edits by text (``textedits``). Needs the worktree: the change is merged onto its files."""
        task, repo, sha, _, parent = self._commit(view)
        if not view.cwd:
            raise InputError(f"script replay: task {task.id}: a text-edit client must say its worktree "
                             "(a /ctx/... base URL with 'worktree', from context.session_url)")
        return replay_changes(view.cwd, sha, parent), _faults_of(task).get(0), None

    def turn(self, index: int, view: RequestView) -> Turn:
        task, repo, sha, raw, parent = self._commit(view)
        demanded = _faults_of(task)
        patch = replay_git(repo, "diff", "--binary", "--full-index", parent, sha)
        steps: list[Turn] = []
        if patch.strip():
            steps.append(Turn(text=f"Applying the change of commit {sha[:12]}.", tool_calls=[ToolCall("bash", {
                "command": heredoc(patch.decode("utf-8", "surrogateescape"), "git apply --3way --whitespace=nowarn"),
                "description": f"Apply the patch of {sha[:12]}"})]))
            if self.commit:
                steps.append(Turn(tool_calls=[ToolCall("bash", {"command": self._commit_command(repo, sha, raw),
                                                                "description": f"Commit as {sha[:12]}'s author"})]))
        if index < len(steps):
            if index > 0 and view.last_error:  # the apply failed: stop, the CLI reports what it saw
                return Turn(text=f"Could not apply {sha[:12]}: {(view.last_result or '').strip()[:500]}")
            return _with_fault(steps[index], demanded.get(index))
        text = f"Replayed commit {sha[:12]}." if steps else f"Commit {sha[:12]} changes nothing."
        return _with_fault(Turn(text=text), demanded.get(index))

    def _commit_command(self, repo: str, sha: str, raw: bytes) -> str:
        fmt = "%an%x00%ae%x00%ad"
        name, email, date = replay_git(repo, "log", "-1", "--date=raw", f"--format={fmt}", sha).decode(
            "utf-8", "surrogateescape").rstrip("\n").split("\0")
        message = raw.split(b"\n\n", 1)[1] if b"\n\n" in raw else b""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in (("GIT_AUTHOR_NAME", name), ("GIT_AUTHOR_EMAIL", email),
                                                             ("GIT_AUTHOR_DATE", date)))
        msg = message.decode("utf-8", "surrogateescape")
        return "git add -A && " + heredoc(msg if msg else "\n",
                                          f"{env} git commit -q --no-verify --allow-empty-message --cleanup=verbatim -F -")


# ---------------------------------------------------------------- by name
def make_script(spec: str, options: dict[str, Any] | None = None) -> Script:
    """``sim``, ``replay``, or the path of a file script (``file:PATH`` also works)."""
    if spec == "sim":
        return SimScript(options)
    if spec == "replay":
        return ReplayScript(options)
    path = spec[5:] if spec.startswith("file:") else spec
    if not path or spec == "file":
        raise InputError("--script file needs a path: --script PATH (a YAML or JSON list of turns)")
    if not Path(path).is_file():
        raise InputError(f"--script {spec!r}: not sim, replay, nor an existing script file")
    return FileScript.load(path)
