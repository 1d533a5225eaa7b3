"""The per-layer output shapes the seeds (and the book) printed, line for line.

Each test runs the book's own printing loop over the model's top-level layers (summary().book())
and compares with the printed text. LeNet, BN-LeNet, VGG-11 and GoogLeNet are the seeds'
printouts (seeds 002 and 001); the seeds printed no shapes for AlexNet and NiN, so those two are
the book's printouts (d2l.ai §8.1, §8.3), which follow from the same code. The big models run on
the meta device: torch computes every shape and no arithmetic.
"""
import pytest
import torch

from normlab.models import create_model, summary


def _lines(text):
    """(layer type, shape) per printed line, whitespace-insensitive."""
    out = []
    for line in text.strip().splitlines():
        name, shape = line.split("output shape:")
        out.append((name.strip(), shape.strip()))
    return out


# seed 002, LeNet; its first line, "Reshape output shape: torch.Size([1, 1, 28, 28])", is the
# book's view of a flat input as an image: our models take (N, 1, 28, 28) directly.
LENET = """
Conv2d output shape:     torch.Size([1, 6, 28, 28])
Sigmoid output shape:    torch.Size([1, 6, 28, 28])
AvgPool2d output shape:          torch.Size([1, 6, 14, 14])
Conv2d output shape:     torch.Size([1, 16, 10, 10])
Sigmoid output shape:    torch.Size([1, 16, 10, 10])
AvgPool2d output shape:          torch.Size([1, 16, 5, 5])
Flatten output shape:    torch.Size([1, 400])
Linear output shape:     torch.Size([1, 120])
Sigmoid output shape:    torch.Size([1, 120])
Linear output shape:     torch.Size([1, 84])
Sigmoid output shape:    torch.Size([1, 84])
Linear output shape:     torch.Size([1, 10])
"""

# seed 001, BN-LeNet with the book's BatchNorm class (ours: BatchNorm2d/1d, or D2LBatchNorm)
LENET_BN = """
Conv2d output shape: 	 torch.Size([1, 6, 24, 24])
BatchNorm output shape: 	 torch.Size([1, 6, 24, 24])
Sigmoid output shape: 	 torch.Size([1, 6, 24, 24])
AvgPool2d output shape: 	 torch.Size([1, 6, 12, 12])
Conv2d output shape: 	 torch.Size([1, 16, 8, 8])
BatchNorm output shape: 	 torch.Size([1, 16, 8, 8])
Sigmoid output shape: 	 torch.Size([1, 16, 8, 8])
AvgPool2d output shape: 	 torch.Size([1, 16, 4, 4])
Flatten output shape: 	 torch.Size([1, 256])
Linear output shape: 	 torch.Size([1, 120])
BatchNorm output shape: 	 torch.Size([1, 120])
Sigmoid output shape: 	 torch.Size([1, 120])
Linear output shape: 	 torch.Size([1, 84])
BatchNorm output shape: 	 torch.Size([1, 84])
Sigmoid output shape: 	 torch.Size([1, 84])
Linear output shape: 	 torch.Size([1, 10])
"""

# the book, §8.1 (the seeds trained AlexNet without printing its shapes)
ALEXNET = """
Conv2d output shape:	 torch.Size([1, 96, 54, 54])
ReLU output shape:	 torch.Size([1, 96, 54, 54])
MaxPool2d output shape:	 torch.Size([1, 96, 26, 26])
Conv2d output shape:	 torch.Size([1, 256, 26, 26])
ReLU output shape:	 torch.Size([1, 256, 26, 26])
MaxPool2d output shape:	 torch.Size([1, 256, 12, 12])
Conv2d output shape:	 torch.Size([1, 384, 12, 12])
ReLU output shape:	 torch.Size([1, 384, 12, 12])
Conv2d output shape:	 torch.Size([1, 384, 12, 12])
ReLU output shape:	 torch.Size([1, 384, 12, 12])
Conv2d output shape:	 torch.Size([1, 256, 12, 12])
ReLU output shape:	 torch.Size([1, 256, 12, 12])
MaxPool2d output shape:	 torch.Size([1, 256, 5, 5])
Flatten output shape:	 torch.Size([1, 6400])
Linear output shape:	 torch.Size([1, 4096])
ReLU output shape:	 torch.Size([1, 4096])
Dropout output shape:	 torch.Size([1, 4096])
Linear output shape:	 torch.Size([1, 4096])
ReLU output shape:	 torch.Size([1, 4096])
Dropout output shape:	 torch.Size([1, 4096])
Linear output shape:	 torch.Size([1, 10])
"""

