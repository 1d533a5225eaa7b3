"""The book's helper module on normlab: change `from d2l import torch as d2l` to
`from normlab import d2l` and the code of the CNN and batch-norm chapters runs as written.

Every name those chapters use is here with d2l's signature, defaults and printed lines
(d2l.ai, `d2l/torch.py`; each section below names the book's section that defines it):

    data      load_data_fashion_mnist, get_fashion_mnist_labels, load_array
    devices   try_gpu, try_all_gpus, cpu, gpu, num_gpus
    training  Timer, Accumulator, accuracy, evaluate_accuracy_gpu, train_ch6
    plots     Animator, plt, set_figsize, use_svg_display, set_axes, plot
    models    corr2d, Residual

What differs from the book, and why:
- The data comes from normlab's verified in-memory loader (normlab.data): no torchvision, every
  file checked by MD5, and each batch made by one indexing op instead of 256 per-image
  conversions in worker processes. Batches, shapes, dtypes and `len(train_iter)` are the
  book's; resized images are interpolated in float rather than on 8-bit PIL images, so pixel
  values can differ from torchvision's by at most 1/255 (rounding).
- `Animator` draws live in Jupyter as the book's does; anywhere else it writes a PNG (see its
  docstring) instead of printing `<Figure ...>` lines, and never opens a window or blocks.
- `train_ch6` plots every batch when an epoch has fewer than 5 batches, where the book's
  `(i + 1) % (num_batches // 5)` divides by zero, and refuses to train nothing (num_epochs < 1)
  with a ValueError; every number it prints is the book's.
- `Residual` normalizes with normlab's from-scratch `BatchNorm2d` (exact to torch's).
"""
from __future__ import annotations

import atexit
import difflib
import os
import sys
import time
import weakref

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from normlab.data import DataError, TensorLoader, load_fashion_mnist
from normlab.nn import BatchNorm2d

__all__ = [
    "Accumulator", "Animator", "Residual", "Timer", "accuracy", "corr2d", "cpu", "evaluate_accuracy_gpu",
    "get_fashion_mnist_labels", "gpu", "load_array", "load_data_fashion_mnist", "num_gpus", "plot",
    "plt",  # noqa: F822 (the module's __getattr__ imports matplotlib.pyplot on first use)
    "set_axes", "set_figsize", "train_ch6", "try_all_gpus", "try_gpu", "use_svg_display",
]


# ---------------------------------------------------------------- plotting (§2.4 Calculus)

def __getattr__(name: str):
    """`d2l.plt` is matplotlib.pyplot, imported on first use (matplotlib is the [plot] extra)."""
    if name == "plt":
        return _pyplot()
    close = difflib.get_close_matches(name, __all__, n=1)
    hint = f". Did you mean: '{close[0]}'?" if close else ""
    raise AttributeError(f"module 'normlab.d2l' has no attribute {name!r}{hint}")


def _pyplot():
    try:
        from matplotlib import pyplot
    except ImportError:
        raise ImportError("d2l's plots need matplotlib: pip install 'normlab[plot]' "
                          "(or pip install matplotlib)") from None
    return pyplot


def _in_notebook() -> bool:
    """True inside a Jupyter kernel, where figures are displayed rather than saved."""
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    return type(shell).__name__ == "ZMQInteractiveShell"


def use_svg_display():
    """Use the svg format to display a plot in Jupyter (outside Jupyter: nothing to do)."""
    if _in_notebook():
        from matplotlib_inline import backend_inline
        backend_inline.set_matplotlib_formats("svg")


def set_figsize(figsize=(3.5, 2.5)):
    """Set the figure size for matplotlib."""
    use_svg_display()
    _pyplot().rcParams["figure.figsize"] = figsize


def set_axes(axes, xlabel, ylabel, xlim, ylim, xscale, yscale, legend):
    """Set the axes for matplotlib."""
    axes.set_xlabel(xlabel), axes.set_ylabel(ylabel)
    axes.set_xscale(xscale), axes.set_yscale(yscale)
    axes.set_xlim(xlim), axes.set_ylim(ylim)
    if legend:
        axes.legend(legend)
    axes.grid()


