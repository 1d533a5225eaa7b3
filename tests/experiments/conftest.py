import pytest
import tomli_w

from normlab.experiments import parse_spec


def poly(variants=None, seeds=(0, 1), epochs=2, **extra):
    """A small experiment on the synthetic regression task: no data files, under a second a run."""
    return {"name": "tiny", "data": {"dataset": "poly"}, "model": {"name": "mlp"},
            "train": {"epochs": epochs, "device": "cpu", "points_per_epoch": 1},
            "variants": variants or {"none": {"norm": "none"}, "bn": {"norm": "batch"}},
            "seeds": list(seeds), **extra}


@pytest.fixture
def poly_spec():
    """poly(...) as a Spec."""
    return lambda **kw: parse_spec(poly(**kw))


@pytest.fixture
def poly_spec_file(tmp_path):
    """poly(...) written to tmp_path/tiny.toml, as a user's spec file; returns the path."""
    def make(**kw):
        path = tmp_path / "tiny.toml"
        path.write_text(tomli_w.dumps(poly(**kw)))
        return path
    return make
