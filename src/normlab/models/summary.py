"""summary(model, input_size): what each layer outputs, holds and computes.

    s = summary(create_model("lenet"), 28)
    print(s.book())     # Conv2d output shape: 	 torch.Size([1, 6, 28, 28])   (the book's loop)
    print(s.table())    # every module: name, type, output shape, parameters, MACs, and totals

One forward pass of a random input (batch of 1 unless input_size says otherwise) in eval mode
under torch.no_grad(), so no running statistic moves; the model's mode is restored after.
Forward hooks record every module call in the order the calls begin.

What is counted:
  params  the parameters of the module and everything inside it (a top-level row is its block's
          total); the total counts every parameter of the model once.
  MACs    multiply-accumulates of Conv2d and Linear layers only, for the whole input batch:
          Conv2d: output elements × (in_channels / groups) × kernel height × kernel width,
          Linear: output elements × in_features. Bias additions, norms, activations and pooling
          are not counted. Many papers (and the seeds' Inception table) call MACs "FLOPs";
          a FLOP count proper is about 2 × MACs.

The Inception table (the seeds' note on GoogLeNet): an Inception block against a 3×3 and a 5×5
convolution, 192 channels in, 256 out. Its numbers (0.16M/128M, 0.44M/346M, 1.22M/963M) are
parameters and MACs on a 28×28 map, the side stage 3 of ImageNet GoogLeNet works at (224/8), and
they are truncated, not rounded (1,228,800 parameters print as 1.22M, 346.8M MACs as 346M).
`inception_sides()` finds the sides at which all six hold: only 28.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["LayerRow", "Summary", "summary", "inception_table", "inception_sides",
           "format_table", "SEED_INCEPTION_TABLE"]


@dataclass(frozen=True)
class LayerRow:
    name: str                          # dotted module path: "0", "2.1.p2_2.0"
    type: str                          # class name: "Conv2d"
    output_shape: tuple[int, ...] | None  # None if the output is not one tensor
    params: int
    macs: int

    @property
    def depth(self) -> int:            # 1 for a direct child of the model
        return self.name.count(".") + 1


@dataclass
class Summary:
    rows: list[LayerRow]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...] | None
    total_params: int
    trainable_params: int
    total_macs: int = 0

    def book(self, depth: int = 1) -> str:
        """The book's printout: `print(layer.__class__.__name__, 'output shape: \\t', X.shape)`
        for each module at `depth` (1: the model's direct children, as `for layer in net`)."""
        return "\n".join(f"{r.type} output shape: \t {torch.Size(r.output_shape)}"
                         for r in self.rows if r.depth == depth and r.output_shape is not None)

    def table(self, depth: int | None = None) -> str:
        """Every module down to `depth` (all if None), indented by depth, then the totals."""
        rows = [r for r in self.rows if depth is None or r.depth <= depth]
        body = [("  " * (r.depth - 1) + r.name, r.type, _shape(r.output_shape),
                 f"{r.params:,}", f"{r.macs:,}") for r in rows]
        head = ("layer", "type", "output shape", "params", "MACs")
        foot = [("total", "", _shape(self.output_shape), f"{self.total_params:,}",
                 f"{self.total_macs:,}")]
        note = (f"input {_shape(self.input_shape)}; trainable params {self.trainable_params:,}; "
                "MACs: Conv2d and Linear multiply-accumulates")
        return format_table(head, body, foot) + "\n" + note

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict:
        """Plain data (lists, ints, strings) for JSON, e.g. a run directory's summary.json."""
        return {"input_shape": list(self.input_shape),
                "output_shape": None if self.output_shape is None else list(self.output_shape),
                "total_params": self.total_params, "trainable_params": self.trainable_params,
                "total_macs": self.total_macs,
                "rows": [{"name": r.name, "type": r.type, "params": r.params, "macs": r.macs,
                          "output_shape": None if r.output_shape is None else list(r.output_shape)}
                         for r in self.rows]}


def format_table(head, body, foot=(), align: str = "lllrr") -> str:
    """Columns padded to fit; align has one letter per column, l(eft) or r(ight)."""
    widths = [max(len(str(row[i])) for row in (head, *body, *foot)) for i in range(len(head))]

    def line(row):
        return "  ".join(str(c).ljust(w) if a == "l" else str(c).rjust(w)
                         for c, w, a in zip(row, widths, align)).rstrip()
    rule = "-" * len(line(["-" * w for w in widths]))
    out = [line(head), rule, *map(line, body)]
    if foot:
        out += [rule, *map(line, foot)]
    return "\n".join(out)


def _shape(shape) -> str:
    return "-" if shape is None else "(" + ", ".join(map(str, shape)) + ")"


def _macs(module: nn.Module, out: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return out.numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    return 0


def _input_shape(model: nn.Module, input_size) -> tuple[int, ...]:
    if isinstance(input_size, int):   # a square image, batch of one
        return (1, getattr(model, "in_channels", 1), input_size, input_size)
    shape = tuple(int(s) for s in input_size)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input_size must be a side or a full shape (N, C, H, W); got {input_size!r}")
    return shape


def summary(model: nn.Module, input_size, *, device=None, dtype=torch.float32) -> Summary:
    """Run one forward pass and describe every module call; see the module docstring.

    input_size: an int s for a (1, in_channels, s, s) image, or the full input shape, e.g.
    (1, 1, 28, 28), or (1, 2) for an MLP on two features.
    """
    shape = _input_shape(model, input_size)
    names = {m: n for n, m in model.named_modules()}   # the model itself is ""
    calls: list[list] = []        # [name, type, shape, params, macs], in call order
    open_calls: list[int] = []    # indices of calls in progress, to add MACs to the enclosing

    def pre_hook(module, args):
        calls.append([names[module], type(module).__name__, None,
                      sum(p.numel() for p in module.parameters()), 0])
        open_calls.append(len(calls) - 1)

    def hook(module, args, out):
        i = open_calls.pop()
        calls[i][2] = tuple(out.shape) if isinstance(out, torch.Tensor) else None
        macs = _macs(module, out) if isinstance(out, torch.Tensor) else 0
        for j in (i, *open_calls):     # a layer's MACs count in every block around it
            calls[j][4] += macs

    handles = [h for m in names for h in (m.register_forward_pre_hook(pre_hook),
                                          m.register_forward_hook(hook))]
    was_training = model.training
    device = device or next((p.device for p in model.parameters()), torch.device("cpu"))
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0), dtype=dtype).to(device)
    try:
        model.eval()
        with torch.no_grad():
            out = model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    total_macs = sum(c[4] for c in calls if c[0] == "")   # the model's own call holds them all
    rows = [LayerRow(*c) for c in calls if c[0] != ""]
    params = list(model.parameters())
    return Summary(rows, shape, tuple(out.shape) if isinstance(out, torch.Tensor) else None,
                   total_params=sum(p.numel() for p in params),
                   trainable_params=sum(p.numel() for p in params if p.requires_grad),
                   total_macs=total_macs)


