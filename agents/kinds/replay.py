"""The ``replay`` kind: re-applies a real commit of the target repository in the agent's worktree.

The commit is ``task.meta["commit"]`` (a sha or any name the repository knows; templates made by
`orch template from-history` carry the full sha). It is applied the way ``git cherry-pick`` does
it, a 3-way merge whose base is the commit's (first) parent, but computed with plumbing so the
worktree is never left half-merged:

1. ``X = commit-tree HEAD^{tree} -p C^``: the worktree's content as if it were a child of C's
   parent, so the merge base of X and C is exactly C's parent (no parent: unrelated histories,
   base = the empty tree);
2. ``merge-tree --write-tree X C``: the tree of "C's change applied to HEAD", or the conflicting
   paths (the task then fails naming them; nothing was written, the worktree stays clean);
3. ``commit-tree`` that tree on HEAD with C's author (name, email, date) and message, byte for
   byte; ``reset --keep`` moves the branch and updates the worktree.

Committer: the agent by default (``ctx.identity``): the agent applied the change, the way
cherry-pick records who picked it, and the run's history shows which agent did what. With
``committer: original`` the original committer and date are kept too, so a commit replayed onto
its own parent gets its original sha back.

A commit whose change is already in HEAD (its tree equals HEAD's) completes without a commit
(``data.replay.empty``). A merge commit is applied as its diff against its first parent.

Options (``kind_options``): ``committer`` (``agent`` | ``original``), ``pace`` (true: the task
takes its estimate x the run's time scale, like ``sim``, so schedules and metrics stay
meaningful; false: as fast as git goes).
"""

from __future__ import annotations

import re
from typing import Any

from coordstore.errors import AgentError, ReplayError
from coordstore.graph import estimate_ms
from coordstore.paths import PathEscape, confine, text_path

from gitwork.runner import git
from agents.kinds import KindContext, Result

COMMITTERS = ("agent", "original")
OPTIONS = {"committer": "agent", "pace": True}
_PERSON = re.compile(rb"^(?P<name>.*?) <(?P<email>[^>]*)> (?P<date>\d+ [+-]\d{4})$")


def _git(wt, *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None,
         ok: tuple[int, ...] = (0,)) -> tuple[int, bytes]:
    """``git -C wt args`` with bytes in and out (commit messages are kept byte for byte); a failed
    step raises ``ReplayError``, whose message becomes the task's failure reason."""
    p = git(wt, *args, env=env, input=stdin, ok=ok, binary=True, error=ReplayError)
    return p.returncode, p.stdout


def _out(wt, *args: str, **kw) -> str:
    return _git(wt, *args, **kw)[1].decode().strip()


def _confine_writes(wt, sha: str, head_tree: str, tree: str) -> None:
    """Every path moving from ``head_tree`` to ``tree`` stays in the worktree and out of ``.git``.
    git refuses such trees itself when it checks them out; this names the rule and the path
    before anything is written. A link is replaced, never written through (``follow=False``)."""
    out = _git(wt, "diff-tree", "-r", "-z", "--name-only", "--no-renames", head_tree, tree)[1]
    for path in filter(None, out.decode("utf-8", "surrogateescape").split("\0")):
        try:
            confine(wt, path, f"commit {sha[:12]}: path", follow=False, inside="the worktree")
        except PathEscape as e:
            raise ReplayError(str(e)) from e


def _keep_message(wt, sha: str, message: bytes) -> str:
    """``sha``, or the same commit with ``message`` byte for byte where ``commit-tree`` changed it:
    git re-encodes a message that is not UTF-8 and has no encoding header (old histories hold
    such commits) as if it were Latin-1."""
    raw = _git(wt, "cat-file", "commit", sha)[1]
    head, _, written = raw.partition(b"\n\n")
    if written == message:
        return sha
    return _git(wt, "hash-object", "-t", "commit", "-w", "--stdin", stdin=head + b"\n\n" + message)[1].decode().strip()


class ParsedCommit:
    """The parts of a raw commit object the replay needs."""

    def __init__(self, sha: str, raw: bytes):
        head, _, self.message = raw.partition(b"\n\n")
        self.sha = sha
        self.parents: list[str] = []
        self.encoding: str | None = None
        people: dict[bytes, re.Match] = {}
        for line in head.split(b"\n"):
            if line.startswith(b" "):  # continuation of a multi-line header (gpgsig, mergetag)
                continue
            key, _, value = line.partition(b" ")
            if key == b"parent":
                self.parents.append(value.decode())
            elif key in (b"author", b"committer"):
                m = _PERSON.match(value)
                if m is None:
                    raise ReplayError(f"commit {sha[:12]}: cannot read its {key.decode()} line")
                people[key] = m
            elif key == b"encoding":
                self.encoding = value.decode()
        if b"author" not in people or b"committer" not in people:
            raise ReplayError(f"commit {sha[:12]}: no author or committer line")
        self.author, self.committer = people[b"author"], people[b"committer"]

    def env(self, role: str) -> dict[str, str]:
        """GIT_<ROLE>_NAME/EMAIL/DATE of the original author or committer."""
        m = self.author if role == "AUTHOR" else self.committer
        dec = lambda b: b.decode("utf-8", "surrogateescape")  # noqa: E731 - names are bytes in git
        return {f"GIT_{role}_NAME": dec(m["name"]), f"GIT_{role}_EMAIL": dec(m["email"]),
                f"GIT_{role}_DATE": dec(m["date"])}


