"""PEFT's `add_weighted_adapter` against `tiesmerge.peft.add_merged_adapter` — the one-word edit — on the demo's
four RSLoRA specialists (SmolLM2-135M, r = 16, α = 32, seven projections; `make demo` trains them), same
arguments, same model. Prints, per combination type, how far each result's ΔW is from the exact ΔW-space merge
(the tiesmerge CLI's), the norm ratio, and per-domain test accuracy with paired 95 % intervals (cloze).

    python benchmarks/peft_dropin.py [--limit 200] [--types ties_svd,svd,cat]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tiesmerge.cache import artifact_root  # noqa: E402
from tiesmerge.peft import add_merged_adapter  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from bench_quality import paired  # noqa: E402  the paired 95 % interval the quality suites use

DOMAINS = ("math", "code", "stem", "humanities")


def specialists() -> dict[str, Path]:
    root = artifact_root() / "specialists"
    found = {d: sorted(root.glob(f"{d}-*")) for d in DOMAINS}
    missing = [d for d, f in found.items() if not f]
    if missing:
        raise SystemExit(f"no cached demo specialists for {missing} in {root}: run `make demo` first")
    return {d: f[-1] for d, f in found.items()}


def deltas(model, name):
    from peft.tuners.lora import LoraLayer

    out = {}
    for module_name, module in model.base_model.model.named_modules():
        if isinstance(module, LoraLayer) and name in module.lora_A:
            out[module_name] = module.scaling[name] * (module.lora_B[name].weight.double()
                                                       @ module.lora_A[name].weight.double())
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=200, help="test questions per domain")
    ap.add_argument("--types", default="ties_svd,svd,cat")
    ap.add_argument("--density", type=float, default=0.2)
    args = ap.parse_args()
    from peft import PeftModel

    from tiesmerge.eval.builtin.build import build
    from tiesmerge.eval.models import embedded_base, load_base
    from tiesmerge.eval.run import EvalMode, evaluate

    specs = specialists()
    base_dir = embedded_base("smollm2")
    model, tok = load_base(str(base_dir), dtype="float32", device="cpu")
    names = list(specs)
    peft_model = PeftModel.from_pretrained(model, str(specs[names[0]]), adapter_name=names[0])
    for n in names[1:]:
        peft_model.load_adapter(str(specs[n]), adapter_name=n)
    weights = [1.0 / len(names)] * len(names)
    rows, out = [], Path(tempfile.mkdtemp(prefix="peft-dropin-"))
    for ctype in args.types.split(","):
        t0 = time.perf_counter()
        peft_model.base_model.add_weighted_adapter(names, weights, f"peft_{ctype}", combination_type=ctype,
                                                   density=args.density, svd_rank=16 if ctype != "cat" else None)
        t_peft = time.perf_counter() - t0
        t0 = time.perf_counter()
        add_merged_adapter(peft_model, names, weights, f"ours_{ctype}", combination_type=ctype, density=args.density,
                           svd_rank=16 if ctype != "cat" else None)
        t_ours = time.perf_counter() - t0
        d_peft, d_ours = deltas(peft_model, f"peft_{ctype}"), deltas(peft_model, f"ours_{ctype}")
        err = math.sqrt(sum(float((d_peft[m] - d_ours[m]).square().sum()) for m in d_ours)
                        / sum(float(d_ours[m].square().sum()) for m in d_ours))
        ratio = math.sqrt(sum(float(d_peft[m].square().sum()) for m in d_ours)
                          / sum(float(d_ours[m].square().sum()) for m in d_ours))
        rows.append({"type": ctype, "rel_dW_distance": err, "norm_ratio_peft_over_ours": ratio,
                     "seconds_peft": round(t_peft, 2), "seconds_ours": round(t_ours, 2)})
        for tag in ("peft", "ours"):
            peft_model.save_pretrained(out / tag, selected_adapters=[f"{tag}_{ctype}"])
    sets = build(1000, 0, domains=DOMAINS)
    questions = [q for d in DOMAINS for q in sets["test"][d][: args.limit]]
    merged = {f"{tag}_{c}": out / tag / f"{tag}_{c}" for c in args.types.split(",") for tag in ("peft", "ours")}
    del peft_model
    result = evaluate(model, tok, questions, adapters={d: p for d, p in specs.items()}, merged=merged,
                      mode=EvalMode.cloze, batch_size=16, include_base=True)
    print(json.dumps(rows, indent=1))
    for name in ["base", *DOMAINS, *merged]:
        accs = {d: result.cell(name, d)["accuracy"] for d in DOMAINS}
        print(f"{name:16s} " + " ".join(f"{d} {100 * a:5.1f}" for d, a in accs.items())
              + f"  mean {100 * sum(accs.values()) / len(accs):5.1f}")
    for c in args.types.split(","):
        ours = [int(p.correct) for p in result.predictions[f"ours_{c}"]]
        theirs = [int(p.correct) for p in result.predictions[f"peft_{c}"]]
        mean, lo, hi = paired(ours, theirs)
        print(f"{c}: accuracy ours − PEFT {100 * mean:+.1f} points (paired 95 % {100 * lo:+.1f} … {100 * hi:+.1f}), "
              f"n = {len(ours)}; merged_summary ours {result.merged_summary(f'ours_{c}')}, "
              f"PEFT {result.merged_summary(f'peft_{c}')}")


if __name__ == "__main__":
    main()
