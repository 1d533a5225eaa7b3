"""stats.jsonl: what StatsRecorder records and when, by hand where it can be, and exact across a resume."""
import copy
import json

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import normlab.nn as nl
from normlab.experiments import expand, parse_spec
from normlab.experiments.runner import run_experiment
from normlab.inspect import StatsRecorder, read_stats
from normlab.train import Interrupted, Trainer, train
from normlab.train import config as c
from normlab.run import run
from trainer_helpers import StopAt, roundtrip


def tiny_bn_cnn(norm=nl.BatchNorm2d):
    """conv -> norm -> relu -> pool -> linear; net[1] is the norm, as in BN-LeNet."""
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), norm(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 4))


def recorded(path, model, loaders, cfg, every):
    train(model, *loaders, cfg, callbacks=[StatsRecorder(path, every=every)])
    return read_stats(path)




def test_records_every_k_steps_and_at_each_epoch_end(tmp_path, loaders, config):
    records = recorded(tmp_path / "stats.jsonl", tiny_bn_cnn(), loaders(), config(epochs=3), every=4)
    # 96 examples in batches of 16: 6 steps an epoch, 18 in all
    assert [(r["kind"], r["step"]) for r in records] == [
        ("step", 4), ("epoch", 6), ("step", 8), ("step", 12), ("epoch", 12), ("step", 16), ("epoch", 18)]
    assert [r["epoch"] for r in records] == pytest.approx([4 / 6, 1, 8 / 6, 2, 2, 16 / 6, 3], abs=1e-6)
    step, epoch = records[0], records[1]
    assert set(step["norms"]) == {"1"} and set(step["grad_norm"]) == {"0", "1", "5"}  # conv, norm, linear
    assert set(step["norms"]["1"]) == {"type", "gamma", "beta", "running_mean", "running_var",
                                       "input_mean", "input_std"}
    assert set(epoch["norms"]["1"]) == {"type", "gamma", "beta", "running_mean", "running_var"}
    assert "grad_norm" not in epoch and step["norms"]["1"]["type"] == "BatchNorm2d"
    gamma = step["norms"]["1"]["gamma"]
    values = torch.tensor(gamma["values"])
    assert len(values) == 4
    assert (gamma["min"], gamma["max"]) == (values.min().item(), values.max().item())
    assert gamma["mean"] == pytest.approx(values.mean().item()) and gamma["std"] == pytest.approx(
        values.std(correction=0).item())


def test_recorded_state_is_the_models_after_that_step(tmp_path, loaders, config):
    """γ, β and the running statistics recorded after step 6 are, exactly, those of a run that stopped there."""
    torch.manual_seed(0)
    long = tiny_bn_cnn()
    records = recorded(tmp_path / "stats.jsonl", long, loaders(), config(epochs=2), every=2)
    torch.manual_seed(0)
    short = tiny_bn_cnn()
    train(short, *loaders(), config(epochs=1))
    by_key = {(r["kind"], r["step"]): r["norms"]["1"] for r in records}
    for model, key in ((short, ("step", 6)), (short, ("epoch", 6)), (long, ("step", 12)), (long, ("epoch", 12))):
        bn = model[1]
        for name, tensor in (("gamma", bn.weight), ("beta", bn.bias), ("running_mean", bn.running_mean),
                             ("running_var", bn.running_var)):
            # float32 -> JSON -> float32 is exact
            assert torch.equal(torch.tensor(by_key[key][name]["values"]), tensor.detach()), (key, name)
    assert by_key[("step", 2)]["gamma"] != by_key[("step", 4)]["gamma"]  # it did train


NORMS = {"batch": lambda: nl.BatchNorm1d(64), "batch_torch": lambda: nn.BatchNorm1d(64),
         "batch_d2l": lambda: nl.D2LBatchNorm(64, num_dims=2), "layer": lambda: nl.LayerNorm(64),
         "group": lambda: nl.GroupNorm(4, 64), "batch_no_affine": lambda: nl.BatchNorm1d(64, affine=False)}


