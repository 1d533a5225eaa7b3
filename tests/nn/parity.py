"""Helpers shared by the parity tests: tolerances, twin modules, identical inputs."""
from __future__ import annotations

import os

import torch

# Hypothesis examples per test are kept small so that tests/nn runs in well under 2 minutes;
# NORMLAB_HYPOTHESIS_SCALE=20 multiplies them for a deeper sweep.
SCALE = int(os.environ.get("NORMLAB_HYPOTHESIS_SCALE", "1"))


def examples(n: int) -> int:
    return n * SCALE


# The tolerances: 1e-10 in float64, 1e-5 relative in float32; "relative" is taken
# against the larger of 1 and the reference's largest magnitude, so values near 0 are fair.
TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 5e-2}


def assert_close(actual, expected, what: str = "") -> None:
    """Equal within TOL[dtype], scaled by the reference's magnitude; None only matches None."""
    if expected is None or actual is None:
        assert actual is None and expected is None, f"{what}: {actual!r} vs {expected!r}"
        return
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} vs {expected.dtype}"
    if not actual.is_floating_point():
        assert torch.equal(actual, expected), f"{what}: {actual} vs {expected}"
        return
    tol = TOL[expected.dtype]
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * scale,
                               msg=lambda m: f"{what}: {m}")


def assert_close_or_as_accurate(actual, expected, truth, what: str = "") -> None:
    """float32: within TOL of torch; or, where torch itself is that far from the float64 truth
    (an ill-conditioned case, e.g. two nearly equal values per group, where dx is a difference
    of nearly equal terms), within 4× torch's own error from the truth: rounding in another
    valid order differs by a small factor, a real bug by orders of magnitude.
    float64: plain assert_close."""
    if truth is None or actual is None or expected is None or expected.dtype == torch.float64:
        assert_close(actual, expected, what)
        return
    try:
        assert_close(actual, expected, what)
    except AssertionError:
        truth = truth.to(torch.float64)
        ours = (actual.double() - truth).abs().max().item()
        theirs = (expected.double() - truth).abs().max().item()
        scale = max(1.0, truth.abs().max().item())
        assert ours <= 4 * theirs + TOL[expected.dtype] * scale, (
            f"{what}: normlab is {ours:.3g} from the float64 truth, torch {theirs:.3g}")


def copy_params(src: torch.nn.Module, dst: torch.nn.Module) -> None:
    """dst takes src's parameters and buffers (same names)."""
    with torch.no_grad():
        for (_, a), (_, b) in zip(src.named_parameters(), dst.named_parameters()):
            b.copy_(a)


def randomize_affine(module: torch.nn.Module, generator: torch.Generator) -> None:
    """γ ~ U(0.5, 1.5), β ~ N(0, 1): affine gradients then differ from the identity case."""
    with torch.no_grad():
        if getattr(module, "weight", None) is not None:
            module.weight.copy_(torch.rand(module.weight.shape, generator=generator,
                                           dtype=torch.float64) + 0.5)
        if getattr(module, "bias", None) is not None:
            module.bias.copy_(torch.randn(module.bias.shape, generator=generator,
                                          dtype=torch.float64))


def assert_same_error(ours, theirs) -> Exception:
    """Both callables raise the same exception type with the same message."""
    errors = []
    for f in (ours, theirs):
        try:
            f()
        except Exception as e:  # noqa: BLE001 - we compare whatever torch raises
            errors.append(e)
        else:
            errors.append(None)
    mine, ref = errors
    assert ref is not None, "torch did not raise; the test case is wrong"
    assert mine is not None, f"normlab did not raise; torch raised {type(ref).__name__}: {ref}"
    assert type(mine) is type(ref) and str(mine) == str(ref), f"{mine!r} != {ref!r}"
    return mine
