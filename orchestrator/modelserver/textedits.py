"""Answers for clients that edit by text, not by tool calls: aider.

aider offers no tools; its system prompt asks for edits in one of its formats, and it applies
what the answer holds. Two are understood here, detected from that prompt:

- ``whole`` ("file listing"): the path, then the whole new content between fences;
- ``diff`` ("SEARCH/REPLACE block"): the path, then a fenced block replacing the file's whole
  current content (an empty SEARCH creates the file).

A script that can state its changes (``changes(view)``: sim, replay) answers the task's first
turn with all of them at once, since aider makes one request per task; a later turn (aider
reflecting on a lint error or a failed edit) gets a closing text. What a text edit cannot do --
delete a file, write binary content -- is said in the answer, and the file is left as it is.
"""

from __future__ import annotations

import re

from orchestrator.modelserver.changes import FileChange
from orchestrator.modelserver.turns import Turn, Usage

_FENCE = re.compile(r"^(`{3,}|<(\w+)>)[\w+-]*$", re.M)


def edit_format(system: str) -> str | None:
    """``whole``, ``diff`` or None (not a text-edit client) from a request's system prompt."""
    if "SEARCH/REPLACE block" in system:
        return "diff"
    if "file listing" in system:
        return "whole"
    return None


def fence(system: str) -> tuple[str, str]:
    """The fence pair the client told the model to use (aider picks one its files do not contain)."""
    m = _FENCE.search(system)
    if m is None:
        return "```", "```"
    return (m.group(1), m.group(1)) if m.group(2) is None else (m.group(1), f"</{m.group(2)}>")


def render(changes: list[FileChange], fmt: str, fences: tuple[str, str], intro: str) -> str:
    opening, closing = fences
    blocks, skipped = [], []
    for c in changes:
        if c.new is None:
            skipped.append(f"{c.path} ({'binary content' if c.binary else 'deleted'}: a text edit cannot do that)")
            continue
        body = c.new if c.new.endswith("\n") or not c.new else c.new + "\n"
        if fmt == "whole":
            blocks.append(f"{c.path}\n{opening}\n{body}{closing}\n")
        else:
            old = c.old or ""
            old = old if old.endswith("\n") or not old else old + "\n"
            blocks.append(f"{c.path}\n{opening}\n<<<<<<< SEARCH\n{old}=======\n{body}>>>>>>> REPLACE\n{closing}\n")
    text = intro + "\n\n" + "\n".join(blocks)
    if skipped:
        text += "\nNot changed here: " + "; ".join(skipped) + "\n"
    return text


def text_edit_turn(script, view, fmt: str) -> Turn:
    """The turn for a text-edit client: the script's changes rendered in ``fmt`` at the first turn."""
    if view.turn > 0:
        return Turn(text="The edits above complete the task.")
    changes, fault, usage = script.changes(view)
    if not changes:
        return Turn(text="No file needs to change for this task.", fault=fault, usage=usage or Usage())
    intro = f"Here {'is the edit' if len(changes) == 1 else 'are the edits'} for this task."
    return Turn(text=render(changes, fmt, fence(view.system), intro), fault=fault, usage=usage or Usage())
