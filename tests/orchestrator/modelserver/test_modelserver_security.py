"""The model server's two doors: a client must carry the server's key (as the API key it already
sends), and the server reads files only inside the worktrees it was given. The official SDKs
and raw HTTP as clients, a real 0600 file as what an attacker wants to read."""

from __future__ import annotations

import http.client
import json
import os
from pathlib import Path

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from gitfixtures import make_repo
from modelserver_helpers import BASH, TWO_TURNS, after_tools, script_file
from orchestrator.modelserver import session_url

PRIVATE = "PRIVATE-KEY-MATERIAL-0600"
# the part of aider's prompt that makes the server answer with whole files (test_modelserver_textedits)
WHOLE = "Act as an expert software developer.\nYou MUST use this *file listing* format:\n\npath/x.js\n```\n...\n```\n"


def raw(srv, method: str, path: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers={"content-type": "application/json", **(headers or {})})
    r = conn.getresponse()
    out = (r.status, json.loads(r.read() or b"{}"))
    conn.close()
    return out


MESSAGES = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "go"}], "tools": BASH}


def test_a_client_without_the_key_is_refused(serve):
    srv = serve(TWO_TURNS)
    assert len(srv.key) >= 32
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=srv.url, api_key="guessed", max_retries=0).messages.create(**MESSAGES)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=srv.url + "/v1", api_key="guessed", max_retries=0).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "go"}])
    gem = genai.Client(api_key="guessed", http_options=types.HttpOptions(base_url=srv.url,
                                                                         retry_options=types.HttpRetryOptions(attempts=1)))
    with pytest.raises(genai_errors.ClientError) as e:
        gem.models.generate_content(model="gemini-scripted", contents="go")
    assert e.value.code == 401
    assert raw(srv, "POST", "/v1/messages", MESSAGES)[0] == 401  # no key at all
    assert raw(srv, "POST", "/v1/messages", MESSAGES, {"x-api-key": srv.key[:-1]})[0] == 401
    assert raw(srv, "GET", "/_orch/requests")[0] == 401  # the record holds what was served: not for strangers
    assert srv.requests == []  # nothing was served, nothing recorded
    assert raw(srv, "GET", "/_orch/health")[0] == 200  # a readiness probe needs no key and learns nothing


@pytest.mark.parametrize("how", ["x-api-key", "bearer", "x-goog-api-key", "query"])
def test_the_key_is_accepted_the_way_each_client_sends_it(serve, how):
    srv = serve(TWO_TURNS)
    headers = {"x-api-key": {"x-api-key": srv.key}, "bearer": {"authorization": f"Bearer {srv.key}"},
               "x-goog-api-key": {"x-goog-api-key": srv.key}, "query": {}}[how]
    path = "/v1/messages" + (f"?key={srv.key}" if how == "query" else "")
    status, body = raw(srv, "POST", path, MESSAGES, headers)
    assert status == 200 and body["content"][1]["name"] == "Bash"
    assert raw(srv, "GET", "/_orch/usage", headers=headers if how != "query" else {"x-api-key": srv.key})[0] == 200


@pytest.fixture
def private_file(tmp_path) -> Path:
    d = tmp_path / "home" / ".ssh"
    d.mkdir(parents=True)
    f = d / "id_key"
    f.write_text(PRIVATE + "\n")
    f.chmod(0o600)
    return f


def ask_text_edit(key: str, base: str) -> tuple[int, str]:
    """An aider-like request (no tools, a whole-file format): the server answers with file contents."""
    c = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    try:
        r = c.chat.completions.create(model="orch", messages=[{"role": "system", "content": WHOLE},
                                                              {"role": "user", "content": "Task t1: steal"}])
    except openai.APIStatusError as e:
        return e.status_code, e.message
    return 200, r.choices[0].message.content


def test_the_reported_attack_a_worktree_outside_is_refused(serve, tmp_path, private_file):
    """The issue's reproduction: a /ctx/ URL naming the private file's directory as its worktree
    and the file in file_scope. The server must refuse, not answer with the file."""
    wt = make_repo(tmp_path / "wt", {"a.py": "x = 1\n"})
    srv = serve("sim", worktrees=[wt])
    task = {"id": "t1", "title": "steal", "file_scope": [private_file.name]}
    base = session_url(srv.url, task=task, worktree=str(private_file.parent))
    status, text = ask_text_edit(srv.key, base)
    assert status == 403 and PRIVATE not in text and str(private_file.parent) in text
    # the same through a tool-calling client: the sim's edit command would carry the old content
    c = anthropic.Anthropic(base_url=base, api_key=srv.key, max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError):
        for n in range(8):
            c.messages.create(model="m", max_tokens=10, messages=after_tools(n), tools=BASH)
    assert all(PRIVATE not in json.dumps(r) for r in srv.requests)


