"""Score multiple-choice questions: next-token log-likelihood of the four answer letters (default),
or a generated letter (`generate`, as an answer agent would). Batched with left padding."""

from __future__ import annotations

import copy
import math
import re
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from tiesmerge.portable.letters import plain_lm_head  # noqa: F401  (part of eval's API)
from tiesmerge.portable.mcq import (  # noqa: F401  (build_prompt & co. are part of eval's API)
    INSTRUCTION,
    LETTERS,
    Question,
    build_prompt,
    letter_token_ids,
    prompt_text,
)


@dataclass(frozen=True)
class Prediction:
    question_id: str
    domain: str
    predicted: str | None  # None: generate mode found no letter
    gold: str
    logprobs: tuple[float, float, float, float] | None  # log p(letter) over the vocabulary, A–D
    latency_s: float  # this question's share of its batch's wall time

    @property
    def correct(self) -> bool:
        return self.predicted == self.gold


def _encode(tokenizer, prompts: Sequence[str], device: torch.device):
    tokenizer.padding_side = "left"
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    mask = enc["attention_mask"].to(device)
    positions = (mask.cumsum(-1) - 1).clamp_min(0)  # left padding must not shift positions
    return enc["input_ids"].to(device), mask, positions


def _batches(items: Sequence, size: int):
    for i in range(0, len(items), size):
        yield items[i: i + size]


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def common_prefix(rows: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix every row shares (the chat template, system prompt and instruction)."""
    first = rows[0]
    n = min(len(r) for r in rows)
    for r in rows[1:]:
        i = 0
        while i < n and r[i] == first[i]:
            i += 1
        n = i
    return n


def _prefix_cache(model, prefix: list[int], device: torch.device):
    """The KV cache of the shared prefix (computed once per model/adapter), or None if there is none."""
    if len(prefix) < 2:
        return None
    ids = torch.tensor([prefix], device=device)
    return model(input_ids=ids, use_cache=True, logits_to_keep=1).past_key_values


def prepare_rows(model, tokenizer, prompts: Sequence[str], reuse_prefix: bool = True):
    """Token rows of the prompts, and the KV cache of their shared prefix (run once) with its length."""
    rows = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    plen = common_prefix(rows) - 1 if (reuse_prefix and len(rows) > 1) else 0  # keep ≥1 suffix token
    cache = _prefix_cache(model, rows[0][:plen], _device_of(model)) if plen > 1 else None
    return rows, (plen if cache is not None else 0), cache


def logits_at(model, positions: torch.Tensor, **kwargs) -> torch.Tensor:
    """float32 logits [M, V] at the M positions where the boolean `positions` [B, L] is true, for a forward
    pass over `kwargs`. With a plain head only those M hidden states go through it (plain_lm_head);
    otherwise the whole model runs and its logits are indexed."""
    if plain_lm_head(model):
        hidden = model.get_decoder()(**kwargs).last_hidden_state[positions]
        return model.get_output_embeddings()(hidden).float()
    return model(**kwargs).logits[positions].float()


def prompt_pass(model, brows: Sequence[Sequence[int]], plen: int, cache, pad: int, **kwargs):
    """Run a batch of prompts (left-padded after the shared prefix, whose cache is reused).

    Returns (next-token logits [B, V] in float32, the model output, the attention mask over all positions)."""
    device = _device_of(model)
    width = max(len(r) - plen for r in brows)
    ids = torch.tensor([[pad] * (width - len(r) + plen) + list(r[plen:]) for r in brows], device=device)
    suffix_mask = torch.tensor([[0] * (width - len(r) + plen) + [1] * (len(r) - plen) for r in brows], device=device)
    pos = (plen + suffix_mask.cumsum(-1) - 1).clamp_min(plen)  # left padding must not shift positions
    mask = torch.cat([torch.ones(len(brows), plen, dtype=suffix_mask.dtype, device=device), suffix_mask], 1)
    if cache is not None:
        past = copy.deepcopy(cache)
        past.batch_repeat_interleave(len(brows))
        kwargs["past_key_values"] = past
    # logits_to_keep=1: only the last position goes through the (vocab-sized) LM head
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1, **kwargs)
    return out.logits[:, -1, :].float(), out, mask


@torch.no_grad()
def score_letters(model, tokenizer, questions: Sequence[Question], batch_size: int = 16,
                  progress: Callable[[int], None] | None = None, reuse_prefix: bool = True) -> list[Prediction]:
    """One forward pass per batch; the prediction is the letter with the highest next-token log-probability.

    The prompts' shared token prefix (template + instruction, about half of each prompt) is run once and
    its KV cache reused for every batch (`reuse_prefix`); the suffixes are left-padded after it, with the
    attention mask and position ids set so each question sees exactly its own prompt.
    """
    letter_ids = torch.tensor(letter_token_ids(tokenizer))
    questions = list(questions)
    rows, plen, cache = prepare_rows(model, tokenizer, [build_prompt(tokenizer, q) for q in questions], reuse_prefix)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # batches of similar lengths waste little on padding (1.3x faster on the built-in sets); results
    # are returned in the input order
    order = sorted(range(len(questions)), key=lambda i: len(rows[i]))
    out: list[Prediction | None] = [None] * len(questions)
    for start_i in range(0, len(order), batch_size):
        idx = order[start_i: start_i + batch_size]
        batch = [questions[i] for i in idx]
        start = time.perf_counter()
        logits, _, _ = prompt_pass(model, [rows[i] for i in idx], plen, cache, pad)
        logp = torch.log_softmax(logits, dim=-1)[:, letter_ids.to(logits.device)].cpu()
        share = (time.perf_counter() - start) / len(batch)
        for i, q, row in zip(idx, batch, logp):
            values = tuple(float(v) for v in row)
            out[i] = Prediction(q.id, q.domain, LETTERS[int(row.argmax())], q.answer, values, share)
        if progress:
            progress(len(batch))
    return out  # type: ignore[return-value]


_LETTER = re.compile(r"\b([ABCD])\b")


def parse_letter(text: str) -> str | None:
    """The first standalone A–D in a generated answer (`B`, `(B)`, `B) …`, `The answer is B`)."""
    m = _LETTER.search(text.upper()) if text else None
    return m.group(1) if m else None


@torch.no_grad()
def score_generate(model, tokenizer, questions: Sequence[Question], batch_size: int = 16, max_new_tokens: int = 8,
                   progress: Callable[[int], None] | None = None) -> list[Prediction]:
    """Greedy-generate a short answer per question and parse its letter (an answer agent's view)."""
    device = _device_of(model)
    out: list[Prediction] = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for batch in _batches(list(questions), batch_size):
        start = time.perf_counter()
        ids, mask, _ = _encode(tokenizer, [build_prompt(tokenizer, q) for q in batch], device)
        gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=pad)
        texts = tokenizer.batch_decode(gen[:, ids.shape[1]:], skip_special_tokens=True)
        share = (time.perf_counter() - start) / len(batch)
        for q, text in zip(batch, texts):
            out.append(Prediction(q.id, q.domain, parse_letter(text), q.answer, None, share))
        if progress:
            progress(len(batch))
    return out


def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))
