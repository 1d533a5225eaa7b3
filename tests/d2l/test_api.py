"""normlab.d2l against the book's d2l: signatures, defaults, printed lines and numbers."""
from __future__ import annotations

import copy
import inspect
import re
import sys
from dataclasses import replace

import pytest
import torch
from torch import nn

import normlab.d2l as d2l
from normlab.data import FASHION_MNIST, DatasetNotFoundError, DownloadError, FashionMNIST, TensorLoader

# d2l/torch.py's signatures (d2l 0.17-1.0), as the chapters call them.
BOOK_SIGNATURES = {
    "load_data_fashion_mnist": "(batch_size, resize=None",
    "load_array": "(data_arrays, batch_size, is_train=True)",
    "get_fashion_mnist_labels": "(labels)",
    "try_gpu": "(i=0)", "try_all_gpus": "()", "cpu": "()", "gpu": "(i=0)", "num_gpus": "()",
    "accuracy": "(y_hat, y)",
    "evaluate_accuracy_gpu": "(net, data_iter, device=None)",
    "train_ch6": "(net, train_iter, test_iter, num_epochs, lr, device)",
    "set_figsize": "(figsize=(3.5, 2.5))",
    "use_svg_display": "()",
    "set_axes": "(axes, xlabel, ylabel, xlim, ylim, xscale, yscale, legend)",
    "plot": "(X, Y=None, xlabel=None, ylabel=None, legend=None, xlim=None, ylim=None, xscale='linear', "
            "yscale='linear', fmts=('-', 'm--', 'g-.', 'r:'), figsize=(3.5, 2.5), axes=None)",
    "Animator": "(xlabel=None, ylabel=None, legend=None, xlim=None, ylim=None, xscale='linear', "
                "yscale='linear', fmts=('-', 'm--', 'g-.', 'r:'), nrows=1, ncols=1, figsize=(3.5, 2.5)",
    "Residual": "(input_channels, num_channels, use_1x1conv=False, strides=1)",
    "corr2d": "(X, K)",
    "Accumulator": "(n)", "Timer": "()",
}


@pytest.mark.parametrize("name", sorted(BOOK_SIGNATURES))
def test_signature_is_the_books(name):
    """Every book parameter in the book's order with the book's default (keyword-only extras may follow)."""
    assert str(inspect.signature(getattr(d2l, name))).startswith(BOOK_SIGNATURES[name])


# train_ch6 over 1 epoch sets xlim [1, 1], as the book's does; matplotlib widens it with a warning
pytestmark = pytest.mark.filterwarnings("ignore:Attempting to set identical low and high xlims")


@pytest.fixture(autouse=True)
def headless(monkeypatch, tmp_path):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(tmp_path)


# ---------------------------------------------------------------- small helpers

def test_accuracy_counts_correct_predictions():
    y = torch.tensor([0, 2, 1, 1])
    logits = torch.tensor([[3., 1, 0], [0, 1, 2], [0, 5, 1], [9, 0, 0]])
    assert d2l.accuracy(logits, y) == 3.0           # a count, as the book's, not a fraction
    assert d2l.accuracy(torch.tensor([0, 2, 0, 1]), y) == 3.0   # 1-D: already class indices


def test_accumulator_and_timer():
    acc = d2l.Accumulator(3)
    acc.add(torch.tensor(1.5), 2, 3.0)
    acc.add(0.5, 1, 1)
    assert acc.data == [2.0, 3.0, 4.0] and acc[1] == 3.0
    acc.reset()
    assert acc.data == [0.0, 0.0, 0.0]
    timer = d2l.Timer()
    timer.times = [1.0, 2.0, 3.0]
    assert (timer.sum(), timer.avg(), timer.cumsum()) == (6.0, 2.0, [1.0, 3.0, 6.0])
    timer.start()
    assert 0 <= timer.stop() < 1 and len(timer.times) == 4


