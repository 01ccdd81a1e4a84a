"""A stand-in for a real CLI playing a role in an agent-driven run, for tests: it speaks claude's
stream-json (``claude -p PROMPT --output-format stream-json ...``) and makes REAL calls to orch's
coordination server with ``agents.toolclient`` -- each printed as the ``tool_use`` block claude
prints (``mcp__orch__<tool>``) with its ``tool_result`` -- and waits by running ``sleep`` in a
child process, printed as a ``Bash`` tool_use. Its role and policy are the ones its prompt names
(orch's role prompt: "role R, policy P").

The server and the token: claude's ``--mcp-config`` when given, else ``ORCH_MCP_URL`` /
``ORCH_MCP_TOKEN`` in its environment. Environment:
  FAKEROLE_STATE  a directory: each agent's sessions are counted there (<agent>.count)
  FAKEROLE_PLAN   JSON {agent: [behaviour of session 1, of session 2, ...]} (the last repeats);
                  default "play":
      play              play the role until list_tasks shows every task terminal, then say
                        "The run is over." and exit 0
      crash-after-claim claim a task, write half of its work, exit 3
      exit-early        connect, then exit 0
      hang              print the init line, then sleep in a child without a word
  FAKEROLE_LOG    append one JSON line per session: agent, session, argv, cwd, base URL, prompt
  FAKEROLE_POLL_S seconds of each wait (default 0.1)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from agents.toolclient import ToolClient, ToolRefused

TERMINAL = {"completed", "failed", "cancelled", "skipped"}
POLL_S = float(os.environ.get("FAKEROLE_POLL_S", "0.1"))


def say(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


class Cli:
    def __init__(self, client: ToolClient, me: str):
        self.client, self.me, self.n = client, me, 0

    def call(self, tool: str, **args):
        self.n += 1
        tid = f"toolu_{self.n}"
        say({"type": "assistant", "message": {"content": [
            {"type": "tool_use", "id": tid, "name": f"mcp__orch__{tool}", "input": args}]}})
        try:
            out, err = self.client.call(tool, **args), False
        except ToolRefused as e:
            out, err = e.text, True
        say({"type": "user", "message": {"content": [
            {"type": "tool_result", "tool_use_id": tid, "is_error": err, "content": json.dumps(out)}]}})
        return None if err else out

    def sleep(self, s: float) -> None:
        self.n += 1
        say({"type": "assistant", "message": {"content": [
            {"type": "tool_use", "id": f"toolu_{self.n}", "name": "Bash", "input": {"command": f"sleep {s:g}"}}]}})
        subprocess.run(["sleep", f"{s:g}"], check=True)

    def over(self) -> bool:
        tasks = self.call("list_tasks") or []
        return all(t["status"] in TERMINAL for t in tasks)

    def work(self, tid: str, cwd: str) -> None:
        Path(cwd, f"work-{tid}.txt").write_text(f"{tid} done by {self.me}\n")
        self.call("update", task=tid, status="completed")


def endpoint(argv: list[str]) -> tuple[str, str]:
    if "--mcp-config" in argv:
        raw = argv[argv.index("--mcp-config") + 1]
        cfg = json.loads(Path(raw).read_text() if os.path.isfile(raw) else raw)
        orch = cfg["mcpServers"]["orch"]
        # the header names the token's variable (${ORCH_MCP_TOKEN}), which claude expands
        return orch["url"], os.path.expandvars(orch["headers"]["Authorization"]).removeprefix("Bearer ")
    return os.environ["ORCH_MCP_URL"], os.environ["ORCH_MCP_TOKEN"]


def behaviour(me: str) -> tuple[str, int]:
    plan = json.loads(os.environ.get("FAKEROLE_PLAN") or "{}").get(me) or ["play"]
    n = 0
    state = os.environ.get("FAKEROLE_STATE")
    if state:
        counter = Path(state) / f"{me}.count"
        n = int(counter.read_text()) if counter.exists() else 0
        counter.write_text(str(n + 1))
    return plan[min(n, len(plan) - 1)], n + 1


def main() -> int:
    argv = sys.argv[1:]
    me, cwd = os.environ["ORCH_AGENT_ID"], os.getcwd()
    what, session = behaviour(me)
    prompt = argv[argv.index("-p") + 1] if "-p" in argv else sys.stdin.read()
    log = os.environ.get("FAKEROLE_LOG")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps({"agent": me, "session": session, "behaviour": what, "argv": argv, "cwd": cwd,
                                "base_url": os.environ.get("ANTHROPIC_BASE_URL"), "pid": os.getpid(),
                                "prompt": prompt}) + "\n")
    say({"type": "system", "subtype": "init", "session_id": f"{me}-{session}", "model": "fake"})
    if what == "hang":
        subprocess.run(["sleep", "1000"])
        return 0
    url, token = endpoint(argv)
    with ToolClient(url, token) as client:
        cli = Cli(client, me)
        hello = cli.call("connect", worker_id=me)
        if what == "exit-early":
            return 0
        named = re.search(r"role (\w+), policy (\w+)", prompt or "")
        role, policy = named.groups() if named else (hello["role"], hello["workflow"])
        while not cli.over():
            if not step(cli, role, policy, cwd, what):
                cli.sleep(POLL_S)
    say({"type": "assistant", "message": {"content": [{"type": "text", "text": "The run is over."}]}})
    say({"type": "result", "subtype": "success", "is_error": False, "result": "The run is over.", "num_turns": cli.n,
         "usage": {"input_tokens": 100 * cli.n, "output_tokens": 10 * cli.n}, "total_cost_usd": 0.001 * cli.n})
    return 0


def step(cli: Cli, role: str, policy: str, cwd: str, what: str) -> bool:
    """One decision of the role; False when there was nothing to do."""
    if role == "coordinator":
        ready = [t for t in cli.call("list_tasks", ready=True) or [] if not t.get("container") and t["status"] == "pending"]
        idle = [a["id"] for a in cli.call("list_agents") or [] if a["role"] == "worker" and not a["tasks"]]
        for t, w in zip(ready, idle):
            cli.call("update", task=t["id"], assignee=w)
        return bool(ready and idle)
    if policy == "push":
        mine = cli.call("list_tasks", owner=cli.me, status="assigned") or []
    else:
        mine = [t for t in cli.call("list_tasks", ready=True) or [] if not t.get("container") and t["status"] == "pending"]
    for t in mine:
        if cli.call("claim", task=t["id"]) is None:
            continue  # lost it: the next one
        if what == "crash-after-claim":
            Path(cwd, f"half-{t['id']}.txt").write_text("half done\n")
            sys.exit(3)
        cli.work(t["id"], cwd)
        return True
    return False
