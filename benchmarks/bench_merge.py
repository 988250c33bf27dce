"""Side-by-side merge benchmark: tiesmerge (full and core space), mergekit's TIES kernel + torch.svd_lowrank,
and PEFT's add_weighted_adapter(..., "ties_svd"), at Qwen2.5-72B shapes by default.

    python benchmarks/bench_merge.py [--layers 1] [--cap 900] [--out build/bench]
    python benchmarks/bench_merge.py --shape qwen2.5-7b --r 64 --rank 64 --tools tiesmerge-full,tiesmerge-core,mergekit

Each tool runs in its own subprocess (so peak RSS is its own) under a wall-clock cap; a tool that is
killed or times out is reported as such, with how far it got. Its time is the merge alone (read, merge,
factor, write), clocked after its imports. All tools merge the same four r=--r, α=2r RSLoRA adapters
(bf16, synthetic: shared + own low-rank directions, decaying spectra) with TIES density 0.2, weights 0.25,
to rank --rank, and write fp32 factors. Then every result's ΔW is compared with exact full-space TIES
(tiesmerge's kernel, equal to mergekit's) and with the core-space result. Writes results.json and
results.md (with each tool's speed as a multiple of mergekit's, measured in the same run) into --out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).parent))

SHAPE = "qwen2.5-72b"
R, DENSITY, RANK, N_ADAPTERS = 128, 0.2, 128, 4
TOOLS = ("tiesmerge-full", "tiesmerge-core", "mergekit", "peft")


def write_inputs(root: Path, layers: int, shape: str = SHAPE, r: int = R) -> list[Path]:
    from tiesmerge.adapters.synthetic import SHAPES, write_synthetic_adapter

    paths = []
    for i in range(N_ADAPTERS):
        p = root / f"a{i}"
        if not (p / "adapter_config.json").exists():
            write_synthetic_adapter(p, SHAPES[shape], layers=layers, r=r, alpha=2 * r, rslora=True,
                                    adapter_seed=i + 1, set_seed=7, dtype=torch.bfloat16)
        paths.append(p)
    return paths


def _progress(out: Path, done: int, total: int, start: float) -> None:
    (out / "progress.json").write_text(json.dumps({"modules_done": done, "modules": total,
                                                   "seconds": time.perf_counter() - start}))


def run_tool(tool: str, inputs: list[Path], out: Path, rank: int = RANK) -> None:
    """Child process: merge with one tool, write factors + timing + own peak RSS (the clock starts after imports)."""
    out.mkdir(parents=True, exist_ok=True)
    if tool.startswith("tiesmerge"):
        from tiesmerge.configs import recipe_from_dict
        from tiesmerge.merge import driver
        from tiesmerge.merge.job import prepare

        start = time.perf_counter()
        recipe = recipe_from_dict({
            "method": "ties", "space": "core" if tool.endswith("core") else "full",
            "parameters": {"density": DENSITY},
            "adapters": [{"name": p.name, "path": str(p), "weight": 1 / N_ADAPTERS} for p in inputs],
            "output": {"rank": rank, "dtype": "float32"}}, "bench", Path("."))
        job = prepare(recipe)
        driver.run(job, out / "adapter", force=True,
                   progress=lambda d, t, _: _progress(out, d, t, start))
        tensors = load_file(out / "adapter" / "adapter_model.safetensors")
        scale = 1.0
    elif tool == "mergekit":
        from mergekit.merge_methods.api import merge_tensors

        from tiesmerge.adapters.reader import AdapterReader

        start = time.perf_counter()
        readers = [AdapterReader(p, p.name) for p in inputs]
        names = list(readers[0].modules)
        tensors = {}
        for k, name in enumerate(names):
            deltas = [r.delta(name) for r in readers]
            merged = merge_tensors([torch.zeros_like(deltas[0]), *deltas], "ties", base_index=0,
                                   parameters={"density": DENSITY, "weight": [1 / N_ADAPTERS] * N_ADAPTERS,
                                               "lambda": 1.0, "normalize": True})
            del deltas
            u, s, v = torch.svd_lowrank(merged, q=rank + 16, niter=2)
            e = readers[0].modules[name]
            tensors[e.b_key] = (u[:, :rank] * s[:rank]).contiguous()
            tensors[e.a_key] = v[:, :rank].T.contiguous()
            _progress(out, k + 1, len(names), start)
        scale = 1.0
    else:
        from peft_skeleton import peft_ties_svd
        from tiesmerge.adapters.reader import AdapterReader

        start = time.perf_counter()
        modules = {n: e.shape for n, e in AdapterReader(inputs[0], "a0").modules.items()}
        sd, cfg = peft_ties_svd({p.name: str(p) for p in inputs}, [1 / N_ADAPTERS] * N_ADAPTERS, modules, DENSITY, rank)
        tensors = {k: v.float().contiguous() for k, v in sd.items()}
        # what PEFT applies when it loads this config (its merged-RSLoRA bug: α/√r with α = r)
        scale = cfg.lora_alpha / math.sqrt(cfg.r) if cfg.use_rslora else cfg.lora_alpha / cfg.r
    seconds = time.perf_counter() - start
    save_file(tensors, str(out / "factors.safetensors"))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    (out / "result.json").write_text(json.dumps({"seconds": seconds, "peak_rss_gib": peak_kib / 2**20, "scale": scale}))


def reference_ties(inputs: list[Path], name: str) -> torch.Tensor:
    from tiesmerge.adapters.reader import AdapterReader
    from tiesmerge.merge.chunked import ties_from_factors
    from tiesmerge.merge.types import MethodParams

    readers = [AdapterReader(p, p.name) for p in inputs]
    bs, as_ = [], []
    for r in readers:
        a, b = r.factors(name)
        bs.append(b * r.modules[name].scale)
        as_.append(a)
    p = MethodParams(weights=(1 / N_ADAPTERS,) * N_ADAPTERS, densities=(DENSITY,) * N_ADAPTERS)
    return ties_from_factors(bs, as_, p).delta


def compare(inputs: list[Path], results: dict[str, dict], root: Path) -> None:
    """Relative ΔW error of each finished tool against exact full-space TIES and the core-space result."""
    from tiesmerge.adapters.reader import AdapterReader

    entries = AdapterReader(inputs[0], "a0").modules
    factors = {t: load_file(root / t / "factors.safetensors") for t, r in results.items() if r["status"] == "ok"}
    num = {t: 0.0 for t in factors}
    num_core = {t: 0.0 for t in factors}
    den = den_core = 0.0
    for name, e in entries.items():
        ref = reference_ties(inputs, name)
        den += float(ref.square().sum())
        core = None
        if "tiesmerge-core" in factors:
            f = factors["tiesmerge-core"]
            core = f[e.b_key] @ f[e.a_key]
            den_core += float(core.square().sum())
        for t, f in factors.items():
            dw = (f[e.b_key] @ f[e.a_key]) * results[t]["scale"]
            num[t] += float((dw - ref).square().sum())
            if core is not None:
                num_core[t] += float((dw - core).square().sum())
            del dw
        del ref, core
    for t in factors:
        results[t]["rel_err_vs_full_ties"] = math.sqrt(num[t] / den)
        results[t]["rel_err_vs_core"] = math.sqrt(num_core[t] / den_core) if den_core else None


def markdown(results: dict[str, dict], layers: int) -> str:
    base = results.get("tiesmerge-full", {}).get("seconds")
    peer = results.get("mergekit", {}).get("seconds")
    lines = [f"| tool | status | wall (s, {layers} layer{'s' if layers > 1 else ''}) | peak RSS (GiB) | "
             "80-layer estimate | time ÷ tiesmerge-full | speed × mergekit | ΔW rel. error vs exact TIES | "
             "vs core-space result |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    fmt = lambda v, spec: (format(v, spec) if isinstance(v, (int, float)) else "—")
    for t in TOOLS:
        if t not in results:
            continue
        r = results[t]
        sec, est = r.get("seconds"), r.get("est_80_layers_s")
        ratio = f"{sec / base:.3g}×" if sec and base else "—"
        speed = f"{peer / sec:.1f}×" if sec and peer else "—"
        lines.append(f"| {t} | {r['status']} | {fmt(sec, '.1f')} | {fmt(r.get('peak_rss_gib'), '.2f')} | "
                     f"{fmt(est / 60 if est else None, '.0f')} min | {ratio} | {speed} | "
                     f"{fmt(r.get('rel_err_vs_full_ties'), '.4f')} | "
                     f"{fmt(r.get('rel_err_vs_core'), '.4f')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--cap", type=float, default=900, help="seconds per tool")
    ap.add_argument("--out", type=Path, default=Path("build/bench"))
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--shape", default=SHAPE, help="model shapes of the synthetic set (tiny for a smoke run)")
    ap.add_argument("--r", type=int, default=R, help="LoRA rank of each input adapter (α = 2r, RSLoRA)")
    ap.add_argument("--rank", type=int, default=RANK, help="output rank")
    ap.add_argument("--tool", help=argparse.SUPPRESS)  # child mode
    ap.add_argument("--inputs", type=Path, help="where the synthetic adapters are (written if missing)")
    args = ap.parse_args()
    inputs_root = args.inputs or args.out / "inputs"
    if args.tool:
        run_tool(args.tool, sorted(p for p in inputs_root.iterdir() if p.is_dir()), args.out / args.tool, args.rank)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    inputs = write_inputs(inputs_root, args.layers, args.shape, args.r)
    print(f"inputs: {N_ADAPTERS} adapters, {args.layers} layer(s) of {args.shape}, r={args.r}, bf16, to rank {args.rank} "
          f"({time.perf_counter() - t0:.0f} s)")
    results: dict[str, dict] = {}
    previous = args.out / "results.json"
    if previous.exists():  # tools not asked for this time keep their last result (a rerun of one tool is cheap)
        old = json.loads(previous.read_text())
        if [old.get(k) for k in ("layers", "shape", "r", "rank")] == [args.layers, args.shape, args.r, args.rank]:
            results = {t: r for t, r in old["tools"].items() if t not in args.tools.split(",")}
    modules_per_layer = 7
    for tool in args.tools.split(","):
        cmd = [sys.executable, __file__, "--tool", tool, "--inputs", str(inputs_root), "--out", str(args.out),
               "--rank", str(args.rank)]
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.cap,
                                  env={**os.environ, "PYTHONWARNINGS": "ignore"})
            status = "ok" if proc.returncode == 0 else (f"killed (signal {-proc.returncode})" if proc.returncode < 0
                                                       else f"failed: {proc.stderr.strip().splitlines()[-1][:120]}")
        except subprocess.TimeoutExpired:
            status = f"timed out at {args.cap:.0f} s"
        r: dict = {"status": status, "process_seconds": time.perf_counter() - start}
        done = args.out / tool / "result.json"
        if status == "ok" and done.exists():
            r.update(json.loads(done.read_text()))
            r["est_80_layers_s"] = r["seconds"] * 80 / args.layers
        else:
            prog = args.out / tool / "progress.json"
            if prog.exists():
                p = json.loads(prog.read_text())
                r["partial"] = p
                if p["modules_done"]:
                    r["est_80_layers_s"] = p["seconds"] / p["modules_done"] * modules_per_layer * 80
        results[tool] = r
        print(f"{tool}: {status}, {r.get('seconds', r['process_seconds']):.1f} s", flush=True)
    compare(inputs, results, args.out)
    results = {t: results[t] for t in TOOLS if t in results}
    (args.out / "results.json").write_text(json.dumps({"layers": args.layers, "shape": args.shape, "r": args.r, "rank": args.rank,
                                                    "cap_s": args.cap, "tools": results}, indent=2))
    table = markdown(results, args.layers)
    (args.out / "results.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
