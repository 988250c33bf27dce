"""Padding-free batches for refine's passes: the examples laid end to end in rows (in their order), each attending
only to itself (a block-diagonal causal mask) with positions restarting at 0 — numerically the same model as one
example per row, without the padding. Refine's prompts are short and uneven (20–50 tokens on the skills suite), so
right-padding a batch of 16 spends ~40 % of every matrix product on pad tokens."""

from __future__ import annotations

import math
from typing import Sequence

import torch

PACK_WIDTH = 256  # a row's target length: attention per token grows with it, padding shrinks


def rows_of(lengths: Sequence[int], width: int) -> list[list[int]]:
    """Example indices per row, in order, over ceil(total / width) rows of about equal length (each example goes to
    the row its middle token falls in), so a row's padding is at most about one example."""
    total = sum(lengths)
    n_rows = max(1, min(len(lengths), math.ceil(total / max(width, 1))))
    share = total / n_rows
    rows: list[list[int]] = [[] for _ in range(n_rows)]
    before = 0
    for i, n in enumerate(lengths):
        rows[min(n_rows - 1, int((before + n / 2) // share))].append(i)
        before += n
    return [r for r in rows if r]


def packed_batch(examples: Sequence[tuple[list[int], list[int]]], pad: int, device, every: bool,
                 width: int = PACK_WIDTH):
    """(model kwargs — input_ids, position_ids, a 4-D boolean attention mask [R, 1, W, W] —, matched [R, W] bool:
    the positions whose next token is matched (`every`: every position followed by a token of the same example;
    else those predicting the continuation), the tokens [M] they predict). Matched positions come in the examples'
    order, each example's positions contiguous (as with one example per row)."""
    seqs = [list(p) + list(c) for p, c in examples]
    rows = rows_of([len(s) for s in seqs], width)
    w = max(sum(len(seqs[i]) for i in r) for r in rows)
    ids = torch.full((len(rows), w), pad, dtype=torch.long)
    pos = torch.zeros((len(rows), w), dtype=torch.long)
    seg = torch.full((len(rows), w), -1, dtype=torch.long)  # pad tokens: segment -1 (never read)
    matched = torch.zeros((len(rows), w), dtype=torch.bool)
    for r, members in enumerate(rows):
        at = 0
        for i in members:
            s, n_prompt = seqs[i], len(examples[i][0])
            n = len(s)
            ids[r, at: at + n] = torch.tensor(s)
            pos[r, at: at + n] = torch.arange(n)
            seg[r, at: at + n] = i
            first = 0 if every else n_prompt - 1  # position j predicts token j + 1
            matched[r, at + first: at + n - 1] = True
            at += n
    nxt = torch.full_like(ids, pad)
    nxt[:, :-1] = ids[:, 1:]
    causal = torch.ones(w, w, dtype=torch.bool).tril()
    mask = (seg[:, :, None] == seg[:, None, :]) & causal & (seg[:, :, None] >= 0)
    mask |= torch.eye(w, dtype=torch.bool)  # a pad attends to itself: no row of the softmax is empty
    kwargs = {"input_ids": ids.to(device), "position_ids": pos.to(device), "attention_mask": mask[:, None].to(device)}
    return kwargs, matched.to(device), nxt[matched].to(device)
