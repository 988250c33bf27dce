"""Run a sweep: resolve the adapters, merge the pending points in one pass, evaluate them on the validation
split (appending each finished point), select the best, then write results.csv, sweep.png, best/ and the
test-split report of the best point only."""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tiesmerge.atomic import atomic_output_dir, check_output_dir, refuse_overlap
from tiesmerge.devices import resolve_device
from tiesmerge.errors import BadInputError
from tiesmerge.eval.questions import Question
from tiesmerge.eval.report import EvalResult, Target, write_outputs
from tiesmerge.eval.session import EvalSession
from tiesmerge.progress import ProgressFactory
from tiesmerge.sweep.config import Metric, SweepAdapter, SweepConfig
from tiesmerge.sweep.executors import EXECUTORS
from tiesmerge.sweep.merging import merge_points
from tiesmerge.sweep.plot import plot
from tiesmerge.sweep.points import grid
from tiesmerge.sweep.selection import find, point_row, select
from tiesmerge.sweep.store import SweepStore


@dataclass
class SweepRun:
    rows: list[dict]
    best: dict
    preset: dict | None
    test: EvalResult
    out: Path
    computed: int  # points evaluated in this run (the rest were resumed)
    seconds: dict
    config: Any = None  # the SweepConfig it ran


# Trains (or reads from the cache) the specialists of a named preset: (base, progress, log) → domain → adapter path.
# Supplied by the caller (the CLI passes the demo's trainer), so the sweep does not depend on the demo.
PresetTrainer = Callable[[str, ProgressFactory, Callable[[str], None]], dict[str, Path]]


def resolve_adapters(cfg: SweepConfig, progress: ProgressFactory, log: Callable[[str], None],
                     preset_trainer: PresetTrainer | None = None) -> list[SweepAdapter]:
    if isinstance(cfg.adapters, list):
        return cfg.adapters
    if preset_trainer is None:
        raise BadInputError(f"adapters: {cfg.adapters} names a preset whose specialists this caller cannot train; "
                            "list the adapters in the sweep config")
    specs = preset_trainer(cfg.base, progress, log)
    return [SweepAdapter(name=d, path=p, domain=d) for d, p in specs.items()]


def split_questions(cfg: SweepConfig, domains: list[str], split: str) -> list[Question]:
    from tiesmerge.eval.loaders import load_questions

    files = cfg.eval.validation if split == "validation" else cfg.eval.test
    limit = cfg.eval.limit if split == "validation" else cfg.eval.test_limit
    out: list[Question] = []
    builtin_domains = []
    for d in domains:
        if d in files:
            out += [q for q in load_questions(files[d], d, False).questions][:limit]
        elif cfg.eval.builtin:
            builtin_domains.append(d)
        else:
            raise BadInputError(f"no {split} questions for domain {d!r}: add eval.{split}.{d}: FILE or builtin: true")
    if builtin_domains:
        from tiesmerge.eval.builtin.build import DOMAINS, build

        unknown = [d for d in builtin_domains if d not in DOMAINS]
        if unknown:
            raise BadInputError(f"domain(s) {', '.join(unknown)} have no built-in questions; give eval.{split} files")
        sets = build(cfg.eval.n_per_domain, cfg.eval.data_seed, domains=tuple(builtin_domains))[split]
        for d in builtin_domains:
            out += sets[d][:limit]
    return out


@dataclass
class _Sweep:
    """What the stages share: the config, the output store, the adapters and where the log and progress go."""

    cfg: SweepConfig
    out: Path
    store: SweepStore
    adapters: list[SweepAdapter]
    progress: ProgressFactory
    log: Callable[[str], None]
    cache_root: Path | None

    @property
    def specialist_of(self) -> dict[str, str]:
        return {a.domain or a.name: a.name for a in self.adapters}

    @property
    def domains(self) -> list[str]:
        return list(self.specialist_of)  # adapter order: the demo preset then shares the demo's evaluations

    def session(self, questions: list[Question]) -> EvalSession:
        return EvalSession(self.cfg.base, questions, mode=self.cfg.eval.mode, batch_size=self.cfg.eval.batch_size,
                           progress=self.progress, log=self.log, root=self.cache_root)


def run_sweep(cfg: SweepConfig, out: Path, *, executor: str = "local", ray_address: str | None = None,
              force: bool = False, progress: ProgressFactory, log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
              cache_root: Path | None = None, preset_trainer: PresetTrainer | None = None) -> SweepRun:
    """Merge every grid point (resumable), score each on the validation split, pick the best, score it on test."""
    if executor not in EXECUTORS:
        raise BadInputError(f"--executor {executor!r} is unknown; use {' or '.join(EXECUTORS)}")
    check_outputs(cfg, out)
    sweep = _Sweep(cfg, Path(out), SweepStore(out, cfg, force=force), resolve_adapters(cfg, progress, log,
                                                                                     preset_trainer),
                   progress, log, cache_root)
    points = grid(cfg)
    seconds: dict[str, float] = {}
    pending = _timed(seconds, "merge", merge_stage, sweep, points)
    references = _timed(seconds, "validation", validation_stage, sweep, points, pending, executor, ray_address)
    rows, best = select_stage(sweep, points, references)
    preset, result = _timed(seconds, "test", test_stage, sweep, rows, best)
    return SweepRun(rows, best, preset, result, sweep.out, len(pending), seconds, cfg)


