"""Train (or reuse from the cache) one RSLoRA specialist per domain on its built-in train split."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

from tiesmerge.cache import cache_key, cached_dir
from tiesmerge.demo.config import DemoConfig
from tiesmerge.eval.questions import Question
from tiesmerge.progress import ProgressFactory
from tiesmerge.train.trainer import TrainSettings, train_adapter

TRAINER_VERSION = 3  # bump when the trainer's numbers change, so cached specialists are rebuilt



def specialist_key(config: DemoConfig, domain: str) -> str:
    return cache_key("specialist", TRAINER_VERSION, config.base, domain, config.n_per_domain, config.data_seed,
                     config.mode, config.train_for(domain))


def train_specialists(config: DemoConfig, train_sets: Mapping[str, Sequence[Question]], progress: ProgressFactory,
                      log: Callable[[str], None], root: Path | None = None) -> dict[str, Path]:
    """domain → adapter directory; each is trained only if its key is not in the cache."""
    from tiesmerge.eval.models import load_base

    out: dict[str, Path] = {}
    for domain in config.domains:
        spec = config.train_for(domain)
        settings = TrainSettings(steps=spec.steps, rank=spec.rank, alpha=spec.alpha, lr=spec.lr,
                                 batch_size=spec.batch_size, seed=spec.seed, warmup_steps=max(1, spec.steps // 10),
                                 target="text" if config.mode == "cloze" else "letter")

        def build(tmp: Path, domain=domain, settings=settings) -> None:
            model, tokenizer = load_base(config.base, dtype="float32", device="auto")  # fresh: training wraps it
            with progress(settings.steps, f"training {domain}", "steps") as hook:
                card = train_adapter(model, tokenizer, train_sets[domain], settings, tmp,
                                     progress=lambda s, t, loss: hook(s, t, f"loss {loss:.3f}"),
                                     card={"base": config.base, "domain": domain, "data": "builtin:train",
                                           "data_seed": config.data_seed, "n_per_domain": config.n_per_domain})
            log(f"trained {domain}: {card['examples']} questions, {settings.steps} steps, loss "
                f"{card['loss_first']:.3f} → {card['loss_last_10_mean']:.3f}, {card['seconds']:.0f} s")

        path, hit = cached_dir("specialists", domain, specialist_key(config, domain), build, root)
        if hit:
            log(f"reused {domain} specialist: {path}")
        out[domain] = path
    return out


def preset_specialists(base: str, progress: ProgressFactory, log: Callable[[str], None]) -> dict[str, Path]:
    """The demo's specialists on `base` (trained once, then cached): what the `demo` sweep preset merges — the
    shipped demo.yaml's settings (per-domain step overrides included), so they are `make demo`'s specialists."""
    from tiesmerge.demo.config import load_demo_config
    from tiesmerge.eval.builtin.build import build

    demo = load_demo_config(None).model_copy(update={"base": base})
    sets = build(demo.n_per_domain, demo.data_seed, domains=demo.domains)
    return train_specialists(demo, {d: sets["train"][d] for d in demo.domains}, progress, log)
