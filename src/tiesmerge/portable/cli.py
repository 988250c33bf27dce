"""The tournament's command lines (`python -m agents.answer_agent …`, `python -m agents.question_agent …`):
argparse with the tournament's flag names, the model loaded and warmed up once, atomic JSON output, timings on
stderr with --verbose."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import torch

from .answer import AnswerAgent
from .bank import FallbackBank
from .config import ANSWER_LIMIT_S, QUESTION_LIMIT_S, AgentsConfig, load_agents_config
from .errors import AgentInputError
from .limits import read_question_list, read_text
from .loader import AgentModel, load_agent_model
from .question import QuestionAgent
from .quiet import quiet_libraries


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


@torch.no_grad()
def warm_up(loaded: AgentModel) -> None:
    """One short forward and a 2-token generate, so first-call costs (CUDA context, kernels) hit no question."""
    tok, model = loaded.tokenizer, loaded.model
    ids = torch.tensor([tok("Warm up.", add_special_tokens=False)["input_ids"]], device=next(model.parameters()).device)
    model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=2, do_sample=False,
                   pad_token_id=tok.pad_token_id)


def load(config_path: Path) -> tuple[AgentsConfig, Path, AgentModel]:
    """(config, its folder, the warmed-up model)."""
    quiet_libraries()
    cfg, root = load_agents_config(config_path, _log)
    loaded = load_agent_model(cfg, root, _log)
    warm_up(loaded)
    return cfg, root, loaded


def bank_path(cfg: AgentsConfig, root: Path) -> Path | None:
    if cfg.bank is None:
        return None
    path = Path(cfg.bank)
    return path if path.is_absolute() else root / path


def write_json_atomic(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, ensure_ascii=False)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def report_path(output: Path) -> Path:
    """The --verbose timing report beside the output (never inside the tournament's file)."""
    return output.with_name(output.stem + ".timing.json")


def read_entries(path: Path) -> list:
    return read_question_list(path, "--input_file")


def timing_summary(kind: str, times: Sequence[float], limit: float) -> str:
    over = [i for i, t in enumerate(times) if t >= limit]
    if not times:
        return f"{kind}: none"
    return (f"{kind}: {len(times)} done; p50 {statistics.median(times):.3f} s, max {max(times):.3f} s "
            f"(limit {limit:g} s); over the limit: {', '.join(map(str, over)) if over else 'none'}")


def finish(args, kind: str, output: list, records, load_s: float, deadline_s: float, limit_s: float) -> None:
    """Write the tournament file; with --verbose, the timing summary on stderr and the .timing.json report."""
    write_json_atomic(args.output_file, output)
    if args.verbose:
        times = [r.time_s for r in records]
        print(timing_summary(kind, times, limit_s), file=sys.stderr)
        write_json_atomic(report_path(args.output_file), {
            "load_s": load_s, "deadline_s": deadline_s, "limit_s": limit_s, "max_s": max(times, default=0.0),
            "items": [r.report() for r in records]})
    print(f"wrote {len(output)} {kind} to {args.output_file}", file=sys.stderr)


def _default_config() -> Path:
    return Path.cwd() / "agents.yaml"


def _parser(prog: str, doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=doc)
    p.add_argument("--config", type=Path, default=None, help="agents.yaml (default: the deployed one)")
    p.add_argument("--verbose", action="store_true", help="per-item times on stderr and a .timing.json report")
    return p


def _run(fn, argv) -> int:
    try:
        return fn(argv)
    except AgentInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def answer_main(argv: Sequence[str] | None = None, default_config: Path | None = None) -> int:
    def main(argv) -> int:
        p = _parser("python -m agents.answer_agent", "Answer the tournament's questions: one {answer, reasoning} "
                    "per input question, in order, each inside its deadline.")
        p.add_argument("--input_file", type=Path, required=True, help="JSON list of {question, choices}")
        p.add_argument("--output_file", type=Path, default=Path("outputs/answers.json"))
        args = p.parse_args(argv)
        entries = read_entries(args.input_file)  # before loading the model: a bad file fails fast
        cfg, _, loaded = load(args.config or default_config or _default_config())
        agent = AnswerAgent(loaded.model, loaded.tokenizer, cfg.answer)

        def show(rec):
            if args.verbose:
                why = f" ({rec.template_because})" if rec.template_because else ""
                print(f"[answer {rec.index + 1}/{len(entries)}] batch {rec.batch + 1}: {rec.time_s:.3f} s "
                      f"{rec.answer} {rec.status}{why}", file=sys.stderr)

        records = agent.answer_all(entries, show)
        finish(args, "answers", [r.output() for r in records], records, loaded.load_s, cfg.answer.deadline_s,
               ANSWER_LIMIT_S)
        return 0

    return _run(main, argv)


def read_topics(path: Path) -> tuple[str, ...]:
    """A JSON list of topics, or one topic per line."""
    text = read_text(path, "--topics_file")
    try:
        data = json.loads(text)
        topics = data if isinstance(data, list) else None
    except (json.JSONDecodeError, RecursionError):
        topics = [line.strip() for line in text.splitlines()]
    topics = [t.strip() for t in topics or [] if isinstance(t, str) and t.strip()]
    if not topics:
        raise AgentInputError(f"--topics_file {path} has no topics; give a JSON list or one topic per line")
    return tuple(dict.fromkeys(topics))


def question_main(argv: Sequence[str] | None = None, default_config: Path | None = None) -> int:
    def main(argv) -> int:
        p = _parser("python -m agents.question_agent", "Write the tournament's questions: N format-valid, "
                    "self-checked questions over the topics, each inside its deadline; verified built-in "
                    "questions stand in for drafts that fail.")
        p.add_argument("--output_file", type=Path, default=Path("outputs/questions.json"))
        p.add_argument("--num_questions", type=int, default=20)
        p.add_argument("--topics_file", type=Path, default=None,
                       help="topics (JSON list or one per line); default: agents.yaml's, else the built-in four")
        args = p.parse_args(argv)
        if args.num_questions < 1:
            raise AgentInputError("--num_questions must be at least 1")
        topics = read_topics(args.topics_file) if args.topics_file else None
        cfg, root, loaded = load(args.config or default_config or _default_config())
        if topics:
            cfg = cfg.replace(question=dataclasses.replace(cfg.question, topics=topics))
        agent = question_agent(cfg, root, loaded)

        def show(rec):
            if args.verbose:
                why = f" ({rec.why_fallback})" if rec.why_fallback else ""
                print(f"[question {rec.index + 1}/{args.num_questions}] batch {rec.batch + 1}: {rec.time_s:.3f} s "
                      f"{rec.topic}: "
                      f"{rec.source}{why}", file=sys.stderr)

        records = agent.generate(args.num_questions, show)
        if args.verbose:
            print(f"from the model: {sum(r.source == 'model' for r in records)}/{len(records)}", file=sys.stderr)
        finish(args, "questions", [r.item for r in records], records, loaded.load_s, cfg.question.deadline_s,
               QUESTION_LIMIT_S)
        return 0

    return _run(main, argv)


def question_agent(cfg: AgentsConfig, root: Path, loaded: AgentModel) -> QuestionAgent:
    path = bank_path(cfg, root)
    if path is None:
        raise AgentInputError("agents.yaml has `bank: null`; the question agent needs the fallback bank that "
                              "`tiesmerge deploy` writes")
    bank = FallbackBank.load(path, cfg.question.topics, cfg.question.seed)
    answerer = AnswerAgent(loaded.model, loaded.tokenizer, cfg.answer)
    return QuestionAgent(loaded.model, loaded.tokenizer, cfg.question, answerer, bank)
