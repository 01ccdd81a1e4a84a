"""The bare remote where a run's coordinator and its workers on other hosts meet (standard library
only: an agent's runner imports it to push).

Refs a run keeps there (``<run>`` is the run id):

* ``refs/heads/orch/<run>/base``: the base every agent's worktree starts from (pushed by the
  coordinator at setup);
* ``refs/orch/<run>/c/<sha>``: one ref per completed task's commit, named by the commit itself,
  pushed by the worker's runner BEFORE it reports the task done. Never forced, never moved: a
  worker that dies after pushing loses nothing, and anyone who knows the commit (the store's
  completion row has it) knows the ref to fetch;
* ``refs/heads/orch/<run>/<agent>``: the agent's latest work (forced: a slot's next worker starts
  again from the base), for people browsing the remote.

A URL is anything git takes (a path, ``file://``, ``git://``, ``ssh://``, ``host:path``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

from coordstore.errors import GitError

from gitwork.runner import failure, git

RETRIES = 3  # a push/fetch racing another on the same refs, or a daemon's brief hiccup
RETRY_PAUSE_S = 0.2


def base_ref(run_id: str) -> str:
    return f"refs/heads/orch/{run_id}/base"


def commit_ref(run_id: str, sha: str) -> str:
    """Where a completed task's commit is kept on the remote (and fetched to)."""
    return f"refs/orch/{run_id}/c/{sha}"


def is_local(url: str) -> bool:
    """A plain path (or file://): the coordinator may create the bare repository itself."""
    if url.startswith("file://"):
        return True
    return "://" not in url and not (":" in url.split("/", 1)[0] and not os.path.isabs(url))


def local_path(url: str) -> str:
    return url[len("file://"):] if url.startswith("file://") else url


def ensure_bare(url: str) -> None:
    """Create the bare repository at a local ``url`` when nothing is there yet; a remote URL
    (ssh, git daemon) must exist already: a push to it will say if it does not."""
    if not is_local(url):
        return
    path = os.path.abspath(local_path(url))
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise GitError(f"--remote {url}: {path} exists and is not a directory")
        return
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise GitError(f"--remote {url}: directory {parent} does not exist")
    git(parent, "init", "-q", "--bare", path, what=f"git init --bare {path}")


def _retrying(cwd, args: list[str], what: str) -> None:
    for i in range(RETRIES):
        p = git(cwd, *args, ok=None, what=what)
        if p.returncode == 0:
            return
        if i == RETRIES - 1:
            raise failure(p, what=what)
        time.sleep(RETRY_PAUSE_S * (i + 1))


def push(cwd, url: str, refspecs: Iterable[str]) -> None:
    """``git push url refspecs`` (retried a few times); ``GitError`` when it keeps failing."""
    specs = list(refspecs)
    if specs:
        _retrying(cwd, ["push", "--quiet", "--no-verify", url, *specs], f"git push to {url}")


def fetch(cwd, url: str, refspecs: Iterable[str]) -> None:
    """``git fetch url refspecs`` (retried); no FETCH_HEAD, so runners sharing one clone can fetch at once."""
    specs = list(refspecs)
    if specs:
        _retrying(cwd, ["fetch", "--quiet", "--no-write-fetch-head", "--no-tags", url, *specs], f"git fetch from {url}")


def has_commit(cwd, sha: str) -> bool:
    return git(cwd, "cat-file", "-e", f"{sha}^{{commit}}", ok=None).returncode == 0


def fetch_commits(cwd, url: str, run_id: str, shas: Iterable[str]) -> list[str]:
    """Fetch the task commits missing in ``cwd`` (each under its ``commit_ref``); returns them."""
    missing = [s for s in dict.fromkeys(shas) if not has_commit(cwd, s)]
    fetch(cwd, url, [f"+{commit_ref(run_id, s)}:{commit_ref(run_id, s)}" for s in missing])
    return missing


def push_task(cwd, url: str, run_id: str, sha: str, branch: str | None) -> None:
    """Push a completed task's commit to its ``commit_ref`` (and, forced, the agent's branch)."""
    specs = [f"{sha}:{commit_ref(run_id, sha)}"]
    if branch:
        specs.append(f"+{sha}:refs/heads/{branch}")
    push(cwd, url, specs)
