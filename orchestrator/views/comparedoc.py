"""A comparison (``compare.compare``'s result) as markdown and as HTML, from one list of blocks.

Per metric a table, rows best first by the metric's direction (the baseline among them): n, mean ±
sd, median, 95 % CI, Δ and Δ % against the baseline, p (Holm), A12 and the mark. In HTML a row is
green when better than the baseline, red when worse, grey when not significant or neutral. Then
the hypotheses with each claim's verdict and test, the scaling curves, other significant pairs,
the design's smallest reachable p, and the speedups against a solo variant.
"""

from __future__ import annotations

import html
import math

from orchestrator.views.plan import design_lines

WORDS = {"lower": "lower is better", "higher": "higher is better", "neutral": "neutral"}
COLOURS = {"better": "#d3f2d8", "worse": "#f7d4d4", "n.s.": "#ececec", "neutral": "#ececec", "-": "#ececec", "baseline": "#ffffff"}


def num(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if x != 0 and abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def _p(x: float | None) -> str:
    return "-" if x is None else f"{x:.2g}"


def _signed(x: float | None, suffix: str = "") -> str:
    return "-" if x is None else ("+" if x > 0 else "") + (f"{x:.1f}" if suffix else num(x)) + suffix


def _sorted_rows(result: dict, metric: dict) -> list[str]:
    """The variants best first by the metric's direction (file order for neutral); no runs last."""
    order = result["order"]
    means = {v: result["variants"][v]["metrics"][metric["name"]].get("mean") for v in order}
    sign = {"lower": 1, "higher": -1}.get(metric["direction"], 0)
    return sorted(order, key=lambda v: (means[v] is None, sign * (means[v] or 0), order.index(v)))


def _metric_table(result: dict, metric: dict) -> tuple[list[str], list[list[str]], list[str]]:
    base = result["baseline"]
    header = ["variant", "n", "mean ± sd", "median", "95% CI", f"Δ vs {base}", "Δ %", "p (Holm)", "A12", "mark"]
    rows, classes = [], []
    for v in _sorted_rows(result, metric):
        s = result["variants"][v]["metrics"][metric["name"]]
        cells = [f"{v} (baseline)" if v == base else v, str(s["n"])]
        if s["n"]:
            ci = s.get("ci95")
            cells += [f"{num(s['mean'])} ± {num(s['sd'])}", num(s["median"]), f"[{num(ci[0])}, {num(ci[1])}]" if ci else "-"]
        else:
            cells += ["-", "-", "-"]
        vs = metric["vs_baseline"].get(v)
        if vs is None:
            cells += ["", "", "", "", ""]
            classes.append("baseline")
        else:
            cells += [_signed(vs["delta"]), _signed(vs["delta_pct"], "%"), _p(vs["p_holm"]),
                      "-" if vs["a12"] is None else f"{vs['a12']:.2f}", vs["mark"]]
            classes.append(vs["mark"])
        rows.append(cells)
    return header, rows, classes


def blocks(result: dict, title: str = "Comparison") -> list[tuple]:
    """The document as blocks: (h, level, text), (p, text), (table, header, rows, row classes), (img, alt, src)."""
    out: list[tuple] = [("h", 1, f"{title}: {', '.join(result['experiments']) or ', '.join(result['order'])}")]
    for exp, text in result["statements"].items():
        out.append(("p", f"Hypothesis ({exp}): {text}"))
    out.append(("p", f"Baseline {result['baseline']}; alpha {result['alpha']:g}. Per variant: n runs, mean ± sd, median, "
                     "95% CI of the mean (t). Δ: the variant's mean − the baseline's. p: two-sided Mann–Whitney U, "
                     f"Holm-corrected across {result['holm_family']}. A12: P(variant > baseline) + ½ P(=). Marks by the "
                     "metric's direction: better or worse when p < alpha, else n.s."))
    group = [m for m in result["metrics"] if m["group"] == "coordination"]
    for metric in result["metrics"]:
        if metric is (group or [None])[0]:  # the agent-coordination group, under its own heading
            out.append(("h", 2, "Agent coordination"))
            out.append(("p", "Coordination-tool calls, their time and tokens (orch-coordinated variants: zeros)."))
        level = 3 if metric in group else 2
        out.append(("h", level, f"{metric['name']} ({WORDS.get(metric['direction'], metric['direction'])})"))
        out.append(("table", *_metric_table(result, metric)))
    if result["hypotheses"]:
        out.append(("h", 2, "Hypotheses"))
        for h in result["hypotheses"]:
            out.append(("h", 3, f"{h['id']}: {h['text']}" if h["text"] else h["id"]))
            if not h["claims"]:
                out.append(("p", "No testable claims (claims: [{metric, a, op, b}] make it judgeable)."))
                continue
            rows = [[f"{c['metric']} {c['a']} {c['op']} {num(c['b']) if not isinstance(c['b'], str) else c['b']}",
                     c["verdict"], c["why"]] for c in h["claims"]]
            out.append(("table", ["claim", "verdict", "test"], rows,
                        [{"supported": "better", "not supported": "worse"}.get(c["verdict"], "n.s.") for c in h["claims"]]))
    if result["scaling"]:
        out.append(("h", 2, "Scaling"))
        for g in result["scaling"]:
            names = ", ".join(f"{v} ({n})" for v, n in g["variants"].items())
            out.append(("p", f"{g['label']}: {names} differ only in their number of working agents."))
            if g.get("chart"):
                out.append(("img", f"scaling-{g['label']}", g["chart"]))
    base = result["baseline"]
    others = [p for p in result["pairs"] if base not in (p["a"], p["b"]) and p.get("p_holm") is not None
              and p["p_holm"] < result["alpha"]]
    if others:
        out.append(("h", 2, "Other significant pairs"))
        out.append(("table", ["metric", "a", "b", "p (Holm)", "A12 (a vs b)"],
                    [[p["metric"], p["a"], p["b"], _p(p["p_holm"]), f"{p['a12']:.2f}"] for p in others], []))
    if result["design"]:
        out.append(("h", 2, "Design: smallest reachable p"))
        out += [("md", line) for line in design_lines(result["design"], result["alpha"])]
    speed = result["speedup"]
    if speed["variants"]:
        out.append(("h", 2, f"Speedup vs {speed['solo']}"))
        out.append(("table", ["variant", "speedup", "per working agent"],
                    [[v, f"{s['speedup']:.2f}×", f"{s['efficiency_per_agent']:.2f}"] for v, s in speed["variants"].items()], []))
    return out


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(result: dict, level: int = 1, title: str = "Comparison") -> str:
    """The comparison as markdown; ``level`` is the level of its title (2 inside a report)."""
    lines: list[str] = []
    for b in blocks(result, title):
        kind = b[0]
        if kind == "h":
            lines += ["#" * (b[1] + level - 1) + " " + b[2], ""]
        elif kind == "p":
            lines += [b[1], ""]
        elif kind == "md":  # a line of a markdown table drawn elsewhere
            lines.append(b[1])
        elif kind == "table":
            if lines and lines[-1] != "":
                lines.append("")
            lines += ["| " + " | ".join(_md_cell(h) for h in b[1]) + " |", "|" + "---|" * len(b[1])]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b[2]]
            lines.append("")
        elif kind == "img":
            lines += [f"![{b[1]}]({b[2]})", ""]
    return "\n".join(lines).rstrip() + "\n"