@pytest.mark.parametrize("count, gpu0, all_gpus", [
    (0, "cpu", ["cpu"]),
    (2, "cuda:0", ["cuda:0", "cuda:1"]),
])
def test_devices(monkeypatch, count, gpu0, all_gpus):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    assert d2l.num_gpus() == count
    assert str(d2l.try_gpu()) == gpu0
    assert str(d2l.try_gpu(1)) == ("cuda:1" if count == 2 else "cpu")
    assert str(d2l.try_gpu(2)) == "cpu"
    assert [str(d) for d in d2l.try_all_gpus()] == all_gpus
    assert d2l.cpu() == torch.device("cpu") and d2l.gpu(3) == torch.device("cuda:3")


def test_fashion_mnist_labels():
    assert d2l.get_fashion_mnist_labels(torch.tensor([0, 9, 5])) == ["t-shirt", "ankle boot", "sandal"]


def test_load_array_batches_and_shuffles():
    X, y = torch.arange(10.).view(10, 1), torch.arange(10)
    ordered = d2l.load_array((X, y), 4, is_train=False)
    assert len(ordered) == 3
    assert [b[1].tolist() for b in ordered] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    shuffled = d2l.load_array((X, y), 4)
    first, second = (torch.cat([b[1] for b in shuffled]) for _ in range(2))
    assert sorted(first.tolist()) == list(range(10)) and not torch.equal(first, second)  # reshuffled each epoch
    assert all(torch.equal(bx.view(-1).long(), by) for bx, by in shuffled)  # rows stay paired


def test_unknown_name_suggests_the_right_one():
    with pytest.raises(AttributeError, match=r"has no attribute 'ply'. Did you mean: 'plt'\?"):
        d2l.ply  # noqa: B018 (the typo in the NiN note)
    assert d2l.plt is sys.modules["matplotlib.pyplot"]


def test_plt_without_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    monkeypatch.delitem(sys.modules, "matplotlib.pyplot", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'normlab\[plot\]'"):
        d2l.plt  # noqa: B018


# ---------------------------------------------------------------- plots

def test_plot_and_set_axes_draw_the_books_figure():
    plt = d2l.plt
    plt.figure()
    x = torch.arange(0, 3, 0.5)
    d2l.plot(x, [x ** 2, 2 * x], "x", "f(x)", legend=["x²", "2x"], xlim=[0, 3])
    ax = plt.gca()
    assert [line.get_linestyle() for line in ax.lines] == ["-", "--"]
    assert ax.lines[1].get_color() == "m"
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_xlim()) == ("x", "f(x)", (0.0, 3.0))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["x²", "2x"]
    assert tuple(plt.rcParams["figure.figsize"]) == (3.5, 2.5)
    plt.close("all")


def test_animator_headless_writes_a_png_never_a_window(tmp_path, capsys):
    plt = d2l.plt
    before = plt.get_fignums()
    animator = d2l.Animator(xlabel="epoch", xlim=[1, 3], legend=["loss", "acc"], path="curves.png")
    animator.save_every = 3600.0  # only the first point and flush() write
    for k in range(1, 4):
        animator.add(k, (1.0 / k, None if k == 2 else 0.5))
    assert animator.X == [[1, 2, 3], [1, 3]] and animator.Y == [[1.0, 0.5, 1 / 3], [0.5, 0.5]]
    first = (tmp_path / "curves.png").stat().st_mtime_ns
    animator.flush()
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "curves.png").stat().st_mtime_ns >= first
    assert [len(line.get_xdata()) for line in animator.axes[0].lines] == [3, 2]
    assert plt.get_fignums() == before  # pyplot never saw it: plt.show() has nothing to block on
    out, err = capsys.readouterr()
    assert out == "" and err.count("curves.png") == 1
    assert list(tmp_path.glob(".curves.png*")) == []  # written atomically: no temporary left


def test_animators_number_their_default_files():
    first, second = d2l.Animator(), d2l.Animator()
    assert second.path != first.path and re.fullmatch(r".*/animator(-\d+)?\.png", second.path)


# ---------------------------------------------------------------- data

