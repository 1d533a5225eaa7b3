import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from normlab.data import ImageTransform, TensorLoader


def images(n=50, h=28, w=28):
    return torch.randint(0, 256, (n, h, w), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 70), batch_size=st.integers(1, 80), drop_last=st.booleans())
def test_batches_cover_each_example_once_per_epoch(n, batch_size, drop_last):
    loader = TensorLoader(torch.arange(n), batch_size=batch_size, drop_last=drop_last, seed=1)
    expected_len = n // batch_size if drop_last else -(-n // batch_size)
    assert len(loader) == expected_len
    for _ in range(2):
        batches = [b for (b,) in loader]
        assert len(batches) == expected_len
        assert all(len(b) == batch_size for b in batches[:-1])
        served = torch.cat(batches) if batches else torch.empty(0, dtype=torch.int64)
        assert len(served.unique()) == len(served)  # no repeats
        assert len(served) == (expected_len * batch_size if drop_last else n)


def test_reshuffled_each_epoch_and_reproducible_from_seed():
    a = TensorLoader(torch.arange(100), batch_size=100, seed=7)
    b = TensorLoader(torch.arange(100), batch_size=100, seed=7)
    epochs_a = [next(iter(a))[0] for _ in range(3)]
    epochs_b = [next(iter(b))[0] for _ in range(3)]
    for x, y in zip(epochs_a, epochs_b):
        assert torch.equal(x, y)
    assert not torch.equal(epochs_a[0], epochs_a[1]) and not torch.equal(epochs_a[1], epochs_a[2])
    assert not torch.equal(epochs_a[0], next(iter(TensorLoader(torch.arange(100), batch_size=100, seed=8)))[0])


def test_set_epoch_replays_an_epoch_for_resume():
    loader = TensorLoader(torch.arange(64), batch_size=16, seed=3)
    first, second = [torch.cat([b for (b,) in loader]) for _ in range(2)]
    resumed = TensorLoader(torch.arange(64), batch_size=16, seed=3)
    resumed.set_epoch(1)
    assert torch.equal(torch.cat([b for (b,) in resumed]), second)
    assert torch.equal(loader.order(0), first)


def test_seed_none_follows_torch_manual_seed():
    torch.manual_seed(0)
    a = next(iter(TensorLoader(torch.arange(30), batch_size=30)))[0]
    torch.manual_seed(0)
    b = next(iter(TensorLoader(torch.arange(30), batch_size=30)))[0]
    assert torch.equal(a, b)


def test_without_shuffle_serves_in_order_and_keeps_pairs():
    x, y = images(10), torch.arange(10) * 3
    loader = TensorLoader(x, y, batch_size=4, shuffle=False)
    batches = list(loader)
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([b[1] for b in batches]), y)
    shuffled = TensorLoader(x, y, batch_size=4, seed=0)
    for xb, yb in shuffled:  # images and labels stay paired under shuffling
        assert torch.equal(xb, x[yb // 3])


def test_image_transform_makes_float_batches_in_unit_range():
    x = images(8)
    (xb,) = next(iter(TensorLoader(x, batch_size=8, shuffle=False, transform=ImageTransform())))
    assert xb.shape == (8, 1, 28, 28) and xb.dtype == torch.float32
    assert torch.equal(xb[:, 0], x.float() / 255)


@pytest.mark.parametrize("size", [224, 96, (32, 40)])
def test_resize_is_bilinear(size):
    x = images(4)
    out = ImageTransform(resize=size)(x)
    hw = (size, size) if isinstance(size, int) else size
    assert out.shape == (4, 1, *hw)
    ref = F.interpolate(x.unsqueeze(1).float() / 255, size=hw, mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, ref)
    assert out.min() >= 0 and out.max() <= 1  # bilinear weights are convex


def test_normalize():
    x = images(4)
    out = ImageTransform(mean=0.25, std=0.5)(x)
    torch.testing.assert_close(out, (x.unsqueeze(1).float() / 255 - 0.25) / 0.5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(resize=0), "resize must be a positive int"),
    (dict(resize=(1, 2, 3)), "resize must be a positive int"),
    (dict(mean=0.5), "give both mean and std"),
])
def test_transform_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageTransform(**kwargs)


@pytest.mark.parametrize("args, kwargs, message", [
    ((torch.zeros(3), torch.zeros(4)), dict(batch_size=2), r"tensors differ in length: \[3, 4\]"),
    ((torch.zeros(3),), dict(batch_size=0), "batch_size must be a positive integer, got 0"),
    ((), dict(batch_size=2), "at least one tensor"),
])
def test_loader_errors(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        TensorLoader(*args, **kwargs)


def test_device_placement_cpu():
    loader = TensorLoader(images(4), torch.arange(4), batch_size=2, device="cpu")
    assert all(t.device.type == "cpu" for batch in loader for t in batch)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_placement_cuda():
    loader = TensorLoader(images(4), torch.arange(4), batch_size=2, device="cuda", transform=ImageTransform(96))
    x, y = next(iter(loader))
    assert x.is_cuda and y.is_cuda and x.shape == (2, 1, 96, 96)


def test_start_batch_skips_what_a_resumed_epoch_has_seen():
    loader = TensorLoader(torch.arange(40), batch_size=8, seed=2)
    full = [b for (b,) in loader]
    loader.set_epoch(0, start_batch=3)
    assert [b.tolist() for (b,) in loader] == [b.tolist() for b in full[3:]]
    assert torch.cat([b for (b,) in loader]).sort().values.tolist() == list(range(40))  # next epoch: all of it
    with pytest.raises(ValueError, match=r"start_batch must be in 0..5, got 6"):
        loader.set_epoch(0, start_batch=6)


def test_flip_and_shift_moves_pixels_and_fills_with_zero():
    from normlab.data.loader import flip_and_shift
    x = torch.arange(1, 2 * 5 * 5 + 1, dtype=torch.uint8).view(2, 5, 5)
    out = flip_and_shift(x, 2, torch.Generator().manual_seed(0))
    for img, src in zip(out, x):  # each output is a shifted (maybe flipped) window of the input
        candidates = []
        for flipped in (src, src.flip(-1)):
            padded = torch.nn.functional.pad(flipped, (2, 2, 2, 2))
            candidates += [padded[dy:dy + 5, dx:dx + 5] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(img, c) for c in candidates)
    same = flip_and_shift(x, 2, torch.Generator().manual_seed(0))
    assert torch.equal(out, same)


def test_augmented_batches_replay_exactly_per_epoch_and_batch():
    x = torch.randint(0, 256, (32, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    make = lambda: TensorLoader(x, batch_size=8, seed=4, transform=ImageTransform(augment=True))  # noqa: E731
    loader = make()
    epochs = [[b for (b,) in loader] for _ in range(2)]
    resumed = make()
    resumed.set_epoch(1, start_batch=2)
    assert all(torch.equal(a, b) for a, b in zip(epochs[1][2:], [b for (b,) in resumed]))
    plain = TensorLoader(x, batch_size=8, seed=4, transform=ImageTransform())
    assert not all(torch.equal(a, b) for a, b in zip(epochs[0], [b for (b,) in plain]))
