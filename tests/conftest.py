"""Shared fixtures: every test sees an empty cache and no $NORMLAB_DATA unless it sets them."""
import os

import pytest


@pytest.fixture(autouse=True)
def isolated_data_env(tmp_path_factory, monkeypatch):
    monkeypatch.delenv("NORMLAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


@pytest.fixture(scope="session")
def real_fashion_mnist():
    """Skip (fail in CI, where .ci/run installs it) when the real Fashion-MNIST is not on this machine."""
    from normlab.data import FASHION_MNIST
    from normlab.data.fashion_mnist import locate

    if locate(FASHION_MNIST, FASHION_MNIST.resources) is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have Fashion-MNIST: .ci/run installs dataset-fashion-mnist")
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
