"""llama.cpp itself reads the GGUF LoRA export (slow: needs llama-cpp-python, a long source build — `pip install
'tiesmerge[llama]'`): on the embedded SmolLM2 GGUF base (Q4_1), the adapter's effect on the logits as llama.cpp
computes it matches PEFT's on the same weights (the cached base is that GGUF dequantized) within quantization noise."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow
TEXT = "Question: What is the capital of France?\nAnswer: The capital of France is Paris, a city on the Seine."


def test_llama_cpp_applies_the_gguf_adapter_as_peft_does(tmp_path):
    llama_cpp = pytest.importorskip("llama_cpp")
    from peft import PeftModel

    from tests.cli.helpers import run_cli
    from tests.conftest import make_peft_adapter
    from tiesmerge.eval.models import EMBEDDED, embedded_base, load_base

    base = embedded_base("smollm2")
    package, gguf_name, _ = EMBEDDED["smollm2"]
    gguf_base = Path(importlib.util.find_spec(package).origin).parent / gguf_name
    a = make_peft_adapter(base, tmp_path / "a", seed=1, r=8, alpha=2, rslora=True, targets=("q_proj", "v_proj", "down_proj"))
    b = make_peft_adapter(base, tmp_path / "b", seed=2, r=8, alpha=2, rslora=True, targets=("q_proj", "v_proj", "down_proj"))
    res = run_cli("merge", "--adapter", f"a={a}", "--adapter", f"b={b}", "--density", "0.5", "--rank", "auto",
                  "--device", "cpu", "-o", tmp_path / "merged")
    assert res.exit_code == 0, res.stderr
    res = run_cli("export", tmp_path / "merged", "--to", "gguf", "--base", base, "-o", tmp_path / "merged.gguf")
    assert res.exit_code == 0, res.stderr

    def llama_logits(lora: Path | None) -> tuple[np.ndarray, list[int]]:
        kw = {"lora_path": str(lora)} if lora else {}
        llm = llama_cpp.Llama(model_path=str(gguf_base), n_ctx=256, logits_all=True, verbose=False, n_threads=2, **kw)
        ids = llm.tokenize(TEXT.encode(), add_bos=False)
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float64), ids

    base_l, ids = llama_logits(None)
    with_l, _ = llama_logits(tmp_path / "merged.gguf")
    model, _ = load_base(str(base), device="cpu", dtype="float32")
    inp = torch.tensor([ids])
    with torch.no_grad():
        base_p = model(input_ids=inp).logits[0].double().numpy()
        peft = PeftModel.from_pretrained(model, str(tmp_path / "merged"))
        with_p = peft(input_ids=inp).logits[0].double().numpy()
    effect_llama, effect_peft = with_l - base_l, with_p - base_p
    noise = np.abs(base_l - base_p).mean()  # llama.cpp's Q4_1 kernels vs the dequantized fp32 weights
    corr = np.corrcoef(effect_llama.ravel(), effect_peft.ravel())[0, 1]
    rel = np.linalg.norm(effect_llama - effect_peft) / np.linalg.norm(effect_peft)
    scale = float((effect_llama * effect_peft).sum() / (effect_peft**2).sum())
    print(f"adapter effect: corr {corr:.4f}, relative error {rel:.3f}, best-fit scale {scale:.3f}, mean |effect| "
          f"{np.abs(effect_peft).mean():.3f}; base logits |llama.cpp − fp32| mean {noise:.3f}")
    assert np.abs(effect_peft).mean() > 3 * noise  # the adapter's effect stands out of the kernels' noise
    assert corr > 0.98 and rel < 0.2
    # and a wrong scale would show: half the effect is far off
    assert np.linalg.norm(effect_llama - 0.5 * effect_peft) / np.linalg.norm(effect_peft) > 0.4
