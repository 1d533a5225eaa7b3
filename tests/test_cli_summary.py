"""`normlab summary`: the book's printout, the table, the Inception table, and errors that teach."""
import subprocess
import sys
from pathlib import Path

import pytest

from normlab.cli import main


def test_summary_prints_the_books_lenet(capsys):
    assert main(["summary", "lenet"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Conv2d output shape: \t torch.Size([1, 6, 28, 28])"
    assert out[11] == "Linear output shape: \t torch.Size([1, 10])"
    assert out[12] == "# lenet: 61,706 parameters, 416,520 MACs for input (1, 1, 28, 28)"


def test_summary_with_a_norm_after_the_activation(capsys):
    assert main(["summary", "lenet_bn", "--norm", "group", "--norm-position", "after_act"]) == 0
    types = [line.split()[0] for line in capsys.readouterr().out.splitlines()[:3]]
    assert types == ["Conv2d", "Sigmoid", "GroupNorm"]


def test_summary_table_with_options(capsys):
    assert main(["summary", "vgg", "-o", "width_divisor=4", "--format", "table", "--depth", "1"]) == 0
    out = capsys.readouterr().out
    assert "(1, 128, 7, 7)" in out                       # 512 / 4 channels at 7×7
    assert "total" in out and "0.0" not in out           # depth 1 only


def test_summary_mlp_on_two_features(capsys):
    assert main(["summary", "mlp", "-o", "in_features=2", "-o", "hidden=[4]", "--num-classes", "1",
                 "--norm", "batch", "--input-size", "1,2", "--format", "table"]) == 0
    assert "BatchNorm1d" in capsys.readouterr().out


def test_inception_table_from_the_cli(capsys):
    assert main(["summary", "--inception-table"]) == 0
    out = capsys.readouterr().out
    assert "28×28" in out
    for row in (["Inception", "163,696", "0.16M", "128,049,152", "128M", "0.16M", "/", "128M"],
                ["3×3", "Conv", "442,624", "0.44M", "346,816,512", "346M", "0.44M", "/", "346M"],
                ["5×5", "Conv", "1,229,056", "1.22M", "963,379,200", "963M", "1.22M", "/", "963M"]):
        assert any(line.split() == row for line in out.splitlines()), row
    assert "all six of the seed's numbers hold: 28 " in out


def test_too_small_an_input_is_a_clear_error(capsys):
    assert main(["summary", "alexnet", "--input-size", "28"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == ("normlab: error: alexnet takes inputs from 193×193 to 224×224 "
                           "(the book uses 224×224); got 28×28")


@pytest.mark.parametrize("argv, message", [
    (["summary", "resnet50"], "unknown model 'resnet50'; choose one of: lenet, lenet_bn, alexnet"),
    (["summary", "lenet", "--norm", "bn"], "unknown norm 'bn'; choose one of: none, batch"),
    (["summary", "lenet", "--input-size", "a,b"], "give a side (28) or a shape (1,1,28,28)"),
    (["summary", "lenet", "-o", "4"], "expected KEY=VALUE"),
])
def test_bad_arguments_list_the_valid_ones(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_model_option_is_an_error_not_a_traceback(capsys):
    assert main(["summary", "lenet_bn", "-o", "norm_slots=(5,)"]) == 1
    assert "lenet_bn: norm_slots [5] out of range" in capsys.readouterr().err


def test_no_model_and_no_table(capsys):
    assert main(["summary"]) == 2
    assert "give a MODEL or --inception-table" in capsys.readouterr().err


def test_summary_help_has_examples():
    exe = Path(sys.executable).with_name("normlab")
    out = subprocess.run([exe, "summary", "--help"], capture_output=True, text=True, check=True).stdout
    assert "examples:" in out and "normlab summary --inception-table" in out
    assert "resnet20" in out     # the model names
