"""A repository holding every kind of file a real one holds, with a history that adds, changes and
removes each: a PNG-like binary, symbolic links (inside, and pointing out), a file without a
final newline, CRLF line endings, a file name that is not UTF-8, a large file, a Git LFS pointer
(with its ``.gitattributes``; git-lfs need not be installed: the pointer is the content), a
submodule (a gitlink to a second local repository), an executable-bit change, a rename and a
deletion; and one commit message that is not UTF-8.

``every_kind_repo(root)`` builds it and returns the repository with the tags ``A`` (the base) and
``B`` (the end of the history to replay), and the submodule's repository.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

T0 = 1_700_000_000  # fixed dates: the same history (and shas) on every machine
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8  # git sees a NUL: binary
LATIN1_NAME = b"caf\xe9.txt"  # "café.txt" in Latin-1: not UTF-8
LARGE_BYTES = 3 * 1024 * 1024  # large enough to be "a large file", small enough for fast tests
LFS_POINTER = ("version https://git-lfs.github.com/spec/v1\n"
               "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n")


def _env(n: int) -> dict[str, str]:
    """git cut off from the machine's configuration, with a fixed identity and date."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    date = f"{T0 + n * 60} +0000"
    env.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="Ann Author",
               GIT_AUTHOR_EMAIL="ann@example.org", GIT_COMMITTER_NAME="Ann Author",
               GIT_COMMITTER_EMAIL="ann@example.org", GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
    return env


def fgit(repo: Path, *args: str | bytes, n: int = 0) -> str:
    """``git ARGS`` in ``repo`` (arguments may be bytes: paths that are not UTF-8); stdout, stripped."""
    argv = [os.fsencode(a) if isinstance(a, str) else a for a in ("git", "-C", str(repo), *args)]
    out = subprocess.run(argv, env=_env(n), check=True, capture_output=True).stdout
    return out.decode("utf-8", "surrogateescape").strip()


def large_text(tag: str) -> bytes:
    line = f"{tag} " + "x" * 70 + "\n"
    return (line * (LARGE_BYTES // len(line) + 1)).encode()


@dataclass
class EveryKind:
    repo: Path
    sub: Path  # the submodule's own repository
    A: str
    B: str

    def tree(self, rev: str) -> str:
        return fgit(self.repo, "rev-parse", f"{rev}^{{tree}}")


class _Builder:
    def __init__(self, root: Path):
        self.root, self.n = root, 0
        root.mkdir(parents=True)
        fgit(root, "init", "-q", "-b", "main")

    def path(self, rel: str | bytes) -> Path:
        return Path(os.fsdecode(os.path.join(os.fsencode(self.root), os.fsencode(rel))))

    def write(self, rel: str | bytes, data: bytes) -> None:
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)

    def link(self, rel: str, target: str) -> None:
        p = self.path(rel)
        if p.is_symlink():
            p.unlink()
        p.parent.mkdir(parents=True, exist_ok=True)
        p.symlink_to(target)

    def commit(self, subject: str | bytes) -> str:
        self.n += 1
        fgit(self.root, "add", "-A", n=self.n)
        if isinstance(subject, str):
            fgit(self.root, "commit", "-q", "-m", subject, n=self.n)
            return fgit(self.root, "rev-parse", "HEAD")
        # bytes: written as the object itself (`git commit` would re-encode a message that is not UTF-8)
        person = f"Ann Author <ann@example.org> {T0 + self.n * 60} +0000".encode()
        raw = (b"tree " + fgit(self.root, "write-tree").encode() + b"\nparent " + fgit(self.root, "rev-parse", "HEAD").encode()
               + b"\nauthor " + person + b"\ncommitter " + person + b"\n\n" + subject + b"\n")
        sha = subprocess.run(["git", "-C", str(self.root), "hash-object", "-t", "commit", "-w", "--stdin"], input=raw,
                             env=_env(self.n), check=True, capture_output=True).stdout.decode().strip()
        fgit(self.root, "update-ref", "HEAD", sha)
        return sha


def every_kind_repo(root: Path) -> EveryKind:
    """The repository at ``root/repo`` (its submodule's at ``root/sub``); see the module docstring."""
    root = Path(root).resolve()  # the submodule's URL is its absolute path
    sub = _Builder(root / "sub")
    sub.write("lib.txt", b"lib v1\n")
    s1 = sub.commit("sub: v1")
    sub.write("lib.txt", b"lib v2\n")
    s2 = sub.commit("sub: v2")

    h = _Builder(root / "repo")
    h.write("README.md", b"# every kind\n")
    h.write("notes.txt", b"notes\n")
    h.write("tool.sh", b"#!/bin/sh\necho tool\n")
    h.write("gone.txt", b"to be deleted\n")
    h.write("old-name.txt", b"to be renamed\n" * 5)
    h.commit("base")
    fgit(h.root, "tag", "A")

    h.write("img/logo.png", PNG)
    h.commit("Add a PNG")
    h.link("link-in", "README.md")
    h.link("docs/link-out", "../../outside.txt")  # points out of the repository (dangling here)
    h.commit("Add symbolic links, one inside, one pointing out")
    h.write("noeol.txt", b"no final newline")
    h.write("crlf.txt", b"one\r\ntwo\r\nthree\r\n")
    h.commit("Add a file without a final newline and a CRLF file")
    h.write(LATIN1_NAME, b"caf\xe9 au lait\n")  # a Latin-1 name and Latin-1 content
    h.commit("Add a file whose name is not UTF-8")
    h.write("data/large.txt", large_text("v1"))
    h.commit("Add a large file")
    h.write(".gitattributes", b"*.bin filter=lfs diff=lfs merge=lfs -text\n")
    h.write("data/model.bin", LFS_POINTER.encode())
    h.commit("Track model.bin with Git LFS (the pointer is committed)")
    fgit(h.root, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(sub.root), "vendor/sub", n=h.n)
    fgit(h.root / "vendor" / "sub", "checkout", "-q", s1)
    h.commit("Add a submodule at v1")
    (h.root / "tool.sh").chmod(0o755)
    h.commit("Make tool.sh executable")
    h.write("img/logo.png", PNG[::-1])
    h.write("crlf.txt", b"one\r\ntwo\r\nTHREE\r\nfour\r\n")
    h.write("noeol.txt", b"still no final newline")
    h.commit("Change the PNG, the CRLF and the no-newline files")
    h.link("link-in", "notes.txt")
    h.write(LATIN1_NAME, b"caf\xe9 noir\n")
    h.commit("Retarget the inside link; change the non-UTF-8 file")
    fgit(h.root / "vendor" / "sub", "checkout", "-q", s2)
    h.write("data/large.txt", large_text("v2"))
    h.commit("Move the submodule to v2; rewrite the large file")
    h.path("old-name.txt").rename(h.path("new-name.txt"))
    h.path("gone.txt").unlink()
    h.commit("Rename old-name.txt, delete gone.txt")
    h.path(LATIN1_NAME).rename(h.path(b"renamed-caf\xe9.txt"))
    h.path("docs/link-out").unlink()
    h.write("data/model.bin", LFS_POINTER.replace("12345", "54321").encode())
    h.commit("Rename the non-UTF-8 file, delete the outside link, change the LFS pointer")
    h.write("notes.txt", b"notes\nmore notes\n")
    h.commit(b"Extend notes.txt (caf\xe9: a Latin-1 message with no encoding header, as old histories have)")
    fgit(h.root, "tag", "B")
    return EveryKind(repo=h.root, sub=sub.root, A=fgit(h.root, "rev-parse", "A"), B=fgit(h.root, "rev-parse", "B"))
