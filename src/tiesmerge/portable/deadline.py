"""Per-item deadlines without threads.

Two layers, both in the calling thread:
- `DeadlineStopping`: a transformers stopping criterion that ends generation when the next token would
  land past the deadline (it measures the time per decoding step as it goes);
- `hard_limit`: a backstop for a single step that is slower than predicted — SIGALRM (main thread, Unix)
  raises `DeadlineExceeded` inside the running Python code, and the caller answers with its fallback.
Nothing is left running after an item: no thread is ever started.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Iterator

import torch


class DeadlineExceeded(Exception):
    """The item's wall-clock budget ran out inside a model call."""


class Deadline:
    """A wall-clock budget started now (time.monotonic)."""

    def __init__(self, seconds: float, clock=time.monotonic):
        self.clock = clock
        self.start = clock()
        self.at = self.start + seconds

    def remaining(self) -> float:
        return self.at - self.clock()

    def elapsed(self) -> float:
        return self.clock() - self.start

    def sub(self, reserve: float) -> "Deadline":
        """A deadline `reserve` seconds earlier (time kept back for the steps after this one)."""
        d = Deadline.__new__(Deadline)
        d.clock, d.start, d.at = self.clock, self.start, self.at - reserve
        return d


try:
    from transformers import StoppingCriteria as _Base
except ImportError:  # pragma: no cover - transformers is a dependency
    _Base = object


class DeadlineStopping(_Base):
    """Stop generating when the remaining time is less than `safety` × the slowest step seen so far.

    The first call comes after the prompt pass and the first token; from then on each call is one step.
    """

    def __init__(self, deadline: Deadline, safety: float = 1.5):
        self.deadline = deadline
        self.safety = safety
        self.last = deadline.clock()
        self.slowest = 0.0
        self.steps = 0
        self.stopped = False
        self.ids = None  # the tokens so far: what a caller keeps if the backstop ends generation mid-way
        self.prompt_len = 0  # where the generated tokens start in `ids` (set by the caller)

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        self.ids = input_ids
        now = self.deadline.clock()
        if self.steps:  # the first interval includes the prompt pass: not a per-token time
            self.slowest = max(self.slowest, now - self.last)
        self.last = now
        self.steps += 1
        stop = self.deadline.remaining() < self.safety * self.slowest + 0.02
        self.stopped = self.stopped or stop
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


def _alarm_usable() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def hard_limit(deadline: Deadline) -> Iterator[None]:
    """Raise DeadlineExceeded in this (main) thread if the block is still running at the deadline.

    Outside the main thread, or where SIGALRM does not exist, the block simply runs (the stopping
    criterion still bounds generation)."""
    remaining = deadline.remaining()
    if remaining <= 0:
        raise DeadlineExceeded("no time left")
    if not _alarm_usable():
        yield
        return

    def _fire(signum, frame):
        raise DeadlineExceeded("deadline reached")

    previous = signal.signal(signal.SIGALRM, _fire)
    signal.setitimer(signal.ITIMER_REAL, remaining)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