STYLE = ("body{font-family:sans-serif;max-width:72em;margin:1em auto}table{border-collapse:collapse;margin:.5em 0}"
         "td,th{border:1px solid #bbb;padding:2px 6px;text-align:right}td:first-child,th:first-child{text-align:left}"
         "tr.baseline td{font-weight:bold}")


def html_body(result: dict, level: int = 1, title: str = "Comparison") -> str:
    """The comparison as an HTML fragment: the same blocks, rows coloured by their mark."""
    out, table_md = [], []

    def flush() -> None:  # design_lines come as markdown table lines: one <table> of them
        if table_md:
            rows = [[c.strip() for c in line.strip("|").split("|")] for line in table_md if not line.startswith("|---")]
            out.append(_html_table(rows[0], rows[1:], []))
            table_md.clear()

    for b in blocks(result, title):
        if b[0] == "md" and b[1].startswith("|"):
            table_md.append(b[1])
            continue
        flush()
        if b[0] == "h":
            n = min(6, b[1] + level - 1)
            out.append(f"<h{n}>{html.escape(b[2])}</h{n}>")
        elif b[0] in ("p", "md") and b[1]:
            out.append(f"<p>{html.escape(b[1])}</p>")
        elif b[0] == "table":
            out.append(_html_table(*b[1:]))
        elif b[0] == "img":
            out.append(f'<img alt="{html.escape(b[1])}" src="{html.escape(b[2])}">')
    flush()
    return "\n".join(out)


def _html_table(header: list[str], rows: list[list[str]], classes: list[str]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = classes[i] if i < len(classes) else ""
        name = {"n.s.": "ns", "-": "none"}.get(cls, cls)
        style = f' class="{name}" style="background:{COLOURS[cls]}"' if cls in COLOURS else ""
        body.append(f"<tr{style}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def html_page(title: str, body: str) -> str:
    """A standalone page around ``body`` (``html_body``'s fragment and more)."""
    return f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title><style>{STYLE}</style>\n{body}\n"
