"""Without options every model is the book's definition: the same parameter tensors (shapes)
and so the same count as the book's code, written here in plain torch.nn.

Both sides are built on the meta device: shapes and counts without memory or initialization.
"""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from normlab.models import create_model


# ---- the book's definitions (d2l.ai), verbatim up to names ----------------------------------

def book_lenet():
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.Sigmoid(), nn.AvgPool2d(2, 2),
        nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(), nn.AvgPool2d(2, 2), nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.Sigmoid(), nn.Linear(120, 84), nn.Sigmoid(),
        nn.Linear(84, 10))


def book_lenet_bn():
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5), nn.BatchNorm2d(6), nn.Sigmoid(), nn.AvgPool2d(2, 2),
        nn.Conv2d(6, 16, kernel_size=5), nn.BatchNorm2d(16), nn.Sigmoid(), nn.AvgPool2d(2, 2),
        nn.Flatten(), nn.Linear(256, 120), nn.BatchNorm1d(120), nn.Sigmoid(),
        nn.Linear(120, 84), nn.BatchNorm1d(84), nn.Sigmoid(), nn.Linear(84, 10))


def book_alexnet():
    return nn.Sequential(
        nn.Conv2d(1, 96, kernel_size=11, stride=4, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(96, 256, kernel_size=5, padding=2), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(256, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2), nn.Flatten(),
        nn.Linear(6400, 4096), nn.ReLU(), nn.Dropout(p=0.5),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(p=0.5),
        nn.Linear(4096, 10))


def book_vgg(conv_arch):
    def vgg_block(num_convs, in_channels, out_channels):
        layers = []
        for _ in range(num_convs):
            layers += [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1), nn.ReLU()]
            in_channels = out_channels
        return nn.Sequential(*layers, nn.MaxPool2d(kernel_size=2, stride=2))
    blocks, in_channels = [], 1
    for num_convs, out_channels in conv_arch:
        blocks.append(vgg_block(num_convs, in_channels, out_channels))
        in_channels = out_channels
    return nn.Sequential(
        *blocks, nn.Flatten(),
        nn.Linear(out_channels * 7 * 7, 4096), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4096, 10))


CONV_ARCH = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))


def book_nin():
    def nin_block(in_channels, out_channels, kernel_size, strides, padding):
        return nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size, strides, padding), nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU())
    return nn.Sequential(
        nin_block(1, 96, kernel_size=11, strides=4, padding=0), nn.MaxPool2d(3, stride=2),
        nin_block(96, 256, kernel_size=5, strides=1, padding=2), nn.MaxPool2d(3, stride=2),
        nin_block(256, 384, kernel_size=3, strides=1, padding=1), nn.MaxPool2d(3, stride=2),
        nn.Dropout(0.5), nin_block(384, 10, kernel_size=3, strides=1, padding=1),
        nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten())


class BookInception(nn.Module):
    def __init__(self, in_channels, c1, c2, c3, c4):
        super().__init__()
        self.p1_1 = nn.Conv2d(in_channels, c1, kernel_size=1)
        self.p2_1 = nn.Conv2d(in_channels, c2[0], kernel_size=1)
        self.p2_2 = nn.Conv2d(c2[0], c2[1], kernel_size=3, padding=1)
        self.p3_1 = nn.Conv2d(in_channels, c3[0], kernel_size=1)
        self.p3_2 = nn.Conv2d(c3[0], c3[1], kernel_size=5, padding=2)
        self.p4_1 = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)
        self.p4_2 = nn.Conv2d(in_channels, c4, kernel_size=1)