# ---- The seeds' Inception table -------------------------------------------------------------

SEED_INCEPTION_TABLE = {          # layer: (parameters, FLOPs) as the seed prints them
    "Inception": ("0.16M", "128M"),
    "3×3 Conv": ("0.44M", "346M"),
    "5×5 Conv": ("1.22M", "963M"),
}


def _candidates(in_channels: int = 192) -> dict[str, nn.Module]:
    from .googlenet import Inception   # the book's first stage-3 block: 64 + 128 + 32 + 32 = 256
    with torch.device("meta"):         # shapes and counts only: nothing is allocated or computed
        return {"Inception": Inception(in_channels, 64, (96, 128), (16, 32), 32),
                "3×3 Conv": nn.Conv2d(in_channels, 256, kernel_size=3, padding=1),
                "5×5 Conv": nn.Conv2d(in_channels, 256, kernel_size=5, padding=2)}


def millions(n: int, digits: int) -> str:
    """n in millions, truncated to `digits` decimals as the seed's table is: 1,228,800 -> 1.22M."""
    scale = 10 ** digits
    return f"{math.floor(n / 1e6 * scale) / scale:.{digits}f}M"


def inception_table(side: int = 28, _layers=None) -> list[tuple[str, int, int, str, str]]:
    """(layer, parameters, MACs, parameters in M, MACs in M) for the Inception block and the 3×3
    and 5×5 convs, 192 → 256 channels on a side×side map, computed with summary() on the meta
    device (shapes without arithmetic, so any side is instant)."""
    rows = []
    for name, layer in (_layers or _candidates()).items():
        s = summary(layer, (1, 192, side, side))
        rows.append((name, s.total_params, s.total_macs,
                     millions(s.total_params, 2), millions(s.total_macs, 0)))
    return rows


def inception_sides(max_side: int = 64) -> list[int]:
    """The map sides at which inception_table reproduces all six of the seed's numbers."""
    found, layers = [], _candidates()
    for side in range(1, max_side + 1):
        table = {name: (p, m) for name, _, _, p, m in inception_table(side, layers)}
        if table == SEED_INCEPTION_TABLE:
            found.append(side)
    return found