class ReplayKind:
    name = "replay"
    time_scaled = True  # it takes each task's estimate x the run's time_scale, like sim

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        raw = dict(options or {})
        self.unknown = sorted(k for k in raw if k not in OPTIONS)
        self.committer = raw.get("committer", OPTIONS["committer"])
        if self.committer not in COMMITTERS:
            raise AgentError(f"kind replay: option committer {self.committer!r} is not one of {', '.join(COMMITTERS)}")
        self.pace = raw.get("pace", OPTIONS["pace"])
        if not isinstance(self.pace, bool):
            raise AgentError(f"kind replay: option pace {self.pace!r} must be true or false")

    @classmethod
    def preflight(cls, options: dict[str, Any] | None) -> None:
        # at plan time, as the runner will read them: a bad option is refused before the run starts
        cls(options)

    def run(self, task, ctx: KindContext) -> Result:
        ref = task.meta.get("commit")
        if not isinstance(ref, str) or not ref.strip():
            return Result(ok=False, reason=f"replay: task {task.id} has no meta.commit (the commit to replay)")
        t0 = ctx.now_s() if self.pace else 0.0
        ctx.events.step("replay", args={"commit": ref}, task=task.id)
        try:
            data = self.apply(ref.strip(), ctx)
        except ReplayError as e:
            return Result(ok=False, reason=f"replay of {ref[:12]}: {e}")
        if data.get("conflicts"):
            return Result(ok=False, reason=f"replay of {ref[:12]}: conflict in {', '.join(data['conflicts'])}",
                          data={"replay": data})
        if data["empty"]:
            ctx.events.log(f"replay: {ref[:12]} changes nothing on this branch (already applied); no commit", task=task.id)
        if self.pace:
            ctx.sleep(t0 + estimate_ms(task) * ctx.time_scale / 1000.0 - ctx.now_s())
        return Result(ok=True, data={"replay": data})

    def apply(self, ref: str, ctx: KindContext) -> dict[str, Any]:
        """Apply commit ``ref`` on the worktree's HEAD and commit it. Returns what happened:
        ``{commit, parent, applied, empty}``, or ``{commit, parent, conflicts}`` (worktree untouched)."""
        wt = ctx.worktree
        code, out = _git(wt, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}", ok=(0, 1, 128))
        if code != 0:
            raise ReplayError(f"commit {ref!r} is not in the repository of worktree {wt}")
        sha = out.decode().strip()
        commit = ParsedCommit(sha, _git(wt, "cat-file", "commit", sha)[1])
        parent = commit.parents[0] if commit.parents else None
        head = _out(wt, "rev-parse", "HEAD")
        head_tree = _out(wt, "rev-parse", "HEAD^{tree}")
        # the worktree's content as a child of C's parent: merge-tree then uses that parent as base
        probe = _out(wt, "commit-tree", "--no-gpg-sign", head_tree, *(["-p", parent] if parent else []),
                     "-m", "orch replay probe", env=ctx.identity)
        code, out = _git(wt, "merge-tree", "--write-tree", "-z", "--name-only", "--no-messages",
                         "--allow-unrelated-histories", probe, sha, ok=(0, 1))
        fields = out.decode("utf-8", "surrogateescape").split("\0")
        tree = fields[0].strip()
        if not re.fullmatch(r"[0-9a-f]{40}([0-9a-f]{24})?", tree):  # status 1 is also some errors
            raise ReplayError(f"git merge-tree printed no tree for {sha[:12]} onto {head[:12]}")
        if code == 1:
            conflicts = list(dict.fromkeys(text_path(f) for f in fields[1:] if f))
            if not conflicts:
                raise ReplayError(f"git merge-tree reported a conflict for {sha[:12]} but named no path")
            return {"commit": sha, "parent": parent, "conflicts": conflicts}
        if tree == head_tree:
            return {"commit": sha, "parent": parent, "applied": None, "empty": True}
        _confine_writes(wt, sha, head_tree, tree)
        env = {**ctx.identity, **commit.env("AUTHOR")}
        if self.committer == "original":
            env.update(commit.env("COMMITTER"))
        if commit.encoding:  # keep the original's encoding header (config by environment, git >= 2.31)
            env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="i18n.commitEncoding", GIT_CONFIG_VALUE_0=commit.encoding)
        new = _git(wt, "commit-tree", "--no-gpg-sign", tree, "-p", head, "-F", "-", env=env,
                   stdin=commit.message)[1].decode().strip()
        new = _keep_message(wt, new, commit.message)
        _git(wt, "reset", "--quiet", "--keep", new)
        return {"commit": sha, "parent": parent, "applied": new, "empty": False}
