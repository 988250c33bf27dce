"""Export targets."""

from __future__ import annotations

from tiesmerge.choices import Choice


class ExportFormat(Choice):
    vllm = "vllm"  # uniform rank from vLLM's allowed set, scale folded into B, no patterns
    gguf = "gguf"  # a llama.cpp LoRA adapter file: uniform rank, α = rank, llama.cpp tensor names
    model = "model"  # the base with ΔW folded into its weights: a full model, no LoRA at serving time
