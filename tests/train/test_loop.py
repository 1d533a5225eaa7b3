import math
import re

import pytest
import torch
from torch import nn

from normlab.data import TensorLoader, load_poly_regression
from normlab.train import ConfigError, DivergenceError, Interrupted, Trainer, train
from normlab.train.loop import init_weights, lr_factor, make_optimizer, resolve_device
from trainer_helpers import StopAt, roundtrip

def tiny_cnn(norm=True, dropout=0.0):
    """Conv + BN + Dropout: BN's running statistics and dropout's RNG both matter for exact resume."""
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4) if norm else nn.Identity(), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * 4 * 4, 4))


DETERMINISTIC = ("epoch", "train_loss", "train_acc", "test_acc", "test_mse", "lr")


def numbers(history):
    return [{k: m[k] for k in DETERMINISTIC if k in m} for m in history.epochs], history.points


def test_metrics_per_epoch(loaders, config):
    history = train(tiny_cnn(), *loaders(), config(epochs=2))
    assert [m["epoch"] for m in history.epochs] == [1, 2]
    m = history.last
    assert set(m) == {"epoch", "train_loss", "train_acc", "test_acc", "examples_per_sec", "train_seconds",
                      "epoch_seconds", "lr"}
    assert 0 <= m["train_acc"] <= 1 and 0 <= m["test_acc"] <= 1 and m["train_loss"] > 0
    assert 0 < m["train_seconds"] <= m["epoch_seconds"] and m["examples_per_sec"] > 0
    assert len(history.points) == 12  # 6 batches an epoch, 6 // 5 = 1: a point after every batch


def test_five_curve_points_per_epoch_as_the_book(loaders, config):
    history = train(tiny_cnn(), *loaders(batch_size=4), config(epochs=2, batch_size=4))  # 24 batches
    xs = [p["x"] for p in history.points]
    # every 24 // 5 = 4 batches, and the last: 4, 8, ..., 24 -> 6 points an epoch
    assert xs[:6] == pytest.approx([4 / 24, 8 / 24, 12 / 24, 16 / 24, 20 / 24, 1.0], abs=1e-6)
    assert xs[6:] == pytest.approx([1 + x for x in xs[:6]], abs=1e-6)


def test_learns_the_tiny_task(loaders, config):
    history = train(tiny_cnn(), *loaders(), config(epochs=8, lr=0.3))
    assert history.last["test_acc"] >= 0.9 and history.last["train_loss"] < history[0]["train_loss"]


def test_same_seed_same_numbers_and_weights(loaders, config):
    runs = []
    for _ in range(2):
        torch.manual_seed(5)  # as `normlab train` does before building the model
        model = tiny_cnn(dropout=0.3)
        history = train(model, *loaders(seed=5), config(seed=5))
        runs.append((numbers(history), model.state_dict()))
    assert runs[0][0] == runs[1][0]
    for k, v in runs[0][1].items():
        assert torch.equal(v, runs[1][1][k]), k
    torch.manual_seed(6)
    model = tiny_cnn(dropout=0.3)
    assert numbers(train(model, *loaders(seed=6), config(seed=6)))[0] != runs[0][0]




@pytest.mark.parametrize("stop", [(1, 3), (0, 1), (2, 5)])
def test_interrupted_then_resumed_equals_uninterrupted(loaders, config, stop):
    cfg = config(seed=3, epochs=3)
    torch.manual_seed(3)
    reference_model = tiny_cnn(dropout=0.3)
    reference = train(reference_model, *loaders(seed=3), cfg)

    torch.manual_seed(3)
    trainer = Trainer(tiny_cnn(dropout=0.3), *loaders(seed=3), cfg, callbacks=[StopAt(*stop)])
    with pytest.raises(Interrupted, match=f"stopped at epoch {stop[0] + 1}, batch {stop[1]} of 6"):
        trainer.run()
    state = roundtrip(trainer.state_dict())  # as a checkpoint file would carry it

    torch.manual_seed(1234)  # a different process state: everything must come from the checkpoint
    resumed_model = tiny_cnn(dropout=0.3)
    resumed = Trainer(resumed_model, *loaders(seed=3), cfg)
    resumed.load_state_dict(state)
    history = resumed.run()
    assert numbers(history) == numbers(reference)
    for k, v in reference_model.state_dict().items():
        assert torch.equal(v, resumed_model.state_dict()[k]), k