# seed 002, VGG-11 at full width
VGG11 = """
Sequential output shape:         torch.Size([1, 64, 112, 112])
Sequential output shape:         torch.Size([1, 128, 56, 56])
Sequential output shape:         torch.Size([1, 256, 28, 28])
Sequential output shape:         torch.Size([1, 512, 14, 14])
Sequential output shape:         torch.Size([1, 512, 7, 7])
Flatten output shape:    torch.Size([1, 25088])
Linear output shape:     torch.Size([1, 4096])
ReLU output shape:       torch.Size([1, 4096])
Dropout output shape:    torch.Size([1, 4096])
Linear output shape:     torch.Size([1, 4096])
ReLU output shape:       torch.Size([1, 4096])
Dropout output shape:    torch.Size([1, 4096])
Linear output shape:     torch.Size([1, 10])
"""

# the book, §8.3 (the seeds printed the loop's code for NiN but not its output)
NIN = """
Sequential output shape:	 torch.Size([1, 96, 54, 54])
MaxPool2d output shape:	 torch.Size([1, 96, 26, 26])
Sequential output shape:	 torch.Size([1, 256, 26, 26])
MaxPool2d output shape:	 torch.Size([1, 256, 12, 12])
Sequential output shape:	 torch.Size([1, 384, 12, 12])
MaxPool2d output shape:	 torch.Size([1, 384, 5, 5])
Dropout output shape:	 torch.Size([1, 384, 5, 5])
Sequential output shape:	 torch.Size([1, 10, 5, 5])
AdaptiveAvgPool2d output shape:	 torch.Size([1, 10, 1, 1])
Flatten output shape:	 torch.Size([1, 10])
"""

# seed 002, GoogLeNet at 96×96
GOOGLENET = """
Sequential output shape:         torch.Size([1, 64, 24, 24])
Sequential output shape:         torch.Size([1, 192, 12, 12])
Sequential output shape:         torch.Size([1, 480, 6, 6])
Sequential output shape:         torch.Size([1, 832, 3, 3])
Sequential output shape:         torch.Size([1, 1024])
Linear output shape:     torch.Size([1, 10])
"""

# the book, §8.6: ResNet-18 printed at 224×224 (it trains at 96)
RESNET18 = """
Sequential output shape:	 torch.Size([1, 64, 56, 56])
Sequential output shape:	 torch.Size([1, 64, 56, 56])
Sequential output shape:	 torch.Size([1, 128, 28, 28])
Sequential output shape:	 torch.Size([1, 256, 14, 14])
Sequential output shape:	 torch.Size([1, 512, 7, 7])
AdaptiveAvgPool2d output shape:	 torch.Size([1, 512, 1, 1])
Flatten output shape:	 torch.Size([1, 512])
Linear output shape:	 torch.Size([1, 10])
"""


@pytest.mark.parametrize("name, side, printed, device", [
    ("lenet", 28, LENET, "cpu"),
    ("alexnet", 224, ALEXNET, "meta"),
    ("vgg", 224, VGG11, "meta"),
    ("nin", 224, NIN, "meta"),
    ("googlenet", 96, GOOGLENET, "meta"),
    ("resnet18", 224, RESNET18, "meta"),
])
def test_book_printout(name, side, printed, device):
    with torch.device(device):
        net = create_model(name)
    assert _lines(summary(net, (1, 1, side, side)).book()) == _lines(printed)


@pytest.mark.parametrize("norm, norm_name", [
    ("batch", {2: "BatchNorm2d", 1: "BatchNorm1d"}),
    ("batch_d2l", {2: "D2LBatchNorm", 1: "D2LBatchNorm"}),   # the seeds' own class
])
def test_bn_lenet_printout(norm, norm_name):
    expected = []
    for layer, shape in _lines(LENET_BN):
        if layer == "BatchNorm":   # the seed's class name; ours says which BatchNorm
            layer = norm_name[2 if shape.count(",") == 3 else 1]
        expected.append((layer, shape))
    assert _lines(summary(create_model("lenet_bn", norm=norm), 28).book()) == expected


def test_the_printout_is_the_books_print_statement():
    line = summary(create_model("lenet"), 28).book().splitlines()[0]
    assert line == "Conv2d output shape: \t torch.Size([1, 6, 28, 28])"
