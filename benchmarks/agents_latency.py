"""Agents' latency and accuracy (not a test): the tournament commands, timed whole (process start + load + items).

  python benchmarks/agents_latency.py --adapter MERGED     # CPU: the embedded SmolLM2-135M + a merged adapter
  python benchmarks/agents_latency.py --random-72b         # GPU: Qwen2.5-72B-shaped base, random NF4 weights and a
                                                           # random r=128 RSLoRA adapter (in-process; no checkpoint)

CPU run, each row one deployed work directory and the exact tournament command lines by subprocess:
  batched      the defaults: answers / drafts in batches of 20, 40-token reasoning
  one-by-one   answer.batch_size 1 and 96-token reasoning, question.batch_size 1 (the previous agents' behaviour)
  folded       `deploy --fold`: the base with the adapter folded in, one model to load
For each: whole-command wall time, load time, per-item p50 / max (an item's time runs from its batch's start), and
the letters' accuracy on questions with known answers (the built-in test split). With --fold-4bit N, the paired
accuracy of a 4-bit base + LoRA against the 4-bit folded model on N questions (what --fold costs under NF4).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tiesmerge.portable.answer import AnswerAgent  # noqa: E402
from tiesmerge.portable.bank import FallbackBank  # noqa: E402
from tiesmerge.portable.config import AnswerSettings, QuestionSettings  # noqa: E402
from tiesmerge.portable.question import QuestionAgent  # noqa: E402

QWEN72B = dict(hidden_size=8192, intermediate_size=29568, num_hidden_layers=80, num_attention_heads=64,
               num_key_value_heads=8, vocab_size=152064, max_position_embeddings=32768, rope_theta=1e6,
               rms_norm_eps=1e-6, tie_word_embeddings=False)
PROJ = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MODES = {"batched": {}, "one-by-one": {"answer": {"batch_size": 1, "max_new_tokens": 96},
                                       "question": {"batch_size": 1}}}


def test_questions(domains, n: int, offset: int = 0):
    """n built-in test questions (round-robin over domains): (tournament entries, gold letters)."""
    from tiesmerge.eval.builtin.build import build

    per = math.ceil((n + offset) / len(domains))
    sets = build(n_per_domain=max(50, 5 * per), seed=0, domains=tuple(domains))["test"]  # test = 1/5
    rows = [q for i in range(per) for d in domains for q in sets[d][i: i + 1]][offset: offset + n]
    entries = [{"question": q.question, "choices": [f"{l}) {c}" for l, c in zip("ABCD", q.choices)]} for q in rows]
    return entries, [q.answer for q in rows]


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


def paired(a: list[bool], b: list[bool]) -> str:
    """a − b accuracy with the paired (McNemar) 95 % interval."""
    n = len(a)
    only_a = sum(x and not y for x, y in zip(a, b))
    only_b = sum(y and not x for x, y in zip(a, b))
    diff = (only_a - only_b) / n
    half = 1.96 * math.sqrt(max(only_a + only_b - (only_a - only_b) ** 2 / n, 0)) / n
    return f"{100 * diff:+.1f} pts [{100 * (diff - half):+.1f}, {100 * (diff + half):+.1f}] (n={n}, {only_a} vs {only_b} differ)"


def deploy_dir(adapter: Path, root: Path, name: str, settings: dict, fold: bool = False) -> Path:
    cmd = [str(Path(sys.executable).parent / "tiesmerge"), "deploy", str(adapter), "--base", "smollm2", "--to", str(root / name),
           "--bank-size", "30"] + (["--fold"] if fold else [])
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    cfg_path = root / name / "agents.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    for section, values in settings.items():
        cfg[section] = {**cfg[section], **values}
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return root / name


def run_command(work: Path, args: list[str]) -> tuple[float, dict]:
    env = {**os.environ, "PYTHONPATH": str(work)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", *args, "--verbose"], cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(proc.stderr[-2000:])
    out = Path(work, args[args.index("--output_file") + 1])
    return wall, json.loads(out.with_name(out.stem + ".timing.json").read_text())


def row(mode: str, kind: str, wall: float, report: dict, extra: dict) -> dict:
    times = [it["time_s"] for it in report["items"]]
    return {"mode": mode, "kind": kind, "n": len(times), "wall_s": round(wall, 1), "load_s": round(report["load_s"], 1),
            "items_s": round(wall - report["load_s"], 1), "p50_s": round(statistics.median(times), 2),
            "max_s": round(max(times), 2), "over_limit": sum(t >= report["limit_s"] for t in times), **extra}


def cpu_rows(adapter: Path, domains, n_answers: int, n_questions: int, modes=("batched", "one-by-one", "folded")) -> list[dict]:
    entries, gold = test_questions(domains, n_answers)
    root = Path(tempfile.mkdtemp(prefix="tiesmerge-bench-agents-"))
    rows, letters = [], {}
    for mode, settings, fold in [("batched", MODES["batched"], False), ("one-by-one", MODES["one-by-one"], False),
                                 ("folded", MODES["batched"], True)]:
        if mode not in modes:
            continue
        work = deploy_dir(adapter, root, mode, settings, fold)
        (work / "outputs" / "filtered_questions.json").write_text(json.dumps(entries))
        wall, rep = run_command(work, ["agents.answer_agent", "--input_file", "outputs/filtered_questions.json",
                                       "--output_file", "outputs/answers.json"])
        answers = json.loads((work / "outputs" / "answers.json").read_text())
        letters[mode] = [a["answer"] for a in answers]
        acc = sum(a == g for a, g in zip(letters[mode], gold)) / len(gold)
        templ = sum(it["template_because"] is not None for it in rep["items"])
        rows.append(row(mode, "answers", wall, rep, {"accuracy": round(acc, 3), "template_reasoning": templ}))
        print(json.dumps(rows[-1]), flush=True)
        if mode == "folded":
            continue
        wall, rep = run_command(work, ["agents.question_agent", "--output_file", "outputs/questions.json",
                                       "--num_questions", str(n_questions)])
        rows.append(row(mode, "questions", wall, rep, {"from_model": sum(it["source"] == "model" for it in rep["items"])}))
        print(json.dumps(rows[-1]), flush=True)
    if "batched" in letters and "one-by-one" in letters:
        same = sum(a == b for a, b in zip(letters["batched"], letters["one-by-one"]))
        print(f"batched letters = one-by-one letters on {same}/{len(gold)} questions", flush=True)
    return rows


def fold_cost_4bit(adapter: Path, domains, n: int) -> dict:
    """Accuracy of NF4(base) + LoRA vs NF4(base + ΔW) on n test questions, in-process (letters only)."""
    from tiesmerge.eval.models import embedded_base
    from tiesmerge.export.model import export_model
    from tiesmerge.portable.config import AgentsConfig
    from tiesmerge.portable.loader import load_agent_model

    entries, gold = test_questions(domains, n, offset=100)
    base = embedded_base("smollm2")
    folded = Path(tempfile.mkdtemp(prefix="tiesmerge-fold-")) / "model"
    export_model(adapter, base, folded)
    correct = {}
    for name, cfg in (("lora", AgentsConfig(base=str(base), adapter=str(adapter), load_in_4bit=True, device="cpu")),
                      ("folded", AgentsConfig(base=str(folded), load_in_4bit=True, device="cpu"))):
        loaded = load_agent_model(cfg, Path("."), lambda m: None)
        agent = AnswerAgent(loaded.model, loaded.tokenizer, AnswerSettings(batch_size=16))
        from tiesmerge.portable.answer import parse_entry

        picked = [letter for letter, _ in agent.letters([parse_entry(e) for e in entries])]
        correct[name] = [p == g for p, g in zip(picked, gold)]
        del loaded, agent
    return {"n": n, "accuracy_4bit_lora": round(sum(correct["lora"]) / n, 3),
            "accuracy_4bit_folded": round(sum(correct["folded"]) / n, 3),
            "folded_minus_lora": paired(correct["folded"], correct["lora"])}


def gpu_run(args, domains) -> dict:
    """In-process on a GPU: the batched agents on random 72B-shaped NF4 weights (latency does not depend on values;
    every draft is garbage and falls back, the slowest path)."""
    if args.tokenizer is None:
        from tiesmerge.eval.models import embedded_base

        args.tokenizer = str(embedded_base("smollm2"))
    t0 = time.perf_counter()
    model, tok = random_72b_nf4(args.tokenizer, args.rank)
    load_s = time.perf_counter() - t0
    entries, _ = test_questions(domains, args.answers)
    answerer = AnswerAgent(model, tok, AnswerSettings())
    answerer.answer_all(entries[:2])  # warm-up (kernels, allocator)
    t = time.perf_counter()
    ans = answerer.answer_all(entries)
    answers_s = time.perf_counter() - t
    from tiesmerge.agents.fallback import build_bank

    qs = QuestionSettings(topics=tuple(domains))
    agent = QuestionAgent(model, tok, qs, answerer, FallbackBank(build_bank(30), qs.topics))
    t = time.perf_counter()
    qrec = agent.generate(args.questions)
    questions_s = time.perf_counter() - t
    return {"setup": f"random Qwen2.5-72B shapes, NF4, r={args.rank} RSLoRA, {torch.cuda.get_device_name()}",
            "load_s": round(load_s, 1), "answers_after_load_s": round(answers_s, 2),
            "answer_max_s": round(max(r.time_s for r in ans), 2),
            "questions_after_load_s": round(questions_s, 2), "question_max_s": round(max(r.time_s for r in qrec), 2),
            "gpu_peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapter", type=Path, help="merged adapter on the embedded smollm2 base (CPU run)")
    ap.add_argument("--random-72b", action="store_true")
    ap.add_argument("--tokenizer", default=None, help="tokenizer folder for --random-72b (default: the embedded SmolLM2's)")
    ap.add_argument("--rank", type=int, default=128)
    ap.add_argument("--answers", type=int, default=20)
    ap.add_argument("--questions", type=int, default=20)
    ap.add_argument("--fold-4bit", type=int, default=0, metavar="N", help="also: 4-bit LoRA vs 4-bit folded on N questions")
    ap.add_argument("--domains", default="math,code,stem,humanities")
    ap.add_argument("--modes", default="batched,one-by-one,folded", help="which CPU rows to run")
    ap.add_argument("--out", type=Path, default=None, help="write the results JSON here")
    args = ap.parse_args()
    domains = args.domains.split(",")
    if args.random_72b:
        result = gpu_run(args, domains)
    else:
        if args.adapter is None:
            ap.error("pass --adapter MERGED (or --random-72b on a GPU)")
        result = {"setup": f"smollm2 + {args.adapter}, {os.cpu_count()} CPUs",
                  "rows": cpu_rows(args.adapter, domains, args.answers, args.questions, args.modes.split(","))}
        if args.fold_4bit:
            result["fold_4bit"] = fold_cost_4bit(args.adapter, domains, args.fold_4bit)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
