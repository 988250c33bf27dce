"""Question sets as lm-evaluation-harness tasks, so an external harness can re-score what `tiesmerge eval --mode
cloze` scores: one JSONL file and one task YAML per domain, and a group YAML over them.

The task is lm-eval's cloze formulation with tiesmerge's prompt: context `Question: …\\nAnswer:`, continuations
` choice`, `output_type: multiple_choice`, metrics acc (summed log-likelihood) and acc_norm (per character) —
what `tiesmerge eval --mode cloze --cloze-norm sum` / `chars` compute."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import yaml

from tiesmerge.errors import BadInputError
from tiesmerge.eval.questions import Question

DOC_TO_TEXT = "Question: {{question}}\nAnswer:"  # = eval.cloze.cloze_prompt
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class LmEvalExport:
    group: str
    tasks: tuple[str, ...]
    questions: int


def task_name(group: str, domain: str) -> str:
    return f"{group}_{re.sub(r'[^A-Za-z0-9_]+', '_', domain).strip('_') or 'default'}"


def task_yaml(name: str, data_file: Path) -> dict:
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": DOC_TO_TEXT,
        "doc_to_choice": "choices",
        "doc_to_target": "answer",
        "target_delimiter": " ",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                        {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0, "source": "tiesmerge data export-lm-eval"},
    }


def write_tasks(questions: Sequence[Question], tmp: Path, final: Path, group: str) -> LmEvalExport:
    """Write into `tmp` (renamed to `final` by the caller); YAML files name the data by its final absolute path."""
    if not NAME.match(group):
        raise BadInputError(f"--name {group!r} must start with a letter and hold only letters, digits and _")
    if not questions:
        raise BadInputError("no questions to export")
    by_domain: dict[str, list[Question]] = {}
    for q in questions:
        by_domain.setdefault(q.domain, []).append(q)
    names = []
    final = final.resolve()
    for domain, qs in sorted(by_domain.items()):
        name = task_name(group, domain)
        if name in names:
            raise BadInputError(f"domains {domain!r} and another map to the same task name {name}; rename one")
        names.append(name)
        with open(tmp / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for q in qs:
                fh.write(json.dumps({"id": q.id, "question": q.question, "choices": list(q.choices),
                                     "answer": q.answer_index, "domain": q.domain}, ensure_ascii=False) + "\n")
        (tmp / f"{name}.yaml").write_text(yaml.safe_dump(task_yaml(name, final / f"{name}.jsonl"), sort_keys=False))
    group_doc: Mapping = {"group": group, "task": names,
                          "aggregate_metric_list": [{"metric": m, "aggregation": "mean", "weight_by_size": True}
                                                    for m in ("acc", "acc_norm")],
                          "metadata": {"version": 1.0}}
    (tmp / f"{group}.yaml").write_text(yaml.safe_dump(dict(group_doc), sort_keys=False))
    return LmEvalExport(group, tuple(names), len(questions))
