"""Turn a validated recipe into a merge job: open the adapters, check the set, resolve the settings."""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from tiesmerge.adapters import hub
from tiesmerge.adapters.compat import ModulePlan, SetPlan, plan_set
from tiesmerge.adapters.reader import AdapterReader
from tiesmerge.dtypes import FLOAT_DTYPES
from tiesmerge.errors import BadInputError
from tiesmerge.extras import require
from tiesmerge.merge.methods.mergekit_family import module_seed
from tiesmerge.merge.methods.regmean import OFF_DIAGONAL
from tiesmerge.merge.params import CORE
from tiesmerge.merge.recipe import Recipe
from tiesmerge.merge.registry import MethodSpec, get
from tiesmerge.merge.statistics import StatisticsFile
from tiesmerge.merge.truncated_svd import RankRequest
from tiesmerge.merge.types import MethodParams, RankMode, Space


@dataclass(frozen=True)
class MergeJob:
    recipe: Recipe
    readers: tuple[AdapterReader, ...]
    plan: SetPlan
    spec: MethodSpec
    rank: RankRequest
    out_dtype: torch.dtype
    warnings: tuple[str, ...] = ()  # one line each: what the user should know before the merge runs
    statistics: tuple[StatisticsFile, ...] = ()  # calibrated methods: one per adapter, checked at prepare

    def params_for(self, module: ModulePlan) -> MethodParams:
        """The method's parameters for one module, over the adapters that hold it."""
        p = self.recipe.parameters
        entries = [self.recipe.adapters[i] for i in module.members]
        default_density = p.density if p.density is not None else 1.0
        return MethodParams(
            weights=tuple(a.weight for a in entries),
            densities=tuple(a.density if a.density is not None else default_density for a in entries),
            lam=p.lam,
            sign=p.sign,
            normalize=self.spec.resolve_normalize(p.normalize),
            seed=module_seed(p.seed, module.name),
            options={d.name: p.get(d) for d in self.spec.parameters if d not in CORE},
        )


def prepare(recipe: Recipe, readers=None, log=None) -> MergeJob:
    """Open every adapter (headers only) and check the set; raises BadInputError, writes nothing. `readers`:
    adapters already open, one per recipe entry (e.g. adapters.memory.MemoryAdapter for an in-memory merge);
    `log` hears which copy a Hub id resolved to."""
    if readers is None:
        recipe = from_hub(recipe, log)
        readers = [AdapterReader(a.path, a.name) for a in recipe.adapters]
    readers = tuple(readers)
    plan = plan_set(readers, recipe.base_model, recipe.allow_base_mismatch)
    out = recipe.output
    if out.rank_mode is RankMode.fixed:
        rank = RankRequest(RankMode.fixed, rank=out.rank, svd=out.svd)
    elif out.rank_mode is RankMode.auto:
        rank = RankRequest(RankMode.auto, energy=out.energy, max_rank=out.max_rank or plan.max_input_rank, svd=out.svd)
    else:
        rank = RankRequest(RankMode.full, svd=out.svd)
    out_dtype = plan.dtype if out.dtype == "auto" else FLOAT_DTYPES[out.dtype]
    spec = get(recipe.method)
    if spec.extra is not None:
        require(spec.extra, f"method {recipe.method.value} ({spec.runs})")
    refuse_no_op(recipe)
    warnings = [w for reader in readers for w in reader.warnings]
    warnings += rank_warnings(recipe, readers, plan, spec, rank)
    stats = open_statistics(recipe, readers, plan) if spec.statistics is not None else ()
    return MergeJob(recipe, readers, plan, spec, rank, out_dtype, tuple(warnings), stats)


def from_hub(recipe: Recipe, log=None) -> Recipe:
    """Adapters named by a Hub id take the cache's snapshot folder as their path (downloaded unless offline)."""
    if all(a.hub is None for a in recipe.adapters):
        return recipe
    adapters = [a if a.hub is None else a.model_copy(update={"path": hub.resolve(a.hub, f"adapter {a.name!r}", log=log)})
                for a in recipe.adapters]
    return recipe.model_copy(update={"adapters": adapters})


def open_statistics(recipe: Recipe, readers, plan: SetPlan) -> tuple[StatisticsFile, ...]:
    """Each adapter's statistics file, checked against the adapter, the base and the modules to merge."""
    missing = [a.name for a in recipe.adapters if a.statistics is None]
    if missing:
        raise BadInputError(f"method {recipe.method.value} needs each adapter's input statistics; none for "
                            f"{', '.join(map(repr, missing))}: run `tiesmerge calibrate` (it fills in `statistics:`), "
                            "or give `calibration:` prompts whose statistics are cached")
    files = []
    kernels = get(recipe.method).statistics
    for i, (entry, reader) in enumerate(zip(recipe.adapters, readers)):
        f = StatisticsFile(entry.statistics, entry.name, reader.path)
        f.check_modules({m.name: m.d_in for m in plan.modules if i in m.members and not m.embedding})
        if f.meta.inputs != kernels.inputs:
            how = "`tiesmerge calibrate --pp`" if kernels.inputs == "merged" else "`tiesmerge calibrate` (without --pp)"
            raise BadInputError(f"statistics {entry.statistics}: inputs of the {f.meta.inputs} model; method "
                                f"{recipe.method.value} needs those of {how}")
        if kernels.inputs == "merged":
            check_merged_with(f, recipe)
        files.append(f)
    bases = {f.meta.base for f in files}
    if len(bases) > 1:
        raise BadInputError(f"the statistics were collected on different bases ({', '.join(sorted(bases))}); "
                            "run `tiesmerge calibrate` for every adapter on the one base")
    setups = {json.dumps(f.meta.collected_with, sort_keys=True) for f in files if f.meta.collected_with}
    if len(setups) > 1:
        raise BadInputError("the statistics were collected with different base weights, dtypes or quantization ("
                            + "; ".join(sorted(setups)) + "); run `tiesmerge calibrate` for every adapter with "
                            "the same base and --dtype / --4bit")
    embeddings = [m.name for m in plan.modules if m.embedding]
    if embeddings:
        raise BadInputError(f"method {recipe.method.value} merges linear layers; {embeddings[0]} is an embedding")
    return tuple(files)


