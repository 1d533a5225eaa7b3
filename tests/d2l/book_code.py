"""The book's code as the study notes hold it: their ```py / ```python blocks, and what they printed.

tests/d2l/seeds/ are verbatim copies of the three study notes that hold d2l code (000, 001, 002 of
the project's seeds). A block's printout is the text between it and the next code block: in a
plain ``` or ```powershell fence, or as bare lines after '结果：'.
"""
from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

SEEDS = Path(__file__).parent / "seeds"
BOOK_IMPORT = "from d2l import torch as d2l"
NORMLAB_IMPORT = "from normlab import d2l"
_FENCE = re.compile(r"^\s*```\s*(\w*)\s*$")


@dataclass
class Block:
    seed: str        # the note's file name
    index: int       # 0-based among the note's code blocks
    code: str
    after: str       # the note's text up to the next code block: where its printout is

    @property
    def printed_shapes(self) -> list[str]:
        """The note's 'X output shape: torch.Size(...)' lines for this block, white space folded."""
        return shape_lines(self.after)

    def __repr__(self) -> str:
        return f"{self.seed}[{self.index}]"


def shape_lines(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines() if "output shape" in line]


def code_blocks(path: Path) -> list[Block]:
    """The ```py and ```python blocks of one note, each with the text that follows it."""
    blocks, lang, body, after = [], None, [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        fence = _FENCE.match(line)
        if lang is None and fence:  # a block opens
            lang, body = fence.group(1), []
            if lang in ("py", "python") and blocks:
                blocks[-1].after = "\n".join(after)
            if lang in ("py", "python"):
                after = []
            else:
                after.append(line)
        elif lang is not None and fence and not fence.group(1):  # it closes
            if lang in ("py", "python"):
                blocks.append(Block(path.stem, len(blocks), "\n".join(body), ""))
            else:
                after += body + [line]
            lang = None
        elif lang is not None:
            body.append(line)
        else:
            after.append(line)
    if blocks:
        blocks[-1].after = "\n".join(after)
    return blocks


def on_normlab(code: str) -> str:
    """The block with its one import line changed, and nothing else."""
    return code.replace(BOOK_IMPORT, NORMLAB_IMPORT)


def printed_text(block: Block) -> str:
    """The inside of the first fence after the block (its printout, where the note shows one)."""
    lines = block.after.splitlines()
    opens = [i for i, line in enumerate(lines) if _FENCE.match(line)]
    return "\n".join(lines[opens[0] + 1:opens[1]]) if len(opens) >= 2 else ""


def run_block(block: Block, namespace: dict) -> tuple[str, Exception | None]:
    """Run the block as a notebook cell would, in `namespace`: (what it printed, what it raised)."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(on_normlab(block.code), f"<{block!r}>", "exec"), namespace)
    except Exception as e:  # noqa: BLE001 (the caller decides what was expected)
        return out.getvalue(), e
    return out.getvalue(), None
