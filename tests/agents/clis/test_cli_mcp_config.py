"""orch's coordination server as each real CLI is given it (``Invocation.mcp``), the CLI's own way.

- what every preset builds with and without it: argv, environment, the settings files it writes
  (the agent's token only ever in ``ORCH_MCP_TOKEN``); aider refuses it
- every config key checked by the INSTALLED CLI's own config reader: claude ``mcp add-json``
  (keeps the keys it knows), codex ``mcp get --json`` and ``exec --strict-config``, gemini
  ``mcp list`` (refuses unknown server keys) and its settings reference, opencode ``debug config``
- real runs against orch's real coordination server (its own process, a prepared run, a token
  per agent) and the scripted model server: each CLI reaches the server with the agent's token,
  offers orch's tools to the model -- and no tool of another server configured for the user or
  the project --, calls one without any permission prompt (the server's history shows the call
  as the agent's), and a wrong token leaves it without orch's tools (codex: fails).

The real CLIs FAIL these tests when not installed, like every real-CLI test here.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from agents.clis import PRESETS, get_preset
from agents.clis.base import MCP_TOKEN_ENV, MCP_TOOL_TIMEOUT_S, MODEL_SERVER_ENV, Invocation, McpEndpoint, mcp_tool_name
from agents.clis.serverurl import agent_env
from coordstore import open_store
from coordstore.errors import AgentError
from orchestrator.modelserver import ModelServer
from orchestrator.modelserver.scripts import FileScript

from coordfixtures import ServerProcess, agent_run, tokens
from realclis import need

pytestmark = pytest.mark.usefixtures("no_git_identity")  # conftest: private HOME, no git identity

TOKEN = "orch.r9.secret-token-of-w1"
ENDPOINT = McpEndpoint("http://127.0.0.1:9/mcp", TOKEN)
MCP_CLIS = sorted(n for n in PRESETS if get_preset(n).takes_mcp)
MCP_FLAGS = {"--mcp-config", "--strict-mcp-config", "--ignore-user-config", "--allowed-mcp-server-names"}


def inv(tmp_path: Path, mcp: McpEndpoint | None = ENDPOINT, preset: str = "claude", **kw) -> Invocation:
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    base = dict(prompt="PROMPT", prompt_file=str(scratch / "prompt.md"), worktree=str(tmp_path), scratch=str(scratch),
                settings=dict(get_preset(preset).settings), mcp=mcp)
    return Invocation(**{**base, **kw})


def written(scratch: str | Path) -> dict[str, str]:
    return {str(p.relative_to(scratch)): p.read_text() for p in Path(scratch).rglob("*") if p.is_file()}


# ---------------------------------------------------------------------------------------- unit
def test_the_clis_names_of_orchs_tools_are_its_bare_names():
    """As each installed CLI names them (seen in the real runs below): the model server and the
    player read steps by their bare names."""
    for name in ("mcp__orch__claim", "mcp:orch.claim", "mcp_orch_claim", "orch_claim"):
        assert mcp_tool_name(name) == "claim", name
    assert mcp_tool_name("mcp__other__claim") is None and mcp_tool_name("Bash") is None


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_without_mcp_nothing_changes(name, tmp_path, monkeypatch):
    """No coordination server: no flag, no variable, no file of it (the argv snapshots of
    test_agent_cli_kinds pin the rest)."""
    monkeypatch.delenv(MODEL_SERVER_ENV, raising=False)
    p, i = get_preset(name), inv(tmp_path, mcp=None, preset=name)
    argv = p.build(i)
    assert not MCP_FLAGS & set(argv) and not any(a.startswith("mcp_servers.") or "mcp__" in a for a in argv)
    env = p.env(i) if p.env else {}
    assert MCP_TOKEN_ENV not in env and not written(i.scratch)
    # aider's own: a git identity when git has none; opencode's: a private session database
    own = {"aider": set(env), "opencode": {"OPENCODE_DB"}}.get(name, set())
    assert set(env) == own


def test_claude(tmp_path):
    p = get_preset("claude")
    argv = p.build(inv(tmp_path))
    at = argv.index("--mcp-config")
    assert argv[:2] == ["-p", "PROMPT"] and argv[at + 2] == "--strict-mcp-config"
    assert json.loads(argv[at + 1]) == {"mcpServers": {"orch": {
        "type": "http", "url": ENDPOINT.url, "headers": {"Authorization": "Bearer ${ORCH_MCP_TOKEN}"}, "timeout": MCP_TOOL_TIMEOUT_S * 1000}}}
    assert argv[argv.index("--allowedTools") + 1] == "Bash,mcp__orch"  # every tool of the server, no prompt
    assert p.env(inv(tmp_path)) == {MCP_TOKEN_ENV: TOKEN, "CLAUDE_CODE_MCP_TOOL_IDLE_TIMEOUT": str(MCP_TOOL_TIMEOUT_S * 1000)}
    none = p.build(inv(tmp_path, settings={**p.settings, "allowed_tools": []}))
    assert none[none.index("--allowedTools") + 1] == "mcp__orch"


def test_codex(tmp_path):
    p = get_preset("codex")
    argv = p.build(inv(tmp_path, preset="codex"))
    at = argv.index("--ignore-user-config")
    assert argv[at + 1] == "-c" and argv[-1] == "PROMPT"
    assert tomllib.loads(argv[at + 2])["mcp_servers"] == {"orch": {
        "url": ENDPOINT.url, "bearer_token_env_var": MCP_TOKEN_ENV, "required": True, "startup_timeout_sec": 60,
        "tool_timeout_sec": MCP_TOOL_TIMEOUT_S, "default_tools_approval_mode": "approve"}}
    assert p.env(inv(tmp_path, preset="codex")) == {MCP_TOKEN_ENV: TOKEN}


@pytest.mark.parametrize("served", [False, True])
def test_gemini(tmp_path, monkeypatch, served):
    if served:
        monkeypatch.setenv(MODEL_SERVER_ENV, "http://127.0.0.1:8")
    else:
        monkeypatch.delenv(MODEL_SERVER_ENV, raising=False)
    p, i = get_preset("gemini"), inv(tmp_path, preset="gemini")
    argv = p.build(i)
    assert argv[argv.index("--allowed-mcp-server-names") + 1] == "orch"
    env = p.env(i)
    assert env[MCP_TOKEN_ENV] == TOKEN and Path(env["GEMINI_CLI_HOME"]).parent == Path(i.scratch)
    settings = json.loads((Path(env["GEMINI_CLI_HOME"]) / ".gemini" / "settings.json").read_text())
    assert settings.pop("security", None) == ({"auth": {"selectedType": "gemini-api-key"}} if served else None)
    assert settings == {"mcpServers": {"orch": {"httpUrl": ENDPOINT.url, "headers": {"Authorization": "Bearer ${ORCH_MCP_TOKEN}"},
                                                "trust": True, "timeout": MCP_TOOL_TIMEOUT_S * 1000}},
                        "mcp": {"allowed": ["orch"]}, "model": {"disableLoopDetection": True}}


def test_opencode(tmp_path, monkeypatch):
    """Its config file declares the server; the provider of the run's model server stays in
    OPENCODE_CONFIG_CONTENT, which the preset leaves alone."""
    monkeypatch.setenv(MODEL_SERVER_ENV, "http://127.0.0.1:8")
    p, i = get_preset("opencode"), inv(tmp_path, preset="opencode")
    assert p.build(i) == p.build(inv(tmp_path, mcp=None, preset="opencode"))
    env = p.env(i)
    assert set(env) == {"OPENCODE_DB", "XDG_CONFIG_HOME", "OPENCODE_DISABLE_PROJECT_CONFIG", MCP_TOKEN_ENV} and env[MCP_TOKEN_ENV] == TOKEN
    assert json.loads((Path(env["XDG_CONFIG_HOME"]) / "opencode" / "opencode.json").read_text()) == {
        "mcp": {"orch": {"type": "remote", "url": ENDPOINT.url, "headers": {"Authorization": "Bearer {env:ORCH_MCP_TOKEN}"},
                         "enabled": True, "oauth": False, "timeout": MCP_TOOL_TIMEOUT_S * 1000}},
        "permission": {"orch_*": "allow"}}


def test_aider_refuses_the_coordination_server(tmp_path):
    assert not get_preset("aider").takes_mcp
    with pytest.raises(AgentError, match="aider.*can only execute tasks assigned to it"):
        get_preset("aider").build(inv(tmp_path, preset="aider"))


@pytest.mark.parametrize("name", MCP_CLIS)
def test_the_token_is_only_in_the_environment(name, tmp_path, monkeypatch):
    """Not in the argv (orch logs it), not in a file: the CLI expands ORCH_MCP_TOKEN itself."""
    monkeypatch.setenv(MODEL_SERVER_ENV, "http://127.0.0.1:8")
    p, i = get_preset(name), inv(tmp_path, preset=name)
    argv, env = p.build(i), p.env(i)
    assert env[MCP_TOKEN_ENV] == TOKEN
    assert not any(TOKEN in a for a in argv) and not any(TOKEN in text for text in written(i.scratch).values())


# ---------------------------------------------------------------------------------------- real CLIs
# how the model calls orch's list_agents through each CLI; codex offers the server as one
# Responses-API namespace ``mcp__orch`` and takes a call only as ``{namespace, name}``, which the
# model server does not answer yet: codex is checked by what it offers and by ``required``
# codex groups them in a namespace ``mcp__orch``; the model server names each ``mcp__orch__<tool>``
CALLS = {"claude": "mcp__orch__list_agents", "codex": "mcp__orch__list_agents", "gemini": "mcp_orch_list_agents",
         "opencode": "orch_list_agents"}
OFFERS = {"claude": "mcp__orch__claim", "codex": "mcp__orch__claim", "gemini": "mcp_orch_claim", "opencode": "orch_claim"}
STRICT = {"codex": ("--strict-config",)}  # an unknown key in a -c override is an error, not a shrug


@pytest.fixture
def coord(tmp_path):
    """orch's coordination server in its own process, serving a prepared agent-driven run."""
    spec, paths = agent_run(tmp_path / "coord")
    server = ServerProcess(paths.root)
    yield server.url, tokens(paths), spec
    assert server.stop() == 0


