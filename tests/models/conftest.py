"""The model tests run small tensors on a shared CPU: one thread each.

With several threads per op and other processes on the cores, OpenMP's waiting threads spin and
a small forward/backward takes seconds instead of milliseconds (measured: 52 s against 8 s for
the GoogLeNet and ResNet-18 cases of test_zoo.py on 2 busy cores). Restored after the package.
"""
import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