def book_googlenet():
    b1 = nn.Sequential(nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3), nn.ReLU(),
                       nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    b2 = nn.Sequential(nn.Conv2d(64, 64, kernel_size=1), nn.ReLU(),
                       nn.Conv2d(64, 192, kernel_size=3, padding=1), nn.ReLU(),
                       nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    b3 = nn.Sequential(BookInception(192, 64, (96, 128), (16, 32), 32),
                       BookInception(256, 128, (128, 192), (32, 96), 64))
    b4 = nn.Sequential(BookInception(480, 192, (96, 208), (16, 48), 64),
                       BookInception(512, 160, (112, 224), (24, 64), 64),
                       BookInception(512, 128, (128, 256), (24, 64), 64),
                       BookInception(512, 112, (144, 288), (32, 64), 64),
                       BookInception(528, 256, (160, 320), (32, 128), 128))
    b5 = nn.Sequential(BookInception(832, 256, (160, 320), (32, 128), 128),
                       BookInception(832, 384, (192, 384), (48, 128), 128))
    return nn.Sequential(b1, b2, b3, b4, b5, nn.Linear(1024, 10))


class BookResidual(nn.Module):
    def __init__(self, input_channels, num_channels, use_1x1conv=False, strides=1):
        super().__init__()
        self.conv1 = nn.Conv2d(input_channels, num_channels, kernel_size=3, padding=1,
                               stride=strides)
        self.conv2 = nn.Conv2d(num_channels, num_channels, kernel_size=3, padding=1)
        self.conv3 = (nn.Conv2d(input_channels, num_channels, kernel_size=1, stride=strides)
                      if use_1x1conv else None)
        self.bn1 = nn.BatchNorm2d(num_channels)
        self.bn2 = nn.BatchNorm2d(num_channels)

    def forward(self, X):
        Y = F.relu(self.bn1(self.conv1(X)))
        Y = self.bn2(self.conv2(Y))
        if self.conv3:
            X = self.conv3(X)
        return F.relu(Y + X)


def book_resnet_block(input_channels, num_channels, num_residuals, first_block=False):
    return [BookResidual(input_channels, num_channels, use_1x1conv=True, strides=2)
            if i == 0 and not first_block else BookResidual(num_channels, num_channels)
            for i in range(num_residuals)]


def book_resnet18():
    b1 = nn.Sequential(nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3),
                       nn.BatchNorm2d(64), nn.ReLU(),
                       nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    return nn.Sequential(
        b1, nn.Sequential(*book_resnet_block(64, 64, 2, first_block=True)),
        nn.Sequential(*book_resnet_block(64, 128, 2)),
        nn.Sequential(*book_resnet_block(128, 256, 2)),
        nn.Sequential(*book_resnet_block(256, 512, 2)),
        nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(512, 10))


def plain_resnet20():
    """He et al.'s CIFAR ResNet-20 with the book's residual block: conv3 16, 3 × 3 blocks."""
    return nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Sequential(*book_resnet_block(16, 16, 3, first_block=True)),
        nn.Sequential(*book_resnet_block(16, 32, 3)),
        nn.Sequential(*book_resnet_block(32, 64, 3)),
        nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(64, 10))


def book_densenet():
    def conv_block(input_channels, num_channels):
        return nn.Sequential(nn.BatchNorm2d(input_channels), nn.ReLU(),
                             nn.Conv2d(input_channels, num_channels, kernel_size=3, padding=1))

    def transition_block(input_channels, num_channels):
        return nn.Sequential(nn.BatchNorm2d(input_channels), nn.ReLU(),
                             nn.Conv2d(input_channels, num_channels, kernel_size=1),
                             nn.AvgPool2d(kernel_size=2, stride=2))
    b1 = nn.Sequential(nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3),
                       nn.BatchNorm2d(64), nn.ReLU(),
                       nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    num_channels, growth_rate, blks = 64, 32, []
    for i, num_convs in enumerate([4, 4, 4, 4]):
        blks.append(nn.Sequential(*(conv_block(num_convs_i * growth_rate + num_channels,
                                               growth_rate) for num_convs_i in range(num_convs))))
        num_channels += num_convs * growth_rate
        if i != 3:
            blks.append(transition_block(num_channels, num_channels // 2))
            num_channels = num_channels // 2
    return nn.Sequential(b1, *blks, nn.BatchNorm2d(num_channels), nn.ReLU(),
                         nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(),
                         nn.Linear(num_channels, 10))


def book_mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))


def seed_net_class1():
    """seed 003's net_class1(BN_model='pre'): 2 -> 4 (BN) -> 1."""
    return nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1))


CASES = [
    ("lenet", {}, book_lenet, 61_706),
    ("lenet_bn", {}, book_lenet_bn, 44_878),
    ("alexnet", {}, book_alexnet, 46_764_746),
    ("vgg", {}, lambda: book_vgg(CONV_ARCH), 128_806_154),
    ("vgg", {"width_divisor": 4}, lambda: book_vgg([(n, c // 4) for n, c in CONV_ARCH]), None),
    ("nin", {}, book_nin, None),
    ("googlenet", {}, book_googlenet, None),
    ("resnet18", {}, book_resnet18, None),
    ("resnet20", {}, plain_resnet20, None),
    ("densenet", {}, book_densenet, None),
    ("mlp", {}, book_mlp, None),
    ("mlp", {"in_features": 2, "hidden": (4,), "num_classes": 1, "norm": "batch"},
     seed_net_class1, 25),
]


def _shapes(net):
    return sorted(tuple(p.shape) for p in net.parameters())


@pytest.mark.parametrize("name, kw, book, count", CASES,
                         ids=[f"{c[0]}{'-' + '-'.join(map(str, c[1].values())) if c[1] else ''}"
                              for c in CASES])
def test_same_parameters_as_the_books_definition(name, kw, book, count):
    with torch.device("meta"):
        ours, theirs = create_model(name, **kw), book()
    n_ours = sum(p.numel() for p in ours.parameters())
    assert n_ours == sum(p.numel() for p in theirs.parameters())
    assert _shapes(ours) == _shapes(theirs)
    if count is not None:   # the counts in our docstrings
        assert n_ours == count


def test_lenet_bn_with_the_books_layer_has_its_parameter_shapes():
    with torch.device("meta"):
        net = create_model("lenet_bn", norm="batch_d2l")
    gammas = [tuple(m.gamma.shape) for m in net if hasattr(m, "gamma")]
    assert gammas == [(1, 6, 1, 1), (1, 16, 1, 1), (1, 120), (1, 84)]   # BatchNorm(C, num_dims)
    assert sum(p.numel() for p in net.parameters()) == 44_878
