"""Packages import one way (docs/architecture.md): each may use only the layers below it.

Every import statement counts, at the top of a module or inside a function, so a lazy import
cannot hide a wrong dependency.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "normlab"
HELPERS = {"_io", "_tqdm", "plotting", "__version__"}  # shared by every layer; they import only each other

# what each part of normlab may import from normlab (besides itself and the helpers)
ALLOWED = {
    "helpers": set(),
    "nn": set(),
    "data": set(),
    "models": {"nn"},
    "train": {"nn", "data"},
    "inspect": {"nn", "models"},
    "run": {"nn", "data", "models", "train", "inspect"},
    "experiments": {"train", "run"},
    "d2l": {"nn", "data"},
    "cli": {"nn", "data", "models", "train", "inspect", "run", "experiments"},
}


def part(module: str) -> str:
    """'normlab.train.loop' -> 'train'; the helpers are one part."""
    name = module.split(".")[1] if "." in module else "__init__"
    return "helpers" if name in HELPERS else name


def imports(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """(line, module) of every `import normlab...` and `from normlab... import` in a file."""
    package = ".".join(("normlab", *path.relative_to(SRC).with_suffix("").parts))
    found = []
    for node in ast.walk(ast.parse(path.read_text() if source is None else source, str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("normlab")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.rsplit(".", node.level)[0]
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            if module == "normlab":  # from normlab import d2l, run, __version__
                found += [(node.lineno, f"normlab.{a.name}") for a in node.names]
            elif module.startswith("normlab."):
                found.append((node.lineno, module))
    return found


FILES = sorted(p for p in SRC.rglob("*.py") if p.name != "__init__.py" or p.parent != SRC)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_follow_the_layers(path):
    own = part("normlab." + ".".join(path.relative_to(SRC).with_suffix("").parts))
    wrong = [f"line {line}: {module}" for line, module in imports(path)
             if part(module) not in {own, "helpers"} | ALLOWED[own]]
    assert not wrong, f"{path.relative_to(SRC)} ({own}) may import only {sorted(ALLOWED[own])}: {wrong}"


def test_the_check_sees_a_wrong_import():
    """The check itself: train importing inspect, lazily inside a function or relatively, is caught."""
    probe = SRC / "train" / "probe.py"
    source = "def f():\n    from normlab.inspect import stats\n    from ..inspect import plots\n"
    assert imports(probe, source) == [(2, "normlab.inspect"), (3, "normlab.inspect")]
    assert part("normlab.inspect") not in ALLOWED["train"] | {"train", "helpers"}
