"""The `demo` sweep preset merges `make demo`'s specialists: the shipped demo.yaml's settings, overrides included."""

from __future__ import annotations

from tiesmerge.demo import specialists
from tiesmerge.demo.config import load_demo_config


def test_preset_specialists_use_the_shipped_demo_settings(monkeypatch):
    seen = {}

    def fake_train(config, train_sets, progress, log, root=None):
        seen["config"], seen["sizes"] = config, {d: len(q) for d, q in train_sets.items()}
        return {}

    monkeypatch.setattr(specialists, "train_specialists", fake_train)
    specialists.preset_specialists("some/base", progress=None, log=lambda m: None)
    shipped = load_demo_config(None)
    config = seen["config"]
    assert config.base == "some/base"
    for domain in shipped.domains:  # same cache keys as `tiesmerge demo` would use on that base
        assert config.train_for(domain) == shipped.train_for(domain)
        assert specialists.specialist_key(config, domain) == specialists.specialist_key(
            shipped.model_copy(update={"base": "some/base"}), domain)
    assert config.train_for("code").steps != config.train_for("math").steps  # the per-domain override is there
    assert seen["sizes"] == {d: 700 for d in shipped.domains}
