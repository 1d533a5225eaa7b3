import pytest

from normlab.experiments import parse_spec


@pytest.fixture
def poly_spec():
    """A small experiment on the synthetic regression task: no data files, under a second a run."""
    def make(variants=None, seeds=(0, 1), epochs=2, **extra):
        return parse_spec({"name": "tiny", "data": {"dataset": "poly"}, "model": {"name": "mlp"},
                           "train": {"epochs": epochs, "device": "cpu", "points_per_epoch": 1},
                           "variants": variants or {"none": {"norm": "none"}, "bn": {"norm": "batch"}},
                           "seeds": list(seeds), **extra})
    return make
