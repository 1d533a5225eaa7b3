"""A fast in-memory batch loader: one tensor per field, batches by indexing.

The book's pattern (a per-sample `Dataset` in a `DataLoader`) converts every image in Python;
here the whole set is one uint8 tensor and each batch is made by one indexing op, one
conversion to float and, when asked, one bilinear resize (see benchmarks/data_loading.py).

Epoch e's order is `randperm(N)` from a generator seeded with (seed, e), so the order of any
epoch can be recomputed: a resumed run sees exactly the batches it would have seen, and
`set_epoch` (as with torch's DistributedSampler) picks the epoch explicitly. In data-parallel
training `shard(rank, world_size)` makes each process serve its part of every batch, so the
ranks together see exactly the batches that one process would.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

Transform = Callable[[torch.Tensor], torch.Tensor]


def _epoch_generator(seed: int, epoch: int, batch: int = -1) -> torch.Generator:
    # Mix seed, epoch and batch into one 63-bit seed; neighbouring triples stay distinct.
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_000_033 + batch + 1) % (2**63))


class TensorLoader:
    """Iterate over `(tensors[0][idx], tensors[1][idx], ...)` in batches of `batch_size`.

    Args:
        tensors: equal-length tensors (dim 0 indexes examples), e.g. uint8 images and labels.
        batch_size: examples per batch; the last batch is smaller unless `drop_last`.
        shuffle: a new permutation each epoch (seeded); otherwise the stored order.
        seed: seed of the epoch permutations; None draws one from torch's global generator,
            so `torch.manual_seed` makes the order reproducible too.
        transform: applied to each batch of the first tensor (e.g. uint8 -> float, resize). A
            transform with `random = True` also gets `generator=`, seeded by (seed, epoch, batch),
            so random augmentation replays exactly too.
        device: where batches are made; the tensors are moved there once.
    """

    def __init__(self, *tensors: torch.Tensor, batch_size: int, shuffle: bool = True,
                 drop_last: bool = False, seed: int | None = None,
                 transform: Transform | None = None, device: torch.device | str | None = None):
        if not tensors:
            raise ValueError("TensorLoader needs at least one tensor")
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise ValueError(f"tensors differ in length: {[len(t) for t in tensors]}; dim 0 must index examples")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.device = torch.device(device) if device is not None else tensors[0].device
        self.tensors = tuple(t.to(self.device) for t in tensors)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed = int(torch.randint(2**62, (1,)).item()) if seed is None else int(seed)
        self.transform = transform
        self.epoch, self.start_batch = 0, 0
        self.rank, self.world_size = 0, 1

    @property
    def num_examples(self) -> int:
        return len(self.tensors[0])

    def __len__(self) -> int:
        """Number of batches per epoch."""
        n, b = self.num_examples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Make the next iteration serve epoch `epoch`'s permutation, from batch `start_batch` on
        (a run resumed mid-epoch sees exactly the batches it had not yet seen)."""
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch must be in 0..{len(self)}, got {start_batch}")
        self.epoch, self.start_batch = epoch, start_batch

    def shard(self, rank: int, world_size: int) -> None:
        """Serve part `rank` of `world_size` of every batch (torch.tensor_split of its indices: the
        parts differ in size by at most 1). `len()` still counts the whole batches. A random
        transform runs on the whole batch before the split, so its draws are those of one process."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank}")
        self.rank, self.world_size = rank, world_size

    def order(self, epoch: int) -> torch.Tensor:
        """The example indices of epoch `epoch`, in the order they are served."""
        n = self.num_examples
        if not self.shuffle:
            return torch.arange(n)
        return torch.randperm(n, generator=_epoch_generator(self.seed, epoch))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        order, start = self.order(self.epoch).to(self.device), self.start_batch
        self.epoch, self.start_batch = self.epoch + 1, 0  # the next `for` loop is the next epoch
        for i in range(start, len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            random = getattr(self.transform, "random", False)
            mine = self._part(len(idx))  # positions of this rank's part in the batch (all of it: None)
            batch = [t[idx if random or mine is None else idx[mine]] for t in self.tensors]
            if random:  # the whole batch's random draws, as one process makes them; then this rank's part
                batch[0] = self.transform(batch[0], generator=_epoch_generator(self.seed, self.epoch - 1, i))
                batch = batch if mine is None else [b[mine] for b in batch]
            elif self.transform is not None:
                batch[0] = self.transform(batch[0])
            yield tuple(batch)

    def _part(self, n: int) -> torch.Tensor | None:
        if self.world_size == 1:
            return None
        return torch.arange(n, device=self.device).tensor_split(self.world_size)[self.rank]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_examples={self.num_examples}, batch_size={self.batch_size}, "
                f"batches={len(self)}, shuffle={self.shuffle}, seed={self.seed}, device={self.device})")


class ImageTransform:
    """uint8 images (N, H, W) -> float32 (N, 1, H', W') in [0, 1], optionally resized and standardized.

    `resize` uses bilinear interpolation (align_corners=False), as the book's
    `transforms.Resize` does for the 224×224 (AlexNet, VGG, NiN) and 96×96 (GoogLeNet,
    ResNet) inputs. With `mean`/`std`, the output is `(x - mean) / std`. With `augment`
    (training data only), each image is flipped left-right with probability ½ and shifted by
    up to `shift` pixels each way (zero fill), from the generator the loader passes.
    """

    def __init__(self, resize: int | tuple[int, int] | None = None,
                 mean: float | None = None, std: float | None = None, augment: bool = False, shift: int = 2):
        if isinstance(resize, int):
            resize = (resize, resize)
        if resize is not None and (len(resize) != 2 or min(resize) < 1):
            raise ValueError(f"resize must be a positive int or (height, width), got {resize!r}")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        self.resize, self.mean, self.std = resize, mean, std
        self.random, self.shift = augment, shift

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.random:
            images = flip_and_shift(images, self.shift, generator)
        x = images.unsqueeze(1).to(torch.float32).div_(255)  # (N, H, W) uint8 -> (N, 1, H, W) in [0, 1]
        if self.resize is not None and tuple(x.shape[-2:]) != self.resize:
            x = F.interpolate(x, size=self.resize, mode="bilinear", align_corners=False)
        if self.mean is not None:
            x = x.sub_(self.mean).div_(self.std)
        return x

    def __repr__(self) -> str:
        return f"ImageTransform(resize={self.resize}, mean={self.mean}, std={self.std}, augment={self.random})"


def flip_and_shift(images: torch.Tensor, shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each (H, W) image flipped left-right with probability ½ and moved by (dy, dx) ∈ [−shift, shift]²,
    the uncovered border filled with 0; one gather for the whole batch."""
    n, h, w = images.shape
    flip = torch.rand(n, generator=generator) < 0.5
    images = torch.where(flip.view(n, 1, 1).to(images.device), images.flip(-1), images)
    padded = torch.nn.functional.pad(images, (shift, shift, shift, shift))  # (N, H + 2s, W + 2s)
    dy, dx = (torch.randint(0, 2 * shift + 1, (n, 1), generator=generator).to(images.device) for _ in range(2))
    rows = dy + torch.arange(h, device=images.device)  # (N, H): source row of each output row
    cols = dx + torch.arange(w, device=images.device)  # (N, W)
    return padded[torch.arange(n, device=images.device).view(n, 1, 1), rows.view(n, h, 1), cols.view(n, 1, w)]
