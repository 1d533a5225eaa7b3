"""Where the norms go: placement, BN-LeNet's slots and dropout, the registry's None rule."""
import pytest
import torch
from torch import nn

from normlab.models import create_model, list_models
from normlab.nn import BatchNorm1d, BatchNorm2d, D2LBatchNorm, GroupNorm, LayerNorm
from normlab.nn.blocks import conv_norm_act, linear_norm_act, norm_act


def _types(net):
    return [type(m).__name__ for m in net]


def test_registry_lists_the_zoo_in_order():
    assert list_models() == ["lenet", "lenet_bn", "alexnet", "vgg", "nin", "googlenet",
                             "resnet18", "resnet20", "densenet", "mlp"]


def test_create_model_drops_none_so_defaults_stand():
    net = create_model("lenet_bn", norm=None, norm_position=None, num_classes=None)
    assert isinstance(net[1], BatchNorm2d) and net[-1].out_features == 10
    assert create_model("lenet_bn", norm="none")[1].__class__ is nn.Identity


def test_blocks_place_the_norm_before_or_after_the_activation():
    norm = lambda c: BatchNorm2d(c)  # noqa: E731  (what the factory returns: C -> module)
    assert [type(m) for m in norm_act(4, norm, nn.ReLU, "before_act")] == [BatchNorm2d, nn.ReLU]
    assert [type(m) for m in norm_act(4, norm, nn.ReLU, "after_act")] == [nn.ReLU, BatchNorm2d]
    assert [type(m) for m in conv_norm_act(1, 4, 3, norm_layer=None)] == [nn.Conv2d, nn.ReLU]
    assert [type(m) for m in linear_norm_act(3, 4, norm_layer=LayerNorm, act_layer=None)] == \
        [nn.Linear, LayerNorm]
    with pytest.raises(ValueError, match="unknown norm_position 'middle'"):
        norm_act(4, norm, nn.ReLU, "middle")


def test_lenet_with_a_norm_after_each_conv_and_hidden_linear():
    assert _types(create_model("lenet", norm="batch")) == [
        "Conv2d", "BatchNorm2d", "Sigmoid", "AvgPool2d", "Conv2d", "BatchNorm2d", "Sigmoid",
        "AvgPool2d", "Flatten", "Linear", "BatchNorm1d", "Sigmoid", "Linear", "BatchNorm1d",
        "Sigmoid", "Linear"]
    after = _types(create_model("lenet", norm="layer", norm_position="after_act"))
    assert after[:3] == ["Conv2d", "Sigmoid", "GroupNorm"] and after[9:12] == ["Linear", "Sigmoid", "LayerNorm"]


def test_layer_and_group_follow_the_factory_conventions():
    net = create_model("lenet", norm="layer")
    assert isinstance(net[1], GroupNorm) and net[1].num_groups == 1       # maps: GroupNorm(1, C)
    assert isinstance(net[10], LayerNorm)                                 # vectors: LayerNorm(C)
    net = create_model("lenet", norm="group")
    assert [m.num_groups for m in net if isinstance(m, GroupNorm)] == [2, 16, 8, 4]  # gcd(C, 32)


@pytest.mark.parametrize("slots, kept", [((1, 2, 3, 4), [1, 5, 10, 13]), ((2, 4), [5, 13]),
                                         ((1, 3), [1, 10]), ((), [])])
def test_lenet_bn_slots_keep_indices_and_put_identity_elsewhere(slots, kept):
    net = create_model("lenet_bn", norm_slots=slots)
    for i in (1, 5, 10, 13):
        expected = (BatchNorm2d if i < 8 else BatchNorm1d) if i in kept else nn.Identity
        assert type(net[i]) is expected, i


def test_lenet_bn_with_the_books_layer():
    net = create_model("lenet_bn", norm="batch_d2l")
    assert [type(net[i]) for i in (1, 5, 10, 13)] == [D2LBatchNorm] * 4
    assert (net[1].momentum, net[1].eps) == (0.9, 1e-5)


