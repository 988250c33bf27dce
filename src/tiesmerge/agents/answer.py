"""The answer agent: per question, the letter from one forward pass (the log-likelihood of A–D, as in eval),
then a short reasoning generated from the same KV cache until the question's deadline comes near."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch

from tiesmerge.agents.config import AnswerSettings
from tiesmerge.agents.deadline import Deadline, DeadlineExceeded, DeadlineStopping, hard_limit
from tiesmerge.agents.text import clip_words
from tiesmerge.eval.questions import LETTERS, InvalidQuestion, Question, make_question
from tiesmerge.eval.scoring import build_prompt, letter_token_ids

DEFAULT_LETTER = "A"  # what a question gets when no model answer exists (malformed, or no time left)
OUTPUT_MARGIN_S = 0.05  # kept back from the deadline for clipping and bookkeeping


@dataclass
class AnswerRecord:
    """One answer and how it came about (only `answer` and `reasoning` go to the tournament's file)."""

    index: int
    answer: str
    reasoning: str
    status: str  # ok | malformed | timeout (no letter in time) | no-reasoning (letter, but no time to explain)
    time_s: float
    letter_logprobs: list[float] | None = None
    reasoning_tokens: int = 0
    stopped_by_deadline: bool = False

    def output(self) -> dict:
        return {"answer": self.answer, "reasoning": self.reasoning}

    def report(self) -> dict:
        return asdict(self)


def parse_entry(entry: object) -> Question:
    """A tournament input item → Question; raise InvalidQuestion naming what is wrong.
    Inputs carry no answer; choices may be a list (`"A) …"` or plain) or a dict keyed A–D."""
    if not isinstance(entry, dict):
        raise InvalidQuestion(f"entry is not an object with question and choices (got {type(entry).__name__})")
    if "choices" not in entry:
        raise InvalidQuestion("missing choices")
    return make_question(entry.get("question"), entry.get("choices"), "A", entry.get("topic"))


class AnswerAgent:
    def __init__(self, model, tokenizer, settings: AnswerSettings, clock: Callable[[], float] = time.monotonic):
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings
        self.clock = clock
        self.letter_ids = letter_token_ids(tokenizer)
        self.chat = bool(getattr(tokenizer, "chat_template", None))
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.device = next(model.parameters()).device

    def _ids(self, text: str) -> torch.Tensor:
        return torch.tensor([self.tokenizer(text, add_special_tokens=False)["input_ids"]], device=self.device)

    @torch.no_grad()
    def choose(self, q: Question):
        """(letter, log p(A..D), prompt ids, KV cache of the prompt): one forward pass."""
        ids = self._ids(build_prompt(self.tokenizer, q))
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        logp = torch.log_softmax(out.logits[0, -1].float(), -1)[self.letter_ids].cpu()
        return LETTERS[int(logp.argmax())], [float(v) for v in logp], ids, out.past_key_values

    @torch.no_grad()
    def reason(self, q: Question, letter: str, ids: torch.Tensor, cache, deadline: Deadline) -> tuple[str, int, bool]:
        """Continue the assistant's turn after the chosen letter; stop before the deadline."""
        lead = "" if self.chat else " "
        cont = self._ids(f"{lead}{letter}) {q.choices[LETTERS.index(letter)]}\nExplanation:")
        full = torch.cat([ids, cont], dim=1)
        stop = DeadlineStopping(deadline)
        gen = self.model.generate(
            input_ids=full, attention_mask=torch.ones_like(full), past_key_values=cache,
            stopping_criteria=[stop], pad_token_id=self.tokenizer.pad_token_id, **self.settings.generate_kwargs())
        new = gen[0, full.shape[1]:]
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        return text, int(new.numel()), stop.stopped

    def fallback_reasoning(self, q: Question, letter: str, logprobs: list[float] | None) -> str:
        choice = q.choices[LETTERS.index(letter)]
        if logprobs is None:
            return f"Option {letter} ({choice}) was chosen by default."
        probs = [math.exp(v) for v in logprobs]
        share = probs[LETTERS.index(letter)] / max(sum(probs), 1e-12)
        return f"Option {letter} ({choice}) is the most likely answer under the model ({share:.0%} of the letter probability)."

    def answer_one(self, entry: object, index: int = 0) -> AnswerRecord:
        deadline = Deadline(self.settings.deadline_s, self.clock)
        limit = self.settings.reasoning_words
        try:
            q = parse_entry(entry)
        except InvalidQuestion as exc:
            why = f"Malformed question ({exc}); no answer could be computed, so {DEFAULT_LETTER} is given."
            return AnswerRecord(index, DEFAULT_LETTER, clip_words(why, limit), "malformed", deadline.elapsed())
        letter, logprobs, status, text, ntok, stopped = DEFAULT_LETTER, None, "ok", "", 0, False
        try:
            with hard_limit(deadline.sub(OUTPUT_MARGIN_S)):
                letter, logprobs, ids, cache = self.choose(q)
                spent = deadline.elapsed()
                if deadline.remaining() > OUTPUT_MARGIN_S + 0.5 * spent:  # room for at least a few tokens
                    text, ntok, stopped = self.reason(q, letter, ids, cache, deadline.sub(OUTPUT_MARGIN_S))
        except DeadlineExceeded:
            status = "timeout" if logprobs is None else "no-reasoning"
        reasoning = clip_words(text, limit)
        if not reasoning:
            reasoning = clip_words(self.fallback_reasoning(q, letter, logprobs), limit)
            if status == "ok":
                status = "no-reasoning"
        return AnswerRecord(index, letter, reasoning, status, deadline.elapsed(), logprobs, ntok, stopped)

    def answer_all(self, entries: Sequence[object], on_item: Callable[[AnswerRecord], None] | None = None) -> list[AnswerRecord]:
        records = []
        for i, entry in enumerate(entries):
            rec = self.answer_one(entry, i)
            records.append(rec)
            if on_item:
                on_item(rec)
        return records
