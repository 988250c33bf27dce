"""`tiesmerge.peft.add_merged_adapter` takes add_weighted_adapter's arguments and adds the merge a CLI run of the
same adapters saved to disk writes (RSLoRA and plain LoRA, mixed ranks, rank_pattern / alpha_pattern); where PEFT
itself is exact (`cat` on plain LoRA) the two agree, and on RSLoRA PEFT's result is √R too strong (PEFT 0.21.2)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from tests.cli.helpers import run_cli
from tests.conftest import load_base, make_peft_adapter, peft_deltas
from tiesmerge.errors import BadInputError
from tiesmerge.peft import add_merged_adapter


def loaded(tiny_base, adapters: dict):
    from peft import PeftModel

    names = list(adapters)
    model = PeftModel.from_pretrained(load_base(tiny_base), str(adapters[names[0]]), adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(str(adapters[name]), adapter_name=name)
    return model


def model_deltas(model, name: str) -> dict[str, torch.Tensor]:
    """ΔW = scaling · B · A of adapter `name` in every LoRA layer of the model, as PEFT applies it."""
    from peft.tuners.lora import LoraLayer

    out = {}
    for module_name, module in model.base_model.model.named_modules():
        if isinstance(module, LoraLayer) and name in module.lora_A:
            a, b = module.lora_A[name].weight.double(), module.lora_B[name].weight.double()
            out[module_name] = module.scaling[name] * (b @ a)
    return out


@pytest.mark.parametrize("combination, flags", [
    ("ties", ["--method", "ties", "--density", "0.5", "--rank", "16"]),
    ("cat", ["--method", "task_arithmetic", "--rank", "full"]),
    ("svd", ["--method", "task_arithmetic", "--rank", "16"]),
])
def test_add_merged_adapter_equals_a_cli_merge_of_the_saved_adapters(adapter_set, tiny_base, tmp_path, combination,
                                                                      flags):
    names = ["rs8", "plain4", "rs16", "pattern"]  # RSLoRA and plain, ranks 8/4/16/6, rank and alpha patterns
    weights = [0.4, 0.3, 0.2, 0.1]
    model = loaded(tiny_base, {n: adapter_set[n] for n in names})
    merged = add_merged_adapter(model, names, weights, "merged", combination_type=combination,
                                svd_rank=16 if combination != "cat" else None, density=0.5)
    res = run_cli("merge", *[x for n, w in zip(names, weights) for x in ("--adapter", f"{n}={adapter_set[n]}:{w}")],
                  *flags, "-o", tmp_path / "cli")
    assert res.exit_code == 0, res.stderr
    want = peft_deltas(tiny_base, tmp_path / "cli")  # the CLI's adapter as PEFT loads it
    got = model_deltas(model, "merged")
    assert set(got) == set(want) and merged.summary["modules"] == len(want)
    for module in want:
        assert_close(got[module], want[module].double(), rtol=1e-5, atol=1e-6)
    model.set_adapter("merged")  # usable as any adapter, and saved as one
    model.save_pretrained(tmp_path / "saved", selected_adapters=["merged"])
    saved = peft_deltas(tiny_base, tmp_path / "saved" / "merged")
    for module in want:
        assert_close(saved[module].double(), want[module].double(), rtol=1e-5, atol=1e-6)


def test_where_peft_is_exact_the_two_agree_and_on_rslora_peft_is_sqrt_r_too_strong(tiny_base, tmp_path):
    plain = {n: make_peft_adapter(tiny_base, tmp_path / n, seed=s, r=4, alpha=8, rslora=False)
             for n, s in (("p1", 11), ("p2", 12))}
    model = loaded(tiny_base, plain)
    model.base_model.add_weighted_adapter(["p1", "p2"], [0.6, 0.4], "peft_cat", combination_type="cat")
    add_merged_adapter(model, ["p1", "p2"], [0.6, 0.4], "ours_cat", combination_type="cat")
    for module, want in model_deltas(model, "peft_cat").items():
        assert_close(model_deltas(model, "ours_cat")[module], want, rtol=1e-5, atol=1e-6)

    rs = {n: make_peft_adapter(tiny_base, tmp_path / n, seed=s, r=4, alpha=8, rslora=True)
          for n, s in (("r1", 13), ("r2", 14))}
    model = loaded(tiny_base, rs)
    reference = {m: 0.6 * d1 + 0.4 * model_deltas(model, "r2")[m] for m, d1 in model_deltas(model, "r1").items()}
    model.base_model.add_weighted_adapter(["r1", "r2"], [0.6, 0.4], "peft_cat", combination_type="cat")
    add_merged_adapter(model, ["r1", "r2"], [0.6, 0.4], "ours_cat", combination_type="cat")
    ours, peft = model_deltas(model, "ours_cat"), model_deltas(model, "peft_cat")
    for module, want in reference.items():
        assert_close(ours[module], want, rtol=1e-5, atol=1e-6)
        ratio = float(peft[module].norm() / want.norm())
        assert ratio == pytest.approx(math.sqrt(8), rel=1e-6)  # R = 4 + 4: PEFT keeps use_rslora at r = α = 8


def test_linear_agrees_where_peft_is_exact_and_is_sqrt_r_off_on_rslora(tiny_base, tmp_path):
    """PEFT's `linear` scales A by √w·s and B by √w: exact for one adapter of a plain LoRA (its cross terms vanish),
    and on RSLoRA its merged adapter's scaling r/√r = √r is left on top."""
    for rslora, factor in ((False, 1.0), (True, 2.0)):  # r = 4: √4 = 2
        name = f"one{int(rslora)}"
        path = make_peft_adapter(tiny_base, tmp_path / name, seed=21, r=4, alpha=8, rslora=rslora)
        model = loaded(tiny_base, {name: path})
        model.base_model.add_weighted_adapter([name], [0.7], "peft_linear", combination_type="linear")
        add_merged_adapter(model, [name], [0.7], "ours_linear", combination_type="linear")
        own = model_deltas(model, name)
        ours, peft = model_deltas(model, "ours_linear"), model_deltas(model, "peft_linear")
        for module, delta in own.items():
            assert_close(ours[module], 0.7 * delta, rtol=1e-5, atol=1e-6)
            assert_close(peft[module], factor * 0.7 * delta, rtol=1e-5, atol=1e-6)


