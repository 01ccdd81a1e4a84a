"""A stand-in for a real CLI coding agent, for tests: it prints a stream recorded from the real CLI
(``tests/fixtures/cli/<cli>-<scenario>.jsonl|.txt``) and does what the recorded tool calls did --
runs the shell command of each tool call in its cwd, or writes the file aider said it edited --
so the worktree changes as it would with the real agent.

Environment:
  FAKECLI_SCENARIO  comma-separated scenarios, the n-th invocation plays the n-th (the last one
                    repeats); default ``edit``. Needs FAKECLI_STATE (a directory) to count calls.
  FAKECLI_LOG       append one JSON line per invocation: cli, argv, cwd, stdin, the text of a
                    --message-file (aider), ORCH_* variables
  FAKECLI_DELAY     seconds between printed lines (default 0)

``{{cwd}}`` in a fixture becomes the cwd and ``{{file}}`` a file named after ORCH_TASK_ID, so two
tasks never write the same file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "cli"
# scenarios whose recording ended with a non-zero exit status
EXIT = {"claude-autherror": 1, "claude-ratelimit-giveup": 1, "codex-ratelimit-giveup": 1, "opencode-autherror": 1,
        "gemini-ratelimit": 1}
# files a real CLI leaves in its working directory (the kind must clean them up)
LEFTOVERS = {"aider": ".aider.tags.cache.v4"}


def _scenario(cli: str) -> str:
    names = [s.strip() for s in os.environ.get("FAKECLI_SCENARIO", "edit").split(",") if s.strip()]
    state = os.environ.get("FAKECLI_STATE")
    n = 0
    if state:
        counter = Path(state) / f"{cli}.count"
        n = int(counter.read_text()) if counter.exists() else 0
        counter.write_text(str(n + 1))
    return names[min(n, len(names) - 1)]


def _shell_command(cli: str, line: str) -> str | None:
    """The shell command a recorded line ran as a tool call, if it is one."""
    if cli == "aider":
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if cli == "claude" and obj.get("type") == "assistant":
        for block in obj["message"]["content"]:
            if block.get("type") == "tool_use" and block.get("name") == "Bash":
                return block["input"]["command"]
    if cli == "codex" and obj.get("type") == "item.started" and obj["item"].get("type") == "command_execution":
        return obj["item"]["command"]
    if cli == "gemini" and obj.get("type") == "tool_use" and obj.get("tool_name") == "run_shell_command":
        return obj["parameters"]["command"]
    if cli == "opencode" and obj.get("type") == "tool_use" and obj["part"].get("tool") == "bash":
        return obj["part"]["state"]["input"]["command"]
    return None


def main(cli: str) -> int:
    cwd = os.getcwd()
    stdin = "" if sys.stdin.isatty() else sys.stdin.read()
    log = os.environ.get("FAKECLI_LOG")
    if log:
        with open(log, "a") as f:
            args = sys.argv[1:]
            message = Path(args[args.index("--message-file") + 1]).read_text() if "--message-file" in args else None
            f.write(json.dumps({"cli": cli, "argv": args, "cwd": cwd, "stdin": stdin, "message_file": message,
                                "env": {k: v for k, v in os.environ.items() if k.startswith("ORCH_")}}) + "\n")
    scenario = _scenario(cli)
    name = f"{cli}-{scenario}"
    fixture = next((p for p in (FIXTURES / f"{name}.jsonl", FIXTURES / f"{name}.txt") if p.exists()), None)
    if fixture is None:
        print(f"fake {cli}: no recorded scenario {name!r} in {FIXTURES}", file=sys.stderr)
        return 2
    target = f"hello-{os.environ.get('ORCH_TASK_ID', 'task')}.txt"
    delay = float(os.environ.get("FAKECLI_DELAY", "0"))
    stderr = FIXTURES / f"{name}.stderr.txt"
    if stderr.exists():
        sys.stderr.write(stderr.read_text())
        sys.stderr.flush()
    if cli in LEFTOVERS:
        os.makedirs(LEFTOVERS[cli], exist_ok=True)
    for line in fixture.read_text().splitlines():
        line = line.replace("{{cwd}}", json.dumps(cwd)[1:-1]).replace("{{file}}", target)
        command = _shell_command(cli, line)
        if command is not None:
            subprocess.run(["/bin/sh", "-c", command], cwd=cwd, check=True)
        if cli == "aider" and line.startswith("Applied edit to "):
            Path(cwd, line.removeprefix("Applied edit to ").strip()).write_text("hello from aider\n")
        print(line, flush=True)
        if delay:
            time.sleep(delay)
    return EXIT.get(name, 0)
