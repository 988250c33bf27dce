"""A training checkpoint without pickle: the student's factors, its best factors and the optimizer's tensors in
one safetensors file, the rest (step, history, the run's key) in JSON. Written atomically (temp file, rename); a
checkpoint from another run (other inputs or settings: another key) is ignored, never mixed in."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from tiesmerge.atomic import replace_file

TENSORS, STATE = "checkpoint.safetensors", "checkpoint.json"


class Checkpoint:
    def __init__(self, path: Path, key: str):
        self.path, self.key = Path(path), key

    def save(self, student: dict[str, torch.Tensor], optim: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        """`student`: the trained factors by PEFT's saved key."""
        tensors = {f"student/{k}": v for k, v in student.items()}
        tensors.update({f"best/{k}": v.contiguous() for k, v in state["best_state"].items()})
        steps = {}
        for idx, s in optim.state_dict()["state"].items():
            for name, value in s.items():
                if name == "step":
                    steps[str(idx)] = float(value)
                else:
                    tensors[f"optim/{idx}/{name}"] = value.detach().contiguous()
        meta = {k: v for k, v in state.items() if k != "best_state"}
        meta.update(key=self.key, optim_steps=steps)
        try:
            self._write(tensors, meta)
        except OSError as exc:
            from tiesmerge.atomic import disk_error

            raise (disk_error(exc, self.path) or exc) from None

    def _write(self, tensors: dict, meta: dict) -> None:
        from safetensors.torch import save_file

        self.path.mkdir(parents=True, exist_ok=True)
        for name, write in ((TENSORS, lambda tmp: save_file(tensors, tmp)),
                            (STATE, lambda tmp: Path(tmp).write_text(json.dumps(meta)))):
            replace_file(self.path / name, lambda tmp, write=write: write(str(tmp)))

    def load(self, optim: torch.optim.Optimizer) -> dict[str, Any] | None:
        """The saved state (the optimizer restored in place; the student's factors under "student", for the caller
        to load), or None when there is no checkpoint of this run."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            meta = json.loads((self.path / STATE).read_text())
            tensors = load_file(str(self.path / TENSORS))
        except (OSError, ValueError, SafetensorError):
            return None
        if not isinstance(meta, dict) or meta.get("key") != self.key:
            return None
        opt = optim.state_dict()
        restored: dict[int, dict] = {}
        for name, value in tensors.items():
            if name.startswith("optim/"):
                _, idx, field = name.split("/", 2)
                restored.setdefault(int(idx), {})[field] = value
        for idx, step in meta.pop("optim_steps").items():
            restored.setdefault(int(idx), {})["step"] = torch.tensor(step)
        opt["state"] = restored
        optim.load_state_dict(opt)
        meta["best_state"] = {k[5:]: v for k, v in tensors.items() if k.startswith("best/")}
        meta["student"] = {k[8:]: v for k, v in tensors.items() if k.startswith("student/")}
        meta.pop("key")
        return meta

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
