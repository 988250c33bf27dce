"""Questions per second: batched letter scoring vs one-question-at-a-time `generate`, on the embedded base.

python benchmarks/eval_throughput.py [--n 64] [--batch-size 16] [--max-new-tokens 8]
Both run in this one process on the same questions, one after the other; the ratio is printed.
"""

from __future__ import annotations

import argparse
import time

import torch

from tiesmerge.eval.builtin.build import build
from tiesmerge.eval.models import load_base
from tiesmerge.eval.scoring import score_generate, score_letters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base", default="smollm2")
    ap.add_argument("--n", type=int, default=64, help="questions (split evenly over the four domains)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    args = ap.parse_args()
    torch.manual_seed(0)
    sets = build(1000, 0)["test"]
    questions = [q for qs in sets.values() for q in qs[: args.n // 4]]
    model, tok = load_base(args.base, device="cpu")
    score_letters(model, tok, questions[:2], batch_size=2)  # warm-up

    t0 = time.perf_counter()
    letters = score_letters(model, tok, questions, batch_size=args.batch_size)
    t_letters = time.perf_counter() - t0
    t0 = time.perf_counter()
    generated = score_generate(model, tok, questions, batch_size=1, max_new_tokens=args.max_new_tokens)
    t_gen = time.perf_counter() - t0

    qps_l, qps_g = len(questions) / t_letters, len(questions) / t_gen
    acc = lambda preds: sum(p.correct for p in preds) / len(preds)
    print(f"base={args.base} questions={len(questions)} threads={torch.get_num_threads()}")
    print(f"batched letter scoring (batch {args.batch_size}): {qps_l:.2f} q/s, accuracy {acc(letters):.3f}")
    print(f"one-at-a-time generate ({args.max_new_tokens} new tokens): {qps_g:.2f} q/s, accuracy {acc(generated):.3f}, "
          f"no letter found in {sum(p.predicted is None for p in generated)}")
    print(f"speed ratio (letters / generate): {qps_l / qps_g:.1f}x")


if __name__ == "__main__":
    main()
