"""The chapter notebooks under notebooks/ run top to bottom in a real Jupyter kernel (nbclient,
ipykernel) at NORMLAB_NOTEBOOK_SCALE=small, on the real Fashion-MNIST; their outputs say what
the chapters say."""
from __future__ import annotations

import re
from pathlib import Path

import nbclient
import nbformat
import pytest

from normlab.models import create_model, summary

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("real_fashion_mnist")]

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
# The book's closing lines. 'training on cpu' is gone: in Jupyter the Animator's
# clear_output(wait=True) clears the cell's earlier output, as the book's rendered notebooks show.
CLOSING = re.compile(r"loss \d\.\d{3}, train acc \d\.\d{3}, test acc \d\.\d{3}\n"
                     r"\d+\.\d examples/sec on cpu\n")


def execute(name, tmp_path, monkeypatch):
    """Run notebooks/NAME.ipynb in a fresh kernel in tmp_path; return the executed cells."""
    monkeypatch.setenv("NORMLAB_NOTEBOOK_SCALE", "small")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    stderr = "".join(out.get("text", "") for cell in cells for out in cell.outputs if out.get("name") == "stderr")
    assert "Warning" not in stderr.replace("identical low and high xlims", ""), stderr  # (1 epoch: xlim [1, 1])
    return cells


def text(cell) -> str:
    return "".join(out.get("text", "") for out in cell.outputs if out.output_type == "stream"
                   and out.name == "stdout")


def shown(cell, mime) -> bool:
    return any(mime in out.get("data", {}) for out in cell.outputs)


def test_every_notebook_is_tested():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(EXPECTED)


def test_lenet(tmp_path, monkeypatch):
    cells = execute("01_lenet", tmp_path, monkeypatch)
    book = summary(create_model("lenet"), 28).book()  # the book's printout (tests/models checks it)
    assert text(cells[2]).split() == book.split() and len(text(cells[2]).splitlines()) == 12
    assert "total" in text(cells[3]) and "61,706" in text(cells[3])  # the book's LeNet: 61,706 parameters
    train = cells[4]
    assert CLOSING.fullmatch(text(train)), text(train)
    assert shown(train, "image/svg+xml")  # the Animator drew in the notebook, as the book's does
    assert not list(tmp_path.glob("animator*.png"))  # and wrote no file there


def test_batch_norm_from_scratch(tmp_path, monkeypatch):
    cells = execute("02_batch_norm_from_scratch", tmp_path, monkeypatch)
    lines = text(cells[2]).splitlines()
    assert float(lines[0].split()[-1]) < 1e-5 and float(lines[1].split()[-1]) < 1e-5
    assert lines[2].endswith("True") and lines[3].endswith("True")
    assert CLOSING.fullmatch(text(cells[3])) and shown(cells[3], "image/svg+xml")
    assert "grad_fn" in cells[4].outputs[0]["data"]["text/plain"]  # (γ, β) shown as the book shows them
    assert CLOSING.match(text(cells[5])) and "BatchNorm2d(6, eps=1e-05" in text(cells[5])


def test_modern_cnns(tmp_path, monkeypatch):
    cells = execute("03_modern_cnns", tmp_path, monkeypatch)
    zoo = text(cells[2])
    for name in ("alexnet", "vgg", "nin", "googlenet", "resnet18", "densenet"):
        assert f"== {name} at " in zoo
    assert "== alexnet at 224×224: 46,764,746 parameters" in zoo  # the book's AlexNet for 1 channel, 10 classes
    assert "Sequential output shape: \t torch.Size([1, 1024])" in zoo  # GoogLeNet's stage 5, as the book prints
    table = text(cells[3]).splitlines()
    assert table[-2].split()[:4] == ["total", "(1,", "10)", "5,977,530"]  # GoogLeNet: output, parameters
    assert CLOSING.fullmatch(text(cells[4]))


def test_bn_studies(tmp_path, monkeypatch):
    cells = execute("04_bn_studies", tmp_path, monkeypatch)
    assert "4 runs" in text(cells[1])
    report = cells[2].outputs[0]["data"]["text/markdown"]
    assert "Spec: notebooks/04_bn_studies.ipynb" in report and "![" not in report  # the plots come next
    for variant in ("all_bn", "no_bn", "bn_2_4", "conv_bn_fc_dropout"):
        assert f"| {variant} " in report or f"{variant} |" in report, report
    assert shown(cells[3], "image/png")


EXPECTED = {"01_lenet": test_lenet, "02_batch_norm_from_scratch": test_batch_norm_from_scratch,
            "03_modern_cnns": test_modern_cnns, "04_bn_studies": test_bn_studies}
