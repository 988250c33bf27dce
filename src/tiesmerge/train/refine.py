"""Refine a merged LoRA by distillation: train it to reproduce each specialist on that specialist's own unlabeled
prompts (teacher = the base with the specialist's adapter active; student = the merged adapter; one base in memory,
adapters switched). The output is still a plain PEFT LoRA of the start's rank and targets, with scale 1.

Target (`RefineTarget`): `greedy` — cross-entropy on the teacher's greedy continuation of each prompt (K tokens,
generated once); `kl` — KL(teacher ‖ student) over the vocabulary at those same positions (the teacher runs each
step). Held-out prompts of every adapter drive early stopping and the report: per adapter, the share of
continuation tokens where the student's top token equals the teacher's, and of prompts where all of them do (the
student's greedy continuation is then the teacher's).

Deterministic: the batch of step s is a pure function of (seed, s), so a run resumed from its checkpoint (student
and optimizer state, written in safetensors + JSON, never pickled) continues exactly as an uninterrupted one."""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from tiesmerge.calibration.prompts import Prompt, PromptFormat, encode_prompt, truncation_note
from tiesmerge.choices import Choice
from tiesmerge.errors import BadInputError, as_bad_input
from tiesmerge.eval.scoring import logits_at
from tiesmerge.portable import limits
from tiesmerge.train.checkpoint import Checkpoint
from tiesmerge.train.trainer import _batch

STUDENT = "tiesmerge_student"
REFINE_VERSION = 1


class RefineTarget(Choice):
    greedy = "greedy"  # cross-entropy on the teacher's greedy continuation
    kl = "kl"  # KL(teacher ‖ student) on the vocabulary at the continuation's positions


@dataclass(frozen=True)
class RefineSettings:
    steps: int = 150
    batch_size: int = 16
    lr: float = 1e-3
    tokens: int = 6  # length of the teacher's continuation that is matched
    target: RefineTarget = RefineTarget.greedy
    prompt_format: PromptFormat = PromptFormat.cloze
    heldout: float = 0.1  # share of each adapter's prompts held out (at least 1, at most 64)
    eval_every: int = 25
    patience: int = 3  # evaluations without a better held-out loss before stopping
    seed: int = 0

    def check(self) -> None:
        for name in ("steps", "batch_size", "tokens", "eval_every"):
            if getattr(self, name) < 1:
                raise BadInputError(f"refine {name.replace('_', '-')} must be at least 1")
        if not (math.isfinite(self.lr) and 0 < self.lr < 1):
            raise BadInputError(f"refine --lr must be in (0, 1), got {self.lr}")
        if not 0 < self.heldout < 1:
            raise BadInputError(f"refine --heldout must be a share in (0, 1), got {self.heldout}")
        if self.patience < 1:
            raise BadInputError("refine --patience must be at least 1")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["target"], d["prompt_format"] = self.target.value, self.prompt_format.value
        return d


Example = tuple[list[int], list[int]]  # (prompt token ids, the teacher's continuation ids)


def _activate(peft_model, name: str) -> None:
    """Make `name` the active adapter; only the student's factors are ever trainable (PEFT's set_adapter
    flags the active adapter's)."""
    peft_model.set_adapter(name)
    for pname, p in peft_model.named_parameters():
        p.requires_grad_(f".{STUDENT}." in pname)


@torch.no_grad()
def teacher_continuations(peft_model, tokenizer, name: str, texts: Sequence[str], tokens: int,
                          batch_size: int = 16) -> list[Example]:
    """Each prompt's greedy continuation under adapter `name` (cut after an end-of-sequence token)."""
    _activate(peft_model, name)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    eos = tokenizer.eos_token_id
    device = next(peft_model.parameters()).device
    out: list[Example] = []
    for i in range(0, len(texts), batch_size):
        rows = [encode_prompt(tokenizer, t) for t in texts[i: i + batch_size]]
        if any(not r for r in rows):
            raise BadInputError("a calibration prompt encodes to no tokens")
        width = max(len(r) for r in rows)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        gen = peft_model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=tokens, do_sample=False,
                                  pad_token_id=pad, temperature=None, top_p=None, top_k=None)[:, width:]
        for r, g in zip(rows, gen.tolist()):
            cont = []
            for t in g:
                cont.append(t)
                if t == eos:
                    break
            out.append((r, cont))
    return out


