"""Bad input: each mistake is a ValueError that says what to do, raised by our code before any
layer runs (the traceback ends in normlab, not deep in torch)."""
import re

import pytest
import torch

from normlab.models import create_model, list_models
from normlab.nn import list_norms


def _raised_in_normlab(excinfo):
    """The exception comes from normlab's model code, not from inside a torch layer."""
    last = str(excinfo.traceback[-1].path)
    return "normlab" in last and "torch" not in last.split("normlab")[-1]


def test_unknown_model_lists_the_models():
    with pytest.raises(ValueError) as e:
        create_model("resnet50")
    assert "unknown model 'resnet50'" in str(e.value)
    assert all(name in str(e.value) for name in list_models())


def test_unknown_norm_names_the_model_and_lists_the_norms():
    with pytest.raises(ValueError, match=r"^lenet: unknown norm 'batchnorm'; choose one of: ") as e:
        create_model("lenet", norm="batchnorm")
    assert all(name in str(e.value) for name in list_norms())


def test_unknown_option_lists_the_options():
    with pytest.raises(ValueError, match=r"vgg: unknown option\(s\) widht_divisor; it takes: .*width_divisor"):
        create_model("vgg", widht_divisor=4)


def test_unknown_norm_position():
    with pytest.raises(ValueError, match="unknown norm_position 'pre'; choose one of: before_act, after_act"):
        create_model("resnet20", norm_position="pre")


def test_unknown_vgg_arch_and_activation():
    with pytest.raises(ValueError, match="vgg: unknown arch 'vgg12'; choose one of: vgg11, vgg13"):
        create_model("vgg", arch="vgg12")
    with pytest.raises(ValueError, match="mlp: unknown activation 'gelu'; choose one of: relu, sigmoid, tanh"):
        create_model("mlp", activation="gelu")


@pytest.mark.parametrize("slots", [(0, 2), (1, 5), (3, 4, 7)])
def test_norm_slots_out_of_range(slots):
    with pytest.raises(ValueError, match=r"lenet_bn: norm_slots \[\d\] out of range; its norm positions are 1, 2"):
        create_model("lenet_bn", norm_slots=slots)


def test_group_count_that_does_not_divide_the_channels():
    with pytest.raises(ValueError, match=re.escape(
            "lenet: norm 'group' with {'num_groups': 4} cannot normalize 6 channels")):
        create_model("lenet", norm="group", norm_kwargs={"num_groups": 4})
    # 2 divides 6, 16, 120 and 84: fine
    net = create_model("lenet", norm="group", norm_kwargs={"num_groups": 2})
    assert {m.num_groups for m in net.modules() if hasattr(m, "num_groups")} == {2}


def test_instance_norm_on_vectors_says_what_to_do():
    with pytest.raises(ValueError, match="alexnet: norm 'instance' needs spatial dims.*pass fc_norm='none'"):
        create_model("alexnet", norm="instance")
    with pytest.raises(ValueError, match="mlp: norm 'instance' needs spatial dims"):
        create_model("mlp", norm="instance")


@pytest.mark.parametrize("name, side, message", [
    ("alexnet", 28, "alexnet takes inputs from 193×193 to 224×224 (the book uses 224×224); got 28×28"),
    ("alexnet", 225, "alexnet takes inputs from 193×193 to 224×224 (the book uses 224×224); got 225×225"),
    ("vgg", 96, "vgg takes inputs from 224×224 to 255×255 (the book uses 224×224); got 96×96"),
    ("lenet", 32, "lenet takes inputs from 28×28 to 31×31 (the book uses 28×28); got 32×32"),
    ("nin", 28, "nin takes inputs of 67×67 or larger (the book uses 224×224); got 28×28"),
    ("densenet", 16, "densenet takes inputs of 29×29 or larger (the book uses 96×96); got 16×16"),
])
def test_input_of_the_wrong_size_names_the_model_and_its_sizes(name, side, message):
    with torch.device("meta"):
        net = create_model(name)
        with pytest.raises(ValueError) as e:
            net(torch.empty(1, 1, side, side))
    assert str(e.value) == message
    assert _raised_in_normlab(e)


