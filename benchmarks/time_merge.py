"""Time one merge of a synthetic adapter set: python benchmarks/time_merge.py --shape smollm2-135m --rank 16.

Prints wall time, modules per second and (on CUDA) peak GPU memory. Peak RSS: run under /usr/bin/time -v.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import torch

from tiesmerge.adapters.synthetic import SHAPES, write_synthetic_adapter
from tiesmerge.configs import recipe_from_dict
from tiesmerge.devices import resolve_device
from tiesmerge.merge import driver
from tiesmerge.merge.job import prepare


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shape", default="smollm2-135m", choices=sorted(SHAPES))
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--adapters", type=int, default=4)
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--method", default="ties")
    ap.add_argument("--density", type=float, default=0.2)
    ap.add_argument("--rank", default="16", help="int, auto or full")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--inputs", type=Path, default=None, help="reuse/write the synthetic set here")
    ap.add_argument("--space", default="full", choices=["full", "core"])
    ap.add_argument("--bf16", action="store_true", help="write the synthetic inputs in bf16 (as real adapters)")
    ap.add_argument("--cleanup", action="store_true", help="delete the inputs and output afterwards")
    ap.add_argument("--generate-only", action="store_true", help="write the inputs and exit (so a separate "
                    "merge process's peak RSS excludes generation)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tiesmerge-bench-"))
    inputs = args.inputs or work / "inputs"
    t0 = time.perf_counter()
    for i in range(args.adapters):
        if not (inputs / f"a{i}" / "adapter_config.json").exists():
            write_synthetic_adapter(inputs / f"a{i}", SHAPES[args.shape], layers=args.layers, r=args.r,
                                    alpha=2 * args.r, adapter_seed=i + 1,
                                    dtype=torch.bfloat16 if args.bf16 else torch.float32)
    t_gen = time.perf_counter() - t0
    if args.generate_only:
        print(f"inputs written to {inputs} in {t_gen:.1f}s")
        return
    rank = int(args.rank) if args.rank.isdigit() else args.rank
    data = {"method": args.method, "space": args.space, "adapters": [{"path": str(inputs / f"a{i}"), "weight": 1 / args.adapters}
                                                  for i in range(args.adapters)], "output": {"rank": rank}}
    from tiesmerge.merge.params import DENSITY
    from tiesmerge.merge.registry import get as get_method
    from tiesmerge.merge.types import Method

    if DENSITY in get_method(Method(args.method)).parameters:  # the method's own rule, not a name test
        data["parameters"] = {"density": args.density}
    job = prepare(recipe_from_dict(data, "bench", work))
    dev = resolve_device(args.device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result = driver.run(job, work / "out", device=dev)
    s = result.summary
    print(f"shape={args.shape} layers={args.layers or SHAPES[args.shape].layers} adapters={args.adapters} r={args.r} "
          f"method={args.method} space={args.space} rank={args.rank} device={dev}")
    print(f"inputs written in {t_gen:.1f}s; merge wall {result.seconds:.2f}s for {s['modules']} modules "
          f"({s['modules'] / result.seconds:.1f} modules/s); rank {s['rank_min']}-{s['rank_max']}; "
          f"energy mean {s['retained_energy_mean']:.4f}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (this process, inputs "
          "generation included)")
    if args.cleanup:
        shutil.rmtree(work, ignore_errors=True)
        if args.inputs:
            shutil.rmtree(args.inputs, ignore_errors=True)
    if dev.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB on {torch.cuda.get_device_name()}")


if __name__ == "__main__":
    main()