def _positions_logits(model, examples: Sequence[Example], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [M, V] where each position predicts a continuation token, those M target tokens)."""
    device = next(model.parameters()).device
    ids, mask, labels = _batch(examples, pad, device)
    predicts = torch.zeros_like(labels, dtype=torch.bool)
    predicts[:, :-1] = labels[:, 1:] != -100
    return logits_at(model, predicts, input_ids=ids, attention_mask=mask), labels[:, 1:][predicts[:, :-1]]


def _loss(peft_model, examples: Sequence[Example], owners: Sequence[str], pad: int, target: RefineTarget):
    _activate(peft_model, STUDENT)
    logits, tokens = _positions_logits(peft_model, examples, pad)
    if target is RefineTarget.greedy:
        return torch.nn.functional.cross_entropy(logits, tokens)
    teacher = torch.empty_like(logits)
    sizes = [len(cont) for _, cont in examples]
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    with torch.no_grad():
        for name in dict.fromkeys(owners):  # one teacher pass per adapter in the batch
            idx = [i for i, o in enumerate(owners) if o == name]
            _activate(peft_model, name)
            t_logits, _ = _positions_logits(peft_model, [examples[i] for i in idx], pad)
            rows = torch.cat([torch.arange(offsets[i], offsets[i] + sizes[i]) for i in idx]).to(logits.device)
            teacher[rows] = t_logits
    _activate(peft_model, STUDENT)
    return torch.nn.functional.kl_div(torch.log_softmax(logits, -1), torch.log_softmax(teacher, -1),
                                      log_target=True, reduction="batchmean")


@torch.no_grad()
def agreement(peft_model, examples: Sequence[Example], pad: int, batch_size: int = 32) -> dict:
    """Teacher-forced agreement of the student with the teacher's continuation: loss, token share, whole-sequence
    share (every token's argmax equal: the student's greedy continuation is the teacher's)."""
    _activate(peft_model, STUDENT)
    nll, tokens_ok, tokens, seq_ok = 0.0, 0, 0, 0
    for i in range(0, len(examples), batch_size):
        part = examples[i: i + batch_size]
        logits, target = _positions_logits(peft_model, part, pad)
        nll += float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))
        hit = (logits.argmax(-1) == target).tolist()
        tokens_ok, tokens = tokens_ok + sum(hit), tokens + len(hit)
        at = 0
        for _, cont in part:
            seq_ok += all(hit[at: at + len(cont)])
            at += len(cont)
    return {"loss": nll / max(tokens, 1), "token_agreement": tokens_ok / max(tokens, 1),
            "sequence_agreement": seq_ok / max(len(examples), 1), "prompts": len(examples)}


def split_heldout(n: int, share: float, seed: int, name: str) -> tuple[list[int], list[int]]:
    """(train indices, held-out indices) of one adapter's prompts, seeded per adapter."""
    k = min(64, max(1, round(n * share)))
    if n < 2:
        raise BadInputError(f"adapter {name!r} has {n} calibration prompt; refine needs at least 2 (one is held out)")
    order = random.Random(f"refine-{seed}-{name}").sample(range(n), n)
    return sorted(order[k:]), sorted(order[:k])


def batch_for(step: int, settings: RefineSettings, train: Mapping[str, Sequence[int]]) -> list[tuple[str, int]]:
    """(adapter, prompt index) of every slot of step `step`: adapters in turn, each adapter's prompts in seeded
    epochs — a pure function of (seed, step), so a resumed run draws the same batches."""
    names = list(train)
    out = []
    for j in range(settings.batch_size):
        slot = step * settings.batch_size + j
        name, draw = names[slot % len(names)], slot // len(names)
        items = train[name]
        epoch, pos = divmod(draw, len(items))
        perm = random.Random(f"refine-{settings.seed}-{name}-{epoch}").sample(list(items), len(items))
        out.append((name, perm[pos]))
    return out


def fold_student_scale(peft_model) -> None:
    """Fold the start adapter's scale into B, so the student has scale 1 (and so will its output)."""
    from peft.tuners.lora import LoraLayer

    for m in peft_model.modules():
        if isinstance(m, LoraLayer) and STUDENT in m.lora_A:
            s = float(m.scaling[STUDENT])
            if s != 1.0:
                m.lora_B[STUDENT].weight.data.mul_(s)
                m.scaling[STUDENT] = 1.0


