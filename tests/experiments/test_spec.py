"""Specs: parsing, the errors that list what is valid, and expansion into grid × variants × seeds."""
from pathlib import Path

import pytest

from normlab.experiments import SpecError, expand, list_presets, load_spec, parse_spec
from normlab.experiments.spec import METRICS

PRESETS = ["bn_impls", "bn_layers", "bn_momentum", "bn_placement", "bn_vs_dropout", "bn_vs_none", "normalizers", "zoo"]


def spec(**data):
    return parse_spec({"model": {"name": "lenet_bn"}, **data})


def test_expansion_is_variants_times_grid_times_seeds_in_order():
    s = spec(seeds=[0, 1], grid={"optim.lr": [0.5, 1.0]},
             variants={"all": {}, "only_2_4": {"model.options.norm_slots": [2, 4]}})
    runs = expand(s)
    assert [r.name for r in runs] == [
        "all-lr0.5-seed0", "all-lr0.5-seed1", "all-lr1.0-seed0", "all-lr1.0-seed1",
        "only_2_4-lr0.5-seed0", "only_2_4-lr0.5-seed1", "only_2_4-lr1.0-seed0", "only_2_4-lr1.0-seed1"]
    assert [r.config.optim.lr for r in runs] == [0.5, 0.5, 1.0, 1.0] * 2
    assert [r.config.train.seed for r in runs] == [0, 1] * 4
    assert runs[4].config.model.options == {"norm_slots": [2, 4]} and runs[0].config.model.options == {}
    assert runs[4].group == "only_2_4-lr0.5" and runs[4].point == {"optim.lr": 0.5}


def test_one_variant_and_no_grid_gives_one_group_per_seed():
    runs = expand(spec(seeds=[3]))
    assert [(r.name, r.group, r.config.train.seed) for r in runs] == [("base-seed3", "base", 3)]


def test_book_settings_come_from_each_runs_model_and_the_spec_wins_over_them():
    s = parse_spec({"optim": {"lr": 0.2}, "variants": {"a": {"model.name": "alexnet"}, "v": {"model.name": "vgg"}}})
    alexnet, vgg = expand(s)
    assert (alexnet.config.data.resize, alexnet.config.data.batch_size) == (224, 128)
    assert vgg.config.model.options == {"width_divisor": 4}
    assert alexnet.config.optim.lr == vgg.config.optim.lr == 0.2  # the base section beats the book


def test_scale_overrides_settings_seeds_and_single_variants():
    s = spec(seeds=[0, 1, 2], variants={"a": {"epochs": 5}, "b": {}},
             scale={"quick": {"epochs": 1, "train_subset": 100, "seeds": [7],
                              "variants": {"b": {"data.resize": 30}}}})
    full, quick = expand(s, "full"), expand(s, "quick")
    assert len(full) == 6 and {r.config.train.epochs for r in full} == {5, 10}
    assert [(r.name, r.config.train.epochs, r.config.data.train_subset, r.config.data.resize) for r in quick] == [
        ("a-seed7", 1, 100, None), ("b-seed7", 1, 100, 30)]


@pytest.mark.parametrize("data, message", [
    ({"grdi": {}}, "unknown spec key 'grdi'; valid keys: name, description, seeds, metrics, baseline, data, model"),
    ({"optim": {"lrr": 1}}, "unknown config key 'optim.lrr'; valid keys: data.dataset"),
    ({"optimizer": {"lr": 1}}, "unknown spec key 'optimizer'; valid keys"),
    ({"grid": {"lr": 0.5}}, "grid axis 'lr' takes a non-empty list"),
    ({"grid": {"lr": []}}, "grid axis 'lr' takes a non-empty list"),
    ({"grid": {"lrr": [1]}}, "grid axis 'lrr': unknown config key 'lrr'; valid keys: data.dataset"),
    ({"grid": {"epochs": ["many"]}}, "grid axis 'epochs': config key train.epochs takes int"),
    ({"variants": {"a": {"lr": "fast"}}}, "variant 'a': config key optim.lr takes float"),
    ({"variants": {"a": 3}}, "variant 'a' takes a table of overrides"),
    ({"seeds": 3}, "seeds takes a non-empty list of integers"),
    ({"seeds": [0, "1"]}, "seeds takes a non-empty list of integers"),
    ({"metrics": ["acc"]}, "unknown metric 'acc'; valid metrics: " + ", ".join(METRICS)),
    ({"scale": {"tiny": {}}}, r"unknown scale \[scale.tiny\]; valid scales: quick, full"),
    ({"scale": {"quick": {"epoch": 1}}}, r"\[scale.quick\]: unknown config key 'epoch'; valid keys"),
    ({"scale": {"quick": {"seeds": []}}}, r"\[scale.quick\] seeds takes a non-empty list"),
    ({"scale": {"quick": {"variants": {"c": {}}}}}, r"no variant 'c'; the variants are: base"),
    ({"variants": {"a": {}, "b": {}}, "baseline": "c"}, r"baseline 'c' is not a variant; the variants are: a, b"),
])
def test_spec_errors_name_what_is_valid(data, message):
    with pytest.raises(SpecError, match=message):
        parse_spec(data)


