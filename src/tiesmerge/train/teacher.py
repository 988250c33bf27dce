"""What refine distils toward, computed once: each example's target distribution at its matched positions, kept
compactly (the top-k log-probabilities and their token ids; the rest of the mass as one bucket) instead of a
teacher pass every step, and the losses against it.

An example is (prompt ids, the teacher's greedy continuation ids). Its matched positions are those predicting the
continuation's tokens (`kl`, `greedy`) or every position after the first (`kl_all`: the prompt too). The target of an
example is its teacher — or, for an example the start already answers as the teacher does (its greedy continuation
equal), the start itself when `keep` is on: distilling there could only move the start away from what it already
does well (and from what it gained beyond the teacher elsewhere)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from tiesmerge.calibration.prompts import encode_prompt
from tiesmerge.errors import BadInputError
from tiesmerge.eval.scoring import logits_at
from tiesmerge.portable.letters import left_padded, plain_lm_head
from tiesmerge.train.packing import packed_batch

Example = tuple[list[int], list[int]]  # (prompt token ids, the teacher's continuation ids)
STUDENT = "tiesmerge_student"  # the adapter name of the merge being refined
TOP_K = 64  # log-probabilities kept per position: on a 49k vocabulary the rest holds < 1e-3 of a trained head's mass


def activate(peft_model, name: str) -> None:
    """Make `name` the active adapter; only the student's factors are ever trainable (PEFT's set_adapter
    flags the active adapter's)."""
    peft_model.set_adapter(name)
    for pname, p in peft_model.named_parameters():
        p.requires_grad_(f".{STUDENT}." in pname)


def position_logits(model, examples: Sequence[Example], pad: int, every: bool = False):
    """(float32 logits [M, V] at the matched positions, the tokens [M] they predict), from one padding-free pass
    (train/packing.py)."""
    device = next(model.parameters()).device
    kwargs, matched, tokens = packed_batch(examples, pad, device, every)
    return logits_at(model, matched, **kwargs), tokens


@dataclass
class Target:
    """One example's target at its matched positions: top-k token ids and log-probabilities ([n, k])."""

    ids: torch.Tensor
    logprobs: torch.Tensor
    source: str  # the teacher's adapter name, or "start" (kept)

    @classmethod
    def from_logits(cls, logits: torch.Tensor, source: str, k: int = TOP_K) -> "Target":
        logp = torch.log_softmax(logits.float(), -1)
        top = logp.topk(min(k, logp.shape[-1]), dim=-1)
        return cls(top.indices.to(torch.int32).cpu(), top.values.cpu(), source)


def bucket_kl(student_logits: torch.Tensor, target_ids: torch.Tensor, target_logp: torch.Tensor,
              logq: torch.Tensor | None = None) -> torch.Tensor:
    """KL(target ‖ student) per position over k + 1 buckets — the target's top-k tokens and the rest — exact for the
    coarsened distributions (and equal to the full KL when the top-k hold the whole mass). `logq`: the student's
    log-softmax, when already computed."""
    logq = torch.log_softmax(student_logits.float(), -1) if logq is None else logq
    q_top = logq.gather(-1, target_ids.long())
    p_top = target_logp.exp()
    rest_p = (1 - p_top.sum(-1)).clamp_min(0)
    rest_q = (1 - q_top.exp().sum(-1)).clamp_min(1e-12)
    kl = (p_top * (target_logp - q_top)).sum(-1)
    return kl + torch.where(rest_p > 1e-9, rest_p * (rest_p.clamp_min(1e-12).log() - rest_q.log()),
                            torch.zeros_like(rest_p))