@pytest.mark.usefixtures("real_fashion_mnist")
def test_load_data_fashion_mnist_is_the_books():
    torch.manual_seed(0)
    train_iter, test_iter = d2l.load_data_fashion_mnist(256)
    assert (len(train_iter), len(test_iter)) == (235, 40)
    X, y = next(iter(train_iter))
    assert (X.shape, X.dtype, y.shape, y.dtype) == ((256, 1, 28, 28), torch.float32, (256,), torch.int64)
    assert 0 <= X.min() and X.max() <= 1
    test = FashionMNIST(train=False)
    Xt, yt = next(iter(test_iter))  # the test set in order
    assert torch.equal(yt, test.targets[:256]) and torch.equal(Xt[:, 0], test.data[:256].float() / 255)
    epoch1, epoch2 = (next(iter(train_iter))[1] for _ in range(2))
    assert not torch.equal(epoch1, epoch2)  # reshuffled every epoch
    torch.manual_seed(0)
    assert torch.equal(next(iter(d2l.load_data_fashion_mnist(256)[0]))[1], y)  # torch's seed fixes the order
    X96, _ = next(iter(d2l.load_data_fashion_mnist(128, resize=96)[1]))
    assert X96.shape == (128, 1, 96, 96)


@pytest.fixture
def no_data_anywhere(monkeypatch, tmp_path):
    """No folder holds Fashion-MNIST and its only mirror answers 404 (a loopback server)."""
    import functools
    import http.server
    import threading

    www = tmp_path / "www"
    www.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(www)))
    httpd.RequestHandlerClass.log_message = lambda *args: None
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    info = replace(FASHION_MNIST, system_dirs=(), mirrors=(f"http://127.0.0.1:{httpd.server_address[1]}/",))
    monkeypatch.setattr(FashionMNIST, "info", info)
    yield tmp_path / "empty"
    httpd.shutdown()
    httpd.server_close()


def test_missing_dataset_names_the_fix(no_data_anywhere):
    with pytest.raises(DownloadError) as raised:  # the book downloads; so does this, MD5-checked
        d2l.load_data_fashion_mnist(256, root=no_data_anywhere)
    message = str(raised.value)
    assert "every mirror failed" in message and "404" in message
    assert "apt-get install dataset-fashion-mnist" in message and "NORMLAB_DATA" in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__  # one error, not a chain
    assert not list(no_data_anywhere.rglob("*.gz"))  # nothing half-downloaded
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        d2l.load_data_fashion_mnist(256, root=no_data_anywhere, download=False)


# ---------------------------------------------------------------- training

