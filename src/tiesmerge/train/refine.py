"""Refine a merged LoRA by distillation: train it to reproduce each specialist on that specialist's own unlabeled
prompts (teacher = the base with the specialist's adapter active; student = the merged adapter; one base in memory,
adapters switched). The output is still a plain PEFT LoRA of the start's rank and targets, with scale 1.

Target (`RefineTarget`): `greedy` — cross-entropy on the teacher's greedy continuation of each prompt (K tokens,
generated once); `kl` — KL(teacher ‖ student) at those positions; `kl_all` — KL at every position, the prompt's too;
`options` — KL at every token of each of a question's four options, teacher-forced after its cloze prompt (four
examples per question, held out together; a plain text falls back to its greedy continuation).
Teacher distributions are computed once and cached compactly (train/teacher.py), so no teacher runs during training.
`keep`: an example where the start's top token is already the teacher's at every continuation position is distilled
toward the start itself (what the start does well is kept). `normalize`: each teacher's loss is divided by the
start's held-out loss on it, so a teacher the start is far from does not drown the others. Held-out prompts of every
adapter drive selection and early stopping — or, given `validation` questions (labelled, held back by the user), their accuracy does; the
state kept is the best seen, so when nothing beats the start, the start is returned (and the report says so).
`autocast`: forward passes in bfloat16 (AVX-512 BF16 CPUs, CUDA), the factors and optimizer in float32.

Deterministic: the batch of step s is a pure function of (seed, s), so a run resumed from its checkpoint (student
and optimizer state, written in safetensors + JSON, never pickled) continues exactly as an uninterrupted one."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from tiesmerge.calibration.prompts import Prompt, PromptFormat, truncation_note
from tiesmerge.errors import BadInputError
from tiesmerge.train import teacher as T
from tiesmerge.train.checkpoint import Checkpoint
from tiesmerge.train.refine_settings import RefineSettings, RefineTarget  # noqa: F401 (re-exported)
from tiesmerge.train.teacher import STUDENT, Example, agreement, teacher_continuations  # noqa: F401 (re-exported)
from tiesmerge.train.teacher import activate as _activate

REFINE_VERSION = 5  # 2: cached targets, keep, per-teacher weights, validation selection; 4: one teacher pass;
# 5: padding-free batches


def autocast(settings: RefineSettings, model):
    """bfloat16 forward passes when `settings.autocast` (a no-op context otherwise)."""
    device = next(model.parameters()).device
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=settings.autocast)


def _loss(run: "RefineRun", slots: Sequence[tuple[str, int]], settings: RefineSettings) -> torch.Tensor:
    """The batch's loss: each example's loss against its cached target, weighted by its teacher's weight."""
    _activate(run.peft_model, STUDENT)
    batch = [run.examples[name][i] for name, i in slots]
    every = settings.target is RefineTarget.kl_all
    with autocast(settings, run.peft_model):
        logits, tokens = T.position_logits(run.peft_model, batch, run.pad, every)
    losses = T.example_losses(logits, tokens, T.sizes_of(batch, every), [run.targets[n][i] for n, i in slots],
                              settings.target is RefineTarget.greedy)
    weights = torch.tensor([run.weights[n] for n, _ in slots], dtype=losses.dtype, device=losses.device)
    return (weights * losses).mean()


def objective(run: "RefineRun", settings: RefineSettings, name: str, batch_size: int = 32) -> float:
    """Adapter `name`'s mean held-out loss against its targets (the training loss, unweighted)."""
    return heldout_scores(run, settings, name, batch_size)["objective"]