def configure_other_server(cli: str, home: Path, worktree: Path, url: str, token: str) -> None:
    """Another MCP server (orch's own, under another name, with a valid token: it WOULD connect)
    in the user's and the project's configuration of ``cli``."""
    header = {"Authorization": f"Bearer {token}"}
    files: dict[Path, str] = {}
    if cli == "claude":
        server = json.dumps({"mcpServers": {"other": {"type": "http", "url": url, "headers": header}}})
        files = {home / ".claude.json": server, worktree / ".mcp.json": server}
    elif cli == "codex":
        table = f'[mcp_servers.other]\nurl = "{url}"\nhttp_headers = {{ Authorization = "Bearer {token}" }}\n'
        files = {home / ".codex" / "config.toml": table, worktree / ".codex" / "config.toml": table}
    elif cli == "gemini":
        server = json.dumps({"mcpServers": {"other": {"httpUrl": url, "headers": header, "trust": True}}})
        files = {home / ".gemini" / "settings.json": server, worktree / ".gemini" / "settings.json": server}
    elif cli == "opencode":
        server = json.dumps({"mcp": {"other": {"type": "remote", "url": url, "headers": header, "oauth": False}}})
        files = {home / ".config" / "opencode" / "opencode.json": server, worktree / "opencode.json": server}
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def run_cli(cli: str, mcp: McpEndpoint, turns: list, where: Path, monkeypatch, **settings):
    """``cli`` run once as its preset builds it (``settings`` over its defaults), in a git
    repository, against a scripted model server: (the finished process, the requests the server
    saw)."""
    exe, p = need(cli), get_preset(cli)
    wt = where / "wt"
    wt.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", str(wt)], check=True)
    with ModelServer(FileScript.from_data(turns, "test")) as srv:
        monkeypatch.setenv(MODEL_SERVER_ENV, srv.url)
        i = inv(where, mcp=mcp, preset=cli, worktree=str(wt), prompt="Use the orch tools.", extra_args=STRICT.get(cli, ()),
                settings={**p.settings, **settings})
        Path(i.prompt_file).write_text(i.prompt)
        env = {**os.environ, **agent_env(srv.url, srv.key), **p.env(i), "PWD": str(wt)}
        with open(i.prompt_file if p.prompt_on_stdin else os.devnull) as stdin:
            done = subprocess.run([exe, *p.build(i)], cwd=wt, env=env, stdin=stdin, capture_output=True, text=True, timeout=240)
        return done, srv.requests


