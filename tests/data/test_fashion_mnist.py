"""Locating, verifying and loading the datasets, on tiny IDX files the tests write."""
import gzip
from dataclasses import replace

import pytest
import torch

from normlab.data import (FASHION_MNIST, MNIST, ChecksumError, CorruptFileError, DataError, DatasetNotFoundError,
                          FashionMNIST, load_dataset)
from normlab.data.idx import write_idx
from normlab.data.synthetic import write_idx_dataset


def tiny_class(info, base=FashionMNIST):
    """A FashionMNIST subclass that uses `info` (tiny checksums, no system folder)."""
    return type("Tiny", (base,), {"info": info})


@pytest.fixture
def tiny(tmp_path):
    """A tiny verified dataset in tmp/root; returns (dataset class, folder)."""
    folder = tmp_path / "root"
    info = write_idx_dataset(folder, replace(FASHION_MNIST, system_dirs=()), n_train=20, n_test=10)
    return tiny_class(info), folder


def test_loads_tensors_with_official_layout(tiny):
    cls, folder = tiny
    train, test = cls(folder, train=True), cls(folder, train=False)
    assert train.data.shape == (20, 28, 28) and train.data.dtype == torch.uint8
    assert train.targets.shape == (20,) and train.targets.dtype == torch.int64
    assert len(test) == 10 and test.source == "root" and test.folder == folder
    x, y = train[3]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and isinstance(y, int)
    torch.testing.assert_close(x[0], train.data[3].float() / 255)


def test_class_names_are_on_the_class():
    assert FashionMNIST.classes[0] == "T-shirt/top" and FashionMNIST.classes[9] == "Ankle boot"
    assert len(FashionMNIST.classes) == 10 and MNIST.classes == [str(d) for d in range(10)]


def test_lookup_order_root_else_env_else_cache_then_system(tmp_path, monkeypatch):
    dirs = {name: tmp_path / name for name in ("root", "env", "xdg", "system")}
    info = None
    for name, folder in dirs.items():  # the same content everywhere: only the folder tells them apart
        sub = folder / "normlab" / "fashion-mnist" if name == "xdg" else folder
        info = write_idx_dataset(sub, replace(FASHION_MNIST, system_dirs=(str(dirs["system"]),)))
    cls = tiny_class(info)
    monkeypatch.setenv("NORMLAB_DATA", str(dirs["env"]))
    monkeypatch.setenv("XDG_CACHE_HOME", str(dirs["xdg"]))
    assert (cls(dirs["root"]).folder, cls(dirs["root"]).source) == (dirs["root"], "root")
    assert (cls().folder, cls().source) == (dirs["env"], "$NORMLAB_DATA")
    monkeypatch.delenv("NORMLAB_DATA")
    assert (cls().folder, cls().source) == (dirs["xdg"] / "normlab" / "fashion-mnist", "cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty"))
    assert (cls().folder, cls().source) == (dirs["system"], "system")


def test_a_named_location_is_the_only_one(tmp_path, monkeypatch):
    """A --root or $NORMLAB_DATA without the files is an error, not a quiet fall-back to the system's
    copy; and a root with only the training files never mixes them with test files from elsewhere."""
    info = write_idx_dataset(tmp_path / "system", replace(FASHION_MNIST, system_dirs=(str(tmp_path / "system"),)))
    cls = tiny_class(info)
    assert cls().source == "system"
    for where in ({"root": tmp_path / "missing"}, {"env": tmp_path / "missing"}):
        if "env" in where:
            monkeypatch.setenv("NORMLAB_DATA", str(where["env"]))
        with pytest.raises(DatasetNotFoundError) as raised:
            cls(where.get("root"))
        assert str(tmp_path / "missing") in str(raised.value) and str(tmp_path / "system") not in str(raised.value)
    monkeypatch.delenv("NORMLAB_DATA")
    half = tmp_path / "half"
    write_idx_dataset(half, replace(FASHION_MNIST, system_dirs=()))
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (half / name).unlink()
    assert cls(half, train=True).folder == half
    with pytest.raises(DatasetNotFoundError, match=r"Fashion-MNIST \(test\) not found"):
        cls(half, train=False)
    monkeypatch.setenv("NORMLAB_DATA", " ")
    with pytest.raises(DataError, match="NORMLAB_DATA is set but empty; name the folder that holds the data, or unset it"):
        cls()


def test_dataset_subfolder_of_a_root_is_found(tmp_path):
    info = write_idx_dataset(tmp_path / "data" / "fashion-mnist", replace(FASHION_MNIST, system_dirs=()))
    assert tiny_class(info)(tmp_path / "data").folder == tmp_path / "data" / "fashion-mnist"


def test_uncompressed_files_verify_by_content(tmp_path):
    info = write_idx_dataset(tmp_path, replace(FASHION_MNIST, system_dirs=()), gz=False)
    ds = tiny_class(info)(tmp_path)
    assert ds.files[0].name == "train-images-idx3-ubyte" and len(ds) == 20