def teacher_weights(start_losses: Mapping[str, float], normalize: bool) -> dict[str, float]:
    """Per-teacher loss weights: 1 / the start's held-out loss on that teacher (floored at 1e-3 of the largest, so a
    teacher the start already matches cannot take the whole weight), scaled to mean 1 — each teacher then starts
    at the same weighted loss. Without `normalize`, 1 each."""
    if not normalize:
        return {n: 1.0 for n in start_losses}
    floor = max(max(start_losses.values(), default=0.0) * 1e-3, 1e-8)
    raw = {n: 1.0 / max(v, floor) for n, v in start_losses.items()}
    mean = sum(raw.values()) / len(raw)
    return {n: v / mean for n, v in raw.items()}


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
    """Everything a refine needs, prepared (the base loaded, the targets cached, prompts rendered)."""

    peft_model: object
    tokenizer: object
    names: list[str]
    examples: dict[str, list[Example]]  # per adapter, the teacher's continuations of all its prompts
    train: dict[str, list[int]]
    heldout: dict[str, list[int]]
    pad: int
    targets: dict[str, list[T.Target]] = field(default_factory=dict)  # per adapter, per prompt
    weights: dict[str, float] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)  # prompts whose target is the start itself
    validation: list = field(default_factory=list)  # labelled questions (eval.questions.Question), optional
    start: Path | None = None  # the start refined (given several candidates: the one chosen)
    start_choice: list = field(default_factory=list)  # each candidate's held-out scores, when there were several


def prepare(model, tokenizer, start: Path | Sequence[Path], specialists: Mapping[str, Path],
            prompts: Mapping[str, Sequence[Prompt]], settings: RefineSettings, log: Callable[[str], None],
            validation: Sequence = ()) -> RefineRun:
    """Load the teachers, cache every target once, choose the start (given several: the one closest to its teachers
    on the held-out prompts, train/starts.py), then drop the teachers (never run again)."""
    from tiesmerge.eval.models import load_adapter
    from tiesmerge.train.starts import choose_start

    starts = [Path(start)] if isinstance(start, (str, Path)) else [Path(s) for s in start]
    peft_model = None
    for name, path in specialists.items():
        peft_model = load_adapter(peft_model, model, path, name)
    peft_model.eval()  # no dropout: teacher and student are deterministic
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    every = settings.target is RefineTarget.kl_all
    run = RefineRun(peft_model, tokenizer, list(specialists), {}, {}, {}, pad, validation=list(validation))
    for name in specialists:
        texts = [p.render(tokenizer, settings.prompt_format) for p in prompts[name]]
        if (note := truncation_note(tokenizer, name, texts)) is not None:
            log(note)
        t0 = time.perf_counter()
        owner = list(range(len(texts)))  # the prompt each example comes from (options: four per question)
        with autocast(settings, peft_model):
            if settings.target is RefineTarget.options:
                run.examples[name], targets, owner = T.teach_options(peft_model, tokenizer, name, prompts[name],
                                                                     texts, settings.tokens)
            else:
                run.examples[name], targets = T.teach(peft_model, tokenizer, name, texts, settings.tokens,
                                                      None if settings.target is RefineTarget.greedy else every)
        run.targets[name] = targets if targets is not None else [
            T.Target(torch.empty(0, 0, dtype=torch.int32), torch.empty(0, 0), name) for _ in texts]
        _, held_p = split_heldout(len(texts), settings.heldout, settings.seed, name)  # by prompt
        held = set(held_p)
        run.train[name] = [j for j, o in enumerate(owner) if o not in held]
        run.heldout[name] = [j for j, o in enumerate(owner) if o in held]
        log(f"teacher {name}: {len(run.examples[name])} targets for {len(texts)} prompts "
            f"({time.perf_counter() - t0:.0f} s), {len(held)} prompts held out")
    run.start = starts[0]
    if len(starts) > 1:
        run.start, run.start_choice = choose_start(peft_model, model, starts, lambda a: {
            n: heldout_scores(run, settings, n, adapter=a) for n in run.names}, log)
    load_adapter(peft_model, model, run.start, STUDENT, is_trainable=True)
    fold_student_scale(peft_model)
    peft_model.eval()
    _activate(peft_model, STUDENT)
    for name in specialists:
        peft_model.delete_adapter(name)  # every target is cached: the teachers never run again
    if settings.keep:
        _keep_what_the_start_does(run, settings, every)
    return run