def test_resume_at_an_epoch_end(loaders, config):
    cfg = config(seed=4, epochs=3)
    torch.manual_seed(4)
    reference = train(tiny_cnn(), *loaders(seed=4), cfg)
    torch.manual_seed(4)
    first = Trainer(tiny_cnn(), *loaders(seed=4), config(seed=4, epochs=3))
    first.config = config(seed=4, epochs=1)  # stop after one epoch, as a killed run's last checkpoint
    first.run()
    resumed = train(tiny_cnn(), *loaders(seed=4), cfg, resume=roundtrip(first.state_dict()))
    assert numbers(resumed) == numbers(reference)


def test_nan_loss_stops_with_epoch_step_and_hint(loaders, config):
    class NanAtStep3(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear, self.calls = nn.Linear(64, 4), 0

        def forward(self, x):
            self.calls += 1
            y = self.linear(x.flatten(1))
            return y * float("nan") if self.calls == 3 else y

    with pytest.raises(DivergenceError, match=r"the loss became nan at epoch 1, step 3 \(lr 0.1\).*"
                                                 r"the run stopped before this step's update\. Lower the learning rate"):
        train(NanAtStep3(), *loaders(), config())


class ScaledAtStep(nn.Module):
    """A linear model whose logits are multiplied by `factor` from call `step` on: a finite loss
    far above the first step's, as saturated sigmoids give at a huge learning rate."""

    def __init__(self, step: int, factor: float):
        super().__init__()
        self.linear, self.calls, self.step, self.factor = nn.Linear(64, 4), 0, step, factor

    def forward(self, x):
        self.calls += 1 if self.training else 0
        y = self.linear(x.flatten(1))
        return y * self.factor if self.training and self.calls >= self.step else y


class WeightsAfterEachStep:
    def __init__(self):
        self.weights = []

    def on_step_end(self, trainer):
        self.weights.append(trainer.model.linear.weight.detach().clone())


def test_a_finite_loss_far_above_the_first_is_divergence(loaders, config):
    model, seen = ScaledAtStep(step=3, factor=1e4), WeightsAfterEachStep()
    with pytest.raises(DivergenceError) as err:
        train(model, *loaders(), config(), callbacks=[seen])
    message = str(err.value)
    first = re.search(r"100 × the first step's loss (\S+); train.diverge_factor\)", message)
    assert first and float(first[1]) == pytest.approx(math.log(4), rel=0.2), message
    assert re.match(r"the loss rose to \S+, above the divergence bound \S+ \(100 × the first step's loss "
                    r"\S+; train.diverge_factor\), at epoch 1, step 3 \(lr 0.1\); the run stopped before this "
                    r"step's update\. Lower the learning rate \(optim.lr\) and train again\.$", message), message
    loss = float(re.match(r"the loss rose to (\S+),", message)[1])
    assert loss > 100 * float(first[1])
    assert len(seen.weights) == 2 and torch.equal(model.linear.weight, seen.weights[-1]), "step 3 updated nothing"


def test_the_divergence_bound_is_configurable(loaders, config):
    assert len(train(ScaledAtStep(3, 1e4), *loaders(), config(epochs=1, diverge_factor=0.0))) == 1, "0: no bound"
    assert len(train(ScaledAtStep(3, 1e4), *loaders(), config(epochs=1, diverge_factor=1e9))) == 1
    with pytest.raises(DivergenceError, match=r"the loss rose to \S+, above the divergence bound 50 "
                                              r"\(train.max_loss\), at epoch 1, step 3 "):
        train(ScaledAtStep(3, 1e4), *loaders(), config(max_loss=50.0))
    assert len(train(ScaledAtStep(3, 10.0), *loaders(), config(epochs=1, max_loss=1e6))) == 1, \
        "max_loss replaces the factor"
    for bad, message in ((dict(diverge_factor=0.5), "train.diverge_factor must be above 1 .* got 0.5"),
                         (dict(diverge_factor=-1.0), "train.diverge_factor must be above 1 .* got -1.0"),
                         (dict(max_loss=0.0), r"train.max_loss must be a positive loss \(or unset\), got 0.0")):
        with pytest.raises(ConfigError, match=message):
            train(ScaledAtStep(3, 1.0), *loaders(), config(**bad))


def test_the_bound_survives_resume(loaders, config):
    """The first step's loss is in the checkpoint: a resumed run measures against the same bound."""
    first = Trainer(ScaledAtStep(10**9, 1.0), *loaders(), config(epochs=1))
    first.run()
    state = roundtrip(first.state_dict())
    assert state["first_loss"] == first.first_loss and first.first_loss > 0
    resumed = Trainer(ScaledAtStep(10**9, 1.0), *loaders(), config(epochs=2))
    resumed.load_state_dict(state)
    assert resumed.first_loss == first.first_loss
    resumed.model.linear.weight.data.mul_(1e4)  # the resumed run's own first loss would be huge
    with pytest.raises(DivergenceError, match=r"at epoch 2, step 1 "):
        resumed.run()


def test_batch_of_one_with_batch_norm_suggests_drop_last(config):
    x, y = torch.randint(0, 255, (17, 8, 8), dtype=torch.uint8), torch.randint(0, 4, (17,))
    from normlab.data import ImageTransform
    train_iter = TensorLoader(x, y, batch_size=16, seed=0, transform=ImageTransform())  # last batch: 1 image
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.BatchNorm1d(8), nn.Linear(8, 4))
    with pytest.raises(ValueError, match="A training batch of 1 gives batch norm a single value per channel.*drop_last = true"):
        train(model, train_iter, train_iter, config(epochs=1))


