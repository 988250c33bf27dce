"""The seed spread of a suite's headline rows (`bench_quality.py --seeds N`): the specialists and the multi-task LoRA
retrained with other seeds, the data-free merges redone with the settings chosen at seed 0 (no new validation grid),
everything scored on the same test questions. What moves between seeds is the training noise that a single run's
paired intervals (which hold the adapters fixed) do not show."""

from __future__ import annotations

from dataclasses import replace

HEADLINE = ("TIES (full)", "TIES (core)", "task arithmetic", "Iso-C")  # the README's data-free rows
SEED_STRIDE = 100  # seed k trains from seed 100k (its retries 100k + 1, …): no overlap with seed 0's retries


def spread(sx, results: list[dict], seeds: int, ctx) -> dict:
    """label → {"mean": [per seed], "worst": [per seed], "acc": [per seed]} for the headline rows and the multi-task
    LoRA at rank Σr; seed 0 from `results`."""
    from quality_ceilings import train_multitask

    exact = sx.rank * len(ctx["domains"])
    rows = {r["label"]: r for r in results if r["rank"] == exact}
    mt_label = f"multi-task LoRA r{exact}"
    labels = [lb for lb in (*HEADLINE, mt_label) if lb in rows]
    out = {lb: {"mean": [rows[lb]["retention_mean"]], "worst": [rows[lb]["retention_worst"][1]],
                "acc": [rows[lb]["mean_accuracy"]]} for lb in labels}
    candidates = {c.label: c for c in sx.candidates}
    for k in range(1, seeds):
        specs = ctx["specialists"](SEED_STRIDE * k)
        spec_flags = {d: ctx["correct"](f"spec-{d} seed{k}", p) for d, p in specs.items()}
        spec_acc = {d: ctx["by_domain"](spec_flags[d])[d] for d in specs}
        for lb in labels:
            if lb == mt_label:
                settings = {d: replace(s, seed=SEED_STRIDE * k) for d, s in sx.train_settings.items()}
                path, _ = train_multitask(replace(sx, specs=specs, train_settings=settings), exact, ctx["base"],
                                          ctx["log"])
            else:
                path = ctx["merge"](candidates[lb], rows[lb]["params"], exact, specs)
            s = ctx["summary"](ctx["by_domain"](ctx["correct"](f"{lb} r{exact} seed{k}", path)), spec_acc)
            out[lb]["mean"].append(s["retention_mean"])
            out[lb]["worst"].append(s["retention_worst"][1])
            out[lb]["acc"].append(s["mean_accuracy"])
            ctx["log"](f"seed {k}: {lb}: gain kept {100 * s['retention_mean']:.1f} % mean, "
                       f"{100 * s['retention_worst'][1]:.1f} % worst ({s['retention_worst'][0]})")
    return out


def markdown(seeds: dict) -> list[str]:
    if not seeds:
        return []
    n = len(next(iter(seeds.values()))["mean"])
    lines = ["", f"### Seed spread ({n} training seeds of the specialists and the multi-task LoRA; data-free settings "
             "as chosen at seed 0)", "",
             "| method | gain kept mean %, per seed | worst domain %, per seed | mean acc %, per seed | "
             "gain kept mean: mean ± sd |", "|---|---|---|---|---|"]
    for label, v in seeds.items():
        m = v["mean"]
        mu = sum(m) / len(m)
        sd = (sum((x - mu) ** 2 for x in m) / (len(m) - 1)) ** 0.5 if len(m) > 1 else 0.0
        cells = [" / ".join(f"{100 * x:.1f}" for x in v[key]) for key in ("mean", "worst", "acc")]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {cells[2]} | {100 * mu:.1f} ± {100 * sd:.1f} |")
    return lines
