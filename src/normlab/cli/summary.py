"""`normlab summary`: a model's layers with output shapes, parameters and MACs."""
from __future__ import annotations

import argparse
import ast
import sys


EPILOG_SUMMARY = """examples:
  normlab summary lenet                          the book's LeNet at 28×28, as the book prints it
  normlab summary lenet_bn --norm group --format table
  normlab summary vgg -o width_divisor=4 --input-size 224 --format table --depth 1
  normlab summary resnet18 --norm layer --norm-position after_act
  normlab summary mlp -o in_features=2 -o hidden=[4] --num-classes 1 --norm batch --input-size 1,2
  normlab summary --inception-table              the seeds' Inception table (at 28×28)
"""


def _model_name(name: str) -> str:
    from normlab.models import list_models
    if name not in list_models():
        raise argparse.ArgumentTypeError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    return name


def _norm_name(name: str) -> str:
    from normlab.nn import list_norms
    if name not in list_norms():
        raise argparse.ArgumentTypeError(f"unknown norm {name!r}; choose one of: {', '.join(list_norms())}")
    return name


def _input_size(text: str):
    """"28" (a square image, batch 1) or a full shape "1,1,28,28" (also "1x1x28x28")."""
    try:
        sizes = [int(t) for t in text.replace("x", ",").replace("×", ",").split(",") if t.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"input size {text!r}: give a side (28) or a shape (1,1,28,28)")
    return sizes[0] if len(sizes) == 1 else tuple(sizes)


def _option(text: str) -> tuple[str, object]:
    """KEY=VALUE, VALUE read as a Python literal (4, 0.5, (1, 2), 'relu') or else as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"option {text!r}: expected KEY=VALUE, e.g. width_divisor=4")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def cmd_summary(args) -> int:
    from normlab.models import create_model, summary
    if args.inception_table:
        print(_inception_report())
        return 0
    if args.model is None:
        print("normlab summary: error: give a MODEL or --inception-table", file=sys.stderr)
        return 2
    try:
        net = create_model(args.model, norm=args.norm, norm_position=args.norm_position,
                           num_classes=args.num_classes, in_channels=args.in_channels,
                           **dict(args.option or ()))
        size = args.input_size or _default_input(net)
        s = summary(net, size)
    except ValueError as e:
        print(f"normlab: error: {e}", file=sys.stderr)
        return 1
    if args.format == "book":
        print(s.book(depth=args.depth or 1))
        print(f"# {args.model}: {s.total_params:,} parameters, {s.total_macs:,} MACs "
              f"for input {tuple(s.input_shape)}")
    else:
        print(s.table(depth=args.depth))
    return 0


def _default_input(net):
    """The side the book feeds the model (28 for ResNet-20), or an MLP's feature count."""
    if hasattr(net, "in_features"):
        return (1, net.in_features)
    return getattr(net, "book_size", None) or 28


def _inception_report() -> str:
    from normlab.models.summary import SEED_INCEPTION_TABLE, format_table, inception_sides, inception_table
    side = 28
    rows = [(name, f"{p:,}", pm, f"{m:,}", mm, " / ".join(SEED_INCEPTION_TABLE[name]))
            for name, p, m, pm, mm in inception_table(side)]
    sides = inception_sides()
    table = format_table(("layer", "parameters", "", "MACs", "", "seed: params / FLOPs"), rows,
                         align="lrlrll")
    return (f"An Inception block against plain convolutions, 192 input and 256 output channels,\n"
            f"on a {side}×{side} map (computed with normlab.models.summary; MACs are what the seed\n"
            f"calls FLOPs; millions truncated, as the seed's table is)\n\n{table}\n\n"
            f"Sides up to 64 at which all six of the seed's numbers hold: "
            f"{', '.join(map(str, sides)) or 'none'} (28 = 224/8, GoogLeNet's stage 3 on ImageNet).")


def add_parser(commands) -> None:
    from normlab.models import list_models
    from normlab.nn.blocks import NORM_POSITIONS
    p = commands.add_parser(
        "summary", help="a model's layers: output shapes, parameters, MACs",
        description="Build a model from the zoo and print what each layer outputs, holds and "
                    "computes (one forward pass of a random input in eval mode).",
        epilog=EPILOG_SUMMARY, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", type=_model_name, metavar="MODEL",
                   help=f"one of: {', '.join(list_models())}")
    p.add_argument("--norm", type=_norm_name, help="norm layer to plug in (default: the model's)")
    p.add_argument("--norm-position", choices=NORM_POSITIONS, help="norm before (default) or "
                   "after each activation")
    p.add_argument("--input-size", type=_input_size, help="a side (224) or a full shape "
                   "(1,1,224,224); default: the size the book uses")
    p.add_argument("--num-classes", type=int)
    p.add_argument("--in-channels", type=int)
    p.add_argument("-o", "--option", type=_option, action="append", metavar="KEY=VALUE",
                   help="another model option, e.g. width_divisor=4, norm_slots=(2,4); repeatable")
    p.add_argument("--format", choices=("book", "table"), default="book",
                   help="book: `Conv2d output shape: torch.Size([...])` per top-level layer; "
                        "table: every module with parameters and MACs, and totals")
    p.add_argument("--depth", type=int, help="how deep to list modules (book: 1; table: all)")
    p.add_argument("--inception-table", action="store_true",
                   help="print the seeds' Inception table instead (parameters and MACs of an "
                        "Inception block against 3×3 and 5×5 convolutions)")
    p.set_defaults(func=cmd_summary)