def _timed(seconds: dict[str, float], name: str, stage: Callable, *args):
    t0 = time.perf_counter()
    try:
        return stage(*args)
    finally:
        seconds[name] = time.perf_counter() - t0


def check_outputs(cfg: SweepConfig, out: Path) -> None:
    """The sweep folder must not hold (or lie inside) an adapter, a question file or the base."""
    inputs = {f"adapter {a.name!r}": a.path for a in cfg.adapters} if isinstance(cfg.adapters, list) else {}
    inputs |= {f"question file {d}": f for d, f in {**cfg.eval.validation, **cfg.eval.test}.items()}
    inputs |= {"the base model": cfg.base} if Path(cfg.base).is_dir() else {}
    check_output_dir(out, force=True)
    refuse_overlap(out, inputs, "write the sweep to a separate folder")


def merge_stage(sweep: _Sweep, points: list) -> list:
    """Merge the points not finished by an earlier run; returns the points still to evaluate."""
    done = {r["key"] for r in sweep.store.rows()}
    pending = [p for p in points if p.key not in done]
    if done:
        sweep.log(f"resuming: {len(done & {p.key for p in points})} of {len(points)} points already finished")
    to_merge = [p for p in pending if not sweep.store.has_adapter(p.key)]
    if to_merge:
        with sweep.progress(1, f"merging {len(to_merge)} points", "modules") as hook:
            merge_points(sweep.cfg, to_merge, sweep.adapters, lambda p: sweep.store.point_dir(p.key),
                         resolve_device(sweep.cfg.device), hook)
    return pending


def validation_stage(sweep: _Sweep, points: list, pending: list, executor: str, ray_address: str | None) -> dict:
    """Score the base, the specialists and every pending point on the validation split (a row per point, appended
    as it finishes); returns the reference predictions."""
    session = sweep.session(split_questions(sweep.cfg, sweep.domains, "validation"))
    references = {"base": session.predictions(Target("base", "base"))[0]}
    for a in sweep.adapters:
        references[a.name] = session.predictions(Target(a.name, "adapter", str(a.path)))[0]
    runner = EXECUTORS[executor](session, ray_address=ray_address)
    by_key = {p.key: p for p in points}
    with sweep.progress(len(pending), "evaluating points", "points") as hook:
        for i, (key, preds) in enumerate(runner.map([(p.key, sweep.store.point_dir(p.key)) for p in pending])):
            sweep.store.append(point_row(by_key[key], preds, references, sweep.specialist_of,
                                         sweep.store.merge_summary(key)))
            hook(i + 1, len(pending), key)
    return references


def select_stage(sweep: _Sweep, points: list, references: dict) -> tuple[list[dict], dict]:
    """The best point by the metric (results.csv, sweep.png, a copy in best/)."""
    cfg, out = sweep.cfg, sweep.out
    order = {p.key: i for i, p in enumerate(points)}
    rows = sorted((r for r in sweep.store.rows() if r["key"] in order), key=lambda r: order[r["key"]])
    try:
        best = select(rows, cfg.metric)
    except ValueError:  # e.g. normalized accuracy is undefined when every specialist scores 0 on its domain
        sweep.log(f"{cfg.metric.value} is undefined for every point (a specialist scores 0 on its own domain); "
                  "choosing by accuracy_mean")
        best = select(rows, Metric.accuracy_mean)
    for r in rows:
        r["selected"] = r["key"] == best["key"]
    sweep.store.write_csv(rows, sweep.domains)
    plot(rows, _reference_accuracies(references, sweep.specialist_of), sweep.domains, out / "sweep.png",
         f"{cfg.base}: {len(sweep.adapters)} adapters, validation split, best {best['key']} ({cfg.metric.value})")
    with atomic_output_dir(out / "best", force=True) as tmp:
        shutil.copytree(sweep.store.point_dir(best["key"]), tmp, dirs_exist_ok=True)
    return rows, best


def test_stage(sweep: _Sweep, rows: list[dict], best: dict) -> tuple[dict | None, EvalResult]:
    """The chosen point (and the preset, when another) against the base and the specialists on the test split,
    read only now."""
    cfg, out = sweep.cfg, sweep.out
    test = split_questions(cfg, sweep.domains, "test")
    targets = [Target("base", "base")] + [Target(a.name, "adapter", str(a.path)) for a in sweep.adapters] + \
        [Target(f"best ({best['key']})", "merged", str(out / "best"))]
    preset = find(rows, density=cfg.preset.get("density"), **{"lambda": cfg.preset.get("lambda", 1.0)})
    if preset is not None and preset["key"] != best["key"]:
        targets.append(Target(f"preset ({preset['key']})", "merged", str(sweep.store.point_dir(preset["key"]))))
    session = sweep.session(test)
    preds = {t.name: session.predictions(t)[0] for t in targets}
    result = EvalResult(targets, sweep.domains, preds, sweep.specialist_of,
                        meta={"split": "test", "mode": cfg.eval.mode, "n_questions": len(test), "base": cfg.base})
    with atomic_output_dir(out / "test", force=True) as tmp:
        write_outputs(result, tmp)
    return preset, result


def _reference_accuracies(references, specialist_of) -> dict[str, dict[str, float]]:
    out = {}
    for name, preds in references.items():
        accs: dict[str, float] = {}
        for d in specialist_of:
            ps = [p for p in preds if p.domain == d]
            if ps:
                accs[d] = sum(p.correct for p in ps) / len(ps)
        accs["mean"] = sum(accs.values()) / len(accs) if accs else None
        out[name] = accs
    return out
