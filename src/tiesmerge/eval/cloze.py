"""Cloze scoring: the prediction is the choice whose text the model finds most likely as the answer after
`Question: …\nAnswer:`. The options are not shown. Small models that cannot yet map options to letters often
know the answer itself; this is lm-evaluation-harness's cloze formulation, batched with one prompt pass.

How a choice's log-likelihood is compared (`ClozeNorm`):
- token (default): the mean log-probability per token of ` choice` closed by a newline, so "4" cannot win by
  being a prefix of "42";
- sum, chars, bytes: exactly lm-evaluation-harness's `acc`, `acc_norm` and `acc_bytes` — the continuation is
  ` choice` (no newline), tokenized as lm-eval does (context + continuation encoded whole, the context's tokens
  cut off), and its summed log-likelihood is compared as is, per character, or per UTF-8 byte of the choice.

Per batch: the prompts run once (left-padded after the cached shared prefix, as letter scoring does);
their KV cache is repeated for the four choices, and one more pass over the choice tokens gives every
choice's log-likelihood."""

from __future__ import annotations

import copy
import time
from typing import Callable, Sequence

import torch

from tiesmerge.choices import Choice
from tiesmerge.eval.questions import LETTERS, Question
from tiesmerge.eval.scoring import Prediction, logits_at, prepare_rows, prompt_pass

CHOICE_CHUNKS = 2  # choice passes per batch (rows sorted by length); 1 pads every row to the longest


class ClozeNorm(Choice):
    token = "token"  # mean log-prob per token of " choice\n" (tiesmerge's default)
    sum = "sum"  # lm-eval acc: summed log-prob of " choice"
    chars = "chars"  # lm-eval acc_norm: summed log-prob / len(choice)
    bytes = "bytes"  # lm-eval acc_bytes: summed log-prob / UTF-8 bytes of choice


def _continuation_logprobs(model, conts: Sequence[list[int]], starts: torch.Tensor, prompt_mask: torch.Tensor, past,
                           pad: int) -> torch.Tensor:
    """Sum of log p(token) over each continuation's tokens after its first, given its prompt's KV cache
    (`past`, `prompt_mask` and `starts` have one row per continuation). The vocabulary-sized head runs
    only on the real (unpadded) continuation positions: that spares the batch × width × vocabulary
    log-softmax that dominated this pass."""
    device = prompt_mask.device
    width = max(len(c) for c in conts)
    ids = torch.tensor([c[:-1] + [pad] * (width - len(c)) for c in conts], device=device)
    cmask = torch.tensor([[1] * (len(c) - 1) + [0] * (width - len(c)) for c in conts], device=device)
    full_mask = torch.cat([prompt_mask, cmask], 1)
    pos = starts.to(device)[:, None] + torch.arange(width - 1, device=device)[None, :]
    targets = torch.tensor([c[1:] + [0] * (width - len(c)) for c in conts], device=device)
    kwargs = dict(input_ids=ids, attention_mask=full_mask, position_ids=pos, past_key_values=past)
    valid = cmask.bool()
    logits = logits_at(model, valid, **kwargs)  # [M, V], M = real tokens
    tgt = targets[valid]
    picked = logits.gather(-1, tgt[:, None])[:, 0] - torch.logsumexp(logits, -1)
    sums = torch.zeros(valid.shape, dtype=picked.dtype, device=device)
    sums[valid] = picked
    return sums.sum(-1)


def _choice_pass(model, choice_rows: Sequence[list[int]], starts: torch.Tensor, prompt_mask: torch.Tensor, past,
                 pad: int, chunks: int) -> torch.Tensor:
    """log p of every choice row's tokens after the first (rows: 4 per question, in question order).

    Rows are sorted by length and run in `chunks` passes, each padded only to its own longest row: the
    four choices of one question often differ in length (`12` vs `1.234e+05`), and one pass padded to
    the batch's longest choice computed ~40 % padding. Each pass takes its rows' prompt caches by index."""
    device = prompt_mask.device
    out = torch.zeros(len(choice_rows), dtype=torch.float32, device=device)
    order = sorted(range(len(choice_rows)), key=lambda r: len(choice_rows[r]))
    order = [r for r in order if len(choice_rows[r]) > 1]  # one-token choices were scored by the prompt pass
    size = -(-len(order) // max(1, chunks)) if order else 1
    parts = [order[i: i + size] for i in range(0, len(order), size)]
    for j, part in enumerate(parts):
        rows = torch.tensor(part, device=device)
        qidx = rows // 4
        cache = past if j == len(parts) - 1 else copy.deepcopy(past)
        cache.reorder_cache(qidx)
        out[rows] = _continuation_logprobs(model, [choice_rows[r] for r in part], starts[qidx], prompt_mask[qidx],
                                           cache, pad).float()
    return out


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


def lm_eval_continuation(tokenizer, context: str, context_ids: list[int], text: str) -> list[int]:
    """lm-eval's continuation tokens for ` text` after `context`: the whole string encoded, the context's own
    token count cut off (its `_encode_pair` for causal models; the context has no trailing space here)."""
    whole = tokenizer(context + " " + text, add_special_tokens=False)["input_ids"]
    return whole[len(context_ids):]


def normalised(scores: torch.Tensor, questions: Sequence[Question], conts: Sequence[Sequence[list[int]]],
               norm: ClozeNorm) -> torch.Tensor:
    """[B, 4] comparable scores from summed log-likelihoods (rows in question order)."""
    if norm is ClozeNorm.sum:
        return scores
    if norm is ClozeNorm.token:
        size = [len(c) for cs in conts for c in cs]
    elif norm is ClozeNorm.chars:
        size = [len(c) for q in questions for c in q.choices]
    else:
        size = [len(c.encode("utf-8")) for q in questions for c in q.choices]
    return scores / torch.tensor(size, dtype=scores.dtype, device=scores.device).view(scores.shape)


@torch.no_grad()
def score_cloze(model, tokenizer, questions: Sequence[Question], batch_size: int = 16,
                progress: Callable[[int], None] | None = None, reuse_prefix: bool = True,
                choice_chunks: int = CHOICE_CHUNKS, norm: ClozeNorm = ClozeNorm.token) -> list[Prediction]:
    """Predictions whose `logprobs` are the four choices' scores under `norm`."""
    norm = ClozeNorm.parse(norm, "--cloze-norm")
    questions = list(questions)
    prompts = [cloze_prompt(tokenizer, q) for q in questions]
    rows, plen, cache = prepare_rows(model, tokenizer, prompts, reuse_prefix)
    if norm is ClozeNorm.token:
        conts = [[answer_ids(tokenizer, c) for c in q.choices] for q in questions]
    else:
        conts = [[lm_eval_continuation(tokenizer, p, r, c) for c in q.choices]
                 for q, p, r in zip(questions, prompts, rows)]
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
            starts = torch.tensor([len(rows[i]) for i in idx])
            scores = scores + _choice_pass(model, choice_rows, starts, mask, prompt_out.past_key_values, pad,
                                           choice_chunks).to(scores.dtype)
        compared = normalised(scores.view(len(idx), 4), [questions[i] for i in idx], [conts[i] for i in idx],
                              norm).cpu()
        share = (time.perf_counter() - start) / len(idx)
        for i, row in zip(idx, compared):
            q = questions[i]
            out[i] = Prediction(q.id, q.domain, LETTERS[int(row.argmax())], q.answer, tuple(float(v) for v in row), share)
        if progress:
            progress(len(idx))
    return out  # type: ignore[return-value]