def plot(X, Y=None, xlabel=None, ylabel=None, legend=None, xlim=None, ylim=None, xscale="linear",
         yscale="linear", fmts=("-", "m--", "g-.", "r:"), figsize=(3.5, 2.5), axes=None):
    """Plot data points: one curve per row of Y (or of X when Y is None), on `axes` or the current axes."""
    def has_one_axis(X):  # True if X (tensor or list) has 1 axis
        return (hasattr(X, "ndim") and X.ndim == 1 or isinstance(X, list)
                and not hasattr(X[0], "__len__"))

    if has_one_axis(X):
        X = [X]
    if Y is None:
        X, Y = [[]] * len(X), X
    elif has_one_axis(Y):
        Y = [Y]
    if len(X) != len(Y):
        X = X * len(Y)
    set_figsize(figsize)
    if axes is None:
        axes = _pyplot().gca()
    axes.cla()
    for x, y, fmt in zip(X, Y, fmts):
        axes.plot(x, y, fmt) if len(x) else axes.plot(y, fmt)
    set_axes(axes, xlabel, ylabel, xlim, ylim, xscale, yscale, legend or [])


class Animator:
    """For plotting data in animation (§3.6): `add(x, y)` appends a point to each curve.

    In Jupyter the figure is redrawn in place, as the book's is. Anywhere else (a script, a
    terminal, CI) it is written to `path`, default `animator.png` in the working folder
    (`animator-2.png` for the second Animator of a process, ...), atomically, at most every
    `save_every` seconds while points arrive and once more when `flush()` is called (train_ch6
    does at its end) or the process exits;
    its path goes to stderr once, so stdout keeps the book's lines.
    """

    count = 0          # Animators made in this process: numbers the default file names
    save_every = 5.0   # seconds between two PNG writes while points arrive (one costs ~65 ms)

    def __init__(self, xlabel=None, ylabel=None, legend=None, xlim=None, ylim=None, xscale="linear",
                 yscale="linear", fmts=("-", "m--", "g-.", "r:"), nrows=1, ncols=1, figsize=(3.5, 2.5),
                 *, path=None):
        if legend is None:
            legend = []
        use_svg_display()
        self.live = _in_notebook()
        if self.live:
            self.fig, self.axes = _pyplot().subplots(nrows, ncols, figsize=figsize)
        else:  # a figure pyplot does not know: no window, nothing for plt.show() to block on
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
            self.fig = Figure(figsize=figsize)
            FigureCanvasAgg(self.fig)
            self.axes = self.fig.subplots(nrows, ncols)
        if nrows * ncols == 1:
            self.axes = [self.axes, ]
        # Use a lambda function to capture arguments
        self.config_axes = lambda: set_axes(self.axes[0], xlabel, ylabel, xlim, ylim, xscale, yscale, legend)
        self.X, self.Y, self.fmts = None, None, fmts
        Animator.count += 1
        name = path or ("animator.png" if Animator.count == 1 else f"animator-{Animator.count}.png")
        self.path = os.path.abspath(name)  # the folder it was made in, even if the program moves on
        self._saved_at, self._dirty = -float("inf"), False  # never saved yet, nothing to save
        if not self.live:
            _unsaved.add(self)

    def add(self, x, y):
        """Add multiple data points into the figure."""
        if not hasattr(y, "__len__"):
            y = [y]
        n = len(y)
        if not hasattr(x, "__len__"):
            x = [x] * n
        if not self.X:
            self.X = [[] for _ in range(n)]
        if not self.Y:
            self.Y = [[] for _ in range(n)]
        for i, (a, b) in enumerate(zip(x, y)):
            if a is not None and b is not None:
                self.X[i].append(a)
                self.Y[i].append(b)
        if self.live:
            from IPython import display
            self._draw()
            display.display(self.fig)
            display.clear_output(wait=True)
        else:
            self._dirty = True
            if time.monotonic() - self._saved_at >= self.save_every:
                self.flush()

    def _draw(self):
        self.axes[0].cla()
        for x, y, fmt in zip(self.X, self.Y, self.fmts):
            self.axes[0].plot(x, y, fmt)
        self.config_axes()

    def flush(self):
        """Write the PNG now if points came since the last write (outside Jupyter)."""
        if self.live or not self._dirty:
            return
        from normlab.plotting import save_figure  # atomic PNG, as every normlab figure
        self._draw()
        save_figure(self.fig, self.path)
        if self._saved_at == -float("inf"):  # the first write: say where the plot is, once
            print(f"d2l.Animator: no notebook to draw in; the plot is in {self.path}", file=sys.stderr)
        self._saved_at, self._dirty = time.monotonic(), False


_unsaved: weakref.WeakSet[Animator] = weakref.WeakSet()