def example_losses(student_logits: torch.Tensor, tokens: torch.Tensor, sizes: Sequence[int],
                   targets: Sequence[Target], greedy: bool) -> torch.Tensor:
    """Each example's mean loss over its positions: cross-entropy on the teacher's token (`greedy`, teacher-sourced
    examples) or KL to its cached target. One log-softmax over every position (slicing the logits per example
    would give each slice's backward a zero-filled gradient the size of the whole batch's logits)."""
    logq = torch.log_softmax(student_logits.float(), -1)
    dev = logq.device
    ce = [greedy and t.source != "start" for t in targets]
    is_ce = torch.repeat_interleave(torch.tensor(ce, dtype=torch.bool), torch.tensor(list(sizes))).to(dev)
    per_position = torch.zeros(logq.shape[0], dtype=logq.dtype, device=dev)
    if bool(is_ce.any()):
        at = is_ce.nonzero().squeeze(-1)
        per_position = per_position.index_copy(0, at, -logq.gather(-1, tokens[:, None]).squeeze(-1)[at])
    if not bool(is_ce.all()):
        at = (~is_ce).nonzero().squeeze(-1)
        ids = torch.cat([t.ids for t, f in zip(targets, ce) if not f]).to(dev)
        logp = torch.cat([t.logprobs for t, f in zip(targets, ce) if not f]).to(dev)
        sub = logq if len(at) == logq.shape[0] else logq[at]  # every position KL (kl, kl_all): no copy
        per_position = per_position.index_copy(0, at, bucket_kl(None, ids, logp, sub))
    return torch.stack([part.mean() for part in per_position.split(list(sizes))])


def sizes_of(examples: Sequence[Example], every: bool) -> list[int]:
    """How many matched positions each example has (its continuation, or every position after the first)."""
    return [len(p) + len(c) - 1 if every else len(c) for p, c in examples]


def _step(model, ids, mask, pos, past, select):
    """One cached forward pass: (float32 logits [M, V] at the true positions of `select` [B, T], the cache)."""
    if plain_lm_head(model):  # the vocabulary-sized head at the selected positions only
        out = model.get_decoder()(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=past,
                                  use_cache=True)
        return model.get_output_embeddings()(out.last_hidden_state[select]).float(), out.past_key_values
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=past, use_cache=True)
    return out.logits[select].float(), out.past_key_values


@torch.no_grad()
def teach(peft_model, tokenizer, name: str, texts: Sequence[str], tokens: int, every: bool | None,
          batch_size: int = 32, k: int = TOP_K) -> tuple[list[Example], list[Target] | None]:
    """Each prompt's greedy continuation under adapter `name` (cut after an end-of-sequence token) and — unless
    `every` is None — its target at the matched positions (`every`: the prompt's too), from the same pass: the
    prompt's logits come from the prefill, the continuation's from the decoding steps, so no second teacher pass."""
    activate(peft_model, name)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    eos = tokenizer.eos_token_id
    device = next(peft_model.parameters()).device
    examples: list[Example] = []
    targets: list[Target] | None = None if every is None else []
    for i in range(0, len(texts), batch_size):
        rows = [encode_prompt(tokenizer, t) for t in texts[i: i + batch_size]]
        if any(not r for r in rows):
            raise BadInputError("a calibration prompt encodes to no tokens")
        ids, mask = left_padded(rows, pad, device)
        pos = (mask.cumsum(-1) - 1).clamp_min(0)  # left padding must not shift positions
        select = mask.bool() if every else torch.zeros_like(mask, dtype=torch.bool)
        select[:, -1] = True  # the last position predicts the continuation's first token
        logits, past = _step(peft_model, ids, mask, pos, None, select)
        prompt_rows = list(logits.split(select.sum(-1).tolist()))
        nxt = torch.stack([r[-1] for r in prompt_rows]).argmax(-1)
        generated, step_logits = [nxt], []
        done = nxt == eos if eos is not None else torch.zeros_like(nxt, dtype=torch.bool)
        ones = torch.ones(len(rows), 1, dtype=torch.bool, device=device)
        for _ in range(1, tokens):
            if bool(done.all()):
                break
            mask = torch.cat([mask, ones.to(mask.dtype)], 1)
            pos = pos[:, -1:] + 1
            lg, past = _step(peft_model, nxt[:, None], mask, pos, past, ones)
            step_logits.append(lg)
            nxt = lg.argmax(-1)
            generated.append(nxt)
            if eos is not None:
                done = done | (nxt == eos)
        gen = torch.stack(generated, 1).tolist()
        for j, (r, g) in enumerate(zip(rows, gen)):
            cont = []
            for t in g:
                cont.append(t)
                if t == eos:
                    break
            examples.append((r, cont))
            if targets is not None:
                later = [step_logits[s][j] for s in range(len(cont) - 1)]
                mine = torch.cat([prompt_rows[j], *(x[None] for x in later)]) if later else prompt_rows[j]
                targets.append(Target.from_logits(mine, name, k))
    return examples, targets


