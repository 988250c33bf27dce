"""A small, honest specialist trainer: PEFT RSLoRA on all seven projections, AdamW, warmup + cosine,
loss on the answer tokens only, seeded. It exists to make real specialists for demos and for testing
merges; users bring their own adapters (Unsloth, TRL, PEFT)."""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from tiesmerge.choices import Choice
from tiesmerge.eval.questions import Question
from tiesmerge.eval.scoring import build_prompt, common_prefix, logits_at
from tiesmerge.train.packing import packed_batch

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 60
    rank: int = 16
    alpha: float = 32.0
    rslora: bool = True
    lr: float = 2e-4
    warmup_steps: int = 6
    batch_size: int = 8
    weight_decay: float = 0.0
    seed: int = 0
    target_modules: tuple[str, ...] = PROJECTIONS
    target: "TrainTarget | str" = "letter"  # TrainTarget (the strings are accepted)


class TrainTarget(Choice):
    letter = "letter"  # options shown, loss on the answer letter (for eval --mode letters)
    text = "text"  # no options, loss on the answer's text (for eval --mode cloze)


def encode_examples(tokenizer, questions: Sequence[Question],
                    target: "TrainTarget | str" = TrainTarget.letter) -> list[tuple[list[int], list[int]]]:
    """(prompt token ids, answer token ids), with the very prompts the evaluator scores: `letter` — the
    options shown, the answer is the gold letter (letter scoring); `text` — no options, the answer is
    the gold choice's text and the end-of-turn token (cloze scoring)."""
    from tiesmerge.eval.cloze import answer_ids, cloze_prompt
    from tiesmerge.eval.scoring import letter_token_ids

    target = TrainTarget.parse(target, "target")
    letters = letter_token_ids(tokenizer)
    out = []
    for q in questions:
        if target is TrainTarget.letter:
            ids = tokenizer(build_prompt(tokenizer, q), add_special_tokens=False)["input_ids"]
            out.append((ids, [letters[q.answer_index]]))
        else:
            ids = tokenizer(cloze_prompt(tokenizer, q), add_special_tokens=False)["input_ids"]
            out.append((ids, answer_ids(tokenizer, q.choices[q.answer_index])))
    return out


def shared_prefix_length(examples) -> int:
    """Tokens every prompt starts with (chat template, system prompt, instruction), less one so every
    example keeps at least one prompt token of its own."""
    if len(examples) < 2:
        return 0
    return max(0, common_prefix([p for p, _ in examples]) - 1)


def _batch(examples, pad_id: int, device, skip: int = 0):
    """Right-padded inputs (prompt[skip:] + answer) with labels only on the answer tokens."""
    width = max(len(p) - skip + len(a) for p, a in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (prompt, answer) in enumerate(examples):
        n, k = len(prompt) - skip, len(answer)
        ids[i, : n + k] = torch.tensor(prompt[skip:] + answer)
        labels[i, n: n + k] = torch.tensor(answer)
        mask[i, : n + k] = 1
    return ids.to(device), mask.to(device), labels.to(device)


MIN_SHARED_PREFIX = 8  # below this, a separate batch-1 pass over the shared prefix costs more than it saves


def _answer_loss(model, labels: torch.Tensor, **kwargs) -> torch.Tensor:
    """Mean cross-entropy over the labelled (answer) tokens, the head applied at those positions only.

    Equal to `model(..., labels=labels).loss`; but the vocabulary-sized head (a fifth of a small model's
    FLOPs per token, and a [batch, length, vocabulary] log-softmax) runs on the few answer positions
    instead of every prompt token. Falls back to the full head for models whose logits are not plainly
    `head(decoder(...))` (soft-capping, logit scaling)."""
    predicts = torch.zeros_like(labels, dtype=torch.bool)
    predicts[:, :-1] = labels[:, 1:] != -100  # position i predicts token i + 1
    return torch.nn.functional.cross_entropy(logits_at(model, predicts, **kwargs), labels[:, 1:][predicts[:, :-1]])


def batch_loss(model, examples, pad_id: int, prefix: list[int]) -> torch.Tensor:
    """Mean answer-token cross-entropy of a batch (without a shared prefix: the examples packed end to end, no
    padding). A shared prompt prefix (a chat template and instruction) runs once (batch 1, with gradients) and its
    KV cache is repeated for the batch: the same loss as running every full prompt, for about a third less compute
    on letter-format prompts."""
    device = next(model.parameters()).device
    skip = len(prefix) if len(prefix) >= MIN_SHARED_PREFIX else 0
    if not skip:  # no shared prefix (cloze prompts): padding-free rows (train/packing.py)
        kwargs, matched, tokens = packed_batch(examples, pad_id, device, False)
        return torch.nn.functional.cross_entropy(logits_at(model, matched, **kwargs), tokens)
    ids, mask, labels = _batch(examples, pad_id, device, skip)
    past = model(input_ids=torch.tensor([prefix], device=device), use_cache=True, logits_to_keep=1).past_key_values
    past.batch_repeat_interleave(len(examples))
    full_mask = torch.cat([torch.ones(len(examples), skip, dtype=mask.dtype, device=device), mask], 1)
    positions = torch.arange(skip, skip + ids.shape[1], device=device).expand(len(examples), -1)
    return _answer_loss(model, labels, input_ids=ids, attention_mask=full_mask, position_ids=positions,
                        past_key_values=past)


def train_adapter(model, tokenizer, questions: Sequence[Question], settings: TrainSettings, out_dir: Path,
                  progress: Callable[[int, int, float], None] | None = None, card: dict | None = None) -> dict:
    """Train one LoRA adapter on `questions` and save it (PEFT format) with a training card; returns the card."""
    from peft import LoraConfig, get_peft_model
    from transformers import get_cosine_schedule_with_warmup

    if not questions:
        raise ValueError("no training questions")
    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, use_rslora=settings.rslora,
                        target_modules=list(settings.target_modules), lora_dropout=0.0, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    peft_model.train()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    sched = get_cosine_schedule_with_warmup(optim, settings.warmup_steps, settings.steps)
    examples = encode_examples(tokenizer, questions, settings.target)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    plen = shared_prefix_length(examples)
    prefix = examples[0][0][:plen]
    order: list[int] = []
    losses = []
    start = time.perf_counter()
    for step in range(settings.steps):
        if len(order) < settings.batch_size:
            fresh = list(range(len(examples)))
            rng.shuffle(fresh)
            order += fresh
        picked, order = order[: settings.batch_size], order[settings.batch_size:]
        loss = batch_loss(peft_model, [examples[i] for i in picked], pad, prefix)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        sched.step()
        optim.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if progress:
            progress(step + 1, settings.steps, losses[-1])
    peft_model.eval()
    out_dir = Path(out_dir)
    peft_model.save_pretrained(out_dir)
    result = {
        "settings": {**asdict(settings), "target_modules": list(settings.target_modules)},
        "examples": len(examples),
        "loss_first": losses[0],
        "loss_last_10_mean": sum(losses[-10:]) / len(losses[-10:]),
        "seconds": round(time.perf_counter() - start, 2),
        "seconds_per_step": round((time.perf_counter() - start) / settings.steps, 3),
        **(card or {}),
    }
    (out_dir / "training_card.json").write_text(json.dumps(result, indent=2) + "\n")
    if not math.isfinite(result["loss_last_10_mean"]):
        raise RuntimeError("training diverged (non-finite loss); lower --lr")
    return result
