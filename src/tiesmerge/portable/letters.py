"""The letter pass: log p(A..D) as the answer's first token for a batch of questions, in one forward pass.

Written for transformers 4.46 as well as 5.x (no `logits_to_keep`, which 4.46 calls `num_logits_to_keep`):
with a plain LM head only each row's last hidden state goes through the vocabulary-sized head."""

from __future__ import annotations

from typing import Sequence

import torch

from .mcq import Question, build_prompt, letter_token_ids


def plain_lm_head(model) -> bool:
    """Whether the model's logits are exactly `lm_head(decoder(...))`, so the vocabulary-sized head can be
    applied to a few chosen positions only. False for architectures that soft-cap or scale their logits;
    callers then run the whole model."""
    cfg = getattr(model, "config", None)
    return (hasattr(model, "get_decoder") and model.get_output_embeddings() is not None
            and getattr(cfg, "final_logit_softcapping", None) is None and getattr(cfg, "logit_scale", None) is None
            and not hasattr(model, "logit_scale"))


def device_of(model) -> torch.device:
    return next(model.parameters()).device


def left_padded(rows: Sequence[Sequence[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(input ids, attention mask) of token rows, left-padded to one width."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + list(r) for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    return ids, mask


def encode(tokenizer, texts: Sequence[str], device) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return left_padded(rows, pad, device)


@torch.no_grad()
def next_token_logits(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """float32 logits [B, V] of the token after each left-padded row."""
    pos = (mask.cumsum(-1) - 1).clamp_min(0)  # left padding must not shift positions
    if plain_lm_head(model):
        hidden = model.get_decoder()(input_ids=ids, attention_mask=mask, position_ids=pos,
                                     use_cache=False).last_hidden_state[:, -1]
        return model.get_output_embeddings()(hidden).float()
    return model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits[:, -1].float()


class LetterScorer:
    """log p(A..D) for questions, `batch_size` prompts per forward pass."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.letter_ids = torch.tensor(letter_token_ids(tokenizer))

    @torch.no_grad()
    def logprobs(self, questions: Sequence[Question], batch_size: int = 64) -> torch.Tensor:
        """[N, 4] float32 log-probabilities over the vocabulary of the four letters, in input order."""
        out = []
        for i in range(0, len(questions), batch_size):
            chunk = questions[i: i + batch_size]
            ids, mask = encode(self.tokenizer, [build_prompt(self.tokenizer, q) for q in chunk],
                               device_of(self.model))
            logits = next_token_logits(self.model, ids, mask)
            out.append(torch.log_softmax(logits, -1)[:, self.letter_ids.to(logits.device)].cpu())
        return torch.cat(out) if out else torch.empty(0, 4)
