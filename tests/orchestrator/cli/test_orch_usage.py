"""Every usage error of every `orch` command: exit 2 and exactly one line on stderr naming the
argument, nothing on stdout, nothing written.

The parser's errors are walked over the command tree itself (an unknown option for every command,
the missing required arguments, a value of the wrong type for every typed option), so a command
added later is covered without a line here; orch's own usage errors (numbers out of range, names
that name nothing, options that exclude or need each other) are listed per command.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from orchestrator.cli import app as cli_mod
from orchestrator.cli.main import main
from fixtures_path import REPO_ROOT

FAST = "0.00005"
TEMPLATE = REPO_ROOT / "templates" / "tiny-feature.json"
EXPERIMENT = REPO_ROOT / "experiments" / "coordination.yaml"


def cli(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as ei:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return ei.value.code, out, err


def assert_usage_error(result, *needles) -> None:
    code, out, err = result
    assert code == 2, (code, err)
    assert out == "" and err.startswith("orch: error: ") and err.count("\n") == 1 and err.endswith("\n"), err
    for n in needles:
        assert n in err, (n, err)


def leaf_commands() -> list[tuple[list[str], object]]:
    """Every command that runs something, as (its words after `orch`, its click command)."""
    from orchestrator.cli import analysis, mcp, model, ops, run, store, template  # noqa: F401

    out = []

    def walk(cmd, words):
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            (walk if hasattr(sub, "commands") else lambda c, w: out.append((w, c)))(sub, [*words, name])

    walk(typer.main.get_command(cli_mod.app), [])
    return out


LEAVES = leaf_commands()
IDS = [" ".join(w) for w, _ in LEAVES]


def fillers(cmd) -> list[str]:
    """Values for every required argument and option, so that only the broken one is wrong."""
    args: list[str] = []
    for p in cmd.params:
        if p.required:
            args += ["x"] if p.param_type_name == "argument" else [p.opts[0], "x"]
    return args


@pytest.mark.parametrize("words,cmd", LEAVES, ids=IDS)
def test_unknown_option(capsys, words, cmd):
    assert_usage_error(cli(capsys, *words, *fillers(cmd), "--no-such-option"), "--no-such-option", f"orch {' '.join(words)} --help")


@pytest.mark.parametrize("words,cmd", [(w, c) for w, c in LEAVES if any(p.required for p in c.params)],
                         ids=[i for i, (_, c) in zip(IDS, LEAVES) if any(p.required for p in c.params)])
def test_missing_required_argument(capsys, words, cmd):
    first = next(p for p in cmd.params if p.required)
    assert_usage_error(cli(capsys, *words), "Missing", first.opts[0])


TYPED = [(w, c, p) for w, c in LEAVES for p in c.params if p.param_type_name == "option" and p.bare_type() in ("int", "float")]


@pytest.mark.parametrize("words,cmd,param", TYPED, ids=[f"{' '.join(w)} {p.opts[0]}" for w, _, p in TYPED])
def test_typed_option_refuses_a_word(capsys, words, cmd, param):
    assert_usage_error(cli(capsys, *words, *fillers(cmd), param.opts[0], "many"), f"Invalid value for '{param.opts[0]}'")


def test_the_walk_found_the_commands():
    assert {"run", "status", "template lint", "model-server", "export", "history"} <= set(IDS)
    assert {f"{' '.join(w)} {p.opts[0]}" for w, _, p in TYPED} >= {"run --runs", "run --time-scale", "watch --interval", "model-server --port"}


# ------------------------------------------------------------------------------ orch's own usage errors
@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One small finished run, for the commands that look names up in a run."""
    results = tmp_path_factory.mktemp("results")
    r = subprocess.run([sys.executable, "-m", "orchestrator", "run", "--variant", "pull-2", "--template", "tiny-feature",
                        "--runs", "1", "--time-scale", FAST, "--results", str(results), "--json"],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    return Path(json.loads(r.stdout)["runs"][0]["run_dir"])


RUN_CASES = [
    (["--variant", "no-such"], ["--variant 'no-such'", "no such variant"]),
    (["--variant", "no-such", "--experiment", str(EXPERIMENT)], ["--variant 'no-such'", "has no such variant"]),
    (["--variant", "pull-2", "--runs", "0"], ["--runs 0"]),
    (["--variant", "pull-2", "--runs", "1001"], ["--runs 1001"]),
    (["--variant", "pull-2", "--seed", "4294967296"], ["--seed 4294967296"]),
    (["--variant", "pull-2", "--time-scale", "nan"], ["--time-scale nan", "finite"]),
    (["--variant", "pull-2", "--time-scale", "inf"], ["--time-scale inf", "finite"]),
    (["--variant", "pull-2", "--time-scale", "0"], ["--time-scale 0"]),
    (["--variant", "pull-2", "--time-scale", "-1"], ["--time-scale -1"]),
    (["--variant", "pull-2", "--time-scale", "2"], ["--time-scale 2"]),
]


@pytest.mark.parametrize("args,needles", RUN_CASES, ids=[" ".join(a[1:3] if a[1] == "no-such" else a[2:4]) for a, _ in RUN_CASES])
def test_run_usage_errors_leave_nothing(capsys, tmp_path, args, needles):
    results = tmp_path / "results"
    assert_usage_error(cli(capsys, "run", *args, "--results", results), *needles)
    assert not results.exists()


def test_usage_errors_in_a_run(capsys, finished):
    cases = [
        (["history", finished, "--task", "a", "--agent", "w1"], ["--task and --agent"]),
        (["history", finished, "--entity", "bogus"], ["--entity 'bogus'"]),
        (["history", finished, "--task", "no-such"], ["--task 'no-such'"]),
        (["history", finished, "--agent", "w99"], ["'w99'"]),
        (["diff", finished, "w99"], ["'w99'"]),
        (["log", finished, "w99"], ["'w99'"]),
        (["logs", finished, "w99"], ["'w99'"]),
        (["watch", finished, "--interval", "inf"], ["--interval"]),
        (["watch", finished, "--interval", "nan"], ["--interval"]),
        (["watch", finished, "--interval", "0"], ["--interval"]),
    ]
    for args, needles in cases:
        assert_usage_error(cli(capsys, *args), *needles)


def test_usage_errors_of_the_store_and_template_commands(capsys, tmp_path):
    url = f"sqlite://{tmp_path / 'two.db'}"
    for run in ("one", "two"):
        assert cli(capsys, "import", TEMPLATE, "--store", url, "--run", run)[0] == 0
    assert_usage_error(cli(capsys, "export", "--store", url, "-o", tmp_path / "x.json"), "choose one with --run")
    assert_usage_error(cli(capsys, "export", "--store", url, "--run", "one", "-o", tmp_path / "x.json", "--format", "xml"),
                       "--format", "'xml'")
    assert not (tmp_path / "x.json").exists()
    for args, needle in [(["A"], "expected A..B"), (["A...B"], "symmetric"), (["A..B", "--deps", "tree"], "--deps")]:
        assert_usage_error(cli(capsys, "template", "from-history", tmp_path, *args), needle)


def test_usage_errors_of_the_model_server(capsys, tmp_path):
    cases = [
        (["--port", "70000"], "--port 70000"),
        (["--fault", "rate_limit"], "expected KIND@TURN"),
        (["--fault", "meteor@1"], "'meteor'"),
        (["--fault", "rate_limit@1:retry_after=inf"], "retry_after"),
        (["--fault", "rate_limit@1:colour=red"], "colour=red"),
        (["--store", "sqlite:///x.db"], "--store and --run"),
        (["--tasks", TEMPLATE, "--store", "sqlite:///x.db", "--run", "r"], "--tasks and --store"),
        (["--repo", tmp_path], "--repo"),
    ]
    for args, needle in cases:
        assert_usage_error(cli(capsys, "model-server", *args), needle)
