"""Calibration prompts: each specialist's own unlabeled inputs, for the calibrated merges (RegMean statistics,
refine). Read from a JSONL / CSV / JSON question file in any format `eval` reads, a file of plain texts, or the
built-in sets (`builtin:DOMAIN:SPLIT`).

Gold answers are never read: only the question text and its options (or the text) are taken from a row, so a
file whose answers are wrong, missing or poisoned gives the very same prompts."""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from tiesmerge.choices import Choice
from tiesmerge.errors import BadInputError, as_bad_input
from tiesmerge.eval.questions import LETTERS
from tiesmerge.portable import limits

DEFAULT_SIZE = 256  # prompts per adapter
MAX_FILE_BYTES = 256 << 20
TEXT_KEYS = ("text", "prompt", "input", "instruction")


class PromptFormat(Choice):
    """How a question becomes the text a model continues."""

    cloze = "cloze"  # `Question: …\nAnswer:` without options (eval --mode cloze)
    letters = "letters"  # the options shown, chat template, the answer letter next (eval --mode letters, the agents)


@dataclass(frozen=True)
class Prompt:
    """One unlabeled input: a question (with its options when the file has them) or a plain text."""

    text: str
    choices: tuple[str, ...] = ()
    is_question: bool = True

    def render(self, tokenizer, fmt: PromptFormat) -> str:
        from types import SimpleNamespace

        from tiesmerge.eval.cloze import cloze_prompt
        from tiesmerge.eval.questions import InvalidQuestion, make_question
        from tiesmerge.eval.scoring import build_prompt

        if not self.is_question:
            return self.text
        if fmt is PromptFormat.letters and len(self.choices) == 4:
            try:
                return build_prompt(tokenizer, make_question(self.text, list(self.choices), "A"))  # letter unused
            except InvalidQuestion as exc:
                raise BadInputError(f"calibration question {self.text[:60]!r}: {exc}") from None
        return cloze_prompt(tokenizer, SimpleNamespace(question=self.text))


def _choices(value) -> tuple[str, ...]:
    if isinstance(value, dict):
        value = [value.get(k) for k in LETTERS]
    if not isinstance(value, list) or len(value) != 4 or not all(isinstance(c, str) for c in value):
        return ()
    return tuple(re.sub(r"^\s*[A-D]\s*[).:]\s*", "", c).strip() for c in value)


def _from_row(row, where: str) -> Prompt:
    if isinstance(row, str):
        text, question = row, False
        choices: tuple[str, ...] = ()
    elif isinstance(row, dict):
        if isinstance(row.get("question"), str):
            text, question, choices = row["question"], True, _choices(row.get("choices"))
        else:
            key = next((k for k in TEXT_KEYS if isinstance(row.get(k), str)), None)
            if key is None:
                raise BadInputError(f"{where}: a calibration row needs a `question` or a `text` string")
            text, question, choices = row[key], False, ()
    else:
        raise BadInputError(f"{where}: a calibration row must be a JSON object or a string")
    if not text.strip():
        raise BadInputError(f"{where}: empty prompt text")
    return Prompt(text.strip() if question else text, choices, question)


def _read_jsonl(path: Path) -> list[Prompt]:
    lines = enumerate(as_bad_input(limits.read_text)(path, "calibration file").splitlines(), 1)
    return [_from_row(as_bad_input(limits.loads_json)(line, f"{path}:{n}"), f"{path}:{n}")
            for n, line in lines if line.strip()]


def _read_json(path: Path) -> list[Prompt]:
    """A JSON list of questions or texts (or {"questions": [...]}), read as the question lists are."""
    data = as_bad_input(limits.read_question_list)(path, "calibration file")
    return [_from_row(row, f"{path}: item {n}") for n, row in enumerate(data, 1)]


def _read_csv(path: Path) -> list[Prompt]:
    with open(path, encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.reader(fh) if any(c.strip() for c in r)]
    if rows and [c.strip().lower() for c in rows[0][:5]] == ["question", "a", "b", "c", "d"]:
        rows = rows[1:]
    out = []
    for n, row in enumerate(rows, 1):
        if len(row) < 5 or not row[0].strip():
            raise BadInputError(f"{path}: row {n}: expected question,A,B,C,D[,answer]")
        out.append(Prompt(row[0].strip(), tuple(c.strip() for c in row[1:5])))
    return out


def _read_txt(path: Path) -> list[Prompt]:
    return [Prompt(line, (), False) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".txt": _read_txt}


def _builtin(spec: str) -> list[Prompt]:
    from tiesmerge.eval.builtin.build import DOMAINS, SPLITS, build

    parts = spec.split(":")
    if len(parts) != 3 or parts[1] not in DOMAINS or parts[2] not in SPLITS:
        raise BadInputError(f"calibration {spec!r}: use builtin:DOMAIN:SPLIT with DOMAIN one of "
                            f"{', '.join(DOMAINS)} and SPLIT one of {', '.join(SPLITS)}")
    if parts[2] == "test":
        raise BadInputError(f"calibration {spec!r}: the test split is what the merge is scored on — calibrating on it "
                            f"leaks the evaluation; use builtin:{parts[1]}:train (or :validation)")
    sets = build(domains=(parts[1],))
    return [Prompt(q.question, tuple(q.choices)) for q in sets[parts[2]][parts[1]]]