@pytest.mark.parametrize("kind", NORMS)
def test_first_step_inputs_and_gradient_norms_by_hand(tmp_path, loaders, config, kind):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), NORMS[kind](), nn.Linear(64, 4))  # the norm sees the raw pixels
    train_iter, test_iter = loaders()
    trainer = Trainer(model, train_iter, test_iter, config(epochs=1),
                      [StatsRecorder(tmp_path / "stats.jsonl", every=1)])
    start = copy.deepcopy(model)  # after the Trainer's init, before the first step
    train_iter.set_epoch(0)
    X, y = next(iter(train_iter))
    trainer.run()
    first = read_stats(tmp_path / "stats.jsonl")[0]
    got = first["norms"]["1"]
    x = X.flatten(1)  # (16, 64): 64 channels of 16 values
    assert_close(torch.tensor(got["input_mean"]["values"]), x.mean(0))
    assert_close(torch.tensor(got["input_std"]["values"]), x.std(0, correction=0))
    nn.functional.cross_entropy(start(X), y).backward()
    norm_weight = start[1].gamma if kind == "batch_d2l" else start[1].weight
    weights = {"1": norm_weight, "2": start[2].weight}
    expected = {k: w.grad.norm().item() for k, w in weights.items() if w is not None}
    assert first["grad_norm"] == pytest.approx(expected, rel=1e-5)
    assert ("running_mean" in got) == kind.startswith("batch")
    assert ("gamma" in got) == (kind != "batch_no_affine")


def test_hooks_exist_only_during_recorded_steps(tmp_path, loaders, config):
    class Spy:  # after the recorder: sees the hooks it registered for this step's forward
        def __init__(self):
            self.hooks = []

        def on_step_start(self, trainer):
            self.hooks.append(len(trainer.model[1]._forward_pre_hooks))

    spy, model = Spy(), tiny_bn_cnn()
    train(model, *loaders(), config(epochs=2), callbacks=[StatsRecorder(tmp_path / "stats.jsonl", every=4), spy])
    assert spy.hooks == [0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1]
    assert not model[1]._forward_pre_hooks


def test_bad_record_every_names_the_key(tmp_path):
    with pytest.raises(ValueError, match="train.record_every takes a positive number of steps, got 0"):
        StatsRecorder(tmp_path / "stats.jsonl", every=0)


@pytest.mark.parametrize("stop", [(0, 3), (1, 4), (1, 6)])
def test_stopped_and_resumed_run_records_the_same_as_uninterrupted(tmp_path, loaders, config, stop):
    cfg = config(epochs=3)
    torch.manual_seed(0)
    straight = recorded(tmp_path / "straight.jsonl", tiny_bn_cnn(), loaders(), cfg, every=4)

    path = tmp_path / "stats.jsonl"
    torch.manual_seed(0)
    trainer = Trainer(tiny_bn_cnn(), *loaders(), cfg, [StatsRecorder(path, every=4), StopAt(*stop)])
    if stop[1] == 6:  # the last batch of an epoch: the epoch ends, as a killed run's last checkpoint
        trainer.config = config(epochs=stop[0] + 1)
        trainer.run()
    else:
        with pytest.raises(Interrupted):
            trainer.run()
    assert read_stats(path) == [r for r in straight if r["step"] <= 6 * stop[0] + stop[1]]  # flushed at the stop
    resumed = Trainer(tiny_bn_cnn(), *loaders(), cfg, [StatsRecorder(path, every=4)])
    resumed.load_state_dict(roundtrip(trainer.state_dict()))
    resumed.run()
    assert read_stats(path) == straight


def test_records_past_the_checkpoint_are_dropped_on_resume(tmp_path, loaders, config):
    """A killed run can leave stats.jsonl ahead of its checkpoint; resuming must not repeat those records."""
    cfg = config(epochs=2)
    torch.manual_seed(0)
    straight = recorded(tmp_path / "straight.jsonl", tiny_bn_cnn(), loaders(), cfg, every=2)
    torch.manual_seed(0)
    trainer = Trainer(tiny_bn_cnn(), *loaders(), cfg, [StopAt(0, 3)])
    with pytest.raises(Interrupted):
        trainer.run()
    path = tmp_path / "stats.jsonl"
    path.write_text((tmp_path / "straight.jsonl").read_text())  # every record, the checkpoint at step 3
    resumed = Trainer(tiny_bn_cnn(), *loaders(), cfg, [StatsRecorder(path, every=2)])
    resumed.load_state_dict(roundtrip(trainer.state_dict()))
    resumed.run()
    assert [(r["kind"], r["step"]) for r in read_stats(path)] == [(r["kind"], r["step"]) for r in straight]
    assert read_stats(path) == straight


