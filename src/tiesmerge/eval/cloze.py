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

def _head_only_at_targets(model) -> bool:
    """Whether the model's logits are exactly `lm_head(decoder(...))`, so the head can be applied to the
    choice tokens alone (no logit soft-capping or scaling, which some architectures add)."""
    cfg = getattr(model, "config", None)
    return (hasattr(model, "get_decoder") and model.get_output_embeddings() is not None
            and getattr(cfg, "final_logit_softcapping", None) is None and getattr(cfg, "logit_scale", None) is None
            and not hasattr(model, "logit_scale"))


def _continuation_logprobs(model, conts: Sequence[list[int]], starts: Sequence[int], prompt_mask, past, pad: int):
    """Sum of log p(token) over each continuation's tokens after its first, given the prompts' KV cache
    (repeated 4× per question). The vocabulary-sized head runs only on the real (unpadded) continuation
    positions: with choices of uneven length that is a fraction of the padded batch, and it spares the
    batch × width × vocabulary log-softmax that dominated this pass."""
    device = prompt_mask.device
    width = max(len(c) for c in conts)
    ids = torch.tensor([c[:-1] + [pad] * (width - len(c)) for c in conts], device=device)
    cmask = torch.tensor([[1] * (len(c) - 1) + [0] * (width - len(c)) for c in conts], device=device)
    full_mask = torch.cat([prompt_mask.repeat_interleave(4, 0), cmask], 1)
    start = torch.tensor([s for s in starts for _ in range(4)], device=device)
    pos = start[:, None] + torch.arange(width - 1, device=device)[None, :]
    targets = torch.tensor([c[1:] + [0] * (width - len(c)) for c in conts], device=device)
    kwargs = dict(input_ids=ids, attention_mask=full_mask, position_ids=pos, past_key_values=past)
    valid = cmask.bool()
    if _head_only_at_targets(model):
        hidden = model.get_decoder()(**kwargs).last_hidden_state[valid]  # [M, H], M = real tokens
        logits = model.get_output_embeddings()(hidden).float()
    else:
        logits = model(**kwargs).logits[valid].float()
    tgt = targets[valid]
    picked = logits.gather(-1, tgt[:, None])[:, 0] - torch.logsumexp(logits, -1)
    sums = torch.zeros(valid.shape, dtype=picked.dtype, device=device)
    sums[valid] = picked
    return sums.sum(-1)


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
            past = prompt_out.past_key_values
            past.batch_repeat_interleave(4)
            scores = scores + _continuation_logprobs(model, choice_rows, [len(rows[i]) for i in idx], mask, past, pad)
        lengths = torch.tensor([len(c) for c in choice_rows], dtype=scores.dtype, device=scores.device)
        per_token = (scores / lengths).view(len(idx), 4).cpu()
        share = (time.perf_counter() - start) / len(idx)
        for i, row in zip(idx, per_token):
            q = questions[i]
            out[i] = Prediction(q.id, q.domain, LETTERS[int(row.argmax())], q.answer, tuple(float(v) for v in row), share)
        if progress:
            progress(len(idx))
    return out  # type: ignore[return-value]
