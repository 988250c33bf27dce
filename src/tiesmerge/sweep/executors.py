"""Where grid points are evaluated: `local` (sequential, one base for all points) or `ray` (points fan out
as Ray tasks to a running cluster or a local Ray; each task scores one point). Same rows either way: the
scoring is deterministic and the rows carry no timings. Explicit table, no import-time registration."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

from tiesmerge.errors import BadInputError
from tiesmerge.eval.questions import Question
from tiesmerge.eval.report import Target
from tiesmerge.eval.scoring import Prediction
from tiesmerge.eval.session import EvalSession

Job = tuple[str, Path]  # (point key, merged adapter folder)


class LocalExecutor:
    def __init__(self, session: EvalSession, **_):
        self.session = session

    def map(self, jobs: Sequence[Job]) -> Iterator[tuple[str, list[Prediction]]]:
        for key, path in jobs:
            preds, _ = self.session.predictions(Target(key, "merged", str(path)))
            yield key, preds


def _score_point(base: str, questions: list[Question], mode: str, batch_size: int, key: str, path: str,
                 cache_root: str | None) -> list[Prediction]:
    session = EvalSession(base, questions, mode=mode, batch_size=batch_size, log=lambda m: None,
                          root=Path(cache_root) if cache_root else None)
    preds, _ = session.predictions(Target(key, "merged", path))
    return preds


class RayExecutor:
    """Needs `pip install 'tiesmerge[ray]'`. Paths and the cache must be visible to the workers (one machine,
    or a shared filesystem on a cluster)."""

    def __init__(self, session: EvalSession, ray_address: str | None = None, num_cpus: int | None = None, **_):
        try:
            import ray
        except ImportError:
            raise BadInputError("--executor ray needs Ray: pip install 'tiesmerge[ray]'") from None
        self.ray, self.session = ray, session
        if not ray.is_initialized():
            kwargs = {"address": ray_address} if ray_address else {"num_cpus": num_cpus, "include_dashboard": False}
            ray.init(ignore_reinit_error=True, log_to_driver=False, **kwargs)

    def map(self, jobs: Sequence[Job]) -> Iterator[tuple[str, list[Prediction]]]:
        ray, s = self.ray, self.session
        remote = ray.remote(num_cpus=1)(_score_point)
        root = str(s.root) if s.root else None
        pending = {remote.remote(s.base, s.questions, s.mode, s.batch_size, key, str(path), root): key
                   for key, path in jobs}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                yield pending.pop(ref), ray.get(ref)


EXECUTORS: Mapping[str, Callable[..., object]] = {"local": LocalExecutor, "ray": RayExecutor}
