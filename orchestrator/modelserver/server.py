"""The HTTP server: routes a request to its API, asks the session's script for the turn, serves
it (or the turn's fault), and records the request.

Faults, as a client sees them:

- ``rate_limit``: HTTP 429 with ``retry-after`` (seconds) and ``retry-after-ms``;
- ``overloaded``: HTTP 529 ``overloaded_error`` (Anthropic) / 503 (OpenAI), with ``retry-after``;
- ``error``: the fault's HTTP status (400 by default: not retried, the client gives up);
- ``cut``: the response starts, then the connection drops midway (an incomplete chunked body);
- ``hang``: the response starts and never goes on (until the client leaves or the server stops);
- ``loop``: this turn is served, and then again at every later turn of the session, forever.

Every request but the health check must carry the server's ``key`` as its API key (``x-api-key``,
``Authorization: Bearer``, ``x-goog-api-key`` or ``?key=``: however the client sends one), or it
is refused with 401; files are read only inside the server's ``worktrees`` (``confine``), or
the request is refused with 403.

A fault hits the first ``times`` requests of its turn in its session (``times: null``: all of
them); the retry after that gets the turn itself. Streams are sent with chunked transfer
encoding on HTTP/1.1 keep-alive connections, like the real APIs.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable

from coordstore.errors import InputError, OrchError
from coordstore.private import open_private

from orchestrator.modelserver.confine import Worktrees
from agents.clis.serverurl import ROLE_SCRIPTS, SessionContext
from orchestrator.modelserver.handler import Handler
from orchestrator.modelserver.history import ToolUse
from orchestrator.modelserver.roles import make_role_script
from orchestrator.modelserver.scripts import RequestView, Script, make_script
from orchestrator.modelserver.tasksource import StoreTasks, TaskSource
from orchestrator.modelserver.textedits import text_edit_turn
from orchestrator.modelserver.turns import Fault, Turn

HOST = "127.0.0.1"  # loopback only: a scripted model is nobody's business outside this machine


def schema_stub(schema: Any) -> Any:
    """A minimal value that satisfies a JSON schema (side requests asking for structured output)."""
    if not isinstance(schema, dict):
        return "scripted"
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    kind = kind.lower() if isinstance(kind, str) else kind  # Gemini's schemas say OBJECT, INTEGER, ...
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {k: schema_stub(props.get(k)) for k in schema.get("required", list(props))}
    return {"string": "scripted", "integer": 0, "number": 0, "boolean": False, "array": [], "null": None}.get(kind, "scripted")


class ModelServer:
    """A scripted model on ``http://127.0.0.1:PORT``; ``start()`` serves from a background thread.

    ``script``: ``sim``, ``replay``, a file script path, or a Script object (the default for
    requests whose session context names none). ``faults``: ``{turn: Fault}`` added to every
    session's turns that carry no fault of their own (faults on demand for any script).
    ``record``: a JSONL file that gets one line per request, as they come. ``tasks``: where the
    task a request names in its prompt is looked up when its URL carries no context
    (``tasksource``; ``attach_run`` sets it to a run's store). ``key``: the API key clients must
    send (None: a fresh random one, read it from ``.key``). ``worktrees``: the directories below
    which requests may have files read (none: no file is read).
    """

    def __init__(self, script: Script | str = "sim", *, port: int = 0, script_options: dict[str, Any] | None = None,
                 faults: dict[int, Fault] | None = None, record: str | Path | None = None,
                 tasks: TaskSource | None = None, log: Callable[[dict[str, Any]], None] | None = None,
                 key: str | None = None, worktrees: Iterable[str | Path] = ()):
        self.key = key or secrets.token_urlsafe(32)
        self.worktrees = Worktrees(worktrees)
        self.script = make_script(script, script_options) if isinstance(script, str) else script
        self.script_options = dict(script_options or {})
        self.faults = dict(faults or {})
        self.record_path = Path(record) if record else None
        self.tasks = tasks
        self.log = log
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._records: list[dict[str, Any]] = []
        self._hits: dict[tuple[str, int, str], int] = {}
        self._loops: dict[str, tuple[int, Turn]] = {}
        self._response_turns: dict[str, tuple[int, list[ToolUse]]] = {}
        self._scripts: dict[str, Script] = {}
        self._seq = 0
        try:
            self.httpd = ThreadingHTTPServer((HOST, port), Handler)
        except OSError as e:
            raise InputError(f"model server: cannot listen on {HOST}:{port} ({e.strerror or e})") from e
        self.httpd.daemon_threads = True
        self.httpd.model = self  # the handler's way back to us
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> "ModelServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"model-server-{self.port}", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread (the CLI) until ``stop()`` from another thread or a signal."""
        try:
            self.httpd.serve_forever(poll_interval=0.1)
        finally:
            self.stopping.set()

    def attach_run(self, store_url: str, run_id: str) -> None:
        """Look tasks up in this run's store (their current attempt, the run's seed)."""
        self.tasks = StoreTasks(store_url, run_id)

    def stop(self) -> None:
        self.stopping.set()  # hanging streams end at their next poll
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.httpd.server_close()

    def __enter__(self) -> "ModelServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ what tests read
    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every request so far, in arrival order (copies)."""
        with self._lock:
            return copy.deepcopy(self._records)

    def usage(self) -> dict[str, Any]:
        """Token totals of the answers actually delivered (faults and side requests apart)."""
        with self._lock:
            served = [r for r in self._records if r["status"] == 200 and not r["fault"] and not r["side"]]
        tot = {"requests": len(served), "in": 0, "out": 0, "cached": 0, "thinking": 0}
        for r in served:
            for k in ("in", "out", "cached", "thinking"):
                tot[k] += r["usage"][k]
        return tot

    # ------------------------------------------------------------------ decisions (called by the handler)
    def next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def script_for(self, ctx: SessionContext) -> Script:
        if not ctx.script:
            return self.script
        if ctx.script in ROLE_SCRIPTS:  # a role played for a whole agent session; its tasks' work by our script
            with self._lock:
                if ctx.script not in self._scripts:
                    self._scripts[ctx.script] = make_role_script(ctx.script, self.script)
                return self._scripts[ctx.script]
        if ctx.script not in ("sim", "replay"):  # a file: only one inside the worktrees may be read
            path = ctx.script[5:] if ctx.script.startswith("file:") else ctx.script
            self.worktrees.confine(path, "the session's script")
        with self._lock:
            if ctx.script not in self._scripts:
                # the server's options are for its own script; another one named by a session gets none
                same = ctx.script == getattr(self.script, "name", None)
                self._scripts[ctx.script] = make_script(ctx.script, self.script_options if same else None)
            return self._scripts[ctx.script]

    def previous_response(self, response_id: str | None) -> tuple[int | None, list[ToolUse]]:
        """(turn, tool calls so far) of a response a client continues with ``previous_response_id``
        (None, []: not one of ours)."""
        with self._lock:
            return self._response_turns.get(response_id or "", (None, []))

    def remember_response(self, response_id: str, turn: int, calls: list[ToolUse]) -> None:
        with self._lock:
            self._response_turns[response_id] = (turn, calls)

    def decide(self, view: RequestView) -> tuple[Turn, Fault | None, bool]:
        """(the turn to serve, the fault to serve instead now or None, is it a side request)."""
        session = view.ctx.session
        with self._lock:
            loop = self._loops.get(session)
        if loop is not None and view.turn >= loop[0]:
            return loop[1], None, False
        side = Turn(text=json.dumps(schema_stub(view.json_schema)) if view.json_schema is not None else "OK")
        if not view.tools and view.json_schema is not None:
            # a client's side request (a title, a summary) made without tools: not part of the script
            return side, None, True
        fmt = view.edit_format
        try:
            script = self.script_for(view.ctx)
            if fmt is not None and hasattr(script, "changes"):  # a client that edits by text (aider)
                turn = text_edit_turn(script, view, fmt)
            else:
                turn = script.turn(view.turn, view)
        except OrchError:
            if not view.tools and fmt is None:  # a side request the script cannot place (no task, no worktree)
                return side, None, True
            raise  # a text-edit client's task turn: the client must hear why it gets no edits
        if not view.tools and turn.tool_calls:  # tool calls for a client that offered no tools: aside
            return side, None, True
        if turn.fault is None and view.turn in self.faults:
            turn = copy.copy(turn)
            turn.fault = self.faults[view.turn]
        fault = turn.fault
        if fault is None:
            return turn, None, False
        key = (fault.scope or session, -1 if fault.any_turn else view.turn, fault.kind)
        if fault.kind == "loop":  # counted like the others, so a task's loop can be a one-off
            served = copy.copy(turn)
            served.fault = None
            with self._lock:
                hits = self._hits.get(key, 0)
                if fault.times is not None and hits >= fault.times:
                    return served, None, False
                self._hits[key] = hits + 1
                self._loops.setdefault(session, (view.turn, served))
            return served, None, False
        with self._lock:
            hits = self._hits.get(key, 0)
            if fault.times is None or hits < fault.times:
                self._hits[key] = hits + 1
                return turn, fault, False
        return turn, None, False

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._records.append(entry)
            if self.record_path is not None:
                with os.fdopen(open_private(self.record_path, os.O_WRONLY | os.O_APPEND), "a") as f:
                    f.write(json.dumps(entry, sort_keys=True) + "\n")
        if self.log is not None:
            self.log(entry)