@torch.no_grad()
def _keep_what_the_start_does(run: RefineRun, settings: RefineSettings, every: bool, batch_size: int = 32) -> None:
    """Examples where the start already does what the teacher does (its argmax the teacher's top token at every
    continuation position: for a greedy continuation, the start produces it) get the start's own distribution as
    their target. The check reads the continuation's positions only (the vocabulary head at a few
    positions per prompt); the few prompts kept are then run again for their target at every matched position."""
    for name in run.names:
        examples, kept = run.examples[name], []
        for i in range(0, len(examples), batch_size):
            part = examples[i: i + batch_size]
            with autocast(settings, run.peft_model):
                logits, tokens = T.position_logits(run.peft_model, part, run.pad, False)
            # the teacher's top token at each continuation position (for a greedy continuation: its own token)
            top = torch.cat([t.ids[-len(c):, 0].long() if t.ids.numel() else torch.tensor(c)
                             for (_, c), t in zip(part, run.targets[name][i: i + batch_size])]).to(tokens.device)
            hit = (logits.argmax(-1) == top).tolist()
            at = 0
            for j, (_, cont) in enumerate(part):
                if all(hit[at: at + len(cont)]):
                    kept.append(i + j)
                at += len(cont)
        for i in range(0, len(kept), batch_size):
            idx = kept[i: i + batch_size]
            part = [examples[j] for j in idx]
            with autocast(settings, run.peft_model):
                logits, _ = T.position_logits(run.peft_model, part, run.pad, every)
            for j, rows in zip(idx, logits.split(T.sizes_of(part, every))):
                run.targets[name][j] = T.Target.from_logits(rows, "start")
        run.kept[name] = len(kept)


@torch.no_grad()
def heldout_scores(run: RefineRun, settings: RefineSettings, name: str, batch_size: int = 32,
                   adapter: str = STUDENT) -> dict:
    """The student's (or `adapter`'s) held-out agreement with teacher `name`'s continuation and its held-out
    objective (the training loss, unweighted), from one pass."""
    _activate(run.peft_model, adapter)
    every, greedy = settings.target is RefineTarget.kl_all, settings.target is RefineTarget.greedy
    idx = run.heldout[name]
    totals, objective_sum = [0.0, 0, 0, 0], 0.0
    for i in range(0, len(idx), batch_size):
        part_idx = idx[i: i + batch_size]
        part = [run.examples[name][j] for j in part_idx]
        with autocast(settings, run.peft_model):
            logits, tokens = T.position_logits(run.peft_model, part, run.pad, every)
        objective_sum += float(T.example_losses(logits, tokens, T.sizes_of(part, every),
                                                [run.targets[name][j] for j in part_idx], greedy).sum())
        totals = [x + y for x, y in zip(totals, T.agreement_counts(logits, tokens, part, every))]
    return {**T.agreement_summary(*totals, len(idx)), "objective": objective_sum / max(len(idx), 1)}


def evaluate(run: RefineRun, settings: RefineSettings | None = None) -> dict[str, dict]:
    """Per adapter: held-out agreement with its teacher's continuation (and, given settings, the held-out objective)."""
    if settings is not None:
        return {n: heldout_scores(run, settings, n) for n in run.names}
    return {n: agreement(run.peft_model, [run.examples[n][i] for i in run.heldout[n]], run.pad) for n in run.names}


def mean_loss(scores: Mapping[str, dict], weights: Mapping[str, float] | None = None) -> float:
    """The selection loss: the weighted mean of the adapters' held-out objectives (agreement loss without them)."""
    key = "objective" if all("objective" in s for s in scores.values()) else "loss"
    return sum((weights or {}).get(n, 1.0) * s[key] for n, s in scores.items()) / len(scores)


@torch.no_grad()
def validation_accuracy(run: RefineRun, settings: RefineSettings) -> dict[str, float] | None:
    """The student's accuracy per domain on the user's labelled validation questions (None without them) — scored
    in bfloat16 where that is fast (as the suites score; every state alike, the start's included)."""
    if not run.validation:
        return None
    from tiesmerge.eval.cloze import score_cloze
    from tiesmerge.eval.models import scoring_dtype
    from tiesmerge.eval.scoring import score_letters

    _activate(run.peft_model, STUDENT)
    score = score_letters if settings.prompt_format is PromptFormat.letters else score_cloze
    device = next(run.peft_model.parameters()).device
    fast = settings.autocast or scoring_dtype("auto", device.type) == "bfloat16"
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast):
        preds = score(run.peft_model, run.tokenizer, run.validation)
    by: dict[str, list[bool]] = {}
    for p in preds:
        by.setdefault(p.domain, []).append(p.predicted == p.gold)
    return {d: sum(v) / len(v) for d, v in sorted(by.items())}


