"""The answer agent, batched: the questions go in batches of `batch_size`; per batch one forward pass gives every
letter (log p of A-D, as eval scores them), then one generate call writes every reasoning together, starting from
a lead that states the chosen option. Each batch runs under one deadline (the per-answer budget), so every answer
in it is final within that budget of the batch's start."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch

from .config import AnswerSettings
from .deadline import Deadline, DeadlineExceeded, DeadlineStopping, hard_limit
from .letters import LetterScorer, device_of, encode
from .mcq import LETTERS, InvalidQuestion, Question, build_prompt, make_question
from .reasoning import compose, lead
from .text import clip_words

DEFAULT_LETTER = "A"  # what a question gets when no model answer exists (malformed, or no time left)
OUTPUT_MARGIN_S = 0.05  # kept back from the deadline for clipping and bookkeeping


@dataclass
class AnswerRecord:
    """One answer and how it came about (only `answer` and `reasoning` go to the tournament's file)."""

    index: int
    answer: str
    reasoning: str
    status: str  # ok | malformed | timeout (no letter in time) | no-reasoning (letter; template reasoning)
    time_s: float  # from the start of its batch to its final answer
    batch: int = 0
    letter_logprobs: list[float] | None = None
    reasoning_tokens: int = 0
    stopped_by_deadline: bool = False
    template_because: str | None = None  # why the generated reasoning was replaced by the template

    def output(self) -> dict:
        return {"answer": self.answer, "reasoning": self.reasoning}

    def report(self) -> dict:
        return asdict(self)


def parse_entry(entry: object) -> Question:
    """A tournament input item → Question; raise InvalidQuestion naming what is wrong.
    Inputs carry no answer; choices may be a list (`"A) …"` or plain) or a dict keyed A-D."""
    if not isinstance(entry, dict):
        raise InvalidQuestion(f"entry is not an object with question and choices (got {type(entry).__name__})")
    if "choices" not in entry:
        raise InvalidQuestion("missing choices")
    return make_question(entry.get("question"), entry.get("choices"), "A", entry.get("topic"))


class AnswerAgent:
    def __init__(self, model, tokenizer, settings: AnswerSettings, clock: Callable[[], float] = time.monotonic):
        self.model, self.tokenizer, self.settings, self.clock = model, tokenizer, settings, clock
        self.scorer = LetterScorer(model, tokenizer)
        self.chat = bool(getattr(tokenizer, "chat_template", None))

    def letters(self, questions: Sequence[Question]) -> list[tuple[str, list[float]]]:
        """(letter, log p(A..D)) per question, from batched forward passes."""
        logp = self.scorer.logprobs(questions, self.settings.batch_size)
        return [(LETTERS[int(row.argmax())], [float(v) for v in row]) for row in logp]

    def choose(self, q: Question) -> tuple[str, list[float]]:
        return self.letters([q])[0]

    def reasoning_prompt(self, q: Question, letter: str) -> str:
        """The letter prompt, the chosen option as the assistant's answer, and the reasoning lead."""
        space = "" if self.chat else " "
        choice = q.choices[LETTERS.index(letter)]
        return f"{build_prompt(self.tokenizer, q)}{space}{letter}) {choice}\n{lead(letter, choice)}"

    def decode_new(self, gen: torch.Tensor, start: int) -> tuple[list[str], list[int]]:
        new = gen[:, start:]
        specials = set(self.tokenizer.all_special_ids)
        return self.tokenizer.batch_decode(new, skip_special_tokens=True), [sum(int(t) not in specials for t in row)
                                                                            for row in new]

    @torch.no_grad()
    def reason(self, questions: Sequence[Question], letters: Sequence[str], deadline: Deadline,
               stop: DeadlineStopping | None = None):
        """(generated texts, token counts, stopped by the deadline): every reasoning in one generate call. Should the
        backstop end the call, `stop.ids` still holds the tokens written so far."""
        ids, mask = encode(self.tokenizer, [self.reasoning_prompt(q, l) for q, l in zip(questions, letters)],
                           device_of(self.model))
        stop = stop or DeadlineStopping(deadline)
        stop.prompt_len = ids.shape[1]
        gen = self.model.generate(input_ids=ids, attention_mask=mask, stopping_criteria=[stop],
                                  pad_token_id=self.tokenizer.pad_token_id, **self.settings.generate_kwargs())
        texts, counts = self.decode_new(gen, ids.shape[1])
        return texts, counts, stop.stopped

    def answer_batch(self, entries: Sequence[object], start: int = 0, batch: int = 0) -> list[AnswerRecord]:
        deadline = Deadline(self.settings.deadline_s, self.clock)
        words = self.settings.reasoning_words
        parsed: list[Question | str] = []
        for entry in entries:
            try:
                parsed.append(parse_entry(entry))
            except InvalidQuestion as exc:
                parsed.append(str(exc))
        valid = [i for i, p in enumerate(parsed) if isinstance(p, Question)]
        chosen: dict[int, tuple[str, list[float]]] = {}
        texts: dict[int, tuple[str, int]] = {}
        stopped = timed_out = False
        stop = DeadlineStopping(deadline.sub(OUTPUT_MARGIN_S))
        try:
            with hard_limit(deadline.sub(OUTPUT_MARGIN_S)):
                if valid:
                    chosen = dict(zip(valid, self.letters([parsed[i] for i in valid])))
                    spent = deadline.elapsed()
                    if deadline.remaining() > OUTPUT_MARGIN_S + 0.5 * spent:  # room for at least a few tokens
                        gen, counts, stopped = self.reason([parsed[i] for i in valid], [chosen[i][0] for i in valid],
                                                           stop.deadline, stop)
                        texts = dict(zip(valid, zip(gen, counts)))
        except DeadlineExceeded:
            timed_out = True
            if stop.ids is not None and not texts:  # the backstop ended the generate call: keep what it wrote
                texts = dict(zip(valid, zip(*self.decode_new(stop.ids, stop.prompt_len))))
        records = []
        for i, q in enumerate(parsed):
            if not isinstance(q, Question):
                why = f"Malformed question ({q}); no answer could be computed, so {DEFAULT_LETTER} is given."
                records.append(AnswerRecord(start + i, DEFAULT_LETTER, clip_words(why, words), "malformed", 0.0, batch))
                continue
            letter, logprobs = chosen.get(i, (DEFAULT_LETTER, None))
            text, ntok = texts.get(i, ("", 0))
            reasoning, because = compose(letter, q.choices, text, logprobs, words)
            status = "timeout" if logprobs is None else ("ok" if because is None else "no-reasoning")
            records.append(AnswerRecord(start + i, letter, reasoning, status, 0.0, batch, logprobs, ntok,
                                        stopped or (timed_out and logprobs is not None), because))
        elapsed = deadline.elapsed()
        for rec in records:
            rec.time_s = elapsed
        return records

    def answer_all(self, entries: Sequence[object],
                   on_item: Callable[[AnswerRecord], None] | None = None) -> list[AnswerRecord]:
        records: list[AnswerRecord] = []
        size = self.settings.batch_size
        for b, i in enumerate(range(0, len(entries), size)):
            for rec in self.answer_batch(entries[i: i + size], i, b):
                records.append(rec)
                if on_item:
                    on_item(rec)
        return records