def offered(requests: list[dict]) -> list[list[str]]:
    """The tools of every request that offered any (opencode's first request names a title)."""
    return [r["tools"] for r in requests if r.get("tools")]


@pytest.mark.parametrize("cli,settings", [(c, {}) for c in MCP_CLIS] + [("claude", {"bare": False})],
                         ids=[*MCP_CLIS, "claude-not-bare"])
@pytest.mark.real_cli
def test_the_cli_reaches_orchs_server_with_the_agents_token_and_no_other(cli, settings, coord, tmp_path, monkeypatch):
    """The other server is reachable (another URL of orch's, a valid token): claude without
    ``--bare`` reads the user's servers, and gemini reads the project's settings in a folder the
    machine trusts."""
    url, tok, spec = coord
    monkeypatch.setenv("GEMINI_CLI_TRUST_WORKSPACE", "true")
    configure_other_server(cli, Path(os.environ["HOME"]), tmp_path / "wt", f"{url}?server=other", tok["w2"])
    turns = ([{"tool": {"name": CALLS[cli], "input": {}}}] if cli in CALLS else []) + ["All done."]
    done, requests = run_cli(cli, McpEndpoint(url, tok["w1"]), turns, tmp_path, monkeypatch, **settings)
    assert done.returncode == 0, (done.stdout[-1500:], done.stderr[-1500:])
    tools = offered(requests)
    assert tools and all(OFFERS[cli] in t for t in tools), tools
    assert not [n for t in tools for n in t if "other" in n]  # the user's and the project's server: not reached
    if cli in CALLS:  # called with no permission prompt, as agent w1 (its token), as the CLI reports it
        parser = get_preset(cli).parser()
        steps = [e.data["name"] for line in done.stdout.splitlines() for e in parser.feed(line) if e.type == "step"]
        assert [mcp_tool_name(s) for s in steps] == ["list_agents"], steps
        with open_store(spec.store_url) as store:
            calls = [(r.entity_id, r.agent, r.to_state) for r in store.history(spec.run_id, entity="tool")]
        assert calls == [("list_agents", "w1", "ok")]


