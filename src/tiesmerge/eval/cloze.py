"""Cloze scoring: the prediction is the choice whose text the model finds most likely as the answer
(mean log-probability per token, a closing newline included so "4" cannot win by being a prefix
of "42"). The options are not shown. Small models that cannot yet map options to letters often know
the answer itself; this is lm-evaluation-harness's cloze formulation, batched with one prompt pass.

Per batch: the prompts run once (left-padded after the cached shared prefix, as letter scoring does);
their KV cache is repeated for the four choices, and one more pass over the choice tokens gives every
choice's log-likelihood."""

from __future__ import annotations

import time
from typing import Callable, Sequence

import torch

from tiesmerge.eval.questions import LETTERS, Question
from tiesmerge.eval.scoring import Prediction, prepare_rows, prompt_pass

def cloze_prompt(tokenizer, q: Question) -> str:
    """A plain completion prompt (no chat template, no options): `Question: …\nAnswer:`. Plain, because
    an instruct model's chat turn favours full sentences over a bare answer, which would hand any
    fine-tune a free "format" gain on every domain and hide what it really learned."""
    return f"Question: {q.question}\nAnswer:"


def answer_ids(tokenizer, text: str) -> list[int]:
    """Token ids of ` answer` closed by a newline, so "4" cannot win by being a prefix of "42"."""
    ids = tokenizer(" " + text, add_special_tokens=False)["input_ids"]
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    return ids + newline[-1:]


@torch.no_grad()
def score_cloze(model, tokenizer, questions: Sequence[Question], batch_size: int = 16,
                progress: Callable[[int], None] | None = None, reuse_prefix: bool = True) -> list[Prediction]:
    questions = list(questions)
    rows, plen, cache = prepare_rows(model, tokenizer, [cloze_prompt(tokenizer, q) for q in questions], reuse_prefix)
    conts = [[answer_ids(tokenizer, c) for c in q.choices] for q in questions]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(questions)), key=lambda i: (len(rows[i]), max(map(len, conts[i]))))
    out: list[Prediction | None] = [None] * len(questions)
    for start_i in range(0, len(order), batch_size):
        idx = order[start_i: start_i + batch_size]
        start = time.perf_counter()
        first_logits, prompt_out, mask = prompt_pass(model, [rows[i] for i in idx], plen, cache, pad, use_cache=True)
        first = torch.log_softmax(first_logits, -1)  # [B, V]: each choice's first token
        choice_rows = [c for i in idx for c in conts[i]]  # 4 rows per question
        width = max(len(c) for c in choice_rows)
        scores = torch.stack([first[k // 4, c[0]] for k, c in enumerate(choice_rows)])
        if width > 1:
            device = first.device
            past = prompt_out.past_key_values
            past.batch_repeat_interleave(4)
            ids = torch.tensor([c[:-1] + [pad] * (width - len(c)) for c in choice_rows], device=device)
            cmask = torch.tensor([[1] * (len(c) - 1) + [0] * (width - len(c)) for c in choice_rows], device=device)
            full_mask = torch.cat([mask.repeat_interleave(4, 0), cmask], 1)
            starts = torch.tensor([len(rows[i]) for i in idx for _ in range(4)], device=device)
            pos = starts[:, None] + torch.arange(width - 1, device=device)[None, :]
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=full_mask, position_ids=pos,
                                           past_key_values=past).logits.float(), -1)
            targets = torch.tensor([c[1:] + [0] * (width - len(c)) for c in choice_rows], device=device)
            picked = logp.gather(-1, targets[..., None])[..., 0] * cmask
            scores = scores + picked.sum(-1)
        lengths = torch.tensor([len(c) for c in choice_rows], dtype=scores.dtype, device=scores.device)
        per_token = (scores / lengths).view(len(idx), 4).cpu()
        share = (time.perf_counter() - start) / len(idx)
        for i, row in zip(idx, per_token):
            q = questions[i]
            out[i] = Prediction(q.id, q.domain, LETTERS[int(row.argmax())], q.answer, tuple(float(v) for v in row), share)
        if progress:
            progress(len(idx))
    return out  # type: ignore[return-value]