def tiny_loaders(n_train=40, n_test=16, batch_size=8, seed=0):
    """Images whose label is the brighter half: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n_train + n_test, 1, 8, 8, generator=g)
    y = torch.randint(0, 2, (n_train + n_test,), generator=g)
    X[y == 1, :, :4] += 1
    return (TensorLoader(X[:n_train], y[:n_train], batch_size=batch_size, seed=seed),
            TensorLoader(X[n_train:], y[n_train:], batch_size=batch_size, shuffle=False))


def tiny_net():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))


def book_train_ch6(net, train_iter, test_iter, num_epochs, lr):
    """The book's loop, as plainly as it can be written: the numbers train_ch6 must print."""
    for m in net.modules():
        if type(m) in (nn.Linear, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    for _ in range(num_epochs):
        net.train()
        loss_sum = correct = count = 0.0
        for X, y in train_iter:
            optimizer.zero_grad()
            y_hat = net(X)
            loss = nn.functional.cross_entropy(y_hat, y)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(y)
            correct += float((y_hat.argmax(1) == y).sum())
            count += len(y)
    net.eval()
    with torch.no_grad():
        test_acc = sum(float((net(X).argmax(1) == y).sum()) for X, y in test_iter) / test_iter.num_examples
    return f"loss {loss_sum / count:.3f}, train acc {correct / count:.3f}, test acc {test_acc:.3f}"


class FixedTimer(d2l.Timer):
    def sum(self):
        return 2.0


def test_train_ch6_prints_the_books_lines_and_numbers(monkeypatch, capsys, tmp_path):
    net = tiny_net()
    reference = copy.deepcopy(net)
    torch.manual_seed(1)
    expected = book_train_ch6(reference, *tiny_loaders(), num_epochs=3, lr=0.5)
    monkeypatch.setattr(d2l, "Timer", FixedTimer)
    torch.manual_seed(1)
    d2l.train_ch6(net, *tiny_loaders(), 3, 0.5, d2l.cpu())
    out = capsys.readouterr().out
    # 40 examples × 3 epochs over the 2.0 s the (fixed) timer summed
    assert out == f"training on cpu\n{expected}\n60.0 examples/sec on cpu\n"
    for a, b in zip(net.state_dict().values(), reference.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert (tmp_path / "animator.png").exists() or list(tmp_path.glob("animator-*.png"))


def test_train_ch6_plots_five_times_per_epoch_and_below_five_batches(monkeypatch):
    made = []

    class Recording(d2l.Animator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(d2l, "Animator", Recording)
    d2l.train_ch6(tiny_net(), *tiny_loaders(n_train=80, batch_size=8), 2, 0.1, "cpu")   # 10 batches
    assert made[-1].X[0] == [0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0]  # every 10 // 5 = 2 batches
    assert made[-1].X[2] == [1, 2]                                              # test acc at epoch ends
    d2l.train_ch6(tiny_net(), *tiny_loaders(n_train=24, batch_size=8), 1, 0.1, "cpu")   # 3 batches
    assert made[-1].X[0] == pytest.approx([1 / 3, 2 / 3, 1.0])  # the book divides by 3 // 5 = 0 here


@pytest.mark.parametrize("epochs, n_train", [(0, 40), (-1, 40), (1, 0)])
def test_train_ch6_refuses_to_train_nothing(epochs, n_train):
    """The book ends in UnboundLocalError on `train_l` here; a clear error instead."""
    with pytest.raises(ValueError, match=r"train_ch6 needs num_epochs >= 1 and a train_iter with batches; "
                                         rf"got num_epochs={epochs} and {-(-n_train // 8)} batches"):
        d2l.train_ch6(tiny_net(), *tiny_loaders(n_train=n_train), epochs, 0.1, "cpu")


def test_train_ch6_initializes_exactly_the_books_layer_types(monkeypatch):
    class MyLinear(nn.Linear):
        pass

    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), MyLinear(72, 16), nn.Linear(16, 2))
    inited = []
    monkeypatch.setattr(nn.init, "xavier_uniform_", lambda w: inited.append(w.shape))
    d2l.train_ch6(net, *tiny_loaders(), 1, 0.1, "cpu")
    assert inited == [(2, 1, 3, 3), (2, 16)]  # type(m) == nn.Linear: the subclass keeps its init


def test_evaluate_accuracy_gpu_sets_eval_mode_and_counts():
    net = tiny_net().train()
    _, test_iter = tiny_loaders()
    acc = d2l.evaluate_accuracy_gpu(net, test_iter)
    assert not net.training
    with torch.no_grad():
        expected = sum(d2l.accuracy(net(X), y) for X, y in test_iter) / 16
    assert acc == expected


# ---------------------------------------------------------------- models

def test_corr2d_is_cross_correlation():
    X, K = torch.arange(9.0).reshape(3, 3), torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    assert d2l.corr2d(X, K).tolist() == [[19.0, 25.0], [37.0, 43.0]]  # the book's worked example
    X, K = torch.randn(6, 8), torch.randn(2, 3)
    torch.testing.assert_close(d2l.corr2d(X, K), nn.functional.conv2d(X[None, None], K[None, None])[0, 0])


@pytest.mark.parametrize("args, shape", [((3, 3), (4, 3, 6, 6)), ((3, 6, True, 2), (4, 6, 3, 3))])
def test_residual_is_the_books_block(args, shape):
    """Same shapes, parameter names and numbers as the book's block with torch's BatchNorm2d."""
    torch.manual_seed(0)
    block = d2l.Residual(*args)
    book = copy.deepcopy(block)
    book.bn1, book.bn2 = nn.BatchNorm2d(args[1]), nn.BatchNorm2d(args[1])
    assert list(block.state_dict()) == list(book.state_dict())
    book.load_state_dict(block.state_dict())
    X = torch.randn(4, 3, 6, 6, requires_grad=True)
    Y = block(X)
    assert Y.shape == shape
    torch.testing.assert_close(Y, book(X))
    torch.testing.assert_close(block.bn1.running_var, book.bn1.running_var)
    assert (block.conv3 is None) == (len(args) < 3)
