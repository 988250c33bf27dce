"""Cost of one extra sweep point relative to a one-off merge (not a test; target ≤ 10 %), side by side.

    python benchmarks/bench_sweep.py [--points 6] [--out build/bench/sweep.json]

Four synthetic RSLoRA r=16 adapters at the demo specialists' shapes (SmolLM2-135M: 30 layers, all 7
projections), TIES, rank 16. Times, in one process, each best of 2:
  - one-off: `tiesmerge merge` (driver.run) at density 0.2;
  - the sweep's one-pass merge (sweep/merging.py) of 1 point, of N points (densities 0.1 … 1.0), and of
    1 density × 3 λ;
the marginal cost of a density point is (t_N − t_1) / (N − 1), of a λ point (t_3λ − t_1) / 2, each reported
against the one-off merge.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tiesmerge.adapters.synthetic import SHAPES, write_synthetic_adapter  # noqa: E402
from tiesmerge.merge import driver  # noqa: E402
from tiesmerge.merge.job import prepare  # noqa: E402
from tiesmerge.merge.recipe import AdapterEntry, MergeParameters, OutputSpec, Recipe  # noqa: E402
from tiesmerge.sweep.config import SweepConfig  # noqa: E402
from tiesmerge.sweep.merging import merge_points  # noqa: E402
from tiesmerge.sweep.points import grid  # noqa: E402

DENSITIES = [0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 0.05, 0.4, 0.6, 0.8]


def best_of(fn, reps=2) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=6)
    ap.add_argument("--shape", default="smollm2-135m")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tiesmerge-bench-sweep-"))
    adapters = []
    for i in range(4):
        p = work / f"a{i}"
        write_synthetic_adapter(p, SHAPES[args.shape], r=16, alpha=32, rslora=True, adapter_seed=i + 1, set_seed=3)
        adapters.append(AdapterEntry(name=f"a{i}", path=p))
    recipe = Recipe(method="ties", parameters=MergeParameters(density=0.2), adapters=adapters,
                    output=OutputSpec(rank=16))
    cpu = torch.device("cpu")
    t_one = best_of(lambda: driver.run(prepare(recipe), work / "oneoff", force=True, device=cpu))

    def sweep(n: int, lams=(1.0,)) -> float:
        cfg = SweepConfig(adapters=[{"name": a.name, "path": a.path} for a in adapters], density=DENSITIES[:n],
                          **{"lambda": list(lams)}, rank=[16])
        pts = grid(cfg)
        return best_of(lambda: merge_points(cfg, pts, adapters, lambda p: work / "sweep" / p.key, cpu))

    t1, tn = sweep(1), sweep(args.points)
    marginal = (tn - t1) / (args.points - 1)
    t_lam = sweep(1, (0.8, 1.0, 1.3))
    lam_marginal = (t_lam - t1) / 2
    result = {"shape": args.shape, "adapters": 4, "rank": 16, "threads": torch.get_num_threads(),
              "one_off_merge_s": round(t_one, 3), "sweep_1_point_s": round(t1, 3),
              f"sweep_{args.points}_points_s": round(tn, 3), "extra_point_s": round(marginal, 3),
              "extra_point_vs_one_off": round(marginal / t_one, 3),
              "sweep_1_density_3_lambdas_s": round(t_lam, 3), "extra_lambda_point_s": round(lam_marginal, 3),
              "extra_lambda_point_vs_one_off": round(lam_marginal / t_one, 3),
              "n_independent_merges_s": round(args.points * t_one, 3),
              "sweep_speedup_vs_independent": round(args.points * t_one / tn, 2)}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
