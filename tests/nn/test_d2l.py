"""The book's layer: the documented differences from the exact layer, each shown."""
from __future__ import annotations

import torch

import normlab.nn as nl
from parity import assert_close

f64 = dict(dtype=torch.float64)


def pair(num_dims=4, C=3):
    book = nl.D2LBatchNorm(C, num_dims=num_dims).double()  # momentum 0.9 on the old value
    exact = (nl.BatchNorm2d if num_dims == 4 else nl.BatchNorm1d)(C, momentum=0.1, **f64)
    return book, exact


def test_training_output_equals_exact_layer():
    book, exact = pair()
    x = torch.randn(4, 3, 5, 5, **f64) * 2 + 1
    assert_close(book(x), exact(x), "training output")


def test_momentum_conversion_book_09_is_torch_01():
    """moving_mean ← 0.9·moving_mean + 0.1·mean  ==  running_mean ← 0.9·running_mean + 0.1·mean."""
    book, exact = pair(num_dims=2)
    for k in range(3):
        x = torch.randn(16, 3, **f64) + k
        book(x), exact(x)
    assert_close(book.moving_mean.view(-1), exact.running_mean, "mean")


def test_moving_variance_is_biased():
    """Book: var_biased; torch: var_unbiased = var_biased·M/(M − 1)."""
    book, exact = pair()
    x = torch.randn(2, 3, 2, 2, **f64) * 3  # M = 8 values per channel
    book(x), exact(x)
    var_biased = x.var((0, 2, 3), correction=0)
    assert_close(book.moving_var.view(-1), 0.9 + 0.1 * var_biased, "book")
    assert_close(exact.running_var, 0.9 + 0.1 * var_biased * 8 / 7, "exact")


def test_mode_comes_from_grad_state_not_training_flag():
    book, exact = pair()
    x = torch.randn(4, 3, 2, 2, **f64) + 5
    with torch.no_grad():  # train mode, but no grad: the book uses the moving statistics
        y_book = book(x)
    assert_close(y_book, exact.eval()(x), "no_grad uses moving statistics")
    book.eval()  # eval mode, but grad enabled: the book normalizes with the batch and updates
    y = book(x)
    assert_close(y.mean((0, 2, 3)), torch.zeros(3, **f64), "batch statistics in eval")
    assert book.moving_mean.abs().min() > 0.4, "moving_mean should have moved toward 5"


def test_buffers_travel_with_to_and_state_dict():
    book = nl.D2LBatchNorm(6, num_dims=4)
    assert set(book.state_dict()) == {"gamma", "beta", "moving_mean", "moving_var"}
    book = book.to(torch.float64)
    assert book.moving_mean.dtype == torch.float64 and book.moving_var.shape == (1, 6, 1, 1)
    book(torch.randn(2, 6, 3, 3, **f64))
    fresh = nl.D2LBatchNorm(6, num_dims=4).double()
    fresh.load_state_dict(book.state_dict())
    assert torch.equal(fresh.moving_var, book.moving_var)