@atexit.register
def _flush_animators():
    for animator in list(_unsaved):
        try:
            animator.flush()
        except OSError as e:  # at exit: say it, do not raise over the program's own outcome
            print(f"d2l.Animator: could not write {animator.path}: {e}", file=sys.stderr)


# ---------------------------------------------------------------- timing and counting (§3.1, §3.6)

class Timer:
    """Record multiple running times."""

    def __init__(self):
        self.times = []
        self.start()

    def start(self):
        """Start the timer."""
        self.tik = time.perf_counter()

    def stop(self):
        """Stop the timer and record the time in a list."""
        self.times.append(time.perf_counter() - self.tik)
        return self.times[-1]

    def avg(self):
        """Return the average time."""
        return sum(self.times) / len(self.times)

    def sum(self):
        """Return the sum of time."""
        return sum(self.times)

    def cumsum(self):
        """Return the accumulated time."""
        return np.array(self.times).cumsum().tolist()


class Accumulator:
    """For accumulating sums over `n` variables."""

    def __init__(self, n):
        self.data = [0.0] * n

    def add(self, *args):
        self.data = [a + float(b) for a, b in zip(self.data, args)]

    def reset(self):
        self.data = [0.0] * len(self.data)

    def __getitem__(self, idx):
        return self.data[idx]


def accuracy(y_hat, y):
    """Compute the number of correct predictions (§3.6): a count, not a fraction."""
    if len(y_hat.shape) > 1 and y_hat.shape[1] > 1:
        y_hat = y_hat.argmax(axis=1)
    cmp = y_hat.type(y.dtype) == y
    return float(cmp.type(y.dtype).sum())


# ---------------------------------------------------------------- devices (§5.6)

def cpu():
    """Get the CPU device."""
    return torch.device("cpu")


def gpu(i=0):
    """Get a GPU device."""
    return torch.device(f"cuda:{i}")


def num_gpus():
    """Get the number of available GPUs."""
    return torch.cuda.device_count()


def try_gpu(i=0):
    """Return gpu(i) if exists, otherwise return cpu(). (CUDA only, as the book: no MPS.)"""
    if num_gpus() >= i + 1:
        return gpu(i)
    return cpu()


def try_all_gpus():
    """Return all available GPUs, or [cpu(),] if no GPU exists."""
    return [gpu(i) for i in range(num_gpus())] or [cpu()]


# ---------------------------------------------------------------- data (§3.3, §3.5)

def get_fashion_mnist_labels(labels):
    """Return text labels for the Fashion-MNIST dataset."""
    text_labels = ["t-shirt", "trouser", "pullover", "dress", "coat",
                   "sandal", "shirt", "sneaker", "bag", "ankle boot"]
    return [text_labels[int(i)] for i in labels]


def load_array(data_arrays, batch_size, is_train=True):
    """Construct a PyTorch data iterator: batches of `data_arrays`, reshuffled each epoch if `is_train`."""
    return TensorLoader(*data_arrays, batch_size=batch_size, shuffle=is_train)


def load_data_fashion_mnist(batch_size, resize=None, *, root=None, download=True):
    """Download the Fashion-MNIST dataset and then load it into memory.

    Returns `(train_iter, test_iter)`, as the book's: X float32 (batch, 1, H, W) in [0, 1], y
    int64; the training order reshuffled every epoch (from torch's global seed), the test set
    in order; `resize` (an int or (H, W)) scales the images bilinearly. The files are looked
    up as normlab.data does (`root`, $NORMLAB_DATA, ~/.cache/normlab, Debian's
    dataset-fashion-mnist), and downloaded, MD5-checked, only when no folder has them.
    """
    try:
        return load_fashion_mnist(batch_size, resize=resize, root=root, download=download)
    except DataError as e:  # the message names the files and the fix; the loader's frames add nothing
        raise type(e)(str(e)) from None


# ---------------------------------------------------------------- training (§6.6)

def evaluate_accuracy_gpu(net, data_iter, device=None):
    """Compute the accuracy for a model on a dataset using a GPU."""
    if isinstance(net, nn.Module):
        net.eval()  # Set the model to evaluation mode
        if not device:
            device = next(iter(net.parameters())).device
    # No. of correct predictions, no. of predictions
    metric = Accumulator(2)
    with torch.no_grad():
        for X, y in data_iter:
            if isinstance(X, list):
                # Required for BERT Fine-tuning (to be covered later)
                X = [x.to(device) for x in X]
            else:
                X = X.to(device)
            y = y.to(device)
            metric.add(accuracy(net(X), y), y.numel())
    return metric[0] / metric[1]