@pytest.mark.real_cli
@pytest.mark.parametrize("cli", MCP_CLIS)
def test_a_wrong_token_leaves_the_cli_without_orchs_tools(cli, coord, tmp_path, monkeypatch):
    url, _, _ = coord
    done, requests = run_cli(cli, McpEndpoint(url, "orch.r1.not-a-token"), ["All done."], tmp_path, monkeypatch)
    if cli == "codex":  # ``required``: it says so and stops before asking the model anything
        assert done.returncode != 0 and not requests and "orch" in done.stdout + done.stderr, done.stderr[-1500:]
        return
    assert done.returncode == 0 and requests, done.stderr[-1500:]
    assert not [n for t in offered(requests) for n in t if mcp_tool_name(n, known=set()) is not None]


# ---------------------------------------------------------------------------------------- config keys
def cli_run(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env={**os.environ, **(env or {})}, cwd=cwd, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


@pytest.mark.real_cli
def test_claude_keeps_every_key_of_the_server(tmp_path):
    """``claude mcp add-json`` stores a server as claude's own schema reads it, dropping what it
    does not know; and the variable the preset sets is one the installed claude reads."""
    from agents.clis.claude import IDLE_TIMEOUT_ENV

    exe = need("claude")
    argv = get_preset("claude").build(inv(tmp_path))
    server = json.loads(argv[argv.index("--mcp-config") + 1])["mcpServers"]["orch"]
    added = cli_run([exe, "mcp", "add-json", "-s", "user", "orch", json.dumps(server)])
    assert added.returncode == 0, added.stderr
    assert json.loads((Path(os.environ["HOME"]) / ".claude.json").read_text())["mcpServers"]["orch"] == server
    with open(os.path.realpath(exe), "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as image:
        assert image.find(IDLE_TIMEOUT_ENV.encode()) >= 0, f"{exe} no longer reads {IDLE_TIMEOUT_ENV}"


@pytest.mark.real_cli
def test_codex_reads_every_key_of_the_server(tmp_path):
    """``codex mcp get --json`` shows the table as codex parsed it; a wrong approval mode fails
    the load (so ``approve`` is one it knows); unknown keys fail ``exec --strict-config`` (the
    real runs above pass it)."""
    exe = need("codex")
    argv = get_preset("codex").build(inv(tmp_path, preset="codex"))
    override = argv[argv.index("--ignore-user-config") + 2]
    got = cli_run([exe, "-c", override, "mcp", "get", "orch", "--json"])
    assert got.returncode == 0, got.stderr
    parsed = json.loads(got.stdout)
    assert parsed["enabled"] and parsed["transport"]["type"] == "streamable_http"
    assert (parsed["transport"]["url"], parsed["transport"]["bearer_token_env_var"]) == (ENDPOINT.url, MCP_TOKEN_ENV)
    assert (parsed["startup_timeout_sec"], parsed["tool_timeout_sec"]) == (60, MCP_TOOL_TIMEOUT_S)
    bad = cli_run([exe, "-c", override.replace('"approve"', '"approves"'), "mcp", "get", "orch", "--json"])
    assert bad.returncode != 0 and "default_tools_approval_mode" in bad.stderr, bad.stderr[-500:]


def _package_root(exe: str, name: str) -> Path:
    path = Path(os.path.realpath(exe))
    return next(p for p in path.parents if (p / "package.json").is_file() and json.loads((p / "package.json").read_text())["name"] == name)


def _leaves(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        yield from _leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]


@pytest.mark.real_cli
def test_gemini_reads_its_settings(tmp_path, coord, monkeypatch):
    """``gemini mcp list`` in the private home: the server's keys valid (gemini checks them) and
    connected with the token; the other sections' keys are in the installed settings reference."""
    exe = need("gemini")
    url, tok, _ = coord
    monkeypatch.setenv(MODEL_SERVER_ENV, "http://127.0.0.1:8")
    i = inv(tmp_path, mcp=McpEndpoint(url, tok["w1"]), preset="gemini")
    env = get_preset("gemini").env(i)
    listed = cli_run([exe, "mcp", "list"], {**env, "GEMINI_CLI_TRUST_WORKSPACE": "true"}, cwd=tmp_path)
    text = listed.stdout + listed.stderr
    assert "Invalid configuration" not in text and re.search(rf"orch: {re.escape(url)} \(http\) - Connected", text), text
    settings = json.loads((Path(env["GEMINI_CLI_HOME"]) / ".gemini" / "settings.json").read_text())
    reference = (_package_root(exe, "@google/gemini-cli") / "bundle" / "docs" / "reference" / "configuration.md").read_text()
    settings.pop("mcpServers")
    keys = list(_leaves(settings))
    assert keys == ["security.auth.selectedType", "mcp.allowed", "model.disableLoopDetection"]
    assert not [k for k in keys if f"`{k}`" not in reference], "not in gemini's settings reference"


@pytest.mark.real_cli
def test_opencode_reads_its_config(tmp_path, coord):
    """``opencode debug config`` shows the config as opencode resolved it (it drops keys it does
    not know); ``opencode mcp list`` connects with the token."""
    exe = need("opencode")
    url, tok, _ = coord
    i = inv(tmp_path, mcp=McpEndpoint(url, tok["w1"]), preset="opencode")
    env = get_preset("opencode").env(i)
    ours = json.loads((Path(env["XDG_CONFIG_HOME"]) / "opencode" / "opencode.json").read_text())
    shown = cli_run([exe, "debug", "config"], env, cwd=tmp_path)
    resolved = json.loads(shown.stdout[shown.stdout.index("{"):])
    assert resolved["mcp"] == {"orch": {**ours["mcp"]["orch"], "headers": {"Authorization": "***"}}}  # redacted when shown
    assert resolved["permission"] == ours["permission"]
    listed = cli_run([exe, "mcp", "list"], env, cwd=tmp_path)
    assert re.search(r"orch\W+connected", re.sub(r"\x1b\[[0-9;]*m", "", listed.stdout + listed.stderr)), listed.stdout
