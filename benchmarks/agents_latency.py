"""Agents' latency (not a test): per-answer and per-question p50 / max against the 6 s and 10 s limits.

  python benchmarks/agents_latency.py --adapter MERGED            # embedded SmolLM2-135M + a merged adapter (CPU)
  python benchmarks/agents_latency.py --random-72b               # GPU: Qwen2.5-72B-shaped base, random NF4 weights,
                                                                 # plus a random r=128 RSLoRA adapter on all 7 projections

Latency does not depend on the weights' values, so the 72B run needs no checkpoint. With random weights every
draft is garbage: each question drafts to its token or time limit and then falls back (the slowest path).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tiesmerge.agents.answer import AnswerAgent  # noqa: E402
from tiesmerge.agents.config import AnswerSettings, QuestionSettings  # noqa: E402
from tiesmerge.agents.fallback import FallbackPool  # noqa: E402
from tiesmerge.agents.question import QuestionAgent  # noqa: E402

QWEN72B = dict(hidden_size=8192, intermediate_size=29568, num_hidden_layers=80, num_attention_heads=64,
               num_key_value_heads=8, vocab_size=152064, max_position_embeddings=32768, rope_theta=1e6,
               rms_norm_eps=1e-6, tie_word_embeddings=False)
PROJ = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def questions(domains, n: int) -> list[dict]:
    from tiesmerge.eval.builtin.build import build

    sets = build(n_per_domain=max(50, n), seed=0, domains=tuple(domains))["test"]
    rows = [q for i in range(n) for d in domains for q in sets[d][i: i + 1]][:n]
    return [{"question": q.question, "choices": [f"{l}) {c}" for l, c in zip("ABCD", q.choices)]} for q in rows]


def random_72b_nf4(tokenizer_dir: str, rank: int, shapes: dict = QWEN72B, device: str = "cuda"):
    """Qwen2.5-72B shapes, NF4 linear layers filled with random weights on the GPU one at a time (no bf16 copy
    of the whole model ever exists), and a random RSLoRA adapter of rank `rank` on all 7 projections."""
    import bitsandbytes as bnb
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(**shapes)
    with torch.device("meta"):
        model = Qwen2ForCausalLM(cfg)
    dev = torch.device(device)
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, lin in list(parent.named_children()):
                if not isinstance(lin, torch.nn.Linear):
                    continue
                q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None,
                                      compute_dtype=torch.bfloat16, quant_type="nf4", device="meta")
                w = torch.randn(lin.out_features, lin.in_features, dtype=torch.bfloat16, device=dev) * 0.02
                q.weight = bnb.nn.Params4bit(w, requires_grad=False, quant_type="nf4").to(dev)
                if lin.bias is not None:
                    q.bias = torch.nn.Parameter(torch.zeros(lin.out_features, dtype=torch.bfloat16, device=dev),
                                                requires_grad=False)
                setattr(parent, name, q)
                del w
    # everything still on meta (embeddings, norms, lm_head) is made real in bf16 on the GPU
    for mod in model.modules():
        for pname, p in list(mod.named_parameters(recurse=False)):
            if p.is_meta:
                real = torch.empty(p.shape, dtype=torch.bfloat16, device=dev)
                real.normal_(0, 0.02) if p.dim() > 1 else real.fill_(1.0)
                setattr(mod, pname, torch.nn.Parameter(real, requires_grad=False))
        for bname, b in list(mod.named_buffers(recurse=False)):
            if b.is_meta:
                mod.register_buffer(bname, torch.empty(b.shape, dtype=b.dtype, device=dev), persistent=False)
    model.model.rotary_emb = type(model.model.rotary_emb)(cfg).to(dev)  # its buffers are computed, not random
    model.is_loaded_in_4bit = True
    model.eval()
    lora = LoraConfig(r=rank, lora_alpha=2 * rank, use_rslora=True, target_modules=PROJ, init_lora_weights=False,
                      task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    for n, p in model.named_parameters():
        if "lora_" in n:
            p.data = p.data.to(torch.bfloat16)
            p.requires_grad_(False)
    model.eval()
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def deployed_smollm2(adapter: str):
    from tiesmerge.agents.deploy import deploy
    from tiesmerge.agents.runtime import load

    work = Path(tempfile.mkdtemp(prefix="tiesmerge-bench-agents-"))
    deploy(Path(adapter), "smollm2", work / "w", link=True)
    cfg, loaded = load(work / "w" / "agents.yaml")
    return loaded.model, loaded.tokenizer


@torch.no_grad()
def probe(model, tok, entry: dict) -> dict:
    """Where an answer's time goes: the letter pass, and decoding speed with the adapter on and off."""
    from tiesmerge.agents.answer import parse_entry
    from tiesmerge.eval.scoring import build_prompt

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    ids = torch.tensor([tok(build_prompt(tok, parse_entry(entry)), add_special_tokens=False)["input_ids"]],
                       device=next(model.parameters()).device)
    out = {"prompt_tokens": ids.shape[1]}

    def timed(fn, reps=3):
        fn()
        sync()
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        sync()
        return (time.perf_counter() - t) / reps

    out["letter_pass_s"] = round(timed(lambda: model(input_ids=ids, logits_to_keep=1)), 3)
    gen = lambda: model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=17,
                                 min_new_tokens=17, do_sample=False, pad_token_id=tok.pad_token_id)
    one = lambda: model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=1,
                                 do_sample=False, pad_token_id=tok.pad_token_id)
    out["decode_s_per_token_adapter"] = round((timed(gen, 2) - timed(one, 2)) / 16, 4)
    if hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            out["decode_s_per_token_no_adapter"] = round((timed(gen, 2) - timed(one, 2)) / 16, 4)
    return out


