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


def test_unfrozen_flags_every_float_parameter_while_scoring_and_restores(tiny_base, adapter_set, tmp_path):
    """The scoring speed-up (torch's CPU bf16 linear is ~2× slower on frozen weights) leaves PEFT's freezing as
    it was and does not change a score."""
    from tiesmerge.eval.models import unfrozen

    s = EvalSession(str(tiny_base), QS, mode="cloze", batch_size=2, root=tmp_path, log=lambda m: None,
                    dtype="bfloat16")
    target = Target("rs8", "merged", str(adapter_set["rs8"]))
    first, _ = s.predictions(target)
    before = {n: p.requires_grad for n, p in s._peft.named_parameters()}
    assert not all(before.values())  # PEFT froze (at least) the wrapped base layers
    with unfrozen(s._peft) as m:
        assert all(p.requires_grad for p in m.parameters() if p.is_floating_point())
    assert {n: p.requires_grad for n, p in s._peft.named_parameters()} == before
    from tiesmerge.eval.cloze import score_cloze
    from tiesmerge.eval.models import fused

    with fused(s._peft, s._loaded) as m:  # the same adapter, scored without the flags: identical log-probs
        plain = score_cloze(m, s._tokenizer, QS, batch_size=2)
    for a, b in zip(first, plain):
        assert a.predicted == b.predicted
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-6, rtol=0)