def test_recompressed_gzip_verifies_by_content(tiny):
    """Debian re-compresses the official files: other .gz bytes, same content."""
    cls, folder = tiny
    path = folder / "train-images-idx3-ubyte.gz"
    content = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(content, compresslevel=1, mtime=12345))
    assert len(cls(folder)) == 20


def test_wrong_checksum_names_file_and_fix(tiny):
    cls, folder = tiny
    path = folder / "train-labels-idx1-ubyte.gz"
    labels = torch.zeros(20, dtype=torch.uint8)  # valid IDX, wrong content
    write_idx(path, labels)
    with pytest.raises(ChecksumError, match="MD5 mismatch") as info:
        cls(folder)
    assert str(path) in str(info.value) and "download=True" in str(info.value)


def test_damaged_system_copy_says_reinstall(tmp_path):
    info = write_idx_dataset(tmp_path / "usr-share", replace(FASHION_MNIST, system_dirs=(str(tmp_path / "usr-share"),)))
    write_idx(tmp_path / "usr-share" / "train-labels-idx1-ubyte.gz", torch.zeros(20, dtype=torch.uint8))
    with pytest.raises(ChecksumError, match="MD5 mismatch") as raised:
        tiny_class(info)()
    assert "apt-get install --reinstall dataset-fashion-mnist" in str(raised.value)


def test_checksums_can_be_skipped_for_own_data(tiny):
    cls, folder = tiny
    write_idx(folder / "train-labels-idx1-ubyte.gz", torch.full((20,), 4, dtype=torch.uint8))
    assert cls(folder, verify=False).targets.tolist() == [4] * 20


def test_truncated_gzip_names_the_file(tiny):
    cls, folder = tiny
    path = folder / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(CorruptFileError, match="not a valid gzip file") as info:
        cls(folder, train=False)
    assert str(path) in str(info.value)


def test_image_label_count_mismatch(tmp_path):
    info = write_idx_dataset(tmp_path, replace(FASHION_MNIST, system_dirs=()))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", torch.zeros(19, dtype=torch.uint8))
    with pytest.raises(CorruptFileError, match="holds 20 images but .*train-labels-idx1-ubyte.gz holds 19 labels"):
        tiny_class(info)(tmp_path, verify=False)


def test_wrong_image_size_and_label_range(tmp_path):
    info = write_idx_dataset(tmp_path, replace(FASHION_MNIST, system_dirs=()))
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", torch.zeros(20, 32, 32, dtype=torch.uint8))
    with pytest.raises(CorruptFileError, match=r"expected uint8 images of N×28×28, got torch.uint8 of shape \(20, 32, 32\)"):
        tiny_class(info)(tmp_path, verify=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", torch.full((10,), 10, dtype=torch.uint8))
    with pytest.raises(CorruptFileError, match="label 10 out of range 0-9"):
        tiny_class(info)(tmp_path, train=False, verify=False)


def test_missing_dataset_lists_places_and_fixes(tmp_path, monkeypatch):
    cls = tiny_class(replace(FASHION_MNIST, system_dirs=(str(tmp_path / "usr-share"),)))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "mine"))
    with pytest.raises(DatasetNotFoundError) as info:
        cls()
    message = str(info.value)
    for needle in ["Fashion-MNIST (train) not found", str(tmp_path / "mine"), str(tmp_path / "usr-share"),
                   "apt-get install dataset-fashion-mnist", "download=True", "NORMLAB_DATA"]:
        assert needle in message
    assert isinstance(info.value, FileNotFoundError)


def test_load_dataset_gives_loaders_over_both_splits(tiny):
    cls, folder = tiny
    train_iter, test_iter = load_dataset(cls, batch_size=8, root=folder, seed=0)
    assert (len(train_iter), len(test_iter)) == (3, 2)
    X, y = next(iter(test_iter))
    assert X.shape == (8, 1, 28, 28) and y.dtype == torch.int64
    torch.testing.assert_close(X[:, 0], cls(folder, train=False).data[:8].float() / 255)


def test_normalize_uses_training_statistics_for_both_splits(tiny):
    cls, folder = tiny
    train_iter, test_iter = load_dataset(cls, batch_size=100, root=folder, normalize=True)
    train_data = cls(folder).data.double() / 255
    (X_train, _), (X_test, _) = next(iter(train_iter)), next(iter(test_iter))
    torch.testing.assert_close(X_train.double().mean(), torch.tensor(0.0, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(X_train.double().std(correction=0), torch.tensor(1.0, dtype=torch.float64), atol=1e-5, rtol=0)
    expected = (cls(folder, train=False).data.double() / 255 - train_data.mean()) / train_data.std(correction=0)
    torch.testing.assert_close(X_test[:, 0].double(), expected, atol=1e-5, rtol=0)