def test_bn_against_dropout():
    net = create_model("lenet_bn", norm_slots=(1, 2), fc_dropout=0.5)
    assert _types(net)[9:] == ["Linear", "Identity", "Sigmoid", "Dropout", "Linear", "Identity",
                               "Sigmoid", "Dropout", "Linear"]
    drops = [m for m in net if isinstance(m, nn.Dropout)]
    assert [m.p for m in drops] == [0.5, 0.5] and drops[0] is not drops[1]
    assert isinstance(create_model("lenet_bn", norm_slots=2)[5], BatchNorm2d)   # one slot as an int


def test_mlp_placement_study_models():
    pre = create_model("mlp", in_features=2, hidden=(4,), num_classes=1, norm="batch",
                       activation="tanh")
    post = create_model("mlp", in_features=2, hidden=(4,), num_classes=1, norm="batch",
                        activation="tanh", norm_position="after_act")
    assert _types(pre) == ["Flatten", "Linear", "BatchNorm1d", "Tanh", "Linear"]
    assert _types(post) == ["Flatten", "Linear", "Tanh", "BatchNorm1d", "Linear"]
    assert post(torch.randn(5, 2)).shape == (5, 1)


def test_residual_placement():
    before = create_model("resnet20")[1][0]
    assert [type(m).__name__ for m in before.branch] == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d"]
    assert [type(m).__name__ for m in before.out] == ["ReLU"]
    after = create_model("resnet20", norm_position="after_act")[1][0]
    assert [type(m).__name__ for m in after.branch] == ["Conv2d", "ReLU", "BatchNorm2d", "Conv2d"]
    assert [type(m).__name__ for m in after.out] == ["ReLU", "BatchNorm2d"]


def test_densenet_is_pre_activation():
    block = create_model("densenet")[1].net[0]
    assert [type(m).__name__ for m in block] == ["BatchNorm2d", "ReLU", "Conv2d"]


@pytest.mark.parametrize("name", ["lenet", "googlenet", "resnet20", "mlp"])
def test_num_classes_and_in_channels(name):
    net = create_model(name, num_classes=3, in_channels=3)
    side = {"lenet": 28, "googlenet": 32, "resnet20": 8, "mlp": 28}[name]
    assert net.eval()(torch.rand(2, 3, side, side)).shape == (2, 3)


def test_slices_are_plain_sequentials_of_the_same_layers():
    net = create_model("lenet_bn")
    head = net[:4]                      # conv, norm, sigmoid, pool
    assert type(head) is nn.Sequential and head[1] is net[1]
    assert head(torch.rand(2, 1, 28, 28)).shape == (2, 6, 12, 12)
    assert net[-1] is net[15]


@pytest.mark.parametrize("name", list_models())
def test_every_builder_takes_the_common_options(name):
    import inspect

    from normlab.models.registry import _MODELS
    params = inspect.signature(_MODELS[name]).parameters
    assert params["num_classes"].default == 10 and params["in_channels"].default == 1
    assert params["norm_position"].default == "before_act"
    assert params["norm"].default == ("batch" if name in {"lenet_bn", "resnet18", "resnet20",
                                                          "densenet"} else None)
    assert "norm_kwargs" in params
    assert all(p.kind is p.KEYWORD_ONLY for p in params.values())


@pytest.mark.parametrize("name", list_models())
def test_no_module_is_used_in_two_places(name):
    """A shared module would fire its hooks twice and mislead summary() and statistics."""
    kw = {"fc_dropout": 0.5} if name == "lenet_bn" else {}
    with torch.device("meta"):
        net = create_model(name, norm="batch", **kw) if name != "lenet_bn" else create_model(name, **kw)
    assert len(list(net.modules(remove_duplicate=False))) == len(list(net.modules()))