def test_unsupported_or_wrong_calls_are_one_line_and_leave_the_model_alone(adapter_set, tiny_base):
    model = loaded(tiny_base, {"rs8": adapter_set["rs8"], "plain4": adapter_set["plain4"]})
    cases = [
        (dict(combination_type="dare_magic"), "combination_type 'dare_magic' is not one of"),
        (dict(combination_type="svd", svd_clamp=0.99), "svd_clamp is not supported"),
        (dict(combination_type="ties", majority_sign_method="mode"), "majority_sign_method 'mode'"),
        (dict(combination_type="ties", density=0.0), "density 0 is outside (0, 1]"),
        (dict(method="no_such"), "method"),
        (dict(combination_type="ties", method="iso_c"), "both name the method"),
    ]
    for kwargs, needle in cases:
        with pytest.raises(BadInputError, match=None) as err:
            add_merged_adapter(model, ["rs8", "plain4"], [0.5, 0.5], "merged", **kwargs)
        assert needle in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(BadInputError, match="'nope' are not loaded"):
        add_merged_adapter(model, ["rs8", "nope"], [0.5, 0.5], "merged")
    with pytest.raises(BadInputError, match="already exists"):
        add_merged_adapter(model, ["rs8", "plain4"], [0.5, 0.5], "rs8")
    assert set(model.peft_config) == {"rs8", "plain4"}


def test_strings_are_never_lists_and_a_failed_call_leaves_the_model_exactly_as_it_was(adapter_set, tiny_base):
    """A str where PEFT takes a list is refused (it used to be split into one-letter adapter names, and weights "11"
    into [1, 1]); repeated names, a None or empty adapter name are refused before PEFT is touched."""
    model = loaded(tiny_base, {"rs8": adapter_set["rs8"], "plain4": adapter_set["plain4"]})
    model.load_adapter(str(adapter_set["rs8"]), adapter_name="a")
    model.load_adapter(str(adapter_set["plain4"]), adapter_name="b")
    before = {k: repr(v) for k, v in model.peft_config.items()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    type_errors = [
        (("ab", [0.5, 0.5], "m"), "list of adapter names"),
        ((["a", "b"], "11", "m"), "list of numbers"),
        ((["a", "b"], [0.5, float("nan")], "m"), "finite numbers"),
        ((["a", "b"], [0.5, True], "m"), "finite numbers"),
        ((["a", ""], [0.5, 0.5], "m"), "non-empty string"),
        ((["a", "b"], [0.5, 0.5], None), "adapter_name must be"),
        ((["a", "b"], [0.5, 0.5], ""), "adapter_name must be"),
    ]
    for args, needle in type_errors:
        with pytest.raises(TypeError, match=needle):
            add_merged_adapter(model, *args)
    with pytest.raises(BadInputError, match="'a' is named twice"):
        add_merged_adapter(model, ["a", "a"], [0.5, 0.5], "m")
    assert {k: repr(v) for k, v in model.peft_config.items()} == before
    after = model.state_dict()
    assert set(after) == set(state) and all(torch.equal(after[k], state[k]) for k in state)
    model.delete_adapter("a")  # and PEFT can still manage every adapter it holds


def test_core_space_and_any_method_through_the_options(adapter_set, tiny_base, tmp_path):
    model = loaded(tiny_base, {"rs8": adapter_set["rs8"], "plain4": adapter_set["plain4"]})
    add_merged_adapter(model, ["rs8", "plain4"], [1.0, 1.0], "iso", method="iso_c", space="core", rank="full")
    res = run_cli("merge", "--adapter", f"a={adapter_set['rs8']}", "--adapter", f"b={adapter_set['plain4']}",
                  "--method", "iso_c", "--space", "core", "--rank", "full", "-o", tmp_path / "cli")
    assert res.exit_code == 0, res.stderr
    want = peft_deltas(tiny_base, tmp_path / "cli")
    got = model_deltas(model, "iso")
    for module in want:
        assert_close(got[module], want[module].double(), rtol=1e-5, atol=1e-6)
