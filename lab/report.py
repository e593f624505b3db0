"""Reports of runner records: a Markdown table, JSON, and an error-vs-NFE plot (matplotlib, imported here only)."""
import json
from collections import defaultdict
from pathlib import Path

from .runner import as_dicts, order_slope


def _groups(records):
    g = defaultdict(list)
    for r in records:
        g[(r.problem, r.space, r.schedule, r.sampler)].append(r)
    return g


def markdown(records, title="Error against the exact ODE solution (RMS, mean over seeds)"):
    """One table per (problem, space, schedule): samplers as rows, counted model calls as columns (a run that
    used fewer calls than its budget sits in the column of the calls it made; the JSON holds both), plus the
    fitted slope against counted calls."""
    lines = [f"## {title}", ""]
    tables = defaultdict(dict)
    for (prob, space, sched, sampler), rs in _groups(records).items():
        tables[(prob, space, sched)][sampler] = rs
    for (prob, space, sched), rows in tables.items():
        cols = sorted({r.nfe for rs in rows.values() for r in rs})
        lines += [f"### {prob} ({space}, {sched})", "",
                  "| sampler | " + " | ".join(f"{c} calls" for c in cols) + " | slope |",
                  "|---|" + "---|" * (len(cols) + 1)]
        for sampler, rs in sorted(rows.items()):
            by_nfe = {}
            for r in sorted(rs, key=lambda r: r.budget):
                by_nfe.setdefault(r.nfe, r.error)
            cells = [f"{by_nfe[c]:.2e}" if c in by_nfe else "" for c in cols]
            lines.append(f"| {sampler} | " + " | ".join(cells) + f" | {order_slope(rs):.2f} |")
        lines.append("")
    return "\n".join(lines)


def write_json(records, path, **meta):
    Path(path).write_text(json.dumps({**meta, "records": as_dicts(records)}, indent=1))


def plot(records, path):
    """Error vs counted NFE, log-log, one panel per (problem, space, schedule)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r.problem, r.space, r.schedule) for r in records})
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    groups = _groups(records)
    for ax, panel in zip(axes.flat, panels):
        for (prob, space, sched, sampler), rs in sorted(groups.items()):
            if (prob, space, sched) == panel:
                rs = sorted(rs, key=lambda r: r.nfe)
                ax.loglog([r.nfe for r in rs], [r.error for r in rs], marker="o", ms=3, label=sampler)
        ax.set_title(" / ".join(panel), fontsize=9)
        ax.set_xlabel("model calls")
        ax.set_ylabel("RMS error")
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