def _point(run: RefineRun, settings: RefineSettings, step: int) -> dict:
    """One held-out evaluation: the agreement scores, the selection loss and (given them) validation accuracy."""
    scores = evaluate(run, settings)
    acc = validation_accuracy(run, settings)
    return {"step": step, "scores": scores, "loss": mean_loss(scores, run.weights),
            "accuracy": None if acc is None else sum(acc.values()) / len(acc), "accuracy_by_domain": acc}


def _better(new: Mapping, best: Mapping) -> bool:
    """Higher validation accuracy when there is validation (then lower loss on a tie); else lower loss."""
    if new["accuracy"] is not None and best["accuracy"] is not None:
        if abs(new["accuracy"] - best["accuracy"]) > 1e-9:
            return new["accuracy"] > best["accuracy"]
    return new["loss"] < best["loss"] - 1e-6


def train(run: RefineRun, settings: RefineSettings, checkpoint: Checkpoint | None = None,
          progress: Callable[[int, int, str], None] | None = None, log: Callable[[str], None] = lambda m: None) -> dict:
    """Train the student; returns the report. The student ends holding its best state (the start when nothing was
    better on the held-out prompts — or on the validation questions when given)."""
    pm = run.peft_model
    _activate(pm, STUDENT)
    params = [p for n, p in pm.named_parameters() if f".{STUDENT}." in n]
    optim = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    state = checkpoint.load(optim) if checkpoint is not None else None
    if state is not None:
        load_student_state(pm, state.pop("student"))
        run.weights = dict(state["weights"])
    if state is None:
        run.weights = {n: 1.0 for n in run.names}
        first = _point(run, settings, 0)
        run.weights = teacher_weights({n: s["objective"] for n, s in first["scores"].items()}, settings.normalize)
        first["loss"] = mean_loss(first["scores"], run.weights)
        state = {"step": 0, "history": [_entry(first)], "start": first["scores"], "weights": run.weights,
                 "best": _entry(first), "best_state": student_state(pm), "stale": 0}
    else:
        log(f"resumed from step {state['step']} ({checkpoint.path})")
    begin = time.perf_counter()
    step = state["step"]
    while step < settings.steps and state["stale"] < settings.patience:
        slots = batch_for(step, settings, run.train)
        pm.train()
        loss = _loss(run, slots, settings)
        if float(loss.detach()) > 1e-7:  # a batch the student already matches exactly (every target kept) has
            loss.backward()  # only rounding noise for a gradient, which Adam would blow up to full-size steps
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
            point = _point(run, settings, step)
            state["history"].append({**_entry(point), "train_loss": float(loss.detach())})
            if _better(point, state["best"]):
                state["best"], state["best_state"], state["stale"] = _entry(point), student_state(pm), 0
            else:
                state["stale"] += 1
            if checkpoint is not None:
                checkpoint.save(student_state(pm), optim, state)
    load_student_state(pm, state["best_state"])
    final = evaluate(run, settings)
    stopped = "early (held-out loss stopped improving)" if state["stale"] >= settings.patience else "step budget"
    returned_start = state["best"]["step"] == 0
    if returned_start:
        log("refine: no state beat the start on the held-out "
            f"{'validation questions' if run.validation else 'prompts'}; the start is returned unchanged")
    return {"start": state["start"], "final": final, "best_step": state["best"]["step"], "steps_run": step,
            "stopped": stopped, "returned_start": returned_start, "weights": run.weights, "kept": run.kept,
            "validation": {"start": state["history"][0].get("accuracy_by_domain"),
                           "best": state["best"].get("accuracy_by_domain")} if run.validation else None,
            "history": state["history"], "seconds": round(time.perf_counter() - begin, 2)}


def _entry(point: Mapping) -> dict:
    """A history entry (plain JSON): step, selection loss, validation accuracy."""
    return {"step": point["step"], "loss": point["loss"], "accuracy": point["accuracy"],
            "accuracy_by_domain": point["accuracy_by_domain"]}
