"""coordstore.scopes: which file scopes meet, which overlapping tasks may run in parallel, and the
``scope-overlap`` warning of ``orch template lint`` (also on a 1,000-task graph)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordstore import lint, scopes
from coordstore.graph import GraphIndex
from coordstore.models import Dependency, Task


@pytest.mark.parametrize("a, b, meet", [
    ("src/a.py", "src/a.py", True),
    ("./src/a.py", "src//a.py", True),
    ("src/a.py", "src/b.py", False),
    ("src", "src/a.py", True),  # a plain path may be a directory
    ("src/", "src/sub/a.py", True),
    ("src/a", "src/ab.py", False),  # a prefix of a name is not a directory above it
    ("src/*.py", "src/a.py", True),
    ("src/*.py", "src/a.txt", False),
    ("src/*.py", "src", True),  # a directory above the glob's fixed part
    ("src/*.py", "docs/a.py", False),
    ("src/**/x.py", "src/sub/*.py", True),  # two globs: fixed parts within one another
    ("src/a/*.py", "src/b/*.py", False),
    ("*.md", "README.md", True),
])
def test_entries_overlap(a, b, meet):
    assert scopes.entries_overlap(a, b) is meet and scopes.entries_overlap(b, a) is meet


def test_colliding_names_the_tasks_and_the_entries_they_share():
    held = {"x": ["src/a.py", "docs/"], "y": ["lib/b.py"], "z": []}
    assert scopes.colliding(["docs/guide.md", "src/a.py", "tests/t.py"], held) == {"x": ["docs/guide.md", "src/a.py"]}
    assert scopes.colliding([], held) == {}  # nothing known of what it touches: meets nothing


def index(tasks: list[tuple[str, list[str]]], deps: list[tuple[str, str, str]] = ()) -> GraphIndex:
    return GraphIndex([Task(id=i, file_scope=s) for i, s in tasks],
                      [Dependency(from_id=a, to_id=b, type=k) for a, b, k in deps])


def test_parallel_overlaps_leave_out_pairs_ordered_by_the_graph():
    ix = index([("a", ["f.py"]), ("b", ["f.py"]), ("c", ["f.py"]), ("d", ["src/"]), ("e", ["src/x.py"]),
                ("box", []), ("k1", ["g.py"]), ("k2", ["g.py"])],
               [("a", "b", "blocks"), ("b", "c", "blocks"),  # a -> b -> c: ordered, even a and c
                ("box", "k1", "contains"), ("k2", "box", "blocks")])  # k2 blocks the container of k1
    assert scopes.parallel_overlaps(ix) == ([("d", "e", "src/")], 1)
    # without the chain every pair of a, b, c may run at once
    ix = index([("a", ["f.py"]), ("b", ["f.py"]), ("c", ["f.py"])])
    assert scopes.parallel_overlaps(ix) == ([("a", "b", "f.py"), ("a", "c", "f.py"), ("b", "c", "f.py")], 3)
    assert scopes.parallel_overlaps(ix, limit=1) == ([("a", "b", "f.py")], 3)


def write(tmp_path, tasks, deps=()):
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"format": "orch-graph", "version": 1,
                             "tasks": [{"id": i, "time_estimate_ms": 1000, "file_scope": s} for i, s in tasks],
                             "dependencies": [{"from_id": a, "to_id": b, "type": "blocks"} for a, b in deps]}))
    return p


def test_lint_warns_about_parallel_tasks_on_the_same_files_and_is_no_error(tmp_path):
    r = lint.lint_file(write(tmp_path, [("a", ["src/m.py"]), ("b", ["src/"]), ("c", ["src/m.py"]), ("d", ["other.py"])],
                             [("a", "c")]))
    assert r.errors == 0
    found = [(f.code, f.task, f.message) for f in r.findings if f.code == "scope-overlap"]
    assert [(c, t) for c, t, _ in found] == [("scope-overlap", "a"), ("scope-overlap", "b")]
    assert "tasks 'a' and 'b' may run in parallel" in found[0][2] and "both touch 'src/m.py'" in found[0][2]
    assert "tasks 'b' and 'c'" in found[1][2] and "avoid_conflicts" in found[1][2]


def test_lint_of_a_thousand_tasks_on_few_files_reports_a_bounded_list(tmp_path):
    """1,000 tasks in 10 chains of 100 over 20 files: thousands of overlapping pairs across chains,
    none within one; the report names MAX_OVERLAPS of them and counts the rest."""
    tasks = [(f"c{c}-{i}", [f"src/f{(c * 7 + i) % 20}.py"]) for c in range(10) for i in range(100)]
    deps = [(f"c{c}-{i}", f"c{c}-{i + 1}") for c in range(10) for i in range(99)]
    pairs, total = scopes.parallel_overlaps(GraphIndex([Task(id=i, file_scope=s) for i, s in tasks],
                                                       [Dependency(from_id=a, to_id=b, type="blocks") for a, b in deps]))
    assert all(a.split("-")[0] != b.split("-")[0] for a, b, _ in pairs)  # a chain is never parallel to itself
    # 45 pairs of chains x 100 x 100 tasks / 20 files: every file shared by 5 tasks per chain
    assert total == len(pairs) == 45 * 100 * 5
    r = lint.lint_file(write(tmp_path, tasks, deps))
    over = [f for f in r.findings if f.code == "scope-overlap"]
    assert len(over) == lint.MAX_OVERLAPS + 1 and over[-1].message.startswith(f"and {total - lint.MAX_OVERLAPS} more pairs")
    assert [(f.task, f.message.split("'")[3]) for f in over[:2]] == [(a, b) for a, b, _ in pairs[:2]]


ENTRIES = ["src/a.py", "src/b.py", "src/", "src/*.py", "src/sub/c.py", "src/sub/*.txt", "*.md", "README.md", "docs", "lib/x.py"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from(ENTRIES), max_size=3), min_size=1, max_size=12), st.data())
def test_parallel_overlaps_agree_with_comparing_every_pair(scopes_, data):
    ids = [f"t{i}" for i in range(len(scopes_))]
    edges = data.draw(st.lists(st.tuples(st.integers(0, len(ids) - 1), st.integers(0, len(ids) - 1)), max_size=10))
    deps = sorted({(ids[a], ids[b]) for a, b in edges if a < b})  # forward edges only: no cycle
    ix = index(list(zip(ids, scopes_)), [(a, b, "blocks") for a, b in deps])
    succ = {t: {b for a, b in deps if a == t} for t in ids}

    def reaches(a, b):
        stack, seen = [a], set()
        while stack:
            for n in succ[stack.pop()] - seen:
                seen.add(n)
                stack.append(n)
        return b in seen

    expected = [(a, b) for i, a in enumerate(ids) for b in ids[i + 1:]
                if scopes.shared_entries(scopes_[i], ix.tasks[b].file_scope) and not reaches(a, b) and not reaches(b, a)]
    pairs, total = scopes.parallel_overlaps(ix)
    assert [(a, b) for a, b, _ in pairs] == expected and total == len(expected)
