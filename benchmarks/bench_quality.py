"""`make bench-quality`: can the merge methods be told apart? Two suites on the embedded SmolLM2-135M.

knowledge: T specialists, each trained on its own fictional facts (quality_facts.py), merged by every method;
each method's settings are chosen on the validation phrasings only, then it is scored on the test phrasings at
output rank r (the inputs' rank) and at the exact rank T·r. domain: the demo's four specialists (math, code, stem,
humanities; trained on the built-in train splits), scored on 500 strictly held-out test questions per domain
(no fact shared with train or validation), settings chosen on the built-in validation split. Reported per domain: accuracy, gain retention
(merged − base) / (specialist − base) and normalized accuracy; per method: mean and worst-domain gain retention and
the paired 95 % interval of its accuracy difference to TIES and to task arithmetic on the same questions.
Everything (specialists, merges, predictions) is cached under $TIESMERGE_CACHE: a re-run prints the tables in
seconds.

    python benchmarks/bench_quality.py [--suite knowledge|domain|both] [--out build/bench/quality] [--docs docs]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality_calibrated import flatten  # noqa: E402
from quality_ceilings import annotate, ceiling_rows  # noqa: E402
from quality_facts import FACTS_VERSION, suite  # noqa: E402
from tiesmerge.cache import adapter_digest, cache_key, cached_dir  # noqa: E402
from tiesmerge.eval.report import Target  # noqa: E402
from tiesmerge.eval.session import EvalSession  # noqa: E402
from tiesmerge.portable.quiet import quiet_libraries  # noqa: E402
from tiesmerge.train.trainer import TrainSettings, train_adapter  # noqa: E402

BASE = "smollm2"
TRAIN = TrainSettings(steps=120, rank=16, alpha=32.0, lr=1e-3, batch_size=8, warmup_steps=10, seed=0, target="text")
MERGE_VERSION = 1
CALIBRATED = True  # the RegMean and refine rows (quality_calibrated.py)
CEILINGS = True  # the multi-task and routing rows (quality_ceilings.py)
SUITE_START: dict[str, float] = {}  # suite → when its specialists started (the report's wall time includes them)
SKILL_SIZES = None  # the skills suite's split sizes (None: quality_skills.SIZES); --smoke shrinks them
SEEDS = 1  # --seeds: training seeds of the headline rows (quality_seeds.py)
EXACT_ONLY = False  # --exact-only: the data-free rows at the exact rank T·r only
CORE_BASES = "svd-reference"  # core space's bases since 2026-12-01 (the paper's SVD bases; were Householder QRs)


@dataclass(frozen=True)
class Candidate:
    """One method as benchmarked: fixed recipe parameters, and a grid chosen on validation."""

    label: str
    method: str
    space: str
    weight: str  # "mean": every adapter 1/T; "one": 1
    fixed: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)
    choose_per_rank: bool = True  # False: the rank-r choice is reused at rank T·r (for methods slow to merge)

    def points(self) -> list[dict]:
        keys = list(self.grid)
        return [{**self.fixed, **dict(zip(keys, values))} for values in itertools.product(*self.grid.values())]


CANDIDATES = (
    Candidate("TIES (full)", "ties", "full", "mean", {}, {"density": [0.2, 0.5, 1.0], "lambda": [1.0, 1.5]}),
    Candidate("TIES (core)", "ties", "core", "mean", {}, {"density": [0.2, 0.5, 1.0]}),
    Candidate("task arithmetic", "task_arithmetic", "full", "mean", {}, {"lambda": [1.0, 2.0, 4.0, 8.0]}),
    Candidate("DARE-TIES", "dare_ties", "full", "mean", {"normalize": True}, {"density": [0.3, 0.6]}),
    Candidate("TSV-M", "tsv", "core", "one", {}, {"lambda": [0.25, 0.5, 1.0, 1.5]}),
    Candidate("Iso-C", "iso_c", "core", "one", {}, {"lambda": [0.5, 1.0, 1.5, 2.0, 3.0, 4.5, 6.0]}),
    Candidate("Iso-CTS", "iso_cts", "core", "one", {}, {"lambda": [0.5, 1.0, 1.5, 2.0, 3.0, 4.5, 6.0]}),
    Candidate("KnOTS-TIES (full)", "knots_ties", "full", "mean", {}, {"density": [0.2, 0.5, 1.0]},
              choose_per_rank=False),  # ~4 min per merge here
    Candidate("KnOTS-TIES (core)", "knots_ties", "core", "mean", {}, {"density": [0.2, 0.5, 1.0]}),
    Candidate("KnOTS-DARE (core)", "knots_dare", "core", "mean", {}, {"density": [0.3, 0.6]}),
)


# the domain suite: smaller grids (the test split is 10× the knowledge suite's) and no full-space KnOTS (~4 min a merge)
DOMAIN_CANDIDATES = (
    Candidate("TIES (full)", "ties", "full", "mean", {}, {"density": [0.2, 0.5, 1.0]}),
    Candidate("TIES (core)", "ties", "core", "mean", {}, {"density": [0.2, 1.0]}),
    Candidate("task arithmetic", "task_arithmetic", "full", "mean", {}, {"lambda": [1.0, 2.0, 4.0]}),
    Candidate("DARE-TIES", "dare_ties", "full", "mean", {"normalize": True}, {"density": [0.3, 0.6]}),
    Candidate("TSV-M", "tsv", "core", "one", {}, {"lambda": [0.5, 1.0]}),
    Candidate("Iso-C", "iso_c", "core", "one", {}, {"lambda": [0.5, 1.0, 2.0]}),
    Candidate("Iso-CTS", "iso_cts", "core", "one", {}, {"lambda": [0.5, 1.0, 2.0]}),
    Candidate("KnOTS-TIES (core)", "knots_ties", "core", "mean", {}, {"density": [0.2, 0.5, 1.0]}),
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def no_progress(total, label, unit):
    import contextlib

    return contextlib.nullcontext(lambda *a: None)


MIN_OWN = 0.85  # a specialist must reach this on its own validation facts, else it is retrained with the next seed
RETRAIN_NOTES: list[str] = []


def train_specialists(data, domains, seeds: int = 3, suite_name: str = "knowledge", version=FACTS_VERSION,
                      passes: int = 2, first_seed: int | None = None) -> dict[str, Path]:
    """Each domain's specialist, retrained with the next seed while it is below MIN_OWN on its own validation split
    (knowledge: its 3 train phrasings, 2 passes; skills: its train questions once)."""
    from dataclasses import replace

    from tiesmerge.eval.models import load_base

    out = {}
    first = TRAIN.seed if first_seed is None else first_seed
    for domain in domains:
        for seed in range(first, first + seeds):
            settings = replace(TRAIN, seed=seed)
            key = (cache_key("quality-specialist", FACTS_VERSION, BASE, domain, settings) if suite_name == "knowledge"
                   else cache_key(f"{suite_name}-specialist", version, BASE, domain, settings, passes))

            def build(tmp: Path, domain=domain, settings=settings) -> None:
                model, tok = load_base(BASE, dtype="float32", device="auto")
                card = train_adapter(model, tok, data["train"][domain] * passes, settings, tmp,
                                     card={"suite": suite_name, "domain": domain})
                log(f"trained {domain} (seed {settings.seed}): loss {card['loss_first']:.3f} → "
                    f"{card['loss_last_10_mean']:.3f}, {card['seconds']:.0f} s")

            out[domain], _ = cached_dir("quality-specialists" if suite_name == "knowledge" else f"{suite_name}-specialists",
                                        domain, key, build)
            session = EvalSession(BASE, data["validation"][domain], mode="cloze", batch_size=16, progress=no_progress,
                                  log=log)
            own = sum(correct(session, f"spec-{domain}", out[domain])) / len(data["validation"][domain])
            if own >= MIN_OWN:
                break
            note = (f"{domain}: seed {seed} reached {own:.0%} on its own validation facts (< {MIN_OWN:.0%})"
                    + ("; retrained with the next seed" if seed + 1 < first + seeds else "; kept (last seed)"))
            RETRAIN_NOTES.append(note)
            log(note)
    return out


def merge(cand: Candidate, params: dict, rank: int, specs: dict[str, Path]) -> Path:
    from tiesmerge.merge import driver
    from tiesmerge.merge.job import prepare
    from tiesmerge.merge.recipe import Recipe

    weight = 1.0 / len(specs) if cand.weight == "mean" else 1.0
    recipe = Recipe.model_validate({
        "method": cand.method, "space": cand.space, "parameters": params, "output": {"rank": rank},
        "adapters": [{"name": d, "path": str(p), "weight": weight} for d, p in specs.items()]})
    bases = (CORE_BASES,) if cand.space == "core" else ()  # full-space merges keep their cache entries
    key = cache_key("quality-merge", MERGE_VERSION, *bases, recipe.method, recipe.space, recipe.parameters,
                    recipe.output, [(a.weight, adapter_digest(a.path)) for a in recipe.adapters])

    def build(tmp: Path) -> None:
        start = time.perf_counter()
        driver.run(prepare(recipe), tmp / "adapter", force=True)
        flatten(tmp)
        log(f"merged {cand.label} {params} rank {rank}: {time.perf_counter() - start:.0f} s")

    path, _ = cached_dir("quality-merges", cand.method, key, build)
    return path


def correct(session: EvalSession, name: str, path: Path | None) -> list[int]:
    preds, _ = session.predictions(Target(name, "merged" if path else "base", str(path) if path else None))
    return [int(p.predicted == p.gold) for p in preds]


def by_domain(flags: list[int], questions) -> dict[str, float]:
    out: dict[str, list[int]] = {}
    for f, q in zip(flags, questions):
        out.setdefault(q.domain, []).append(f)
    return {d: sum(v) / len(v) for d, v in out.items()}


def summary(acc: dict[str, float], base: dict[str, float], spec: dict[str, float]) -> dict:
    kept = {d: (acc[d] - base[d]) / (spec[d] - base[d]) if spec[d] != base[d] else None for d in acc}
    norm = {d: acc[d] / spec[d] if spec[d] else None for d in acc}
    present = {d: v for d, v in kept.items() if v is not None}
    worst = min(present, key=present.get) if present else None
    return {"accuracy": acc, "mean_accuracy": sum(acc.values()) / len(acc), "gain_retention": kept,
            "retention_mean": sum(present.values()) / len(present) if present else None,
            "retention_worst": (worst, present[worst]) if worst else None,
            "normalized_mean": sum(v for v in norm.values() if v is not None) / len(norm)}


def paired(a: list[int], b: list[int]) -> tuple[float, float, float]:
    """Mean accuracy difference a − b on the same questions with its paired 95 % (Wald) interval."""
    n = len(a)
    d = [x - y for x, y in zip(a, b)]
    mean = sum(d) / n
    var = sum((x - mean) ** 2 for x in d) / (n - 1) if n > 1 else 0.0
    half = 1.959964 * math.sqrt(var / n)
    return mean, mean - half, mean + half


@dataclass(frozen=True)
class Suite:
    name: str  # knowledge | domain: names the report files
    title: str
    about: str  # the report's opening paragraph (what was trained, what is tested)
    data: dict  # {split: {domain: [Question]}}
    specs: dict  # domain → specialist adapter
    rank: int  # the specialists' rank r
    candidates: tuple
    train_sets: dict  # domain → the questions its specialist was trained on (the multi-task LoRA mixes them)
    train_settings: dict  # domain → its TrainSettings
    eval_dtype: str = "float32"
    exact_only: bool = False  # the data-free rows at rank Σr only
    retrain: object = None  # seed → specialists trained from that seed (for --seeds); None: no seed spread


def knowledge_suite(n_domains: int) -> Suite:
    data = suite(n_domains)
    specs = train_specialists(data, list(data["test"]))
    n, nv = len(next(iter(data["test"].values()))), len(next(iter(data["validation"].values())))
    about = (f"{len(specs)} specialists (RSLoRA r={TRAIN.rank}, {TRAIN.steps} steps, lr {TRAIN.lr}) on the embedded "
             "SmolLM2-135M, each trained on its own fictional facts (24 people, one relation, four possible answers); "
             f"test: {n} questions per domain in two held-out phrasings, settings chosen on {nv} validation questions "
             "per domain in a third. Cloze scoring.")
    return Suite("knowledge", "the knowledge suite", about, data, specs, TRAIN.rank, CANDIDATES,
                 {d: data["train"][d] * 2 for d in specs}, {d: TRAIN for d in specs},
                 retrain=lambda seed: train_specialists(data, list(data["test"]), first_seed=seed))


DOMAIN_TEST = 500  # held-out test questions per domain


def domain_suite() -> Suite:
    from tiesmerge.demo.config import load_demo_config
    from tiesmerge.demo.specialists import preset_specialists
    from tiesmerge.eval.builtin.build import build, held_out_test

    demo = load_demo_config(None)
    data = build(demo.n_per_domain, demo.data_seed, domains=demo.domains)
    data["test"] = held_out_test(data, DOMAIN_TEST, demo.data_seed)
    short = {d: len(q) for d, q in data["test"].items() if len(q) < DOMAIN_TEST}
    if short:
        log(f"held-out test shorter than {DOMAIN_TEST} for {short}")
    specs = preset_specialists(BASE, no_progress, log)
    t = demo.train_for(demo.domains[0])
    steps = "/".join(str(demo.train_for(d).steps) for d in demo.domains)
    about = (f"The demo's {len(specs)} specialists (RSLoRA r={t.rank}, {steps} steps; `make demo`) on the embedded "
             f"SmolLM2-135M, each trained on its domain's built-in train split (n = {demo.n_per_domain} per domain, "
             f"seed {demo.data_seed}); test: {DOMAIN_TEST} questions per domain strictly held out (no question shares "
             "its text and answer with train or validation: `tiesmerge data build --test-per-domain 500`), settings "
             f"chosen on the {len(data['validation'][demo.domains[0]])} validation questions per domain. Cloze "
             "scoring, the base in bfloat16 (every row alike).")
    settings = {d: TrainSettings(steps=demo.train_for(d).steps, rank=demo.train_for(d).rank,
                                 alpha=demo.train_for(d).alpha, lr=demo.train_for(d).lr,
                                 batch_size=demo.train_for(d).batch_size, seed=demo.train_for(d).seed,
                                 warmup_steps=max(1, demo.train_for(d).steps // 10), target="text") for d in specs}
    return Suite("domain", "the domain suite (low resolution)", about, data, specs, t.rank, DOMAIN_CANDIDATES,
                 {d: data["train"][d] for d in specs}, settings, eval_dtype="bfloat16")


def skills_suite() -> Suite:
    from quality_skills import DOMAINS, SKILLS_VERSION
    from quality_skills import suite as skills_data

    data = skills_data(sizes=SKILL_SIZES)
    specs = train_specialists(data, list(DOMAINS), suite_name="skills", version=SKILLS_VERSION, passes=1)
    about = (f"Four specialists (RSLoRA r={TRAIN.rank}, {TRAIN.steps} steps, lr {TRAIN.lr}) on the embedded "
             "SmolLM2-135M, each learning one skill the base lacks (benchmarks/quality_skills.py): math — two-digit "
             "addition; code — what a Python list index prints (negative indices too; answers by running the "
             "snippet); stem — metric unit conversion; humanities — the century of a year. Distractors are the "
             f"typical mistakes; every fact (pair, list and index, value and units, year) in one split only. Test: "
             f"{len(data['test']['math'])} questions per domain, settings chosen on {len(data['validation']['math'])} "
             f"validation questions per domain; trained on {len(data['train']['math'])} per domain. Cloze scoring, "
             "the base in bfloat16 (every row alike); data-free merges "
             "at the lossless rank Σr.")
    return Suite("skills", "the skills suite (mission-shaped, decisive)", about, data, specs, TRAIN.rank,
                 DOMAIN_CANDIDATES, {d: data["train"][d] for d in specs}, {d: TRAIN for d in specs},
                 eval_dtype="bfloat16", exact_only=True,
                 retrain=lambda seed: train_specialists(data, list(DOMAINS), suite_name="skills", version=SKILLS_VERSION,
                                                        passes=1, first_seed=seed))


SUITES = {"knowledge": None, "domain": domain_suite, "skills": skills_suite}


def run_suite(sx: Suite, out: Path, docs: Path | None) -> dict:
    start = time.perf_counter()
    domains, specs = list(sx.data["test"]), sx.specs
    val_qs = [q for d in domains for q in sx.data["validation"][d]]
    test_qs = [q for d in domains for q in sx.data["test"][d]]
    log(f"{sx.name}: specialists ready")
    kw = dict(mode="cloze", batch_size=16, progress=no_progress, log=log, dtype=sx.eval_dtype)
    val, test = EvalSession(BASE, val_qs, **kw), EvalSession(BASE, test_qs, **kw)

    parts = {"specialists": round(start - SUITE_START.get(sx.name, start))}
    base_flags = correct(test, "base", None)
    base_acc = by_domain(base_flags, test_qs)
    spec_flags = {d: correct(test, f"spec-{d}", p) for d, p in specs.items()}
    matrix = {d: by_domain(spec_flags[d], test_qs) for d in specs}
    spec_acc = {d: matrix[d][d] for d in domains}
    val_base, val_spec = by_domain(correct(val, "base", None), val_qs), {
        d: by_domain(correct(val, f"spec-{d}", p), val_qs)[d] for d, p in specs.items()}
    log(f"base and specialists scored ({time.perf_counter() - start:.0f} s)")
    parts["scoring base and specialists"] = round(time.perf_counter() - start)

    r, exact = sx.rank, sx.rank * len(domains)
    results, flags, chosen_paths = [], {}, {}

    def row_from_flags(label, method, space, rank, params, f, **extra) -> dict:
        flags[(label, rank)] = f
        return {"label": label, "method": method, "space": space, "rank": rank, "params": params,
                "chosen_at_rank": rank, **extra, **summary(by_domain(f, test_qs), base_acc, spec_acc)}

    def row(label, method, space, rank, params, path, **extra) -> dict:
        return row_from_flags(label, method, space, rank, params, correct(test, f"{label} r{rank}", path), **extra)

    ctx = {"domains": domains, "log": log, "base": BASE, "row": row, "row_from_flags": row_from_flags,
           "spec_flags": spec_flags, "test_qs": test_qs}
    t0 = time.perf_counter()
    if CEILINGS:
        results += ceiling_rows(sx, ctx)
        parts["ceilings (multi-task training, scoring)"] = round(time.perf_counter() - t0)
    t0 = time.perf_counter()
    for cand in sx.candidates:
        chosen = None
        for rank in ((exact,) if EXACT_ONLY or sx.exact_only else (r, exact)):
            if chosen is None or cand.choose_per_rank:  # settings chosen on validation, at this output rank
                scored = []
                for params in cand.points():
                    path = merge(cand, params, rank, specs)
                    name = cand.label if rank == r else f"{cand.label} r{rank}"  # (cache file names of the first run)
                    s = summary(by_domain(correct(val, name, path), val_qs), val_base, val_spec)
                    scored.append((s["normalized_mean"], s["mean_accuracy"], -len(scored), params))
                chosen = max(scored)[3]
                log(f"{cand.label}: chose {chosen} on validation at rank {rank}")
            chosen_paths[(cand.label, rank)] = merge(cand, chosen, rank, specs)
            f = correct(test, f"{cand.label} r{rank}", chosen_paths[(cand.label, rank)])
            flags[(cand.label, rank)] = f
            results.append({"label": cand.label, "method": cand.method, "space": cand.space, "rank": rank,
                            "params": chosen, "chosen_at_rank": rank if cand.choose_per_rank else r,
                            "validation": [list(x[:2]) + [x[3]] for x in scored],
                            **summary(by_domain(f, test_qs), base_acc, spec_acc)})
    parts["data-free merges (validation grid, test)"] = round(time.perf_counter() - t0)
    t0 = time.perf_counter()
    if CALIBRATED:
        from quality_calibrated import calibrated_rows

        def validate(name: str, path: Path) -> dict:
            return summary(by_domain(correct(val, name, path), val_qs), val_base, val_spec)

        ctx |= {"validate": validate, "chosen": {label: p for (label, rank), p in chosen_paths.items() if rank == exact}}
        results += calibrated_rows(sx, ctx)
        parts["calibrated (statistics, RegMean, RegMean++, refine)"] = round(time.perf_counter() - t0)
    mt_label = f"multi-task LoRA r{exact}"
    for res in results:
        rank = res["rank"]
        for key, other, other_rank in (("vs_ties", "TIES (full)", rank), ("vs_ta", "task arithmetic", rank),
                                       ("vs_iso_c", "Iso-C", rank), ("vs_ties_core", "TIES (core)", rank),
                                       ("vs_mt", mt_label, exact)):
            if (other, other_rank) in flags:
                res[key] = paired(flags[(res["label"], rank)], flags[(other, other_rank)])
    annotate(results, flags, base_flags, spec_flags, test_qs, mt_label if CEILINGS else None)
    seeds = {}
    if SEEDS > 1 and sx.retrain is not None:
        from quality_seeds import spread

        t0 = time.perf_counter()
        seeds = spread(sx, results, SEEDS, {
            "domains": domains, "log": log, "base": BASE, "specialists": sx.retrain,
            "correct": lambda name, path: correct(test, name, path), "by_domain": lambda f: by_domain(f, test_qs),
            "merge": merge, "summary": lambda acc, spec: summary(acc, base_acc, spec)})
        parts[f"seed spread ({SEEDS - 1} more seeds)"] = round(time.perf_counter() - t0)
    report = {"suite": sx.name, "title": sx.title, "about": sx.about, "domains": domains,
              "n_test_per_domain": len(test_qs) // len(domains), "n_validation_per_domain": len(val_qs) // len(domains),
              "base": base_acc, "matrix": matrix, "rank": r,
              "slow_choices": [c.label for c in sx.candidates if not c.choose_per_rank],
              "results": results, "seconds": round(time.perf_counter() - SUITE_START.get(sx.name, start)),
              "parts": parts, "seeds": seeds,
              "retrained": [n for n in RETRAIN_NOTES if n.split(":")[0] in domains]}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"quality-{sx.name}.json").write_text(json.dumps(report, indent=2, default=str))
    if docs is not None:
        from quality_report import plot

        docs.mkdir(parents=True, exist_ok=True)
        plot(report, docs / f"quality-{sx.name}.png")
    log(f"{sx.name} suite done in {time.perf_counter() - start:.0f} s")
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", choices=["skills", "knowledge", "domain", "all"], default="all",
                    help="which suites (all: skills, knowledge, domain — in that order)")
    ap.add_argument("--domains", type=int, default=8, help="knowledge suite: number of specialists")
    ap.add_argument("--out", type=Path, default=Path("build/bench/quality"))
    ap.add_argument("--docs", type=Path, default=None, help="also write each suite's page (quality-SUITE.md) and its "
                    "plot here")
    ap.add_argument("--methods", default=None, help="only these data-free candidates (labels, comma-separated)")
    ap.add_argument("--no-calibrated", action="store_true", help="skip the RegMean and refine rows")
    ap.add_argument("--no-ceilings", action="store_true", help="skip the multi-task and routing rows")
    ap.add_argument("--seeds", type=int, default=1, help="retrain the specialists and the multi-task LoRA with this "
                    "many seeds and redo the headline data-free rows on each (skills and knowledge suites)")
    ap.add_argument("--exact-only", action="store_true", help="data-free rows at the exact rank T·r only")
    ap.add_argument("--no-curves", action="store_true", help="skip the refine rows that only trace the prompts / "
                    "steps curves")
    ap.add_argument("--smoke", action="store_true", help="a minutes-long check of the pipeline (5 training "
                    "steps, the first grid point of each method): numbers meaningless")
    args = ap.parse_args()
    quiet_libraries()
    global TRAIN, CANDIDATES, DOMAIN_CANDIDATES, CALIBRATED, EXACT_ONLY, CEILINGS, SKILL_SIZES, SEEDS
    CALIBRATED, EXACT_ONLY, CEILINGS, SEEDS = not args.no_calibrated, args.exact_only, not args.no_ceilings, args.seeds
    if args.no_curves:
        import quality_calibrated as qc

        qc.REFINE_ROWS = tuple(r for r in qc.REFINE_ROWS if not r.curve)
    if args.methods:
        keep = {m.strip() for m in args.methods.split(",")}
        CANDIDATES, DOMAIN_CANDIDATES = (tuple(c for c in cs if c.label in keep) for cs in (CANDIDATES, DOMAIN_CANDIDATES))
    if args.smoke:
        from dataclasses import replace

        TRAIN = replace(TRAIN, steps=5, warmup_steps=1)
        SKILL_SIZES = {"train": 40, "validation": 8, "test": 12}
        CANDIDATES, DOMAIN_CANDIDATES = (tuple(replace(c, grid={k: v[:1] for k, v in c.grid.items()}) for c in cs)
                                         for cs in (CANDIDATES, DOMAIN_CANDIDATES))
        import quality_calibrated as qc

        qc.REFINE = replace(qc.REFINE, eval_every=2)
        qc.REFINE_ROWS = tuple(replace(r, steps=min(r.steps, 4)) for r in qc.REFINE_ROWS[:2])
        qc.REGMEAN_GRID = qc.REGMEAN_GRID[-1:]
    from quality_report import markdown

    names = ("skills", "knowledge", "domain") if args.suite == "all" else (args.suite,)
    for n in names:
        SUITE_START[n] = time.perf_counter()
        log(f"suite {n}: training (or reusing) the specialists")
        sx = knowledge_suite(args.domains) if n == "knowledge" else SUITES[n]()
        text = markdown(run_suite(sx, args.out, args.docs))
        print(text, flush=True)
        if args.docs is not None:  # each suite's page; docs/quality.md (the reading) is kept by hand
            (args.docs / f"quality-{n}.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
