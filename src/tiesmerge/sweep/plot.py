"""sweep.png: validation accuracy per domain and the mean against density, one line per λ (and per other grid
axis when swept), with the base and every specialist as horizontal reference lines."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from tiesmerge.atomic import replace_file


def plot(rows: Sequence[dict], references: Mapping[str, Mapping[str, float]], domains: Sequence[str], path: Path,
         title: str) -> Path:
    """references: target name ("base", specialists) → {domain: accuracy, "mean": accuracy}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(domains) + ["mean"]
    cols = min(3, len(panels))
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.6 * nrows), squeeze=False)
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("density") is None:
            continue
        label = f"λ={r['lambda']:g}"
        extra = [f"{r['method']}" if len({x['method'] for x in rows}) > 1 else "",
                 f"r={r['rank']}" if len({str(x['rank']) for x in rows}) > 1 else "",
                 r["space"] if len({x['space'] for x in rows}) > 1 else ""]
        label = " ".join([label, *[e for e in extra if e]])
        groups.setdefault(label, []).append(r)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, panel in zip(axes.flat, panels):
        for i, (label, rs) in enumerate(sorted(groups.items())):
            rs = sorted(rs, key=lambda r: r["density"])
            ys = [(r["accuracy_mean"] if panel == "mean" else r["accuracy"].get(panel)) for r in rs]
            ax.plot([r["density"] for r in rs], [100 * y if y is not None else None for y in ys], marker="o",
                    color=colours[i % len(colours)], label=label)
        for name, accs in references.items():
            value = accs.get(panel)
            if value is None:
                continue
            style = {"color": "black", "linestyle": "--"} if name == "base" else \
                {"color": "grey", "linestyle": ":", "alpha": 0.5 + 0.5 * (name == panel)}
            ax.axhline(100 * value, linewidth=1.2 if name in ("base", panel) else 0.8, **style)
            ax.annotate(name, (1.0, 100 * value), xycoords=("axes fraction", "data"), fontsize=7,
                        ha="right", va="bottom", color=style["color"])
        ax.set_title(panel)
        ax.set_xlabel("density (share of ΔW kept)")
        ax.set_ylabel("validation accuracy %")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    try:
        return replace_file(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)
