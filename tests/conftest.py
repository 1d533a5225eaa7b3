"""Shared fixtures: every test sees an empty cache and no $NORMLAB_DATA unless it sets them."""
import pytest


@pytest.fixture(autouse=True)
def isolated_data_env(tmp_path_factory, monkeypatch):
    monkeypatch.delenv("NORMLAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