def read_prompts(source: str | Path, label: str = "calibration file") -> list[Prompt]:
    """Every prompt of one calibration source (a file or `builtin:DOMAIN:SPLIT`), in file order; problems are named
    with `label` (e.g. "--test file" for the evaluation questions calibration prompts are checked against)."""
    if label == "calibration file":
        return _read_prompts(source)
    try:
        return _read_prompts(source)
    except BadInputError as exc:
        raise BadInputError(str(exc).replace("calibration file", label).replace(
            " or builtin:DOMAIN:SPLIT", "")) from None


def _read_prompts(source: str | Path) -> list[Prompt]:
    if str(source).startswith("builtin:"):
        return _builtin(str(source))
    path = Path(source)
    if not path.is_file():
        what = ("is a folder" if path.is_dir() else "is not a regular file (a FIFO or device)" if path.exists()
                else "not found")
        raise BadInputError(f"calibration file {path} {what} (give a .jsonl/.json/.csv/.txt file or "
                            "builtin:DOMAIN:SPLIT)")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise BadInputError(f"calibration file {path}: unknown format {path.suffix!r}; use .jsonl, .json, .csv or .txt")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise BadInputError(f"calibration file {path} is larger than {MAX_FILE_BYTES >> 20} MiB; give a sample")
    try:
        prompts = reader(path)
    except UnicodeDecodeError as exc:
        raise BadInputError(f"calibration file {path}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise BadInputError(f"calibration file {path}: cannot read it ({exc.strerror})") from None
    if not prompts:
        raise BadInputError(f"calibration file {path} holds no prompts")
    return prompts


def budget(prompts: Sequence[Prompt], size: int, seed: int = 0) -> list[Prompt]:
    """At most `size` distinct prompts: all when they fit, else a seeded sample (file order kept)."""
    seen, unique = set(), []
    for p in prompts:
        if (p.text, p.choices) not in seen:
            seen.add((p.text, p.choices))
            unique.append(p)
    if len(unique) <= size:
        return unique
    keep = sorted(random.Random(f"calibration-{seed}").sample(range(len(unique)), size))
    return [unique[i] for i in keep]


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def refuse_leaks(sets: Mapping[str, Sequence[Prompt]], heldout: Sequence[str], where: str) -> None:
    """A calibration prompt that is one of the evaluation's test questions makes the evaluation meaningless."""
    test = {_norm(t) for t in heldout}
    for name, prompts in sets.items():
        leaked = [p.text for p in prompts if _norm(p.text) in test]
        if leaked:
            raise BadInputError(f"calibration prompts of {name!r} contain {len(leaked)} question(s) of {where} "
                                f"(e.g. {leaked[0][:60]!r}); calibrate on training or validation prompts only")


def load_calibration(sources: Mapping[str, str | Path], adapters: Sequence[str], size: int = DEFAULT_SIZE,
                     heldout: Sequence[str] = (), heldout_name: str = "the test set") -> dict[str, list[Prompt]]:
    """adapter name → its prompts (budgeted), checked before anything is loaded: every adapter has prompts, every
    source reads, no source names an unknown adapter, none leaks a held-out question."""
    if size < 1:
        raise BadInputError(f"--calibration-size must be at least 1, got {size}")
    unknown = sorted(set(sources) - set(adapters))
    if unknown:
        raise BadInputError(f"calibration given for {', '.join(map(repr, unknown))}, which is not an adapter of the "
                            f"merge ({', '.join(adapters)})")
    missing = [a for a in adapters if a not in sources]
    if missing:
        raise BadInputError(f"adapter(s) {', '.join(map(repr, missing))} have no calibration prompts; give "
                            "--calibration NAME=FILE (or `calibration:` in the recipe) for every adapter")
    out = {a: budget(read_prompts(sources[a]), size) for a in adapters}
    if heldout:
        refuse_leaks(out, heldout, heldout_name)
    return out


def prompts_digest(prompts: Sequence[Prompt], fmt: PromptFormat) -> str:
    h = hashlib.sha256(fmt.value.encode())
    for p in prompts:
        h.update(json.dumps([p.text, list(p.choices), p.is_question]).encode())
    return h.hexdigest()[:16]


MAX_PROMPT_TOKENS = 1024  # a calibration prompt longer than this keeps its last 1024 tokens (with a note)


def encode_prompt(tokenizer, text: str, limit: int = MAX_PROMPT_TOKENS) -> list[int]:
    """A prompt's token ids, at most `limit` of them: a longer prompt (a 100 000-character paste) keeps its end —
    the part the continuation follows — so statistics and refine see a prompt the model's context holds."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[-limit:] if len(ids) > limit else ids


def truncation_note(tokenizer, name: str, texts: Sequence[str], limit: int = MAX_PROMPT_TOKENS) -> str | None:
    """The note for the prompts `encode_prompt` will truncate (None when none is longer than `limit` tokens)."""
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts if len(t) > limit]
    long = [n for n in lengths if n > limit]
    if not long:
        return None
    return (f"note: {len(long)} prompt(s) of {name!r} are longer than {limit} tokens (up to {max(long)}); each keeps "
            f"its last {limit}")
