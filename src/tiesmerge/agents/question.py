"""The question agent: per question, the model drafts a JSON question; it is kept only if it is format-valid,
new in this run, and the answer path picks its letter; otherwise a verified built-in question for the topic
takes its place. Each question runs under its own deadline (drafting stops early enough for the check)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch

from tiesmerge.agents.answer import AnswerAgent, parse_entry
from tiesmerge.agents.config import QuestionSettings
from tiesmerge.agents.deadline import Deadline, DeadlineExceeded, DeadlineStopping, hard_limit
from tiesmerge.agents.fallback import FallbackPool, normalize_text
from tiesmerge.agents.schema import tournament_question
from tiesmerge.agents.text import first_json_object
from tiesmerge.eval.questions import InvalidQuestion

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
    time_s: float
    draft_tokens: int = 0
    item: dict | None = None

    def report(self) -> dict:
        d = asdict(self)
        d.pop("item")
        return d


class JsonClosed:
    """Stop generating once the draft holds a complete JSON object (no tokens spent after its `}`)."""

    def __init__(self, tokenizer, start: int):
        self.tokenizer, self.start = tokenizer, start

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        last = self.tokenizer.decode(input_ids[0, -1:], skip_special_tokens=True)
        done = False
        if "}" in last:
            done = first_json_object(DRAFT_PREFIX + self.tokenizer.decode(input_ids[0, self.start:],
                                                                         skip_special_tokens=True)) is not None
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class QuestionAgent:
    def __init__(self, model, tokenizer, settings: QuestionSettings, answerer: AnswerAgent, pool: FallbackPool,
                 clock: Callable[[], float] = time.monotonic):
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        self.answerer, self.pool, self.clock = answerer, pool, clock
        self.device = next(model.parameters()).device
        self.check_s = 0.0  # slowest self-check so far: kept in reserve when drafting

    @torch.no_grad()
    def draft(self, topic: str, deadline: Deadline) -> tuple[str, int]:
        text = draft_prompt(self.tokenizer, topic)
        ids = torch.tensor([self.tokenizer(text, add_special_tokens=False)["input_ids"]], device=self.device)
        stop = DeadlineStopping(deadline)
        gen = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                  stopping_criteria=[stop, JsonClosed(self.tokenizer, ids.shape[1])],
                                  pad_token_id=self.tokenizer.pad_token_id, **self.settings.generate_kwargs())
        new = gen[0, ids.shape[1]:]
        return DRAFT_PREFIX + self.tokenizer.decode(new, skip_special_tokens=True), int(new.numel())

    def _from_model(self, topic: str, taken: set[str], deadline: Deadline) -> tuple[dict | None, str | None, int]:
        """(question, None, tokens) when the draft passes every check, else (None, why not, tokens)."""
        reserve = max(0.3, 2 * self.check_s) + OUTPUT_MARGIN_S
        text, ntok = self.draft(topic, deadline.sub(reserve))
        obj = first_json_object(text)
        if obj is None:
            return None, "draft has no complete JSON object", ntok
        try:
            item = tournament_question(obj, topic)
        except InvalidQuestion as exc:
            return None, f"draft invalid: {exc}", ntok
        if normalize_text(item["question"]) in taken:
            return None, "draft repeats an earlier question", ntok
        if self.settings.self_check:
            start = self.clock()
            letter, *_ = self.answerer.choose(_as_question(item))
            self.check_s = max(self.check_s, self.clock() - start)
            if letter != item["answer"]:
                return None, f"self-check answered {letter}, draft says {item['answer']}", ntok
        return item, None, ntok

    def generate_one(self, topic: str, index: int, taken: set[str]) -> QuestionRecord:
        deadline = Deadline(self.settings.deadline_s, self.clock)
        item, why, ntok = None, "drafting is off", 0
        if self.settings.draft:
            try:
                with hard_limit(deadline.sub(OUTPUT_MARGIN_S)):
                    item, why, ntok = self._from_model(topic, taken, deadline)
            except DeadlineExceeded:
                item, why = None, "deadline reached while drafting"
        if item is not None:
            taken.add(normalize_text(item["question"]))
            return QuestionRecord(index, topic, "model", None, deadline.elapsed(), ntok, item)
        item = self.pool.draw(topic, taken)
        if item is None:
            raise RuntimeError(f"no fallback question left for topic {topic!r}")
        return QuestionRecord(index, topic, "fallback", why, deadline.elapsed(), ntok, item)

    def generate(self, n: int, on_item: Callable[[QuestionRecord], None] | None = None) -> list[QuestionRecord]:
        torch.manual_seed(self.settings.seed)
        taken: set[str] = set()
        records = []
        topics = self.settings.topics
        for i in range(n):
            rec = self.generate_one(topics[i % len(topics)], i, taken)
            records.append(rec)
            if on_item:
                on_item(rec)
        return records


def _as_question(item: dict):
    return parse_entry({"question": item["question"], "choices": item["choices"]})


def dumps(records: Sequence[QuestionRecord]) -> str:
    return json.dumps([r.item for r in records], indent=2, ensure_ascii=False) + "\n"
