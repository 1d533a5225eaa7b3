"""The book's pipeline, restated without torchvision (which does not import beside this torch):
the per-sample Fashion-MNIST dataset with ToTensor, the seeds' BN-LeNet with torch's layers, and
`train_ch6`'s loop. The references the benchmarks measure normlab against, in the same run.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from normlab.nn.batchnorm import d2l_batch_norm as batch_norm

try:
    from PIL import Image
except ImportError:  # pillow comes with matplotlib (the [plot] extra)
    Image = None


def to_tensor(pic) -> torch.Tensor:
    """torchvision's ToTensor for a mode-L PIL image: (H, W) uint8 -> (1, H, W) float in [0, 1]."""
    array = np.array(pic, np.uint8, copy=True)
    return torch.from_numpy(array).view(pic.size[1], pic.size[0], 1).permute(2, 0, 1).contiguous().float().div(255)


class BookFashionMNIST(torch.utils.data.Dataset):
    """torchvision.datasets.FashionMNIST's per-sample __getitem__, with ToTensor (and Resize)."""

    def __init__(self, data: torch.Tensor, targets: torch.Tensor, resize: int | None = None):
        self.data, self.targets, self.resize = data, targets, resize

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        image, target = self.data[i], int(self.targets[i])
        if Image is None:  # no pillow: the same per-sample work minus the PIL round trip
            x = image.unsqueeze(0).float().div(255)
        else:
            pic = Image.fromarray(image.numpy(), mode="L")
            if self.resize:
                pic = pic.resize((self.resize, self.resize), Image.BILINEAR)
            x = to_tensor(pic)
        if self.resize and Image is None:
            x = F.interpolate(x[None], size=(self.resize, self.resize), mode="bilinear")[0]
        return x, target


def book_bn_lenet() -> nn.Sequential:
    """The seeds' BN-LeNet (d2l §8.5, concise version): torch's BatchNorm, sigmoid, average pooling."""
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5), nn.BatchNorm2d(6), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), nn.BatchNorm2d(16), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2), nn.Flatten(),
        nn.Linear(256, 120), nn.BatchNorm1d(120), nn.Sigmoid(),
        nn.Linear(120, 84), nn.BatchNorm1d(84), nn.Sigmoid(),
        nn.Linear(84, 10))


def accuracy(y_hat: torch.Tensor, y: torch.Tensor) -> float:
    """d2l.accuracy: the number of correct predictions."""
    return float((y_hat.argmax(axis=1).type(y.dtype) == y).type(y.dtype).sum())


def train_ch6_epoch(net, train_iter, optimizer, device="cpu") -> tuple[float, float, int]:
    """One epoch of d2l's train_ch6 loop (without the Animator): (loss sum, correct, examples)."""
    loss = nn.CrossEntropyLoss()
    metric = [0.0, 0.0, 0]
    net.train()
    for X, y in train_iter:
        optimizer.zero_grad()
        X, y = X.to(device), y.to(device)
        y_hat = net(X)
        l = loss(y_hat, y)  # noqa: E741 (the book's name)
        l.backward()
        optimizer.step()
        with torch.no_grad():
            metric[0] += float(l * X.shape[0])
            metric[1] += accuracy(y_hat, y)
            metric[2] += X.shape[0]
    return metric[0], metric[1], metric[2]


# ---------------------------------------------------------------- the seeds' BN-LeNet, as written
# The study notes' from-scratch layer (d2l §8.5, seeds 000-002), verbatim but for the comments;
# its function `batch_norm` is the book's, which normlab keeps as written (imported above).

class BatchNorm(nn.Module):
    def __init__(self, num_features, num_dims):
        super().__init__()
        if num_dims == 2:
            shape = (1, num_features)
        else:
            shape = (1, num_features, 1, 1)
        self.gamma = nn.Parameter(torch.ones(shape))
        self.beta = nn.Parameter(torch.zeros(shape))
        self.moving_mean = torch.zeros(shape)
        self.moving_var = torch.ones(shape)

    def forward(self, X):
        if self.moving_mean.device != X.device:
            self.moving_mean = self.moving_mean.to(X.device)
            self.moving_var = self.moving_var.to(X.device)
        Y, self.moving_mean, self.moving_var = batch_norm(
            X, self.gamma, self.beta, self.moving_mean,
            self.moving_var, eps=1e-5, momentum=0.9)
        return Y


def seeds_bn_lenet() -> nn.Sequential:
    """The seeds' BN-LeNet with their from-scratch BatchNorm."""
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5), BatchNorm(6, num_dims=4), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), BatchNorm(16, num_dims=4), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2), nn.Flatten(),
        nn.Linear(16*4*4, 120), BatchNorm(120, num_dims=2), nn.Sigmoid(),
        nn.Linear(120, 84), BatchNorm(84, num_dims=2), nn.Sigmoid(),
        nn.Linear(84, 10))


# ---------------------------------------------------------------- d2l's loader

def load_data_fashion_mnist(batch_size, resize=None, num_workers=4):
    """d2l.load_data_fashion_mnist: torchvision's per-sample dataset in DataLoaders with 4 workers."""
    from normlab.data import FashionMNIST

    train, test = FashionMNIST(train=True), FashionMNIST(train=False)
    return (torch.utils.data.DataLoader(BookFashionMNIST(train.data, train.targets, resize), batch_size,
                                        shuffle=True, num_workers=num_workers),
            torch.utils.data.DataLoader(BookFashionMNIST(test.data, test.targets, resize), batch_size,
                                        shuffle=False, num_workers=num_workers))
