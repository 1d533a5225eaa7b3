"""The input sizes each model claims to take are exactly those torch can run: at the smallest
(and, for models that flatten into a Linear layer, the largest) the model runs, one pixel
beyond it torch itself fails. Checked on the meta device (shapes only), with our own check
bypassed for the sizes outside."""
import pytest
import torch
from torch import nn

from normlab.models import create_model, list_models

CONV_MODELS = [m for m in list_models() if m != "mlp"]


def _torch_runs(net, side):
    try:
        nn.Sequential.forward(net, torch.empty(1, 1, side, side))   # no check of ours
    except RuntimeError:
        return False
    return True


@pytest.mark.parametrize("name", CONV_MODELS)
def test_the_claimed_input_range_is_exact(name):
    with torch.device("meta"):
        net = create_model(name, norm="none")
        lo, hi = net.input_range
        assert net(torch.empty(1, 1, lo, lo)).shape == (1, 10)
        assert not _torch_runs(net, lo - 1) if lo > 1 else True
        if hi is not None:
            assert net(torch.empty(1, 1, hi, hi)).shape == (1, 10)
            assert not _torch_runs(net, hi + 1)
        if net.book_size:
            assert lo <= net.book_size and (hi is None or net.book_size <= hi)


def test_known_ranges():
    with torch.device("meta"):
        ranges = {name: create_model(name).input_range for name in CONV_MODELS}
    assert ranges == {"lenet": (28, 31), "lenet_bn": (28, 31), "alexnet": (193, 224),
                      "vgg": (224, 255), "nin": (67, None), "googlenet": (1, None),
                      "resnet18": (1, None), "resnet20": (1, None), "densenet": (29, None)}


def test_non_square_input_checks_each_side():
    net = create_model("lenet")
    with pytest.raises(ValueError, match="got 28×40"):
        net(torch.zeros(1, 1, 28, 40))
