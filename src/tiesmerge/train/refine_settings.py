"""refine's settings: the target it distils toward and how it trains, each checked in one place."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from tiesmerge.calibration.prompts import PromptFormat
from tiesmerge.choices import Choice
from tiesmerge.errors import BadInputError


class RefineTarget(Choice):
    greedy = "greedy"  # cross-entropy on the teacher's greedy continuation
    kl = "kl"  # KL(teacher ‖ student) on the vocabulary at the continuation's positions
    kl_all = "kl_all"  # the same at every position: the prompt's and the continuation's
    options = "options"  # KL at every token of each of a question's four options, teacher-forced after the prompt


@dataclass(frozen=True)
class RefineSettings:
    steps: int = 100  # skills suite: 92.0 % at 100 steps, 92.6 % at 150 (within noise), 2/3 of the time
    batch_size: int = 16
    lr: float = 1e-3
    tokens: int = 6  # length of the teacher's continuation that is matched
    target: RefineTarget = RefineTarget.kl_all  # measured best on the skills suite (docs/calibrated.md)
    prompt_format: PromptFormat = PromptFormat.cloze
    heldout: float = 0.1  # share of each adapter's prompts held out (at least 1, at most 64)
    eval_every: int = 25
    patience: int = 3  # evaluations without a better held-out loss before stopping
    seed: int = 0
    keep: bool = True  # a prompt the start already continues as its teacher does is distilled toward the start
    normalize: bool = True  # each teacher's loss divided by the start's held-out loss on it
    autocast: bool = False  # forward passes in bfloat16 (factors and optimizer stay float32): cost 3–7 points

    def check(self) -> None:
        for name in ("steps", "batch_size", "tokens", "eval_every"):
            if getattr(self, name) < 1:
                raise BadInputError(f"refine {name.replace('_', '-')} must be at least 1")
        if not (math.isfinite(self.lr) and 0 < self.lr < 1):
            raise BadInputError(f"refine --lr must be in (0, 1), got {self.lr}")
        if not 0 < self.heldout < 1:
            raise BadInputError(f"refine --heldout must be a share in (0, 1), got {self.heldout}")
        if self.target is RefineTarget.options and self.prompt_format is PromptFormat.letters:
            raise BadInputError("refine --target options scores each option's text after a cloze prompt; use "
                                "--prompt-format cloze (letters prompts show the options: use kl or kl_all there)")
        if self.patience < 1:
            raise BadInputError("refine --patience must be at least 1")
        for name in ("keep", "normalize", "autocast"):
            if not isinstance(getattr(self, name), bool):
                raise BadInputError(f"refine {name} must be true or false, got {getattr(self, name)!r}")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["target"], d["prompt_format"] = self.target.value, self.prompt_format.value
        return d
