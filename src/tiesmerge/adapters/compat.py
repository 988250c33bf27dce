"""Check that a set of adapters can be merged, and plan which adapters hold each module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from tiesmerge.adapters.reader import AdapterReader, ModuleEntry, natural_key
from tiesmerge.errors import BadInputError


@dataclass(frozen=True)
class ModulePlan:
    """One output module: its name, shape, and the indices of the adapters that adapt it.

    A module present in only some adapters is merged over those that have it; the others
    contribute nothing to it (their weights are left out of its normalisation too).
    """

    name: str
    d_out: int
    d_in: int
    embedding: bool
    members: tuple[int, ...]
    a_key: str
    b_key: str


@dataclass(frozen=True)
class SetPlan:
    modules: tuple[ModulePlan, ...]
    base_model: str | None
    dtype: torch.dtype  # the inputs' factor dtype (fp32 if they differ)
    max_input_rank: int
    fan_in_fan_out: bool
    task_type: str | None
    layers_restricted: bool
    passthrough: tuple[tuple[str, int], ...] = ()  # (key, index of an adapter holding it): copied unchanged

    @property
    def shared_count(self) -> int:
        return sum(1 for m in self.modules if len(m.members) > 1)


def _normalise_base(name: str | None) -> str | None:
    return name.rstrip("/") if name else None


def check_base(readers: Sequence[AdapterReader], expected: str | None, allow_mismatch: bool) -> str | None:
    """The common base model of the set (None if no adapter names one)."""
    named = [(r.name, _normalise_base(r.settings.base_model)) for r in readers if r.settings.base_model]
    bases = {b for _, b in named}
    if expected is not None:
        bases_with_expected = bases | {_normalise_base(expected)}
    else:
        bases_with_expected = bases
    if len(bases_with_expected) > 1 and not allow_mismatch:
        detail = ", ".join(f"{n}: {b}" for n, b in named)
        if expected is not None:
            detail += f"; recipe base_model: {expected}"
        raise BadInputError(
            f"adapters were trained on different base models ({detail}); merging them is usually "
            "meaningless — pass --allow-base-mismatch (or allow_base_mismatch: true) if they are the same model"
        )
    if expected is not None:
        return expected
    return named[0][1] if named else None


def swapped_message(label: str, module: str, entry: ModuleEntry, expected: list[int], where: str) -> str:
    """The message for a module whose ΔW is the transpose of what it should be: lora_A and lora_B swapped (each
    transposed), as when B.T was saved as lora_A."""
    r = getattr(entry, "rank", "r")
    return (f"{label}: module {module!r} has lora_A [{r}, {entry.d_in}] and lora_B [{entry.d_out}, "
            f"{r}], so ΔW is {[entry.d_out, entry.d_in]}, the transpose of {expected} in {where}: its lora_A and "
            "lora_B look swapped (PEFT stores lora_A as [r, in] and lora_B as [out, r]); re-save them as "
            "lora_A = B.T, lora_B = A.T")


def plan_set(readers: Sequence[AdapterReader], expected_base: str | None = None, allow_base_mismatch: bool = False) -> SetPlan:
    """Validate the adapter set as a whole and return the per-module merge plan."""
    if not readers:
        raise BadInputError("no adapters given; a recipe needs at least one adapter")
    base = check_base(readers, expected_base, allow_base_mismatch)
    fifo = {r.settings.fan_in_fan_out for r in readers}
    if len(fifo) > 1:
        raise BadInputError("adapters disagree on fan_in_fan_out, so their factors are laid out differently")

    first: dict[str, ModuleEntry] = {}
    members: dict[str, list[int]] = {}
    for i, reader in enumerate(readers):
        for name, entry in reader.modules.items():
            seen = first.setdefault(name, entry)
            if (seen.d_out, seen.d_in, seen.embedding) != (entry.d_out, entry.d_in, entry.embedding):
                owner = readers[members[name][0]].name
                if (seen.d_in, seen.d_out) == (entry.d_out, entry.d_in) and seen.embedding == entry.embedding:
                    raise BadInputError(swapped_message(f"adapter {reader.name!r}", name, entry, list(seen.shape),
                                                        f"adapter {owner!r}"))
                raise BadInputError(
                    f"module {name!r} is {list(seen.shape)} in adapter {owner!r} but {list(entry.shape)} "
                    f"in adapter {reader.name!r}: the adapters were trained on different base models"
                )
            members.setdefault(name, []).append(i)

    passthrough = check_passthrough(readers)
    dtypes = {e.dtype for r in readers for e in r.modules.values()}
    task_types = {r.settings.task_type for r in readers}
    modules = tuple(
        ModulePlan(
            name=name,
            d_out=first[name].d_out,
            d_in=first[name].d_in,
            embedding=first[name].embedding,
            members=tuple(members[name]),
            a_key=first[name].a_key,
            b_key=first[name].b_key,
        )
        for name in sorted(first, key=natural_key)
    )
    return SetPlan(
        modules=modules,
        base_model=base,
        dtype=dtypes.pop() if len(dtypes) == 1 else torch.float32,
        max_input_rank=max(e.rank for r in readers for e in r.modules.values()),
        fan_in_fan_out=fifo.pop(),
        task_type=task_types.pop() if len(task_types) == 1 else None,
        layers_restricted=any(r.settings.layers_restricted for r in readers),
        passthrough=passthrough,
    )


def check_passthrough(readers: Sequence[AdapterReader]) -> tuple[tuple[str, int], ...]:
    """Base-layer weights saved with embedding LoRA must be identical wherever they appear."""
    out = []
    for key in sorted({k for r in readers for k in r.passthrough}):
        holders = [i for i, r in enumerate(readers) if key in r.passthrough]
        first = readers[holders[0]].tensor(key)
        for i in holders[1:]:
            if not torch.equal(first, readers[i].tensor(key)):
                raise BadInputError(
                    f"adapters {readers[holders[0]].name!r} and {readers[i].name!r} carry different base weights "
                    f"{key!r} (a resized vocabulary?); they cannot share one merged adapter"
                )
        out.append((key, holders[0]))
    return tuple(out)