def test_regression_reports_test_mse(config):
    train_iter, test_iter = load_poly_regression(batch_size=10, seed=0)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 1))
    history = train(model, train_iter, test_iter, config(dataset="poly", lr=0.03, epochs=5, batch_size=10))
    assert "train_acc" not in history.last and "test_acc" not in history.last
    assert history.last["test_mse"] < history[0]["test_mse"]
    assert set(history.points[0]) == {"x", "train_loss"}


@pytest.mark.parametrize("schedule, expected", [
    ("none", [1.0] * 10),
    ("step", [1.0] * 6 + [0.1] * 4),  # 2 steps an epoch, step_epochs=3
    ("cosine", [0.5 * (1 + math.cos(math.pi * t / 10)) for t in range(10)]),
])
def test_lr_schedules_per_step(schedule, expected, config):
    cfg = config(schedule=schedule, epochs=5).optim
    assert [lr_factor(cfg, t, 2, 5) for t in range(10)] == pytest.approx(expected)


def test_cosine_reaches_zero_at_the_end_and_warmup_rises(loaders, config):
    history = train(tiny_cnn(), *loaders(), config(schedule="cosine", epochs=2))
    assert history.last["lr"] == pytest.approx(0.0, abs=1e-12)
    cfg = config(warmup_epochs=1.0, schedule="cosine", epochs=3).optim
    assert [lr_factor(cfg, t, 4, 3) for t in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(cfg, 4, 4, 3) == 1.0 and lr_factor(cfg, 11, 4, 3) == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_optimizers(name, cls, config):
    opt = make_optimizer(nn.Linear(2, 2), config(optimizer=name, momentum=0.9, weight_decay=1e-4).optim)
    assert type(opt) is cls and opt.defaults["weight_decay"] == 1e-4
    if name == "sgd":
        assert opt.defaults["momentum"] == 0.9


def test_the_books_sgd_by_default(config):
    opt = make_optimizer(nn.Linear(2, 2), config().optim)
    assert opt.defaults["momentum"] == 0 and opt.defaults["weight_decay"] == 0


def test_weight_decay_can_spare_biases_and_norm_parameters(config):
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    groups = make_optimizer(model, config(weight_decay=0.1, decay_vectors=False).optim).param_groups
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert [len(g["params"]) for g in groups] == [1, 3]  # Linear.weight | Linear.bias, γ, β
    assert len(make_optimizer(model, config(weight_decay=0.1).optim).param_groups) == 1


@pytest.mark.parametrize("updates, message", [
    (dict(optimizer="lbfgs"), "unknown optimizer 'lbfgs'; choose one of: sgd, adam, adamw"),
    (dict(schedule="linear"), "unknown schedule 'linear'; choose one of: none, step, cosine"),
    (dict(init="kaiming"), "unknown init 'kaiming'; choose one of: xavier, torch"),
    (dict(amp="bf16"), "amp 'bf16' needs a CUDA device"),
    (dict(amp="fp8"), "unknown amp 'fp8'"),
])
def test_bad_settings_list_the_choices(loaders, config, updates, message):
    with pytest.raises(ValueError, match=message):
        train(tiny_cnn(), *loaders(), config(epochs=1, **updates))


def test_xavier_init_is_the_books_and_torch_keeps_its_own():
    torch.manual_seed(0)
    a = tiny_cnn()
    b = tiny_cnn()
    b.load_state_dict(a.state_dict())
    init_weights(b, "torch")
    assert torch.equal(a[0].weight, b[0].weight)
    torch.manual_seed(0)
    init_weights(b, "xavier")
    bound = math.sqrt(6 / (1 * 9 + 4 * 9))  # xavier_uniform_ on Conv2d(1, 4, 3)
    assert not torch.equal(a[0].weight, b[0].weight) and b[0].weight.abs().max() <= bound
    assert torch.equal(a[0].bias, b[0].bias)  # biases are left alone, as the book does


def test_device_auto_is_cpu_here():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type in (expected, "mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no CUDA device"):
            resolve_device("cuda")


def test_channels_last_on_cpu_gives_the_same_numbers(loaders, config):
    torch.manual_seed(0)
    a = numbers(train(tiny_cnn(), *loaders(), config(epochs=1)))
    torch.manual_seed(0)
    b = numbers(train(tiny_cnn(), *loaders(), config(epochs=1, channels_last=True)))
    for m, n in zip(a[0], b[0]):
        assert m == pytest.approx(n, rel=1e-4)


@pytest.mark.slow
def test_compile_on_cpu_matches_eager(loaders, config):
    torch.manual_seed(0)
    eager_model = tiny_cnn()
    torch.manual_seed(0)
    compiled_model = tiny_cnn()
    a = train(eager_model, *loaders(), config(epochs=1))
    b = train(compiled_model, *loaders(), config(epochs=1, compile=True))
    assert a.last["train_loss"] == pytest.approx(b.last["train_loss"], rel=1e-4)
    assert not any(k.startswith("_orig_mod") for k in compiled_model.state_dict())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="AMP is CUDA autocast; this machine has no CUDA device")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_on_cuda(loaders, config, amp):
    history = train(tiny_cnn(), *loaders(), config(epochs=2, device="cuda", amp=amp))
    assert math.isfinite(history.last["train_loss"])


