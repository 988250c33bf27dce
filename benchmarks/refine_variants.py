"""Which refine? Every variant of issue 33 on one suite, from one start, scored on the same test questions:
the target (greedy, kl, kl_all, options), keep (prompts the start already does are distilled toward the start), per-teacher
normalisation, bf16 autocast, and — where the user holds back labelled questions — validation selection.

    python benchmarks/refine_variants.py --suite skills [--variants all|NAME,…] [--out build/bench/refine]

Prints one row per variant (mean accuracy, gain kept mean / worst domain with its 95 % interval, the paired
difference against the start and against the old default, wall time of the refine) and writes a JSON report.
Specialists, merges, refines and predictions are cached under $TIESMERGE_CACHE (shared with bench_quality)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_quality as bq  # noqa: E402
import quality_calibrated as qc  # noqa: E402

# everything a run reaches, imported now: editing the source tree while a long run is going cannot mix versions
import tiesmerge.eval.cloze  # noqa: E402,F401
import tiesmerge.eval.models  # noqa: E402,F401
import tiesmerge.eval.scoring  # noqa: E402,F401
import tiesmerge.merge.driver  # noqa: E402,F401
import tiesmerge.merge.job  # noqa: E402,F401
import tiesmerge.train.refine  # noqa: E402,F401
import tiesmerge.train.refine_job  # noqa: E402,F401
import tiesmerge.train.trainer  # noqa: E402,F401
from tiesmerge.cache import adapter_digest, cache_key, cached_dir  # noqa: E402
from tiesmerge.calibration.prompts import prompts_digest  # noqa: E402
from tiesmerge.eval.session import EvalSession  # noqa: E402
from tiesmerge.merge.recipe import Recipe  # noqa: E402
from tiesmerge.train.refine_settings import RefineTarget  # noqa: E402

OLD = dict(target=RefineTarget.greedy, keep=False, normalize=False, autocast=False)
VARIANTS = {  # name → settings over quality_calibrated.REFINE (150 steps, batch 16, lr 1e-3, 6 tokens)
    "greedy (old default)": OLD,
    "greedy, bf16": {**OLD, "autocast": True},
    "greedy + keep + norm": dict(target=RefineTarget.greedy, keep=True, normalize=True, autocast=True),
    "kl + keep + norm": dict(target=RefineTarget.kl, keep=True, normalize=True, autocast=True),
    "kl_all + keep + norm": dict(target=RefineTarget.kl_all, keep=True, normalize=True, autocast=True),
    "kl_all + keep + norm fp32 (default)": dict(target=RefineTarget.kl_all, keep=True, normalize=True, autocast=False),
    "kl_all + keep + norm fp32 100 steps": dict(target=RefineTarget.kl_all, keep=True, normalize=True,
                                                 autocast=False, steps=100),
    "kl_all + keep + norm fp32 70 steps": dict(target=RefineTarget.kl_all, keep=True, normalize=True,
                                                autocast=False, steps=70),
    "options + keep + norm fp32 100 steps": dict(target=RefineTarget.options, keep=True, normalize=True,
                                                  autocast=False, steps=100),
    "greedy + keep + norm, validation": dict(target=RefineTarget.greedy, keep=True, normalize=True, autocast=True,
                                             validation=True),
}


def refine(spec_paths, start: Path, prompts, settings, validation, log) -> tuple[Path, dict, float]:
    from tiesmerge.train.refine_job import run_refine

    spec = Recipe.model_validate({"method": "iso_c", "space": "core", "output": {"rank": "full"},
                                  "adapters": [{"name": d, "path": str(p)} for d, p in spec_paths.items()]})
    key = cache_key("refine-variant", 2, tiesmerge.train.refine.REFINE_VERSION, bq.BASE, settings.as_dict(), adapter_digest(start),
                    [(d, adapter_digest(p), prompts_digest(prompts[d], qc.FMT)) for d, p in spec_paths.items()],
                    [(q.id, q.domain) for q in validation])
    t0 = time.perf_counter()

    def build(tmp: Path) -> None:
        run_refine(spec, prompts, settings, base=bq.BASE, start=start, output=tmp / "adapter", force=True,
                   device="cpu", dtype="float32", log=log, validation=validation)
        qc.flatten(tmp)
        (tmp / "wall_seconds.json").write_text(json.dumps(time.perf_counter() - t0))  # start-up + training

    path, hit = cached_dir("refine-variants", "refine", key, build)
    report = json.loads((path / "refine_report.json").read_text())
    wall = path / "wall_seconds.json"  # older cached runs kept the training loop's seconds only
    return path, report, (json.loads(wall.read_text()) if wall.is_file() else report["seconds"]) if hit else \
        time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", choices=["skills", "domain", "knowledge"], default="skills")
    ap.add_argument("--domains", type=int, default=8, help="knowledge suite: number of specialists")
    ap.add_argument("--multitask", action="store_true", help="also the multi-task LoRA at rank Σr (the ceiling: one "
                    "LoRA trained on every specialist's train data at once; cached)")
    ap.add_argument("--variants", default="all")
    ap.add_argument("--start", default="TIES (core)", help="the data-free candidate whose merge is the start")
    ap.add_argument("--density", type=float, default=1.0, help="the start's density (the suite's validation choice)")
    ap.add_argument("--out", type=Path, default=Path("build/bench/refine"))
    args = ap.parse_args()
    from tiesmerge.portable.quiet import quiet_libraries

    quiet_libraries()
    log = bq.log
    names = list(VARIANTS) if args.variants == "all" else [v.strip() for v in args.variants.split(",")]
    t_all = time.perf_counter()
    sx = (bq.knowledge_suite(args.domains) if args.suite == "knowledge"
          else bq.skills_suite() if args.suite == "skills" else bq.domain_suite())
    domains, specs = list(sx.data["test"]), sx.specs
    test_qs = [q for d in domains for q in sx.data["test"][d]]
    val_qs = {d: sx.data["validation"][d] for d in domains}
    session = EvalSession(bq.BASE, test_qs, mode="cloze", batch_size=16, progress=bq.no_progress, log=log,
                          dtype=sx.eval_dtype)
    base_flags = bq.correct(session, "base", None)
    base_acc = bq.by_domain(base_flags, test_qs)
    spec_acc = {d: bq.by_domain(bq.correct(session, f"spec-{d}", p), test_qs)[d] for d, p in specs.items()}
    cand = next(c for c in sx.candidates if c.label == args.start)
    exact = sx.rank * len(domains)
    start = bq.merge(cand, {"density": args.density}, exact, specs)
    start_flags = bq.correct(session, f"{cand.label} r{exact}", start)
    rows = [{"variant": f"start: {cand.label} d{args.density}", **bq.summary(bq.by_domain(start_flags, test_qs),
                                                                            base_acc, spec_acc)}]
    flags = {"start": start_flags}
    if args.multitask:
        from quality_ceilings import train_multitask

        mt_path, mt_s = train_multitask(sx, exact, bq.BASE, log)
        f = bq.correct(session, f"multitask r{exact}", mt_path)
        flags["multitask"] = f
        rows.append({"variant": f"multi-task LoRA r{exact} (ceiling)", "train_s": mt_s,
                     "vs_start": bq.paired(f, start_flags),
                     **bq.summary(bq.by_domain(f, test_qs), base_acc, spec_acc)})
    prompts = qc.train_prompts(sx.data, domains, 256)
    import dataclasses

    for name in names:
        v = dict(VARIANTS[name])
        use_val = v.pop("validation", False)
        settings = replace(qc.REFINE, **v)
        held = [dataclasses.replace(q, domain=d) for d in domains for q in val_qs[d][:100]] if use_val else []
        log(f"refine variant {name!r}")
        path, report, seconds = refine(specs, start, prompts, settings, held, log)
        f = bq.correct(session, f"refine-variant {name}", path)
        flags[name] = f
        rows.append({"variant": name, "refine_s": round(seconds, 1), "best_step": report["best_step"],
                     "returned_start": report.get("returned_start"), "kept": report.get("kept"),
                     "vs_start": bq.paired(f, start_flags),
                     "vs_old": bq.paired(f, flags[names[0]]) if name != names[0] and names[0] in flags else None,
                     "vs_multitask": bq.paired(f, flags["multitask"]) if "multitask" in flags else None,
                     **bq.summary(bq.by_domain(f, test_qs), base_acc, spec_acc)})
    out = {"suite": sx.name, "domains": domains, "n_test_per_domain": len(test_qs) // len(domains),
           "base": base_acc, "specialists": spec_acc, "rows": rows, "seconds": round(time.perf_counter() - t_all)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"refine-variants-{sx.name}.json").write_text(json.dumps(out, indent=2, default=str))
    print(f"\n{sx.name} suite, {len(test_qs) // len(domains)} test questions per domain, start {cand.label} "
          f"d{args.density} rank {exact}")
    print(f"{'variant':<36} {'acc %':>6} {'kept %':>7} {'worst %':>16} {'− start (95% CI)':>22} {'− old':>20} "
          f"{'refine s':>8} {'− multi-task':>20}")
    for r in rows:
        w = r["retention_worst"]

        def ci(x):
            return "" if not x else f"{100 * x[0]:+.1f} ({100 * x[1]:+.1f}…{100 * x[2]:+.1f})"

        print(f"{r['variant']:<36} {100 * r['mean_accuracy']:6.1f} {100 * r['retention_mean']:7.1f} "
              f"{(w[0] + ' ' + format(100 * w[1], '.1f')) if w else '':>16} {ci(r.get('vs_start')):>22} "
              f"{ci(r.get('vs_old')):>20} {r.get('refine_s', ''):>8} {ci(r.get('vs_multitask')):>20}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