def summary(kind: str, times: list[float], limit: float) -> dict:
    return {"kind": kind, "n": len(times), "p50_s": round(statistics.median(times), 3),
            "max_s": round(max(times), 3), "limit_s": limit, "over_limit": sum(t >= limit for t in times)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapter", help="merged adapter on the embedded smollm2 base")
    ap.add_argument("--random-72b", action="store_true")
    ap.add_argument("--tokenizer", default=None, help="tokenizer folder for --random-72b (default: the embedded "
                    "SmolLM2's; token ids stay below its 49152, so the 152064-row embedding is only partly used)")
    ap.add_argument("--rank", type=int, default=128)
    ap.add_argument("--answers", type=int, default=20)
    ap.add_argument("--questions", type=int, default=20)
    ap.add_argument("--domains", default="math,code,stem,humanities")
    ap.add_argument("--probe", action="store_true", help="also time the letter pass and decoding with/without the adapter")
    ap.add_argument("--out", type=Path, default=None, help="write the summary JSON here")
    args = ap.parse_args()
    domains = args.domains.split(",")
    t0 = time.perf_counter()
    if args.random_72b:
        if args.tokenizer is None:
            from tiesmerge.eval.models import embedded_base

            args.tokenizer = str(embedded_base("smollm2"))
        model, tok = random_72b_nf4(args.tokenizer, args.rank)
        where = f"random Qwen2.5-72B shapes, NF4, r={args.rank} RSLoRA unmerged, {torch.cuda.get_device_name()}"
    else:
        model, tok = deployed_smollm2(args.adapter)
        where = f"smollm2 + {args.adapter} (merged into fp32 weights), {torch.get_num_threads()} CPU threads"
    load_s = time.perf_counter() - t0
    print(f"loaded in {load_s:.1f} s: {where}", flush=True)
    entries = questions(domains, args.answers)
    probed = probe(model, tok, entries[0]) if args.probe else None
    if probed:
        print(json.dumps(probed), flush=True)
    answerer = AnswerAgent(model, tok, AnswerSettings())
    answerer.answer_one(entries[0])  # warm-up (kernels, allocator)
    ans = answerer.answer_all(entries, lambda r: print(f"answer {r.index}: {r.time_s:.3f} s {r.status} "
                                                       f"{r.reasoning_tokens} tok", flush=True))
    qs = QuestionSettings(topics=tuple(domains))
    agent = QuestionAgent(model, tok, qs, answerer, FallbackPool(qs.topics, args.questions // len(domains) + 2))
    qrec = agent.generate(args.questions, lambda r: print(f"question {r.index}: {r.time_s:.3f} s {r.source} "
                                                           f"{r.draft_tokens} tok ({r.why_fallback})", flush=True))
    result = {"setup": where, "load_s": round(load_s, 1),
              "answers": summary("answer", [r.time_s for r in ans], 6.0),
              "answer_reasoning_tokens_p50": statistics.median(r.reasoning_tokens for r in ans),
              "answers_stopped_by_deadline": sum(r.stopped_by_deadline for r in ans),
              "questions": summary("question", [r.time_s for r in qrec], 10.0),
              "question_draft_tokens_p50": statistics.median(r.draft_tokens for r in qrec),
              "questions_from_model": sum(r.source == "model" for r in qrec)}
    if probed:
        result["probe"] = probed
    if torch.cuda.is_available():
        result["gpu_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