def test_step_hooks_run_in_order_with_gradients_before_the_update(loaders, config):
    class Spy:
        def __init__(self):
            self.calls, self.before = [], None

        def on_step_start(self, trainer):
            self.calls.append("start")

        def on_after_backward(self, trainer):
            self.calls.append("backward")
            if self.before is None:   # the first step: gradients exist, weights not yet stepped
                self.before = trainer.model[0].weight.detach().clone()
                assert trainer.model[0].weight.grad is not None
                assert torch.equal(self.before, trainer.model[0].weight)

        def on_step_end(self, trainer):
            self.calls.append("end")

    spy, model = Spy(), tiny_cnn()
    train(model, *loaders(), config(epochs=1), callbacks=[spy])
    assert spy.calls == ["start", "backward", "end"] * 6       # 96 examples, batch 16
    assert not torch.equal(spy.before, model[0].weight)


def test_sync_bn_needs_a_model_built_with_sync_batch_norm(loaders, config):
    """The conversion happens where the model is built (normlab.run.build_model), not in the loop."""
    with pytest.raises(ValueError, match=r"train.sync_bn is set, but the model has no SyncBatchNorm: build it with "
                                         r"normlab.run.build_model\(..., sync_bn=True\)"):
        Trainer(tiny_cnn(), *loaders(), config(sync_bn=True))