def student_state(peft_model) -> dict[str, torch.Tensor]:
    """The student's factors by PEFT's saved key (`…q_proj.lora_A.weight`), detached copies."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone().contiguous() for k, v in
            get_peft_model_state_dict(peft_model, adapter_name=STUDENT).items()}


def load_student_state(peft_model, state: Mapping[str, torch.Tensor]) -> None:
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(peft_model, dict(state), adapter_name=STUDENT)


@dataclass
class RefineRun:
    """Everything a refine needs, prepared (the base loaded, specialists attached, prompts rendered)."""

    peft_model: object
    tokenizer: object
    names: list[str]
    examples: dict[str, list[Example]]  # per adapter, the teacher's continuations of all its prompts
    train: dict[str, list[int]]
    heldout: dict[str, list[int]]
    pad: int


def prepare(model, tokenizer, start: Path, specialists: Mapping[str, Path], prompts: Mapping[str, Sequence[Prompt]],
            settings: RefineSettings, log: Callable[[str], None]) -> RefineRun:
    from tiesmerge.eval.models import load_adapter

    peft_model = None
    for name, path in specialists.items():
        peft_model = load_adapter(peft_model, model, path, name)
    load_adapter(peft_model, model, start, STUDENT, is_trainable=True)
    fold_student_scale(peft_model)
    peft_model.eval()  # no dropout: teacher and student are deterministic
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    examples, train, heldout = {}, {}, {}
    for name in specialists:
        texts = [p.render(tokenizer, settings.prompt_format) for p in prompts[name]]
        if (note := truncation_note(tokenizer, name, texts)) is not None:
            log(note)
        t0 = time.perf_counter()
        examples[name] = teacher_continuations(peft_model, tokenizer, name, texts, settings.tokens)
        train[name], heldout[name] = split_heldout(len(texts), settings.heldout, settings.seed, name)
        log(f"teacher {name}: {len(texts)} continuations ({time.perf_counter() - t0:.0f} s), "
            f"{len(heldout[name])} held out")
        if settings.target is RefineTarget.greedy:  # its continuations are all the training needs of it
            peft_model.delete_adapter(name)
    return RefineRun(peft_model, tokenizer, list(specialists), examples, train, heldout, pad)


def evaluate(run: RefineRun) -> dict[str, dict]:
    return {n: agreement(run.peft_model, [run.examples[n][i] for i in run.heldout[n]], run.pad) for n in run.names}


def mean_loss(scores: Mapping[str, dict]) -> float:
    return sum(s["loss"] for s in scores.values()) / len(scores)


def train(run: RefineRun, settings: RefineSettings, checkpoint: Checkpoint | None = None,
          progress: Callable[[int, int, str], None] | None = None, log: Callable[[str], None] = lambda m: None) -> dict:
    """Train the student; returns the report. The student ends holding its best state (lowest held-out loss)."""
    pm = run.peft_model
    _activate(pm, STUDENT)
    params = [p for n, p in pm.named_parameters() if f".{STUDENT}." in n]
    optim = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    state = checkpoint.load(optim) if checkpoint is not None else None
    if state is not None:
        load_student_state(pm, state.pop("student"))
    if state is None:
        start_scores = evaluate(run)
        state = {"step": 0, "history": [{"step": 0, "loss": mean_loss(start_scores)}], "start": start_scores,
                 "best": {"step": 0, "loss": mean_loss(start_scores)}, "best_state": student_state(pm), "stale": 0}
    else:
        log(f"resumed from step {state['step']} ({checkpoint.path})")
    begin = time.perf_counter()
    step = state["step"]
    while step < settings.steps and state["stale"] < settings.patience:
        slots = batch_for(step, settings, run.train)
        batch = [run.examples[name][i] for name, i in slots]
        pm.train()
        loss = _loss(pm, batch, [name for name, _ in slots], run.pad, settings.target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        optim.zero_grad(set_to_none=True)
        pm.eval()
        if not math.isfinite(float(loss.detach())):
            raise BadInputError(f"refine diverged at step {step + 1} (non-finite loss); lower --lr")
        step += 1
        state["step"] = step
        if progress:
            progress(step, settings.steps, f"loss {float(loss.detach()):.3f}")
        if step % settings.eval_every == 0 or step == settings.steps:
            scores = evaluate(run)
            held = mean_loss(scores)
            state["history"].append({"step": step, "loss": held, "train_loss": float(loss.detach())})
            if held < state["best"]["loss"] - 1e-6:
                state["best"], state["best_state"], state["stale"] = {"step": step, "loss": held}, student_state(pm), 0
            else:
                state["stale"] += 1
            if checkpoint is not None:
                checkpoint.save(student_state(pm), optim, state)
    load_student_state(pm, state["best_state"])
    final = evaluate(run)
    stopped = "early (held-out loss stopped improving)" if state["stale"] >= settings.patience else "step budget"
    return {"start": state["start"], "final": final, "best_step": state["best"]["step"], "steps_run": step,
            "stopped": stopped, "history": state["history"], "seconds": round(time.perf_counter() - begin, 2)}


def write_adapter(run: RefineRun, start: Path, out_tmp: Path, report: dict) -> None:
    """The student as a plain PEFT LoRA (scale 1, the start's ranks and targets) and its report."""
    from safetensors.torch import save_file

    config = as_bad_input(limits.read_json)(Path(start) / "adapter_config.json", "--start config")
    ranks = dict(config.get("rank_pattern") or {})
    config.update(lora_alpha=config["r"], use_rslora=False, alpha_pattern={k: v for k, v in ranks.items()},
                  inference_mode=True)
    tensors = student_state(run.peft_model)
    bad = [k for k, v in tensors.items() if not torch.isfinite(v).all()]
    if bad:
        raise BadInputError(f"the refined factors are not finite ({bad[0]}); lower --lr")
    save_file(tensors, str(out_tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out_tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out_tmp / "refine_report.json").write_text(json.dumps(report, indent=2) + "\n")


def describe(report: Mapping) -> list[str]:
    """One line per adapter: held-out agreement with its teacher, start → refined."""
    lines = []
    for name, end in report["final"].items():
        s = report["start"][name]
        lines.append(f"{name}: token agreement {s['token_agreement']:.1%} → {end['token_agreement']:.1%}, "
                     f"whole continuation {s['sequence_agreement']:.1%} → {end['sequence_agreement']:.1%} "
                     f"({end['prompts']} held-out prompts)")
    return lines