@torch.no_grad()
def teach_options(peft_model, tokenizer, name: str, prompts: Sequence, texts: Sequence[str], tokens: int,
                  batch_size: int = 32, k: int = TOP_K) -> tuple[list[Example], list[Target], list[int]]:
    """A question's four options teacher-forced after its prompt — ` option` closed by a newline, as cloze scoring
    reads them — one example per option, its target the teacher's distribution at the option's tokens (only the
    question and its options are read: there is no answer in a Prompt). A prompt without four options (a plain
    text) gets its greedy continuation instead. Returns (examples, targets, the prompt index of each example)."""
    from tiesmerge.eval.cloze import answer_ids

    activate(peft_model, name)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    mine: dict[int, list[tuple[Example, Target]]] = {}
    plain = [i for i, p in enumerate(prompts) if not (p.is_question and len(p.choices) == 4)]
    if plain:
        ex, tg = teach(peft_model, tokenizer, name, [texts[i] for i in plain], tokens, False, batch_size, k)
        mine.update({i: [(e, t)] for i, e, t in zip(plain, ex, tg)})
    forced = [(i, (encode_prompt(tokenizer, texts[i]), answer_ids(tokenizer, c)))
              for i, p in enumerate(prompts) if i not in mine for c in p.choices]
    if any(not e[0] for _, e in forced):
        raise BadInputError("a calibration prompt encodes to no tokens")
    for j in range(0, len(forced), batch_size):
        part = [e for _, e in forced[j: j + batch_size]]
        logits, _ = position_logits(peft_model, part, pad, False)
        for (i, e), rows in zip(forced[j: j + batch_size], logits.split(sizes_of(part, False))):
            mine.setdefault(i, []).append((e, Target.from_logits(rows, name, k)))
    order = [(i, e, t) for i in range(len(prompts)) for e, t in mine[i]]
    return [e for _, e, _ in order], [t for _, _, t in order], [i for i, _, _ in order]


def teacher_continuations(peft_model, tokenizer, name: str, texts: Sequence[str], tokens: int,
                          batch_size: int = 32) -> list[Example]:
    """Each prompt's greedy continuation under adapter `name` (cut after an end-of-sequence token)."""
    return teach(peft_model, tokenizer, name, texts, tokens, None, batch_size)[0]


def continuation_rows(examples: Sequence[Example], every: bool) -> list[int]:
    """Indices, among the matched positions of `examples` (laid out as `position_logits` returns them), of the
    positions that predict the continuations' tokens."""
    out, at = [], 0
    for (_, c), n in zip(examples, sizes_of(examples, every)):
        out.extend(range(at + n - len(c), at + n))
        at += n
    return out


def agreement_counts(logits: torch.Tensor, tokens: torch.Tensor, examples: Sequence[Example],
                     every: bool) -> tuple[float, int, int, int]:
    """(summed NLL, tokens agreeing, tokens, whole continuations agreeing) of logits at the matched positions."""
    rows = torch.tensor(continuation_rows(examples, every), dtype=torch.long, device=logits.device)
    logits, tokens = logits[rows], tokens[rows]
    nll = float(torch.nn.functional.cross_entropy(logits.float(), tokens, reduction="sum"))
    hit = (logits.argmax(-1) == tokens).tolist()
    seq_ok, at = 0, 0
    for _, cont in examples:
        seq_ok += all(hit[at: at + len(cont)])
        at += len(cont)
    return nll, sum(hit), len(hit), seq_ok


def agreement_summary(nll: float, tokens_ok: int, tokens: int, seq_ok: int, prompts: int) -> dict:
    return {"loss": nll / max(tokens, 1), "token_agreement": tokens_ok / max(tokens, 1),
            "sequence_agreement": seq_ok / max(prompts, 1), "prompts": prompts}


@torch.no_grad()
def agreement(peft_model, examples: Sequence[Example], pad: int, batch_size: int = 32) -> dict:
    """Teacher-forced agreement of the student with the teacher's continuation: loss, token share, whole-sequence
    share (every token's argmax equal: the student's greedy continuation is the teacher's)."""
    activate(peft_model, STUDENT)
    totals = [0.0, 0, 0, 0]
    for i in range(0, len(examples), batch_size):
        part = examples[i: i + batch_size]
        logits, target = position_logits(peft_model, part, pad)
        totals = [x + y for x, y in zip(totals, agreement_counts(logits, target, part, False))]
    return agreement_summary(*totals, len(examples))