def poly_config(**updates):
    """BN-MLP on the synthetic regression task: 700 training pairs, batch 10, 70 steps an epoch."""
    return c.override(c.resolve("mlp"), {"norm": "batch", "epochs": 2, "device": "cpu", "points_per_epoch": 1,
                                         "record_stats": True, "record_every": 20, **updates})


def test_run_directory_gets_stats_and_a_ctrl_c_resume_matches(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run(poly_config(), straight, quiet=True)[0] == "finished"
    records = read_stats(straight / "stats.jsonl")
    assert [(r["kind"], r["step"]) for r in records] == [
        ("step", 20), ("step", 40), ("step", 60), ("epoch", 70), ("step", 80), ("step", 100), ("step", 120),
        ("step", 140), ("epoch", 140)]
    assert list(records[0]["norms"]) == ["2"] and list(records[0]["grad_norm"]) == ["1", "2", "4"]
    assert run(poly_config(), split, quiet=True, extra_callbacks=[StopAt(1, 25)])[0] == "interrupted"
    assert len(read_stats(split / "stats.jsonl")) == 5   # up to step 95, written with the checkpoint
    assert run(poly_config(), split, resume=True, quiet=True)[0] == "finished"
    assert (split / "stats.jsonl").read_text() == (straight / "stats.jsonl").read_text()


def test_no_stats_file_unless_asked(tmp_path):
    run(poly_config(epochs=1, record_stats=False), tmp_path / "run", quiet=True)
    assert not (tmp_path / "run" / "stats.jsonl").exists()


def test_an_experiment_spec_can_record_stats(tmp_path):
    spec = parse_spec({"name": "tiny", "data": {"dataset": "poly"}, "model": {"name": "mlp", "norm": "batch"},
                       "train": {"epochs": 1, "device": "cpu", "points_per_epoch": 1, "record_stats": True,
                                 "record_every": 35},
                       "variants": {"m1": {"model.options.norm_kwargs": {"momentum": 0.1}}}})
    assert expand(spec)[0].config.train.record_every == 35
    index = run_experiment(spec, "full", tmp_path / "exp", log=lambda s: None)
    assert index["runs"][0]["status"] == "finished"
    lines = (tmp_path / "exp" / "runs" / "m1-seed0" / "stats.jsonl").read_text().splitlines()
    assert [(r["kind"], r["step"]) for r in map(json.loads, lines)] == [("step", 35), ("step", 70), ("epoch", 70)]


def test_a_compiled_model_records_its_inputs_too(tmp_path, loaders, config):
    """A compiled graph runs no hooks added after compiling: recorded steps run the eager module."""
    runs = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        path = tmp_path / f"{compiled}.jsonl"
        runs[compiled] = recorded(path, tiny_bn_cnn(), loaders(), config(epochs=1, compile=compiled), every=3)
    for eager, compiled in zip(runs[False], runs[True]):
        assert (eager["kind"], eager["step"], set(eager["norms"]["1"])) == (
            compiled["kind"], compiled["step"], set(compiled["norms"]["1"]))
        for key in ("input_mean", "input_std", "gamma"):
            if key in eager["norms"]["1"]:
                assert_close(torch.tensor(compiled["norms"]["1"][key]["values"]),
                             torch.tensor(eager["norms"]["1"][key]["values"]), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="AMP is CUDA autocast; this machine has no CUDA device")
def test_fp16_gradient_norms_are_unscaled(tmp_path, loaders, config):
    """GradScaler multiplies the loss by 2**16: the recorded norms must be the true ones."""
    first = {}
    for amp in ("none", "fp16"):
        torch.manual_seed(0)
        records = recorded(tmp_path / f"{amp}.jsonl", tiny_bn_cnn(), loaders(), config(epochs=1, device="cuda", amp=amp),
                           every=1)
        first[amp] = records[0]["grad_norm"]
    assert first["fp16"] == pytest.approx(first["none"], rel=0.05)