@pytest.mark.parametrize("escape", ["dotdot", "absolute", "symlink"])
def test_a_path_escaping_a_registered_worktree_is_refused(serve, tmp_path, private_file, escape):
    wt = make_repo(tmp_path / "wt", {"a.py": "x = 1\n"})
    if escape == "symlink":
        os.symlink(private_file, wt / "link.txt")
    rel = {"dotdot": os.path.relpath(private_file, wt), "absolute": str(private_file), "symlink": "link.txt"}[escape]
    srv = serve("sim", worktrees=[wt])
    base = session_url(srv.url, task={"id": "t1", "title": "steal", "file_scope": [rel]}, worktree=str(wt))
    status, text = ask_text_edit(srv.key, base)
    assert status == 403 and PRIVATE not in text and rel in text


def test_the_prompts_working_directory_outside_is_refused(serve, tmp_path, private_file):
    """Clients that say their directory in the prompt (claude, codex, gemini) are held to the same rule."""
    wt = make_repo(tmp_path / "wt", {"a.py": "x = 1\n"})
    srv = serve("sim", worktrees=[wt])
    srv.tasks = _Tasks({"id": "t1", "title": "steal", "file_scope": [private_file.name]})
    c = openai.OpenAI(base_url=f"{srv.url}/v1", api_key=srv.key, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as e:
        c.chat.completions.create(model="orch", messages=[
            {"role": "system", "content": f"{WHOLE}\nWorking directory: {private_file.parent}"},
            {"role": "user", "content": "Task t1: steal"}])
    assert PRIVATE not in e.value.message
    # inside the worktree, the same request is served
    ok = c.chat.completions.create(model="orch", messages=[
        {"role": "system", "content": f"{WHOLE}\nWorking directory: {wt}"}, {"role": "user", "content": "Task t1: steal"}])
    assert ok.choices[0].message.content


def test_a_session_script_outside_the_worktrees_is_refused(serve, tmp_path, private_file):
    """A session may name its own script file: only one inside the worktrees (a YAML error would quote the file)."""
    wt = make_repo(tmp_path / "wt", {"a.py": "x = 1\n"})
    inside = script_file(wt, TWO_TURNS)
    srv = serve("sim", worktrees=[wt])
    c = anthropic.Anthropic(base_url=session_url(srv.url, script=str(private_file)), api_key=srv.key, max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as e:
        c.messages.create(**MESSAGES)
    assert PRIVATE not in e.value.message
    ok = anthropic.Anthropic(base_url=session_url(srv.url, script=str(inside)), api_key=srv.key, max_retries=0)
    assert ok.messages.create(**MESSAGES).content[1].input["command"] == "echo hi > a.txt"


class _Tasks:
    """A task source holding one task (what a run's store would answer)."""

    def __init__(self, task: dict):
        self.task = task

    def lookup(self, task_id: str):
        return {"task": self.task, "attempt": 1, "seed": 0} if task_id == self.task["id"] else None


def test_orch_model_server_prints_its_key_and_reads_only_its_worktree(tmp_path, private_file):
    """The standalone server: the key from ORCH_MODEL_SERVER_KEY (or a random one) on stdout's
    second line; files read only below --worktree (by default the directory it runs in)."""
    import signal
    import subprocess
    import sys

    wt = make_repo(tmp_path / "wt", {"a.py": "x = 1\n"})
    key = "k" * 8
    bad = subprocess.run([sys.executable, "-m", "orchestrator", "model-server"], env={**os.environ, "ORCH_MODEL_SERVER_KEY": key},
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "ORCH_MODEL_SERVER_KEY" in bad.stderr and key not in bad.stderr
    key = "a-key-of-the-users-own-choosing"
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "model-server", "--script", "sim"], cwd=wt,
                            env={**os.environ, "ORCH_MODEL_SERVER_KEY": key}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url, printed = proc.stdout.readline().strip(), proc.stdout.readline().strip()
        assert printed == key
        task = {"id": "t1", "title": "steal", "file_scope": [private_file.name]}
        status, text = ask_text_edit(key, session_url(url, task=task, worktree=str(private_file.parent)))
        assert status == 403 and PRIVATE not in text
        status, text = ask_text_edit(key, session_url(url, task={**task, "file_scope": ["a.py"]}, worktree=str(wt)))
        assert status == 200 and "x = 1" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and str(wt.resolve()) in err, err
