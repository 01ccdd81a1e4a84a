"""Benchmark: orch's Merger against raw git plumbing, merging N agent branches into one ref.

    python bench/merge.py [--branches 8] [--files 300] [--rounds 5]

Builds a throwaway repository (``--files`` files) and ``--branches`` agent branches, each
touching its own files. Each round merges all branches into a fresh ref twice: once with
``gitwork.merging.Merger`` and once with raw ``git merge-tree --write-tree`` +
``git commit-tree`` + ``git update-ref`` via subprocess (the same three commands, no checks),
alternating which goes first. Prints the median of each, and a final JSON line with
``branches``, ``orch_ms``, ``raw_ms``, ``ratio`` (orch / raw; the target is <= 2.0).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gitwork.runner import identity_env
from gitwork.merging import Merger

FILES_PER_BRANCH = 3  # each agent edits a few of its own files, as a small task would
IDENTITY = identity_env("bench")


def git(repo: Path, *args: str, env: dict | None = None, stdin: str | None = None) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], input=stdin, capture_output=True, text=True,
                          check=True, env={**os.environ, **IDENTITY, **(env or {})})
    return proc.stdout.strip()


def build_repo(root: Path, n_files: int, n_branches: int) -> tuple[Path, str, list[str]]:
    repo = root / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for i in range(n_files):
        d = repo / f"pkg{i % 10}"
        d.mkdir(exist_ok=True)
        (d / f"mod{i}.py").write_text("".join(f"def f{i}_{k}():\n    return {k}\n" for k in range(20)))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    base = git(repo, "rev-parse", "HEAD")
    branches = []
    index = {"GIT_INDEX_FILE": str(root / "bench-index")}
    for b in range(n_branches):
        git(repo, "read-tree", base, env=index)
        for k in range(FILES_PER_BRANCH):
            i = (b * FILES_PER_BRANCH + k) % n_files
            text = f"# agent {b} was here\n" + (repo / f"pkg{i % 10}" / f"mod{i}.py").read_text()
            blob = git(repo, "hash-object", "-w", "--stdin", stdin=text)
            git(repo, "update-index", "--cacheinfo", f"100644,{blob},pkg{i % 10}/mod{i}.py", env=index)
        tree = git(repo, "write-tree", env=index)
        sha = git(repo, "commit-tree", tree, "-p", base, "-m", f"agent {b}")
        name = f"orch/bench/a{b}"
        git(repo, "update-ref", f"refs/heads/{name}", sha)
        branches.append(name)
    return repo, base, branches


def run_orch(repo: Path, base: str, branches: list[str], ref: str) -> float:
    merger = Merger(repo, ref)
    merger.create(base)
    t0 = time.perf_counter()
    for b in branches:
        res = merger.merge(b, f"merge {b}", IDENTITY)
        assert res.ok and not res.already_merged, res
    return (time.perf_counter() - t0) * 1000


def run_raw(repo: Path, base: str, branches: list[str], ref: str) -> float:
    env = {**os.environ, **IDENTITY}
    subprocess.run(["git", "-C", str(repo), "update-ref", ref, base], check=True)
    tip = base
    t0 = time.perf_counter()
    for b in branches:
        out = subprocess.run(["git", "-C", str(repo), "merge-tree", "--write-tree", tip, b],
                             capture_output=True, text=True, check=True).stdout
        tree = out.split("\n", 1)[0]
        new = subprocess.run(["git", "-C", str(repo), "commit-tree", tree, "-p", tip, "-p", b, "-m", f"merge {b}"],
                             capture_output=True, text=True, check=True, env=env).stdout.strip()
        subprocess.run(["git", "-C", str(repo), "update-ref", ref, new, tip], check=True)
        tip = new
    return (time.perf_counter() - t0) * 1000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--branches", type=int, default=8)
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    if args.branches < 1 or args.files < args.branches * FILES_PER_BRANCH or args.rounds < 1:
        ap.error(f"need --branches >= 1, --rounds >= 1 and --files >= {FILES_PER_BRANCH} x --branches")

    with tempfile.TemporaryDirectory(prefix="orch-bench-merge-") as tmp:
        t0 = time.perf_counter()
        repo, base, branches = build_repo(Path(tmp), args.files, args.branches)
        print(f"repo: {args.files} files, {args.branches} branches x {FILES_PER_BRANCH} files "
              f"(built in {time.perf_counter() - t0:.1f}s)")
        orch_ms, raw_ms = [], []
        for r in range(args.rounds):
            order = [("orch", run_orch), ("raw", run_raw)]
            if r % 2:
                order.reverse()  # alternate, so neither side always gets the warm cache
            times = {name: fn(repo, base, branches, f"refs/heads/bench/{name}-{r}") for name, fn in order}
            orch_ms.append(times["orch"])
            raw_ms.append(times["raw"])
            print(f"round {r + 1}: orch {times['orch']:.1f} ms, raw {times['raw']:.1f} ms")
        # both sides must have produced the same tree
        trees = {git(repo, "rev-parse", f"refs/heads/bench/{n}-0^{{tree}}") for n in ("orch", "raw")}
        if len(trees) != 1:
            print("error: orch and raw merges produced different trees", file=sys.stderr)
            return 1

    orch, raw = statistics.median(orch_ms), statistics.median(raw_ms)
    ratio = orch / raw
    print(f"median over {args.rounds} rounds: orch {orch:.1f} ms ({orch / args.branches:.2f} ms/merge), "
          f"raw {raw:.1f} ms ({raw / args.branches:.2f} ms/merge), ratio {ratio:.2f} (target <= 2.0)")
    print(json.dumps({"bench": "merge", "branches": args.branches, "files": args.files, "rounds": args.rounds,
                      "orch_ms": round(orch, 2), "raw_ms": round(raw, 2), "ratio": round(ratio, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