def test_a_file_error_names_the_file(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('name = "mine"\n[variants]\na = { lrr = 1 }\n')
    with pytest.raises(SpecError, match=r"mine.toml: variant 'a': unknown config key 'lrr'"):
        load_spec(path)
    path.write_text("name = \n")
    with pytest.raises(SpecError, match="mine.toml: not valid TOML"):
        load_spec(path)
    with pytest.raises(SpecError, match="no spec file or preset 'bn_layer'; the presets are: bn_impls"):
        load_spec("bn_layer")


def test_the_seven_studies_and_the_normalizers_comparison_are_shipped():
    assert list_presets() == PRESETS


def test_normalizers_runs_every_norm_in_both_models_at_three_batch_sizes():
    """Issue 7: lenet_bn and resnet20 × the classic and research norms × batch 256, 32, 4 × 3 seeds
    (torch's and the book's batch norms are implementations of `batch`, compared in bn_impls)."""
    from normlab.nn import list_norms
    runs = expand(load_spec("normalizers"), "full")
    norms = set(list_norms()) - {"batch_torch", "batch_d2l"}
    combos = {(r.config.model.name, r.config.model.norm, r.config.data.batch_size, r.seed) for r in runs}
    assert combos == {(m, n, b, s) for m in ("lenet_bn", "resnet20") for n in norms
                      for b in (256, 32, 4) for s in (0, 1, 2)}
    lrs = {r.config.model.name: r.config.optim.lr for r in runs}
    assert lrs == {"lenet_bn": 1.0, "resnet20": 0.1}, "each model's book learning rate"


@pytest.mark.parametrize("name", PRESETS)
def test_presets_expand_at_both_scales(name):
    s = load_spec(name)
    full, quick = expand(s, "full"), expand(s, "quick")
    assert s.name == name and s.description
    assert len({r.seed for r in full}) >= 3 and {r.config.train.epochs for r in full} <= {10, 20}
    assert all(r.config.data.train_subset is None and r.config.data.test_subset is None for r in full)
    assert all(r.config.train.epochs <= 2 for r in quick) and len({r.seed for r in quick}) == 1
    assert len({r.name for r in full}) == len(full)  # one run directory each


def test_bn_layers_is_the_seeds_seven_subsets():
    slots = [r.config.model.options.get("norm_slots") for r in expand(load_spec("bn_layers"), "quick")]
    assert slots == [None, [2, 4], [1, 3], [2, 3, 4], [1, 3, 4], [1, 2, 4], [1, 2, 3]]


def test_bn_vs_none_really_has_no_norm():
    norms = {r.group: r.config.model.norm for r in expand(load_spec("bn_vs_none"), "quick")}
    assert norms["none-lr0.9"] == "none" and norms["bn-lr1.0"] is None  # None: lenet_bn's own batch norm


def test_bn_momentum_compares_01_001_and_cumulative():
    """TOML has no null: momentum = "cumulative" builds every batch norm with momentum=None."""
    import torch

    from normlab.nn import BatchNorm1d, BatchNorm2d
    from normlab.run import build_model

    runs = expand(load_spec("bn_momentum"), "full")
    assert sorted({r.variant for r in runs}) == ["momentum_0.01", "momentum_0.1", "momentum_cumulative"]
    for run in runs:
        net = build_model(run.config.model, run.config.data.dataset)
        momenta = {m.momentum for m in net.modules() if isinstance(m, (BatchNorm1d, BatchNorm2d))}
        assert momenta == {{"momentum_0.1": 0.1, "momentum_0.01": 0.01, "momentum_cumulative": None}[run.variant]}
    net = build_model(next(r for r in runs if r.variant == "momentum_cumulative").config.model, "fashion-mnist")
    x = torch.rand(2, 8, 1, 28, 28)
    for batch in x:  # cumulative: the running mean is the plain mean of the batch means
        net(batch)
    h = net[0](x.flatten(0, 1)).unflatten(0, (2, 8))       # (2 batches, 8, 6, 24, 24): net[1]'s inputs
    torch.testing.assert_close(net[1].running_mean, h.mean((1, 3, 4)).mean(0))


def test_a_momentum_word_other_than_cumulative_is_refused():
    from normlab.run import build_model

    bad = spec(variants={"typo": {"model.options.norm_kwargs": {"momentum": "cumulativ"}}})
    with pytest.raises(ValueError, match=r"lenet_bn: norm_kwargs momentum takes a number \(0.1 is torch's default\) "
                                         r"or 'cumulative' \(momentum=None: the cumulative average\), got 'cumulativ'"):
        build_model(expand(bad)[0].config.model, "fashion-mnist")


DOC_SPECS = sorted((Path(__file__).parents[2] / "docs" / "studies").glob("*.toml"))


@pytest.mark.parametrize("path", DOC_SPECS, ids=[p.stem for p in DOC_SPECS])
def test_the_specs_behind_docs_results_still_load(path):
    """docs/RESULTS.md cites these files as the commands that made its tables."""
    spec = load_spec(path)
    assert spec.name == path.stem and spec.base["optim"] == {"schedule": "cosine"}
    if spec.name.startswith("normalizers_lenet"):  # a part of the normalizers preset
        preset = load_spec("normalizers")
        assert spec.variants == {k: v for k, v in preset.variants.items() if k.startswith("lenet-")}
        return
    preset = load_spec(spec.name.removesuffix("_cosine"))
    assert spec.variants == preset.variants and spec.seeds == preset.seeds == (0, 1, 2)


def test_the_baseline_is_the_first_variant_unless_named():
    variants = {"a": {}, "b": {"norm": "none"}}
    assert parse_spec({"variants": variants}).baseline == "a"
    assert parse_spec({"variants": variants, "baseline": "b"}).baseline == "b"
    assert parse_spec({}).baseline == "base"