def check_merged_with(f: StatisticsFile, recipe: Recipe) -> None:
    """RegMean++ statistics hold for the merge that produced them: the same adapters, weights, a and λ."""
    p = recipe.parameters
    want = {"off_diagonal": p.get(OFF_DIAGONAL), "lambda": p.lam,
            "adapters": sorted(a.name for a in recipe.adapters),
            "weights": {a.name: a.weight for a in recipe.adapters}}
    got = f.meta.merged_with or {}
    diff = [k for k in want if got.get(k) != want[k]]
    if diff:
        raise BadInputError(f"statistics {f.path} were collected for a merge with other {', '.join(diff)} "
                            f"({', '.join(f'{k}={got.get(k)!r}' for k in diff)}); run `tiesmerge calibrate --pp` "
                            "with this recipe's settings")


def refuse_no_op(recipe: Recipe) -> None:
    """A merge whose result is ΔW = 0 by its settings is a mistake, not a merge."""
    if recipe.parameters.lam == 0:
        raise BadInputError("lambda is 0: the merged ΔW would be 0 in every module; set lambda (1 is the usual value)")
    if all(a.weight == 0 for a in recipe.adapters):
        raise BadInputError("every adapter's weight is 0: the merged ΔW would be 0 in every module; give the adapters "
                            "non-zero weights")


def module_cap(plan_module: ModulePlan, readers, spec: MethodSpec, space: Space) -> int:
    """The largest rank a module's merged ΔW can have: its size, and Σ r_i where the merge stays in the factors'
    span (core space, linear methods)."""
    cap = min(plan_module.d_out, plan_module.d_in)
    if space is Space.core or spec.linear or spec.statistics is not None:
        cap = min(cap, sum(readers[i].modules[plan_module.name].rank for i in plan_module.members))
    return cap


def rank_warnings(recipe: Recipe, readers, plan: SetPlan, spec: MethodSpec, rank: RankRequest) -> list[str]:
    if rank.mode is not RankMode.fixed:
        return []
    caps = {m.name: module_cap(m, readers, spec, recipe.space) for m in plan.modules}
    over = [name for name, cap in caps.items() if rank.rank > cap]
    if not over:
        return []
    low = min(over, key=lambda n: caps[n])
    return [f"output rank {rank.rank} is more than {len(over)} of {len(caps)} modules can hold (e.g. {low}: at most "
            f"{caps[low]}); those are written at their largest possible rank, exactly"]


def describe(job: MergeJob) -> list[str]:
    """Human-readable plan lines (used by --dry-run and validate)."""
    r = job.recipe
    values = {d.name: r.parameters.get(d) for d in job.spec.parameters}  # as given, or the declared default
    shown = {k: (v.value if hasattr(v, "value") else v) for k, v in values.items() if v is not None}
    lines = [
        f"method: {r.method.value} ({job.spec.runs}), {r.space.value} space"
        + (f"  parameters: {shown}" if shown else ""),
        f"base model: {job.plan.base_model or 'not named by the adapters'}",
    ]
    for entry, reader in zip(r.adapters, job.readers):
        ranks = sorted({m.rank for m in reader.modules.values()})
        scales = sorted({round(m.scale, 6) for m in reader.modules.values()})
        lines.append(
            f"  {entry.name}: weight {entry.weight}, r {'/'.join(map(str, ranks))}, "
            f"scale {'/'.join(f'{s:g}' for s in scales)}, rslora {reader.settings.use_rslora}, "
            f"{len(reader.modules)} modules"
        )
    n_all = sum(1 for m in job.plan.modules if len(m.members) == len(job.readers))
    lines.append(f"modules: {len(job.plan.modules)} ({n_all} in every adapter)")
    rank = job.rank
    what = {"int": f"rank {rank.rank}", "auto": f"auto (energy {rank.energy}, max {rank.max_rank})", "full": "full (lossless)"}
    lines.append(f"output: {what[rank.mode]}, dtype {str(job.out_dtype).removeprefix('torch.')}")
    return lines


def output_bytes(job: MergeJob) -> int:
    """An upper bound on the written adapter's size: each module at the largest rank the request allows."""
    width = torch.empty((), dtype=job.out_dtype).element_size()
    total = 0
    for m in job.plan.modules:
        cap = module_cap(m, job.readers, job.spec, job.recipe.space)
        rank = {RankMode.fixed: min(job.rank.rank or cap, cap), RankMode.auto: min(job.rank.max_rank or cap, cap),
                RankMode.full: cap}[job.rank.mode]
        total += rank * (m.d_in + m.d_out) * width
    for key, holder in job.plan.passthrough:
        total += job.readers[holder].tensor_bytes(key)
    return total + (1 << 20)  # header, config, card, report
