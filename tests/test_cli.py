import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from normlab.cli import main
from normlab.data import fashion_mnist as fm
from normlab.data.synthetic import write_idx_dataset


@pytest.fixture
def tiny_data(tmp_path, monkeypatch):
    """Tiny verified Fashion-MNIST under $NORMLAB_DATA; the Debian folder and MNIST hidden."""
    info = write_idx_dataset(tmp_path / "fashion-mnist", replace(fm.FASHION_MNIST, system_dirs=()),
                             n_train=30, n_test=20, num_classes=3)
    monkeypatch.setattr(fm.FashionMNIST, "info", info)
    monkeypatch.setitem(fm.DATASETS, "fashion-mnist", info)
    monkeypatch.setenv("NORMLAB_DATA", str(tmp_path))
    return tmp_path / "fashion-mnist"


def test_help_from_the_installed_script():
    exe = Path(sys.executable).with_name("normlab")
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert "usage: normlab" in out and "data" in out
    out = subprocess.run([exe, "data", "--help"], capture_output=True, text=True, check=True).stdout
    for action in ("status", "verify", "fetch", "summary"):
        assert action in out


def test_status_reports_place_and_verification(tiny_data, capsys):
    assert main(["data", "status"]) == 0
    out = capsys.readouterr().out
    assert f"fashion-mnist: {tiny_data} [$NORMLAB_DATA]" in out
    assert out.count("md5 ok") == 4 and "mnist: not found" in out


def test_verify_passes_then_fails_on_a_damaged_file(tiny_data, capsys):
    assert main(["data", "verify"]) == 0
    assert "fashion-mnist train: ok, 30 images" in capsys.readouterr().out
    (tiny_data / "t10k-labels-idx1-ubyte.gz").write_bytes(b"junk")
    assert main(["data", "verify"]) == 1
    out = capsys.readouterr().out
    assert "fashion-mnist test: FAILED" in out and "t10k-labels-idx1-ubyte.gz: not a valid gzip file" in out
    assert main(["data", "status"]) == 0
    assert "FAILED" in capsys.readouterr().out


def test_summary_prints_counts_classes_and_pixel_statistics(tiny_data, capsys):
    assert main(["data", "summary"]) == 0
    out = capsys.readouterr().out
    assert "train: 30 images   test: 20 images   size: 28×28 uint8" in out
    assert "pixel mean 0.50" in out  # uniform random bytes: mean ≈ 0.5
    assert "      9  Ankle boot         0      0" in out  # classes absent from the data still listed


def test_missing_dataset_is_an_error_with_the_fix(capsys):
    assert main(["data", "summary", "mnist"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("normlab: error: MNIST (train) not found") and "normlab data fetch mnist" in err


def test_unknown_dataset_lists_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["data", "verify", "cifar"])
    assert exit_.value.code == 2
    assert "unknown dataset 'cifar'; choose one of: fashion-mnist, mnist" in capsys.readouterr().err
