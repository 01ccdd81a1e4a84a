"""The model server's answers for clients that edit by text (aider): format and fence detection,
whole-file and SEARCH/REPLACE rendering of the sim and replay scripts' changes, turn counting
past canned example exchanges, and what a text edit cannot carry. Real git repositories, the
real server, the official OpenAI SDK as the client; aider itself runs in agents/clis/test_real_agent_clis.py."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from coordstore.errors import ReplayError
from gitfixtures import git, make_repo
from orchestrator.modelserver import ModelServer, session_url
from orchestrator.modelserver.changes import replay_changes
from orchestrator.modelserver.textedits import edit_format, fence

# the parts of aider's prompts the server reads (aider 0.86: whole_prompts.py, editblock_prompts.py)
WHOLE = ("Act as an expert software developer.\nYou MUST use this *file listing* format:\n\n"
         "path/to/filename.js\n{fence}\n// entire file content ...\n{fence}\n")
DIFF = ("Act as an expert software developer.\n# *SEARCH/REPLACE block* Rules:\n\nmathweb/flask/app.py\n"
        "{fence}python\n<<<<<<< SEARCH\nfrom flask import Flask\n=======\nimport math\n>>>>>>> REPLACE\n{fence}\n")


def aider_like(system: str, prompt: str) -> list[dict]:
    """An aider conversation: the system prompt, a canned example exchange, the files, the task."""
    return [{"role": "system", "content": system},
            {"role": "user", "content": "Change the greeting to be more casual"},
            {"role": "assistant", "content": "Ok, I will:\n\nshow_greeting.py\n```\nprint('hey')\n```"},
            {"role": "user", "content": "I have *added these files to the chat*"},
            {"role": "assistant", "content": "Ok, any changes I propose will be to those files."},
            {"role": "user", "content": prompt}]


def ask(srv: ModelServer, worktree: Path | None, messages: list[dict]) -> str:
    base = session_url(srv.url, worktree=str(worktree)) if worktree else srv.url
    c = openai.OpenAI(base_url=f"{base}/v1", api_key=srv.key, max_retries=0)
    return c.chat.completions.create(model="orch", messages=messages).choices[0].message.content


def test_format_and_fence_detection():
    assert edit_format(WHOLE.format(fence="```")) == "whole"
    assert edit_format(DIFF.format(fence="```")) == "diff"
    assert edit_format("You are Claude Code. Working directory: /x") is None
    assert fence(WHOLE.format(fence="````")) == ("````", "````")
    assert fence(DIFF.format(fence="<source>")) == ("<source>", "</source>")
    assert fence("no fence at all") == ("```", "```")


@pytest.mark.parametrize("fmt", ["whole", "diff"])
def test_sim_changes_as_one_text_answer(serve, tmp_path, fmt):
    """The whole task at the first turn (past aider's example exchanges), in the format its prompt
    asks for, with the fence it chose; a later turn closes; the tokens are the plan's."""
    wt = make_repo(tmp_path / "wt", {"m0.py": "# module\n# orch-slot: t0\n", "other.py": "x = 1\n"})
    graph = tmp_path / "g.json"
    graph.write_text('{"format": "orch-graph", "version": 1, "dependencies": [], "tasks": ['
                     '{"id": "t0", "title": "change t0", "file_scope": ["m0.py", "docs/new.md"], "time_estimate_ms": 60000}]}')
    from orchestrator.modelserver.tasksource import GraphTasks

    srv = serve("sim")
    srv.tasks = GraphTasks(graph)
    system = (WHOLE if fmt == "whole" else DIFF).format(fence="````")
    text = ask(srv, wt, aider_like(system, "Task t0: change t0\n\nFiles in scope: m0.py"))
    [req] = srv.requests
    assert (req["turn"], req["task"], req["tool_calls"]) == (0, "t0", [])
    assert req["usage"]["in"] > 1000  # the plan's tokens summed, not an estimate of this request
    if fmt == "whole":
        assert "m0.py\n````\n# module\n# task t0: change t0 [sim " in text and "\n````\n" in text
        assert "docs/new.md\n````\n# task t0: change t0 [sim " in text
    else:
        assert "m0.py\n````\n<<<<<<< SEARCH\n# module\n# orch-slot: t0\n=======\n# module\n# task t0: change t0 [sim " in text
        assert "docs/new.md\n````\n<<<<<<< SEARCH\n=======\n# task t0" in text  # an empty SEARCH creates the file
    assert "other.py" not in text
    later = aider_like(system, "Task t0: change t0") + [{"role": "assistant", "content": text},
                                                         {"role": "user", "content": "Fix the lint errors."}]
    assert ask(srv, wt, later) == "The edits above complete the task."
    assert srv.requests[-1]["turn"] == 1


def test_a_text_edit_client_without_a_worktree_gets_a_clear_400(serve, tmp_path):
    srv = serve("sim")
    with pytest.raises(openai.BadRequestError, match="a text-edit client must say its worktree"):
        ask(srv, None, aider_like(WHOLE.format(fence="```"), "Task t0: x"))  # the context names no task graph


def test_replay_changes_merge_onto_the_worktree_and_say_what_text_cannot(serve, tmp_path):
    repo = make_repo(tmp_path / "repo", {"a.txt": "one\ntwo\nthree\n", "gone.txt": "bye\n", "c.txt": "c\n"})
    (repo / "a.txt").write_text("one\n2\nthree\n")
    (repo / "gone.txt").unlink()
    (repo / "new").mkdir()
    (repo / "new" / "b.bin").write_bytes(bytes(range(256)))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "change")
    sha = git(repo, "rev-parse", "HEAD")
    wt = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "--detach", str(wt), "HEAD^")
    (wt / "a.txt").write_text("zero\none\ntwo\nthree\n")  # another task's edit, earlier in the file
    changes = {c.path: c for c in replay_changes(str(wt), sha, f"{sha}^")}
    assert changes["a.txt"].new == "zero\none\n2\nthree\n"  # three-way, as git apply --3way would
    assert changes["gone.txt"].new is None and not changes["gone.txt"].binary
    assert changes["new/b.bin"].binary and "c.txt" not in changes

    srv = serve("replay")
    base = session_url(srv.url, task={"id": "r1", "title": "change", "meta": {"commit": sha}}, worktree=str(wt))
    c = openai.OpenAI(base_url=f"{base}/v1", api_key=srv.key, max_retries=0)
    text = c.chat.completions.create(model="orch", messages=aider_like(WHOLE.format(fence="```"), "Task r1: change")
                                     ).choices[0].message.content
    assert "a.txt\n```\nzero\none\n2\nthree\n```" in text
    assert "Not changed here: gone.txt (deleted: a text edit cannot do that); new/b.bin (binary content" in text

    (wt / "a.txt").write_text("one\nTWO?\nthree\n")  # the same line changed differently: a conflict
    with pytest.raises(ReplayError, match="a.txt: the commit's change conflicts"):
        replay_changes(str(wt), sha, f"{sha}^")
