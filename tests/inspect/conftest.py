"""The inspection tests run the shared tiny image runs (tests/conftest.py) with statistics recording on."""
import pytest


@pytest.fixture
def config(config):
    def make(**updates):
        return config(**{"record_stats": True, **updates})
    return make
