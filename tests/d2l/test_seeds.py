"""Every ```py / ```python block of the study notes 000, 001 and 002 runs on normlab.d2l with only
its import line changed, on the real Fashion-MNIST.

Each note's blocks run in order in one namespace, as the cells of the notebook it was written
in (000's first block uses `torch` before any block imports it: that notebook had imported it).
The fixture cuts only what a test of the book's code may: `d2l.train_ch6` trains 1 epoch, the loaders of
96-224 px inputs serve 1 training batch and 1 test batch of 16 images each (a batch of 128 at 224 px takes
VGG seconds), and those of 28 px inputs the first 24 training batches (6,144 images at batch 256) and 8 test
batches. The LeNet block of 002 brings its own `train_ch6`
and so trains its 10 epochs, on those batches (on all the data it took 75 s of the suite). Every shape
line a block printed equals the note's, and every training prints the book's three lines.
"""
from __future__ import annotations

import itertools
import re

import pytest
import torch
from book_code import SEEDS, code_blocks, printed_text, run_block, shape_lines

import normlab.d2l

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("real_fashion_mnist"),
              # a 1-epoch train_ch6 sets xlim [1, 1], as the book's does; matplotlib widens it
              pytest.mark.filterwarnings("ignore:Attempting to set identical low and high xlims")]

TRAIN_EPOCHS = 1
# (train batches, test batches, images per batch or None for all) served at 96-224 px and at 28 px
BATCHES = {"big": (1, 1, 16), "28 px": (24, 8, None)}

# The one block that cannot run to its end: its last line has a typo (`d2l.ply.show()`), which
# fails as it would on the book's d2l, after the training it is there for.
TYPO = {("002_cnns", 3): (AttributeError, "has no attribute 'ply'. Did you mean: 'plt'?")}

# The blocks whose whole printout the note shows and no training changes: torch.mean's demo.
EXACT = {("000_bn_recall", 0)}

CLOSING = re.compile(r"training on (cpu|cuda:0)\n"
                     r"loss \d\.\d{3}, train acc \d\.\d{3}, test acc \d\.\d{3}\n"
                     r"\d+\.\d examples/sec on \1\n")


class FirstBatches:
    """The first `n` batches of a loader (their first `size` images), with len() to match."""

    def __init__(self, loader, n, size=None):
        self.loader, self.n, self.size = loader, min(n, len(loader)), size

    def __iter__(self):
        for X, y in itertools.islice(iter(self.loader), self.n):
            yield X[:self.size], y[:self.size]

    def __len__(self):
        return self.n


@pytest.fixture
def book_scale(monkeypatch, tmp_path):
    """Cut epochs and batches; run in a scratch folder (the Animator's PNG goes there)."""
    train_ch6, load = normlab.d2l.train_ch6, normlab.d2l.load_data_fashion_mnist

    def short_train_ch6(net, train_iter, test_iter, num_epochs, lr, device):
        train_ch6(net, train_iter, test_iter, min(num_epochs, TRAIN_EPOCHS), lr, device)

    def small_load(batch_size, resize=None, **kw):
        train_iter, test_iter = load(batch_size, resize, **kw)
        n_train, n_test, size = BATCHES["big" if resize and resize >= 96 else "28 px"]
        return FirstBatches(train_iter, n_train, size), FirstBatches(test_iter, n_test, size)

    monkeypatch.setattr(normlab.d2l, "train_ch6", short_train_ch6)
    monkeypatch.setattr(normlab.d2l, "load_data_fashion_mnist", small_load)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    return tmp_path


def run_note(name):
    """Run a note's blocks in order in one namespace; yield (block, printed text, exception)."""
    namespace = {"__name__": "__main__"}
    exec("import torch", namespace)
    for block in code_blocks(SEEDS / name):
        yield block, *run_block(block, namespace)


def check(block, printed, error):
    expected_error = TYPO.get((block.seed, block.index))
    if expected_error:
        assert isinstance(error, expected_error[0]) and expected_error[1] in str(error), (block, error)
    elif error is not None:
        raise AssertionError(f"{block!r} failed") from error
    if block.printed_shapes:  # NiN's note shows no printout
        assert shape_lines(printed) == block.printed_shapes, f"{block!r}: shape lines differ from the note's"
    if (block.seed, block.index) in EXACT:
        assert printed.strip() == printed_text(block).strip(), f"{block!r}: printout differs from the note's"
    assert len(CLOSING.findall(printed)) == printed.count("training on "), f"{block!r}: not the book's lines"


@pytest.mark.parametrize("note", ["000_bn_recall.md", "001_batch_norm.md", "002_cnns.md"])
def test_note_runs_on_normlab(note, book_scale):
    trainings = 0
    for block, printed, error in run_note(note):
        check(block, printed, error)
        trainings += printed.count("training on ")
    assert trainings == {"000_bn_recall.md": 0, "001_batch_norm.md": 2, "002_cnns.md": 7}[note]
