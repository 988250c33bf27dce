"""EvalSession's scoring dtype: bfloat16 scores the base in bfloat16 (the domain quality suite's setting), with
its own cache entries; its log-probabilities stay close to float32's on the same questions."""

from __future__ import annotations

import torch

from tiesmerge.eval.questions import make_question
from tiesmerge.eval.report import Target
from tiesmerge.eval.session import EvalSession

QS = [
    make_question("What is 2 + 2?", ["3", "4", "5", "22"], "B", "math"),
    make_question("Capital of France?", ["Paris", "Rome", "Oslo", "Bern"], "A", "humanities"),
    make_question("Symbol of iron?", ["Ir", "In", "Fe", "I"], "C", "stem"),
]


def test_bfloat16_session_scores_in_bfloat16_with_its_own_cache(tiny_base, adapter_set, tmp_path):
    s32 = EvalSession(str(tiny_base), QS, mode="cloze", batch_size=2, root=tmp_path, log=lambda m: None)
    s16 = EvalSession(str(tiny_base), QS, mode="cloze", batch_size=2, root=tmp_path, log=lambda m: None,
                      dtype="bfloat16")
    target = Target("rs8", "merged", str(adapter_set["rs8"]))
    assert s32.key(target) != s16.key(target)
    p32, hit32 = s32.predictions(target)
    p16, hit16 = s16.predictions(target)
    assert not hit32 and not hit16  # the bf16 run did not reuse float32's entry
    assert next(s16._model.parameters()).dtype == torch.bfloat16
    assert next(s32._model.parameters()).dtype == torch.float32
    for a, b in zip(p32, p16):
        torch.testing.assert_close(torch.tensor(b.logprobs), torch.tensor(a.logprobs), atol=0.15, rtol=0.05)
    assert s16.predictions(target)[1]  # cached now