def test_wrong_channels_and_rank():
    net = create_model("lenet")
    with pytest.raises(ValueError, match=r"lenet expects \(N, 1, H, W\) input; got \(2, 3, 28, 28\)"):
        net(torch.zeros(2, 3, 28, 28))
    with pytest.raises(ValueError, match=r"got \(2, 784\)"):
        net(torch.zeros(2, 784))
    with pytest.raises(ValueError, match=r"mlp takes 2 features per example.*got \(4, 3\)"):
        create_model("mlp", in_features=2, num_classes=1)(torch.zeros(4, 3))


def test_width_divisor_too_large():
    with pytest.raises(ValueError, match="vgg: width_divisor=128 leaves a block without channels"):
        create_model("vgg", width_divisor=128)


def test_norm_kwargs_the_norm_does_not_take():
    with pytest.raises(ValueError, match=r"lenet: norm 'batch' does not take norm_kwargs \{'num_groups': 2\}"):
        create_model("lenet", norm="batch", norm_kwargs={"num_groups": 2})


def test_momentum_cumulative_is_none_and_the_books_layer_refuses_it():
    net = create_model("lenet_bn", norm="batch_torch", norm_kwargs={"momentum": "cumulative"})
    assert net[1].momentum is None and net[13].momentum is None
    with pytest.raises(ValueError, match="lenet_bn: norm 'batch_d2l' .* has no cumulative average; give momentum a number"):
        create_model("lenet_bn", norm="batch_d2l", norm_kwargs={"momentum": "cumulative"})
    with pytest.raises(ValueError, match="momentum takes a number .* got 'slow'"):
        create_model("mlp", norm="batch", norm_kwargs={"momentum": "slow"})


# --- the research norms' constraints (issue 7, item 5): the layer, the numbers and the fix ---

@pytest.mark.parametrize("norm,layer", [("whiten_zca", "DecorrelatedBatchNorm"), ("iternorm", "IterNorm")])
def test_whitening_group_size_that_does_not_divide_the_channels(norm, layer):
    with pytest.raises(ValueError, match=re.escape(
            f"lenet: norm {norm!r} with {{'group_size': 4}} cannot normalize 6 channels: {layer}: group_size=4 "
            "does not divide num_features=6; choose a divisor of 6 (e.g. 2), or group_size=None for gcd(6, 16) = 2")):
        create_model("lenet", norm=norm, norm_kwargs={"group_size": 4})


def test_virtual_batch_size_that_does_not_divide_the_batch():
    net = create_model("lenet_bn", norm="ghost_batch", norm_kwargs={"virtual_batch_size": 3})
    with pytest.raises(ValueError, match=re.escape(
            "GhostBatchNorm: virtual_batch_size=3 does not divide the batch of 8 samples; use a batch size "
            "that is a multiple of 3, or a virtual_batch_size that divides 8 (e.g. 2)")) as e:
        net(torch.zeros(8, 1, 28, 28))
    assert _raised_in_normlab(e)
    assert net(torch.zeros(9, 1, 28, 28)).shape == (9, 10)


def test_batch_too_small_for_zca_says_how_many_values_it_needs():
    net = create_model("lenet_bn", norm="whiten_zca")
    # the convolutions see 4·24·24 values per channel, the first Linear layer's 120 features only 4
    with pytest.raises(ValueError, match=re.escape(
            "DecorrelatedBatchNorm: input (4, 120) has 4 values per channel, too few to estimate the 8×8 "
            "covariance of a group of 8 channels (its rank is at most 3); it needs more than 8 values per "
            "channel (N·∏spatial > group_size)")):
        net(torch.randn(4, 1, 28, 28))
    fc_iternorm = create_model("lenet_bn", norm="whiten_zca", fc_norm="iternorm")  # the preset's choice
    assert fc_iternorm(torch.randn(4, 1, 28, 28)).shape == (4, 10)
