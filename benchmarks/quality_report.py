"""Tables and a plot for bench_quality.py's report (quality.json)."""

from __future__ import annotations

from pathlib import Path


def pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def interval(t) -> str:
    if t is None:
        return "—"
    mean, lo, hi = t
    mark = " **" if lo > 0 or hi < 0 else ""
    return f"{100 * mean:+.1f} ({100 * lo:+.1f} … {100 * hi:+.1f}){mark}"


def worst_cell(r: dict) -> str:
    worst, ci = r.get("retention_worst"), r.get("retention_worst_ci")
    if not worst:
        return "—"
    return f"{pct(worst[1])} ({worst[0]}{', ' + pct(ci[0]) + ' … ' + pct(ci[1]) if ci else ''})"


def markdown(report: dict) -> str:
    domains = report["domains"]
    n = report["n_test_per_domain"]
    lines = [
        f"## {report['title'][0].upper() + report['title'][1:]}",
        "",
        f"{report['about']} `python benchmarks/bench_quality.py --suite {report['suite']}` (cached; this run "
        f"{report['seconds'] / 60:.1f} min"
        + (": " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in report["parts"].items()) if report.get("parts") else "")
        + ").",
        "",
        "### Specialist × domain accuracy, % (diagonal: own domain)",
        "",
        "| model | " + " | ".join(domains) + " |",
        "|---|" + "---|" * len(domains),
        "| base | " + " | ".join(pct(report["base"][d]) for d in domains) + " |",
    ]
    for s in domains:
        cells = [(f"**{pct(report['matrix'][s][d])}**" if d == s else pct(report["matrix"][s][d])) for d in domains]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    gains = {sp: {d: report["matrix"][sp][d] - report["base"][d] for d in domains} for sp in domains}
    lines += ["", "Gain over the base, points: own domain / largest on another domain (the suite needs a large first "
              "number and a small second) — " + "; ".join(
                  f"{sp} +{100 * gains[sp][sp]:.1f} / {100 * max(v for d, v in gains[sp].items() if d != sp):+.1f}"
                  for sp in domains) + "."]
    lines += [
        "",
        "### Merges (test split; settings chosen on validation at each output rank"
        + (f"; {', '.join(report['slow_choices'])}: the rank-r choice, reused (slow to merge)"
           if report["slow_choices"] else "") + ")",
        "",
        "Gain retention = (merged − base) / (specialist − base) per domain, the worst domain with its 95 % interval "
        f"(paired bootstrap over its {n} test questions); % of MT gain = (mean acc − base) / (multi-task LoRA at "
        "rank Σr − base); paired 95 % intervals of the accuracy difference on the same "
        f"{n * len(domains)} test questions, ** where the interval excludes zero.",
        "",
        "| method | rank | chosen | mean acc % | gain kept mean % | worst domain % (95 % CI) | norm. acc mean % | "
        "% of MT gain | − multi-task (pts, 95 % CI) | − TIES (pts, 95 % CI) | − Iso-C (pts, 95 % CI) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = sorted(report["results"], key=lambda r: (r["rank"], -(r["retention_mean"] or -9)))
    for r in rows:
        chosen = ", ".join(f"{k} {v}" for k, v in r["params"].items()) or "—"
        lines.append(
            f"| {r['label']} | {r['rank']} | {chosen} | {pct(r['mean_accuracy'])} | {pct(r['retention_mean'])} | "
            f"{worst_cell(r)} | {pct(r['normalized_mean'])} | {pct(r.get('mt_share'))} | "
            f"{interval(r.get('vs_mt'))} | {interval(r.get('vs_ties'))} | {interval(r.get('vs_iso_c'))} |")
    counts = {rank: sum(r["rank"] == rank for r in rows) for rank in {r["rank"] for r in rows}}
    shown = max(counts, key=lambda k: (counts[k], k == report["rank"]))  # the rank most rows are merged at
    lines += ["", f"### Gain retention per domain, % with its 95 % interval (rank {'r' if shown == report['rank'] else shown})", "",
              "| method | " + " | ".join(domains) + " |", "|---|" + "---|" * len(domains)]
    for r in rows:
        if r["rank"] == shown:
            ci = r.get("retention_ci") or {}
            lines.append(f"| {r['label']} | " + " | ".join(
                pct(r["gain_retention"][d]) + (f" ({pct(ci[d][0])} … {pct(ci[d][1])})" if ci.get(d) else "")
                for d in domains) + " |")
    lines += calibrated_costs(report)
    from quality_seeds import markdown as seed_markdown

    lines += seed_markdown(report.get("seeds"))
    if report.get("retrained"):
        lines += ["", "Specialists retrained (each must reach 85 % on its own validation facts): "
                  + "; ".join(report["retrained"])]
    lines += ["", f"![mean and worst-domain gain retention per method](quality-{report['suite']}.png)", ""]
    return "\n".join(lines)


def calibrated_costs(report: dict) -> list[str]:
    """What each calibrated row cost (prompts per adapter, steps, seconds) and, for refine, how closely the student
    follows each teacher on held-out prompts."""
    rows = [r for r in report["results"] if "prompts" in r.get("cost", {})]
    if not rows:
        return []
    lines = ["", "### Calibrated merges: cost (this CPU, 2 cores) and agreement with the teachers", "",
             "| method | prompts / adapter | refine steps | seconds | held-out token agreement, mean / worst % |",
             "|---|---|---|---|---|"]
    for r in rows:
        c = r["cost"]
        n = sorted(set(c["prompts"].values()))
        seconds = c.get("refine_s", c.get("statistics_s"))
        what = "statistics" if "statistics_s" in c else "refine"
        agree = r.get("agreement") or {}
        ag = (f"{pct(sum(agree.values()) / len(agree))} / {pct(min(agree.values()))}" if agree else "—")
        lines.append(f"| {r['label']}{' (curve)' if r.get('curve') else ''} | {'/'.join(map(str, n))} | "
                     f"{c['steps']} | {what} {seconds:.0f} |  {ag} |" if seconds == seconds else
                     f"| {r['label']} | {'/'.join(map(str, n))} | {c['steps']} | {what}: cached | {ag} |")
    return lines


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranks = sorted({r["rank"] for r in report["results"]})
    fig, axes = plt.subplots(1, len(ranks), figsize=(6 * len(ranks), 4.8), sharey=True)
    for ax, rank in zip(list(axes) if len(ranks) > 1 else [axes], ranks):
        rows = sorted((r for r in report["results"] if r["rank"] == rank), key=lambda r: -(r["retention_mean"] or -9))
        x = range(len(rows))
        ax.bar([i - 0.2 for i in x], [100 * (r["retention_mean"] or 0) for r in rows], width=0.4,
               label="mean over domains")
        ax.bar([i + 0.2 for i in x], [100 * (r["retention_worst"][1] if r["retention_worst"] else 0) for r in rows],
               width=0.4, label="worst domain")
        ax.axhline(100, color="grey", lw=0.8, ls="--")
        ax.set_xticks(list(x), [r["label"] for r in rows], rotation=35, ha="right")
        ax.set_title(f"output rank {rank}")
    (axes[0] if len(ranks) > 1 else axes).set_ylabel("gain retention, %")
    (axes[0] if len(ranks) > 1 else axes).legend()
    fig.suptitle(f"{report['title'][0].upper() + report['title'][1:]}: {len(report['domains'])} specialists merged "
                 "(settings chosen on validation)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