def train_ch6(net, train_iter, test_iter, num_epochs, lr, device):
    """Train a model with a GPU (defined in Chapter 6).

    As the book: Xavier-uniform init of every nn.Linear and nn.Conv2d weight (exact type, so
    subclasses keep theirs; a second call starts the weights afresh), SGD at `lr`,
    cross-entropy; prints 'training on DEVICE', then 'loss …, train acc …, test acc …' (the
    last epoch's training averages) and 'N examples/sec on DEVICE'. That figure is the last
    epoch's example count × num_epochs over the time spent inside the training steps only:
    loading data and evaluating are not counted (the book's definition, kept).

    Two departures, both where the book's code crashes: it plots every batch when an epoch has
    fewer than 5 batches (the book computes `(i + 1) % (num_batches // 5)`, a division by
    zero), and it refuses num_epochs < 1 or an empty train_iter with a ValueError (the book
    ends in an UnboundLocalError on `train_l` after training nothing).
    """
    if num_epochs < 1 or len(train_iter) == 0:
        raise ValueError(f"train_ch6 needs num_epochs >= 1 and a train_iter with batches; got "
                         f"num_epochs={num_epochs} and {len(train_iter)} batches")

    def init_weights(m):
        if type(m) == nn.Linear or type(m) == nn.Conv2d:  # noqa: E721 (the book's exact-type test)
            nn.init.xavier_uniform_(m.weight)
    net.apply(init_weights)
    print("training on", device)
    net.to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    loss = nn.CrossEntropyLoss()
    animator = Animator(xlabel="epoch", xlim=[1, num_epochs],
                        legend=["train loss", "train acc", "test acc"])
    timer, num_batches = Timer(), len(train_iter)
    plot_every = max(num_batches // 5, 1)  # the book: num_batches // 5, zero below 5 batches
    for epoch in range(num_epochs):
        # Sum of training loss, sum of training accuracy, no. of examples
        metric = Accumulator(3)
        net.train()
        for i, (X, y) in enumerate(train_iter):
            timer.start()
            optimizer.zero_grad()
            X, y = X.to(device), y.to(device)
            y_hat = net(X)
            l = loss(y_hat, y)  # noqa: E741 (the book's name)
            l.backward()
            optimizer.step()
            with torch.no_grad():
                metric.add(l * X.shape[0], accuracy(y_hat, y), X.shape[0])
            timer.stop()
            train_l = metric[0] / metric[2]
            train_acc = metric[1] / metric[2]
            if (i + 1) % plot_every == 0 or i == num_batches - 1:
                animator.add(epoch + (i + 1) / num_batches, (train_l, train_acc, None))
        test_acc = evaluate_accuracy_gpu(net, test_iter)
        animator.add(epoch + 1, (None, None, test_acc))
    animator.flush()
    print(f"loss {train_l:.3f}, train acc {train_acc:.3f}, "
          f"test acc {test_acc:.3f}")
    print(f"{metric[2] * num_epochs / timer.sum():.1f} examples/sec "
          f"on {str(device)}")


# ---------------------------------------------------------------- models (§6.2, §8.6)

def corr2d(X, K):
    """Compute 2D cross-correlation: the book's two loops, one output element at a time."""
    h, w = K.shape
    Y = torch.zeros((X.shape[0] - h + 1, X.shape[1] - w + 1))
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            Y[i, j] = (X[i:i + h, j:j + w] * K).sum()
    return Y


class Residual(nn.Module):
    """The Residual block of ResNet models: relu(bn2(conv2(relu(bn1(conv1(X))))) + shortcut(X)),
    the shortcut a strided 1×1 conv (`conv3`) when `use_1x1conv`, else X itself."""

    def __init__(self, input_channels, num_channels, use_1x1conv=False, strides=1):
        super().__init__()
        self.conv1 = nn.Conv2d(input_channels, num_channels, kernel_size=3, padding=1, stride=strides)
        self.conv2 = nn.Conv2d(num_channels, num_channels, kernel_size=3, padding=1)
        if use_1x1conv:
            self.conv3 = nn.Conv2d(input_channels, num_channels, kernel_size=1, stride=strides)
        else:
            self.conv3 = None
        self.bn1 = BatchNorm2d(num_channels)
        self.bn2 = BatchNorm2d(num_channels)

    def forward(self, X):
        Y = F.relu(self.bn1(self.conv1(X)))
        Y = self.bn2(self.conv2(Y))
        if self.conv3:
            X = self.conv3(X)
        Y += X
        return F.relu(Y)
