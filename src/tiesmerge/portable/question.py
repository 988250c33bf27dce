"""The question agent, batched: the questions go in batches of `batch_size`; per batch the model drafts every
question in one generate call (each row stops as soon as its JSON object closes), the drafts are checked
together (format, no repeats, and the answer path's letter pass must pick each draft's letter), and a verified
question from the fallback bank takes the place of every draft that fails. Each batch runs under one deadline
(the per-question budget): drafting stops early enough for the check."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch

from .answer import AnswerAgent, parse_entry
from .bank import FallbackBank, normalize_text
from .config import QuestionSettings
from .deadline import Deadline, DeadlineExceeded, DeadlineStopping, hard_limit
from .errors import AgentInputError
from .letters import device_of, encode
from .mcq import InvalidQuestion
from .schema import tournament_question
from .text import first_json_object

OUTPUT_MARGIN_S = 0.05
DRAFT_PREFIX = '{"question": "'
EXAMPLE = ('{"question": "...", "choices": ["A) ...", "B) ...", "C) ...", "D) ..."], "answer": "B", '
           '"explanation": "..."}')


def draft_prompt(tokenizer, topic: str) -> str:
    ask = (f"Write one hard multiple-choice question about {topic}, in English, with exactly four distinct "
           f"options and exactly one correct answer. Reply with a single JSON object and nothing else, "
           f"in this form:\n{EXAMPLE}\nKeep the explanation under 60 words.")
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": ask}], tokenize=False,
                                             add_generation_prompt=True)
    else:
        text = ask + "\n\n"
    return text + DRAFT_PREFIX  # the reply is steered into the JSON from its first token


@dataclass
class QuestionRecord:
    index: int
    topic: str
    source: str  # model | fallback
    why_fallback: str | None
    time_s: float  # from the start of its batch to its final question
    batch: int = 0
    draft_tokens: int = 0
    item: dict | None = None

    def report(self) -> dict:
        d = asdict(self)
        d.pop("item")
        return d


class JsonClosed:
    """Stop each row once its draft holds a complete JSON object (no tokens spent after its `}`)."""

    def __init__(self, tokenizer, start: int):
        self.tokenizer, self.start = tokenizer, start

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        done = []
        for row in input_ids:
            last = self.tokenizer.decode(row[-1:], skip_special_tokens=True)
            done.append("}" in last and first_json_object(
                DRAFT_PREFIX + self.tokenizer.decode(row[self.start:], skip_special_tokens=True)) is not None)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class QuestionAgent:
    def __init__(self, model, tokenizer, settings: QuestionSettings, answerer: AnswerAgent, bank: FallbackBank,
                 clock: Callable[[], float] = time.monotonic):
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        self.answerer, self.bank, self.clock = answerer, bank, clock
        self.check_s = 0.0  # slowest self-check so far: kept in reserve when drafting

    @torch.no_grad()
    def draft(self, topics: Sequence[str], deadline: Deadline) -> list[tuple[str, int]]:
        """(draft text, tokens) per topic, all drafted in one generate call."""
        ids, mask = encode(self.tokenizer, [draft_prompt(self.tokenizer, t) for t in topics], device_of(self.model))
        stop = DeadlineStopping(deadline)
        gen = self.model.generate(input_ids=ids, attention_mask=mask,
                                  stopping_criteria=[stop, JsonClosed(self.tokenizer, ids.shape[1])],
                                  pad_token_id=self.tokenizer.pad_token_id, **self.settings.generate_kwargs())
        new = gen[:, ids.shape[1]:]
        specials = set(self.tokenizer.all_special_ids)
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [(DRAFT_PREFIX + t, sum(int(x) not in specials for x in row)) for t, row in zip(texts, new)]

    def _check(self, topics: Sequence[str], drafts: Sequence[tuple[str, int]], taken: set[str]):
        """Per draft: (question or None, why not). Format and repeats first, then one batched self-check."""
        out: list[tuple[dict | None, str | None]] = []
        seen = set(taken)
        for topic, (text, _) in zip(topics, drafts):
            obj = first_json_object(text)
            if obj is None:
                out.append((None, "draft has no complete JSON object"))
                continue
            try:
                item = tournament_question(obj, topic)
            except InvalidQuestion as exc:
                out.append((None, f"draft invalid: {exc}"))
                continue
            key = normalize_text(item["question"])
            if key in seen:
                out.append((None, "draft repeats an earlier question"))
                continue
            seen.add(key)
            out.append((item, None))
        pending = [i for i, (item, _) in enumerate(out) if item is not None]
        if self.settings.self_check and pending:
            start = self.clock()
            letters = self.answerer.letters([parse_entry(out[i][0]) for i in pending])
            self.check_s = max(self.check_s, self.clock() - start)
            for i, (letter, _) in zip(pending, letters):
                if letter != out[i][0]["answer"]:
                    out[i] = (None, f"self-check answered {letter}, draft says {out[i][0]['answer']}")
        return out

    def generate_batch(self, topics: Sequence[str], start: int, taken: set[str], batch: int = 0) -> list[QuestionRecord]:
        deadline = Deadline(self.settings.deadline_s, self.clock)
        results: list[tuple[dict | None, str | None]] = [(None, "drafting is off")] * len(topics)
        drafts = [("", 0)] * len(topics)
        if self.settings.draft:
            try:
                with hard_limit(deadline.sub(OUTPUT_MARGIN_S)):
                    reserve = max(0.3, 2 * self.check_s) + OUTPUT_MARGIN_S
                    drafts = self.draft(topics, deadline.sub(reserve))
                    results = self._check(topics, drafts, taken)
            except DeadlineExceeded:
                results = [(None, "deadline reached while drafting")] * len(topics)
        records = []
        for i, (topic, (item, why)) in enumerate(zip(topics, results)):
            source = "model"
            if item is None:
                item, source = self.bank.draw(topic, taken), "fallback"
                if item is None:
                    raise AgentInputError(f"the fallback bank has no question left for topic {topic!r}; "
                                          "redeploy with a larger --bank-size")
            else:
                taken.add(normalize_text(item["question"]))
            records.append(QuestionRecord(start + i, topic, source, why, 0.0, batch, drafts[i][1], item))
        elapsed = deadline.elapsed()
        for rec in records:
            rec.time_s = elapsed
        return records

    def generate(self, n: int, on_item: Callable[[QuestionRecord], None] | None = None) -> list[QuestionRecord]:
        torch.manual_seed(self.settings.seed)
        taken: set[str] = set()
        topics = self.settings.topics
        wanted = [topics[i % len(topics)] for i in range(n)]
        records: list[QuestionRecord] = []
        size = self.settings.batch_size
        for b, i in enumerate(range(0, n, size)):
            for rec in self.generate_batch(wanted[i: i + size], i, taken, b):
                records.append(rec)
                if on_item:
                    on_item(rec)
        return records
