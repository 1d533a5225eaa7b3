"""The research layers (normlab.nn.research): each one against its definition or its special case.

BatchRenorm with r_max = 1, d_max = 0 and GhostBatchNorm with one virtual batch are batch norm;
switchable norm with all weight on BN is batch norm; whitening gives unit covariance; IterNorm
tends to ZCA; rank-Gauss outputs are N(0, 1); float64 gradcheck wherever a layer is differentiable;
eval uses the running estimates and leaves them alone.
"""
from __future__ import annotations

import copy
import math
import re
import warnings
from statistics import NormalDist

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import normlab.nn as nl
from normlab.nn import research
from parity import assert_close, copy_params, examples, randomize_affine

RESEARCH = ["batch_renorm", "ghost_batch", "whiten_zca", "iternorm", "rank_gauss", "frozen_batch",
            "switchable", "batch_mean_only", "batch_var_only"]
TORCH_BN = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}
OURS_BN = {2: nl.BatchNorm1d, 3: nl.BatchNorm1d, 4: nl.BatchNorm2d, 5: nl.BatchNorm3d}


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape, g, scale=1.0, shift=0.0) -> torch.Tensor:
    return torch.randn(shape, generator=g, dtype=torch.float64) * scale + shift


def steps(layer: nn.Module, xs, dys) -> list[dict]:
    """Train `layer` on each (x, dy); after each step: output, gradients and buffers."""
    records = []
    for x, dy in zip(xs, dys):
        x = x.clone().requires_grad_()
        for p in layer.parameters():
            p.grad = None
        y = layer(x)
        y.backward(dy)
        records.append({"y": y.detach(), "dx": x.grad,
                        **{f"d{n}": p.grad for n, p in layer.named_parameters()},
                        **{n: b.clone() for n, b in layer.named_buffers()}})
    return records


def assert_same_records(ours: list[dict], reference: list[dict], keys=None) -> None:
    for step, (a, b) in enumerate(zip(ours, reference)):
        for key in keys or b:
            assert_close(a[key], b[key], f"step {step}: {key}")


def cov_by_group(y: torch.Tensor, group_size: int) -> torch.Tensor:
    """(G, g, g) biased covariance of each group of channels of y (N, C, *)."""
    rows = y.transpose(0, 1).reshape(y.shape[1], -1)
    rows = rows - rows.mean(1, keepdim=True)
    groups = rows.view(-1, group_size, rows.shape[1])
    return groups @ groups.mT / rows.shape[1]


def correlated(shape, g, spread=3.0) -> torch.Tensor:
    """(N, C, *) whose channels are strongly correlated: a random mix of independent normals."""
    C = shape[1]
    mix = torch.randn(C, C, generator=g, dtype=torch.float64) + spread * torch.eye(C, dtype=torch.float64)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    return torch.einsum("dc,nc...->nd...", mix, x) + torch.arange(C, dtype=torch.float64).view(1, C, *[1] * (len(shape) - 2))


def ks_statistic(z: torch.Tensor) -> float:
    """Kolmogorov–Smirnov distance between the sample z and N(0, 1): sup |F_n − Φ|."""
    z = z.detach().flatten().double().sort().values
    n = z.numel()
    cdf = torch.special.ndtr(z)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return max((i / n - cdf).max().item(), (cdf - (i - 1) / n).max().item())


# --------------------------------------------------------------- the factory

def test_every_research_norm_is_listed_and_builds_for_vectors_and_maps():
    assert set(RESEARCH) <= set(nl.list_norms())
    for name in RESEARCH:
        for dim, shape in ((1, (20, 6)), (2, (20, 6, 3, 3))):
            layer = nl.create_norm(name, 6, dim=dim)
            x = torch.randn(shape, requires_grad=True)
            y = layer(x)
            y.square().sum().backward()
            assert y.shape == shape and torch.isfinite(y).all(), name
            assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0, name


def test_switchable_drops_instance_statistics_for_vectors():
    assert nl.create_norm("switchable", 4, dim=1).mean_weight.numel() == 2
    assert nl.create_norm("switchable", 4, dim=2).mean_weight.numel() == 3
    with pytest.raises(ValueError, match="instance=False"):
        nl.SwitchableNorm(4)(torch.randn(3, 4))


# --------------------------------------------------------------- batch renormalization

@st.composite
def shapes(draw):
    """(N, C, *spatial) of rank 2-4 with at least 2 values per channel."""
    rank = draw(st.integers(2, 4))
    N = draw(st.integers(2, 6))
    return (N, draw(st.integers(1, 3)), *[draw(st.integers(1, 3)) for _ in range(rank - 2)])


@settings(max_examples=examples(15), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=shapes(), momentum=st.sampled_from([0.1, None, 0.5]), affine=st.booleans(),
       seed=st.integers(0, 2**16))
def test_batch_renorm_with_r_max_1_and_d_max_0_is_batch_norm(shape, momentum, affine, seed):
    g = generator(seed)
    C = shape[1]
    xs = [randn(*shape, g=g, scale=2.0, shift=1.0) for _ in range(3)]
    dys = [randn(*shape, g=g) for _ in range(3)]
    brn = nl.BatchRenorm(C, momentum=momentum, affine=affine, r_max=1.0, d_max=0.0).double()
    randomize_affine(brn, generator(seed + 1))
    for reference in (TORCH_BN[len(shape)], OURS_BN[len(shape)]):
        bn = reference(C, momentum=momentum, affine=affine).double()
        copy_params(brn, bn)
        ours, theirs = steps(copy.deepcopy(brn), xs, dys), steps(bn, xs, dys)
        assert_same_records(ours, theirs)


def reference_renorm(x, running_mean, running_var, weight, bias, r_max, d_max, eps=1e-5):
    """The paper's Algorithm 1 with autograd, r and d detached (stop_gradient)."""
    dims = [0, *range(2, x.dim())]
    view = [1, -1] + [1] * (x.dim() - 2)
    mean, sigma_b = x.mean(dims), (x.var(dims, correction=0) + eps).sqrt()
    sigma = (running_var + eps).sqrt()
    r = (sigma_b / sigma).clamp(1 / r_max, r_max).detach()
    d = ((mean - running_mean) / sigma).clamp(-d_max, d_max).detach()
    x_hat = (x - mean.view(view)) / sigma_b.view(view) * r.view(view) + d.view(view)
    return x_hat * weight.view(view) + bias.view(view)


@pytest.mark.parametrize("r_max,d_max", [(3.0, 5.0), (1.2, 0.3)])  # unclipped; clipped
def test_batch_renorm_follows_the_paper(r_max, d_max):
    g = generator(1)
    layer = nl.BatchRenorm(3, r_max=r_max, d_max=d_max, r_max_steps=(0, 0), d_max_steps=(0, 0)).double()
    randomize_affine(layer, g)
    with torch.no_grad():
        layer.running_mean.copy_(torch.tensor([0.5, -0.5, 1.0]))
        layer.running_var.copy_(torch.tensor([2.0, 0.5, 1.5]))
    x = randn(8, 3, 4, 4, g=g, scale=1.5).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    w_ref, b_ref = (p.detach().clone().requires_grad_() for p in (layer.weight, layer.bias))
    expected = reference_renorm(x_ref, layer.running_mean.clone(), layer.running_var.clone(), w_ref, b_ref,
                                r_max, d_max)
    y = layer(x)
    assert_close(y, expected, "output")
    dy = randn(8, 3, 4, 4, g=g)
    y.backward(dy)
    expected.backward(dy)
    for ours, theirs, what in ((x.grad, x_ref.grad, "dx"), (layer.weight.grad, w_ref.grad, "dγ"),
                               (layer.bias.grad, b_ref.grad, "dβ")):
        assert_close(ours, theirs, what)


def test_unclipped_batch_renorm_trains_with_the_eval_transform():
    """r, d unclipped: (x − μ_B)/σ_B·σ_B/σ + (μ_B − μ)/σ = (x − μ)/σ, the eval output."""
    g = generator(2)
    layer = nl.BatchRenorm(3, r_max=100.0, d_max=100.0, r_max_steps=(0, 0), d_max_steps=(0, 0)).double()
    with torch.no_grad():
        layer.running_mean.copy_(torch.tensor([0.3, 0.0, -2.0]))
        layer.running_var.copy_(torch.tensor([4.0, 1.0, 0.25]))
    x = randn(16, 3, 2, 2, g=g)
    expected = copy.deepcopy(layer).eval()(x)
    assert_close(layer(x), expected, "training output with unclipped r, d")


def test_batch_renorm_warm_up_schedule():
    layer = nl.BatchRenorm(2, r_max=3.0, d_max=5.0, r_max_steps=(10, 30), d_max_steps=(10, 20))
    seen = {}
    for step in range(35):
        seen[step] = layer.current_limits()
        layer(torch.randn(4, 2))
    assert layer.num_batches_tracked.item() == 35
    assert seen[0] == seen[10] == (1.0, 0.0)
    assert seen[20] == pytest.approx((2.0, 5.0)) and seen[15] == pytest.approx((1.5, 2.5))
    assert seen[30] == seen[34] == (3.0, 5.0)
    default = nl.BatchRenorm(2)  # the paper's: relaxed from step 5k, r_max 3 at 40k, d_max 5 at 25k
    assert (default.r_max_steps, default.d_max_steps) == ((5000, 40000), (5000, 25000))


def test_batch_renorm_gradcheck_where_r_and_d_clip():
    """With r and d clipped they are locally constant, so the layer is exactly differentiable and
    its gradient (r, d constants in backward) must match finite differences."""
    layer = nl.BatchRenorm(2, momentum=0.0, r_max=2.0, d_max=0.5, r_max_steps=(0, 0),
                           d_max_steps=(0, 0)).double()
    randomize_affine(layer, generator(3))
    with torch.no_grad():
        layer.running_mean.fill_(10.0)  # d = −10/σ, clipped at −0.5
        layer.running_var.fill_(100.0)  # σ_B/σ ≈ 0.1, clipped at 1/2
    x = randn(6, 2, 2, g=generator(4)).requires_grad_()
    assert torch.autograd.gradcheck(layer, (x,))


# --------------------------------------------------------------- ghost batch norm

@pytest.mark.parametrize("shape", [(8, 3), (8, 3, 2, 2)])
@pytest.mark.parametrize("virtual", [8, 32])
def test_ghost_batch_norm_of_the_whole_batch_is_batch_norm(shape, virtual):
    g = generator(5)
    xs, dys = [randn(*shape, g=g, scale=2) for _ in range(3)], [randn(*shape, g=g) for _ in range(3)]
    ghost = nl.GhostBatchNorm(3, virtual_batch_size=virtual).double()
    randomize_affine(ghost, g)
    bn = TORCH_BN[len(shape)](3).double()
    copy_params(ghost, bn)
    assert_same_records(steps(ghost, xs, dys), steps(bn, xs, dys))


@pytest.mark.parametrize("momentum", [0.1, None])
def test_ghost_batch_norm_is_batch_norm_chunk_by_chunk(momentum):
    g = generator(6)
    shape = (12, 3, 2, 2)
    xs, dys = [randn(*shape, g=g, scale=2, shift=1) for _ in range(2)], [randn(*shape, g=g) for _ in range(2)]
    ghost = nl.GhostBatchNorm(3, virtual_batch_size=4, momentum=momentum).double()
    randomize_affine(ghost, g)
    bn = nn.BatchNorm2d(3, momentum=momentum).double()
    copy_params(ghost, bn)
    ours = steps(ghost, xs, dys)
    theirs = []   # the same three chunks of 4, one after the other, through torch's BatchNorm2d
    for x, dy in zip(xs, dys):
        for p in bn.parameters():
            p.grad = None
        x = x.clone().requires_grad_()
        y = torch.cat([bn(chunk) for chunk in x.split(4)])
        y.backward(dy)
        theirs.append({"y": y.detach(), "dx": x.grad, "dweight": bn.weight.grad.clone(),
                       "dbias": bn.bias.grad.clone(), **{n: b.clone() for n, b in bn.named_buffers()}})
    assert_same_records(ours, theirs)
    assert ghost.num_batches_tracked.item() == 6  # one step per virtual batch
    ghost.eval(), bn.eval()
    assert_close(ghost(xs[0]), bn(xs[0]), "eval: the running statistics")


def test_ghost_batch_norm_gradcheck():
    layer = nl.GhostBatchNorm(2, virtual_batch_size=3).double()
    randomize_affine(layer, generator(7))
    assert torch.autograd.gradcheck(layer, (randn(6, 2, 2, g=generator(8)).requires_grad_(),))


# --------------------------------------------------------------- whitening

@pytest.mark.parametrize("cls", [nl.DecorrelatedBatchNorm, nl.IterNorm])
@pytest.mark.parametrize("shape,group_size", [((256, 8), 4), ((32, 8, 3, 3), 8), ((40, 6, 2), 2)])
def test_whitening_gives_unit_covariance_per_group(cls, shape, group_size):
    kw = dict(T=30) if cls is nl.IterNorm else {}
    layer = cls(shape[1], group_size=group_size, eps=1e-10, affine=False, **kw).double()
    x = correlated(shape, generator(9))
    assert (cov_by_group(x, group_size) - torch.eye(group_size)).abs().max() > 1, "input is correlated"
    y = layer(x)
    eye = torch.eye(group_size, dtype=torch.float64).expand(shape[1] // group_size, -1, -1)
    torch.testing.assert_close(cov_by_group(y, group_size), eye, atol=1e-7, rtol=0)
    torch.testing.assert_close(y.mean(dim=[0, *range(2, y.dim())]), torch.zeros(shape[1], dtype=torch.float64),
                               atol=1e-10, rtol=0)


def test_zca_is_the_symmetric_inverse_square_root():
    """ZCA (not PCA) whitening: W = Σ^{-1/2} is symmetric, W·Σ·W = I; the running W is the batch W
    with momentum 1."""
    layer = nl.DecorrelatedBatchNorm(4, group_size=4, momentum=1.0, affine=False).double()
    x = correlated((64, 4), generator(10))
    layer(x)
    W = layer.running_whitening[0]
    cov = torch.cov(x.T, correction=0) + 1e-5 * torch.eye(4, dtype=torch.float64)
    assert_close(W, W.T, "W symmetric")
    assert_close(W @ cov @ W, torch.eye(4, dtype=torch.float64), "W Σ W = I")
    assert_close(layer.running_mean, x.mean(0), "running mean, momentum 1")


def test_iternorm_approaches_zca_as_T_grows():
    g = generator(11)
    x = correlated((64, 8, 2, 2), g, spread=2.0)
    zca = nl.DecorrelatedBatchNorm(8, group_size=4).double()
    randomize_affine(zca, g)
    expected = zca(x)
    errors = {}
    for T in (1, 2, 3, 5, 8, 12, 20, 50):
        iternorm = nl.IterNorm(8, group_size=4, T=T).double()
        copy_params(zca, iternorm)
        errors[T] = (iternorm(x) - expected).abs().max().item()
    values = [errors[T] for T in (1, 2, 3, 5, 8)]
    assert all(a > b for a, b in zip(values, values[1:])), f"error not decreasing in T: {errors}"
    assert values[0] > 0.1, errors
    assert max(errors[12], errors[20], errors[50]) < 1e-12, f"converged to ZCA and stays there: {errors}"


def test_iternorm_is_the_papers_recursion():
    """P_k = (3·P_{k−1} − P_{k−1}³·Σ_N)/2 from P_0 = I, W = P_T/√tr(Σ), computed in its coupled form."""
    cov = cov_by_group(correlated((64, 8), generator(33)), 4) + 1e-5 * torch.eye(4, dtype=torch.float64)
    trace = cov.diagonal(dim1=-2, dim2=-1).sum(-1).view(-1, 1, 1)
    p = torch.eye(4, dtype=torch.float64).expand_as(cov)
    for T in range(1, 6):
        p = 1.5 * p - 0.5 * torch.linalg.matrix_power(p, 3) @ (cov / trace)
        assert_close(nl.IterNorm(8, group_size=4, T=T).whitening_matrix(cov), p / trace.sqrt(), f"T={T}")


@pytest.mark.parametrize("cls", [nl.DecorrelatedBatchNorm, nl.IterNorm])
def test_whitening_gradcheck(cls):
    layer = cls(4, group_size=2, T=4) if cls is nl.IterNorm else cls(4, group_size=2)
    layer = layer.double()
    randomize_affine(layer, generator(12))
    x = correlated((5, 4, 2), generator(13)).requires_grad_()
    assert torch.autograd.gradcheck(layer, (x,))


def test_zca_backward_is_the_derivative_of_the_inverse_square_root():
    """Σ = A·Aᵀ + I from A (symmetric, as the layer's covariance): gradcheck, and the same
    gradient as autograd through eigh where the eigenvalues are distinct."""
    def inverse_sqrt(a):
        return research._InverseSquareRoot.apply(a @ a.mT + torch.eye(4, dtype=a.dtype), 1e-5)

    a = randn(2, 4, 4, g=generator(34)).requires_grad_()
    assert torch.autograd.gradcheck(inverse_sqrt, (a,))
    dw = randn(2, 4, 4, g=generator(35))
    ours, = torch.autograd.grad(inverse_sqrt(a), a, dw)
    lam, u = torch.linalg.eigh(a @ a.mT + torch.eye(4, dtype=torch.float64))
    theirs, = torch.autograd.grad((u * lam.rsqrt().unsqueeze(-2)) @ u.mT, a, dw)
    assert_close(ours, theirs, "∂L/∂A")


def test_zca_gradient_with_repeated_eigenvalues():
    """Dead (all-zero) channels give a group repeated eigenvalues, all eps. Autograd through eigh
    divides by λ_i − λ_j and gives NaN; the Daleckii–Krein backward stays finite and exact."""
    x = correlated((12, 4, 2), generator(36))
    x[:, 1:3] = 0.0
    layer = nl.DecorrelatedBatchNorm(4, group_size=4).double()
    randomize_affine(layer, generator(37))
    assert torch.autograd.gradcheck(layer, (x.requires_grad_(),))
    # a diagonal Σ with two equal eigenvalues: ∂L/∂Σ_ij = −sym(G)_ij/(s_i·s_j·(s_i + s_j))
    cov = torch.diag(torch.tensor([2.0, 1e-5, 1e-5, 3.0], dtype=torch.float64)).unsqueeze(0).requires_grad_()
    dw = randn(1, 4, 4, g=generator(38))
    ours, = torch.autograd.grad(research._InverseSquareRoot.apply(cov, 1e-5), cov, dw)
    s = cov.detach().diagonal(dim1=-2, dim2=-1).sqrt()
    expected = -(dw + dw.mT) / 2 / (s.unsqueeze(-1) * s.unsqueeze(-2) * (s.unsqueeze(-1) + s.unsqueeze(-2)))
    assert_close(ours, expected, "∂L/∂Σ, repeated eigenvalues")
    lam, u = torch.linalg.eigh(cov)
    theirs, = torch.autograd.grad((u * lam.rsqrt().unsqueeze(-2)) @ u.mT, cov, dw)
    assert torch.isnan(theirs).any(), "autograd through eigh is fine here: the case is moot"


def test_whitening_eval_uses_the_running_mean_and_matrix():
    layer = nl.IterNorm(4, group_size=2, affine=False).double()
    with torch.no_grad():
        layer.running_mean.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
        layer.running_whitening.copy_(torch.tensor([[[2.0, 1.0], [1.0, 3.0]], [[1.0, 0.0], [0.0, 0.5]]]))
    x = randn(5, 4, g=generator(14))
    y = layer.eval()(x)
    expected = torch.cat([(x[:, :2] - torch.tensor([1.0, 2.0])) @ layer.running_whitening[0].T,
                          (x[:, 2:] - torch.tensor([3.0, 4.0])) @ layer.running_whitening[1].T], 1)
    assert_close(y, expected, "eval whitening")


# --------------------------------------------------------------- rank-Gauss

def reference_rank_gauss(row: list[float]) -> tuple[list[float], list[float]]:
    """docs/research_norms.md's definition, in plain Python: z and the backward slope per value."""
    M, ordered, ndtri = len(row), sorted(row), NormalDist().inv_cdf
    k = max(1, round(math.sqrt(M)))
    z, slope = [], []
    for x in row:
        a, b = sum(v < x for v in ordered), sum(v <= x for v in ordered)
        z.append(ndtri((a + b) / (2 * M)))
        lo, hi = max(a - k, 0), min(b - 1 + k, M - 1)
        dx = ordered[hi] - ordered[lo]
        slope.append((ndtri((hi + 0.5) / M) - ndtri((lo + 0.5) / M)) / dx if dx > 0 else 0.0)
    return z, slope


def test_rank_gauss_ranks_ties_and_quantiles_by_hand():
    layer = nl.RankGaussNorm(1, affine=False).double()
    x = torch.tensor([[3.0], [1.0], [1.0], [2.0]], dtype=torch.float64)
    # ranks 4, 1.5, 1.5, 3 (ties take their average rank) -> u = (rank − 0.5)/4
    u = torch.tensor([[0.875], [0.25], [0.25], [0.625]], dtype=torch.float64)
    assert_close(layer(x), torch.special.ndtri(u), "Φ⁻¹((rank − 0.5)/M)")


@pytest.mark.parametrize("shape", [(40, 3), (6, 3, 3, 2)])
def test_rank_gauss_output_and_gradient_are_the_documented_ones(shape):
    g = generator(15)
    layer = nl.RankGaussNorm(3).double()
    randomize_affine(layer, g)
    x = randn(*shape, g=g, scale=2.0)
    x[:, 1] = x[:, 1].round().clamp(min=0)  # channel 1: ties (a relu'd, rounded channel)
    x[:, 2] = 0.7                           # channel 2: constant
    x.requires_grad_()
    y = layer(x)
    dy = randn(*shape, g=g)
    y.backward(dy)
    rows = x.detach().transpose(0, 1).reshape(3, -1)
    z, slope = zip(*(reference_rank_gauss(r.tolist()) for r in rows))
    as_input = lambda v: torch.tensor(v, dtype=torch.float64).reshape(3, shape[0], *shape[2:]).transpose(0, 1)  # noqa: E731
    view = [1, 3] + [1] * (len(shape) - 2)
    w, b = layer.weight.detach().view(view), layer.bias.detach().view(view)
    assert_close(y, as_input(z) * w + b, "output")
    g = (dy * w).transpose(0, 1).reshape(3, -1) * torch.tensor(slope, dtype=torch.float64)
    g = g - g.mean(1, keepdim=True)
    xc = rows - rows.mean(1, keepdim=True)
    norm2 = xc.square().sum(1, keepdim=True)
    g = g - xc * (g * xc).sum(1, keepdim=True) / torch.where(norm2 > 0, norm2, 1.0)
    assert_close(x.grad, g.reshape(3, shape[0], *shape[2:]).transpose(0, 1), "dx = γ·slope·dy, projected")
    grad_rows = x.grad.transpose(0, 1).reshape(3, -1)
    assert grad_rows.sum(1).abs().max() < 1e-9, "blind to a shift of a channel"
    assert (grad_rows * xc).sum(1).abs().max() < 1e-9, "blind to a scaling of a channel"
    assert_close(layer.weight.grad, (dy * as_input(z)).sum([0, *range(2, len(shape))]), "dγ")
    assert (x.grad[:, 2] == 0).all(), "a constant channel gets no gradient"


def test_rank_gauss_gradient_of_gaussian_input_is_batch_norms_scale():
    """x ~ N(μ, σ²): Φ⁻¹(F(x)) = (x − μ)/σ, so the slope estimate should be about 1/σ, and the
    projected gradient of a loss Σ c_i·z_i should be batch norm's: (c − mean(c) − x̂·mean(c·x̂))/σ."""
    x = randn(20000, 2, g=generator(16)) * torch.tensor([3.0, 0.5]) + 2.0
    _, slope, _ = research.rank_gauss(x.T.contiguous())
    central = x.sub(2.0).abs() < torch.tensor([3.0, 0.5])  # within one σ of the mean
    for c, sigma in enumerate((3.0, 0.5)):
        slopes = slope[c][central[:, c]]
        assert slopes.median().item() == pytest.approx(1 / sigma, rel=0.03)
        assert slopes.mean().item() == pytest.approx(1 / sigma, rel=0.05)
    x.requires_grad_()
    cotangent = randn(20000, 2, g=generator(17))
    (nl.RankGaussNorm(2, affine=False).double()(x) * cotangent).sum().backward()
    x_bn = x.detach().clone().requires_grad_()
    (torch.nn.functional.batch_norm(x_bn, None, None, training=True) * cotangent).sum().backward()
    error = (x.grad - x_bn.grad).norm(dim=0) / x_bn.grad.norm(dim=0)
    assert (error < 0.1).all(), f"relative distance to batch norm's gradient {error.tolist()}"


@pytest.mark.parametrize("name,sample", [
    ("normal", lambda g, n: torch.randn(n, 3, generator=g) * 4 + 1),
    ("exponential", lambda g, n: torch.empty(n, 3).exponential_(generator=g)),
    ("uniform", lambda g, n: torch.rand(n, 3, generator=g) * 10),
])
def test_rank_gauss_marginals_are_standard_normal_in_training_and_eval(name, sample):
    g = generator(17)
    layer = nl.RankGaussNorm(3, affine=False)
    for _ in range(60):  # the running quantiles settle
        train_out = layer(sample(g, 512))
    for c in range(3):  # training: the M normal scores themselves, KS = 1/(2M)
        assert ks_statistic(train_out[:, c]) < 1 / 512 + 1e-6, name
    layer.eval()
    test = sample(g, 5000)
    with torch.no_grad():
        out = layer(test)
    for c in range(3):
        assert ks_statistic(out[:, c]) < 0.03, f"{name}, channel {c}: eval marginal not N(0, 1)"


def test_rank_gauss_running_quantiles_follow_the_batches():
    layer = nl.RankGaussNorm(1, num_quantiles=4, momentum=1.0, affine=False).double()
    x = torch.arange(8, dtype=torch.float64).view(8, 1)  # u = (i + 0.5)/8 at the value i
    layer(x)
    # quantile p ↦ position p·8 − 0.5: p = 1/8, 3/8, 5/8, 7/8 are the values 0.5, 2.5, 4.5, 6.5
    assert_close(layer.running_quantiles, torch.tensor([[0.5, 2.5, 4.5, 6.5]], dtype=torch.float64), "q")
    with torch.no_grad():  # between the knots, eval is linear in z: at a knot it is exact
        y = layer.eval()(torch.tensor([[2.5], [3.5], [6.5], [8.5]], dtype=torch.float64)).flatten()
    scores = torch.special.ndtri(torch.tensor([1, 3, 5, 7], dtype=torch.float64) / 8)
    expected = torch.stack([scores[1], (scores[1] + scores[2]) / 2, scores[3],
                            scores[3] + (scores[3] - scores[2])])  # beyond the last knot: its segment
    assert_close(y, expected, "eval interpolation")


def test_rank_gauss_eval_gradcheck():
    layer = nl.RankGaussNorm(2, num_quantiles=16).double()
    randomize_affine(layer, generator(18))
    for _ in range(5):
        layer(randn(50, 2, g=generator(19), scale=2))
    layer.eval()
    assert torch.autograd.gradcheck(layer, (randn(7, 2, 3, g=generator(20), scale=3).requires_grad_(),))


# --------------------------------------------------------------- switchable

def pure(layer: nl.SwitchableNorm, kind: int) -> nl.SwitchableNorm:
    """All weight on one kind of statistics: 0 batch, 1 layer, 2 instance."""
    with torch.no_grad():
        for logits in (layer.mean_weight, layer.var_weight):
            logits.fill_(-math.inf)
            logits[kind] = 0.0
    return layer


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 3, 2)])
def test_switchable_with_all_weight_on_batch_is_batch_norm(shape):
    g = generator(21)
    xs, dys = [randn(*shape, g=g, scale=2, shift=1) for _ in range(3)], [randn(*shape, g=g) for _ in range(3)]
    layer = pure(nl.SwitchableNorm(3, instance=len(shape) > 2).double(), 0)
    randomize_affine(layer, g)
    bn = TORCH_BN[len(shape)](3).double()
    copy_params(layer, bn)  # weight and bias come first in both
    keys = ["y", "dx", "dweight", "dbias", "running_mean", "running_var"]
    assert_same_records(steps(layer, xs, dys), steps(bn, xs, dys), keys)
    layer.eval(), bn.eval()
    assert_close(layer(xs[0]), bn(xs[0]), "eval")


def test_switchable_with_all_weight_on_layer_or_instance_is_that_norm():
    x = randn(4, 3, 3, 2, g=generator(22), scale=2, shift=1)
    as_layer = pure(nl.SwitchableNorm(3, affine=False).double(), 1)
    as_instance = pure(nl.SwitchableNorm(3, affine=False).double(), 2)
    assert_close(as_layer(x), nn.functional.layer_norm(x, x.shape[1:]), "layer")
    assert_close(as_instance(x), nn.functional.instance_norm(x), "instance")


def test_switchable_gradcheck_reaches_the_mixing_weights():
    layer = nl.SwitchableNorm(3).double()
    randomize_affine(layer, generator(23))
    with torch.no_grad():
        layer.mean_weight.copy_(torch.tensor([0.3, -0.2, 0.5]))
        layer.var_weight.copy_(torch.tensor([-0.4, 0.1, 0.2]))
    x = randn(4, 3, 2, 2, g=generator(24)).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, m, v: _with_logits(layer, m, v)(x),
                                    (x, layer.mean_weight.detach().clone().requires_grad_(),
                                     layer.var_weight.detach().clone().requires_grad_()))


def _with_logits(layer, mean_weight, var_weight):
    """layer with its mixing logits replaced by the given tensors (for gradcheck)."""
    return lambda x: torch.func.functional_call(layer, {"mean_weight": mean_weight, "var_weight": var_weight}, (x,))


# --------------------------------------------------------------- the book's lite batch norms

def test_batch_mean_only_and_var_only_by_formula():
    g = generator(25)
    x = randn(8, 3, 2, 2, g=g, scale=3, shift=2)
    mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), correction=0)
    centre = nl.BatchMeanOnly(3, affine=False, momentum=0.5).double()
    scale = nl.BatchVarOnly(3, affine=False, momentum=0.5).double()
    assert_close(centre(x), x - mean.view(1, 3, 1, 1), "x − mean")
    assert_close(scale(x), x / (var + 1e-5).sqrt().view(1, 3, 1, 1), "x/std")
    assert_close(centre.running_mean, 0.5 * mean, "running_mean")
    assert_close(scale.running_var, 0.5 + 0.5 * x.var((0, 2, 3), correction=1), "running_var (unbiased)")
    centre.eval(), scale.eval()
    assert_close(centre(x), x - 0.5 * mean.view(1, 3, 1, 1), "eval mean-only")
    assert_close(scale(x), x / (scale.running_var + 1e-5).sqrt().view(1, 3, 1, 1), "eval var-only")


@pytest.mark.parametrize("cls", [nl.BatchMeanOnly, nl.BatchVarOnly])
def test_lite_batch_norms_gradcheck(cls):
    layer = cls(3).double()
    randomize_affine(layer, generator(26))
    assert torch.autograd.gradcheck(layer, (randn(5, 3, 2, g=generator(27)).requires_grad_(),))


# --------------------------------------------------------------- frozen batch norm

def trained_net(norm: str) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nl.create_norm(norm, 4), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 6 * 6, 8), nl.create_norm(norm, 8, dim=1), nn.ReLU(),
                        nn.Linear(8, 3)).double()
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    g = generator(28)
    for _ in range(10):
        loss = net(randn(16, 1, 8, 8, g=g, shift=1)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


@pytest.mark.parametrize("norm", ["batch", "batch_torch", "batch_d2l", "batch_renorm", "ghost_batch"])
def test_freeze_norms_keeps_eval_outputs_and_leaves_nothing_to_train(norm):
    net = trained_net(norm).eval()
    x = randn(10, 1, 8, 8, g=generator(29), shift=1)
    with torch.no_grad():
        before = net(x)
    params = sum(p.numel() for p in net.parameters())
    assert nl.freeze_norms(net) is net
    frozen = [m for m in net if isinstance(m, nl.FrozenBatchNorm)]
    assert len(frozen) == 2 and all(not list(m.parameters()) for m in frozen)
    assert sum(p.numel() for p in net.parameters()) == params - 2 * (4 + 8), "γ, β became buffers"
    with torch.no_grad():
        assert_close(net(x), before, "eval outputs")
        state = {k: v.clone() for k, v in net.state_dict().items()}
        assert_close(net.train()(x), before, "a training-mode forward is the same transform")
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key]), f"{key} changed in training mode"


def test_frozen_batch_norm_is_exactly_batch_norms_eval_and_has_a_gradient():
    bn = nl.BatchNorm2d(3).double()
    randomize_affine(bn, generator(30))
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([1.0, -1.0, 0.5]))
        bn.running_var.copy_(torch.tensor([2.0, 0.3, 1.0]))
    frozen = research.FrozenBatchNorm.from_batch_norm(bn.eval())
    x = randn(4, 3, 2, 2, g=generator(31)).requires_grad_()
    assert torch.equal(frozen(x), bn(x))
    assert torch.autograd.gradcheck(frozen, (x,))


def test_freeze_norms_needs_running_statistics():
    with pytest.raises(ValueError, match="keeps no running statistics"):
        nl.freeze_norms(nn.Sequential(nn.BatchNorm2d(3, track_running_stats=False)))


# --------------------------------------------------------------- eval, for every layer

@pytest.mark.parametrize("name", RESEARCH)
@pytest.mark.parametrize("dim", [1, 2])
def test_eval_uses_the_running_estimates_and_leaves_them_alone(name, dim):
    g = generator(32)
    shape = (24, 4) if dim == 1 else (12, 4, 3, 3)
    kw = {"virtual_batch_size": 6} if name == "ghost_batch" else {}
    layer = nl.create_norm(name, 4, dim=dim, **kw).double()
    for _ in range(3):
        layer(randn(*shape, g=g, scale=2, shift=1))
    layer.eval()
    state = copy.deepcopy(layer.state_dict())
    x = randn(*shape, g=g, scale=2, shift=1)
    y = layer(x)
    for key, value in layer.state_dict().items():
        assert torch.equal(value, state[key]), f"eval changed {key}"
    # the running estimates stand in for the batch: a sample's output does not depend on the others
    assert_close(layer(x[:3]), y[:3], "eval output of a sub-batch")
    running = [b for n, b in layer.named_buffers() if n.startswith("running")]
    assert running or name == "frozen_batch"
    with torch.no_grad():  # and the output does depend on them
        for b in running:
            b.mul_(1.5).add_(0.25)
    assert not torch.allclose(layer(x), y), "eval output ignores the running estimates"


# --------------------------------------------------------------- bad input (issue 7, item 5)

def test_virtual_batch_size_that_does_not_divide_the_batch():
    layer = nl.GhostBatchNorm(4, virtual_batch_size=3)
    message = ("GhostBatchNorm: virtual_batch_size=3 does not divide the batch of 8 samples; use a batch size "
               "that is a multiple of 3, or a virtual_batch_size that divides 8 (e.g. 2)")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        layer(torch.randn(8, 4))
    assert layer(torch.randn(9, 4)).shape == (9, 4) and layer(torch.randn(2, 4)).shape == (2, 4)
    layer.eval()
    assert layer(torch.randn(8, 4)).shape == (8, 4), "eval uses the running statistics: any batch"


@pytest.mark.parametrize("cls", [nl.DecorrelatedBatchNorm, nl.IterNorm])
def test_group_size_that_does_not_divide_the_channels(cls):
    message = (f"{cls.__name__}: group_size=4 does not divide num_features=6; choose a divisor of 6 "
               "(e.g. 2), or group_size=None for gcd(6, 16) = 2")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        cls(6, group_size=4)
    assert cls(6).group_size == 2 and cls(120).group_size == 8 and cls(64).group_size == 16


def test_batch_too_small_for_a_covariance():
    layer = nl.DecorrelatedBatchNorm(16)
    message = ("DecorrelatedBatchNorm: input (8, 16) has 8 values per channel, too few to estimate the 16×16 "
               "covariance of a group of 16 channels (its rank is at most 7); it needs more than 16 values "
               "per channel (N·∏spatial > group_size): use a larger batch or a smaller group_size (a divisor "
               "of 16 below 8)")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        layer(torch.randn(8, 16))
    assert layer(torch.randn(17, 16)).shape == (17, 16)
    assert layer(torch.randn(2, 16, 3, 3)).shape == (2, 16, 3, 3), "18 values per channel are enough"
    assert layer.eval()(torch.randn(1, 16)).shape == (1, 16), "eval needs no covariance"
    assert nl.IterNorm(16)(torch.randn(8, 16)).shape == (8, 16), "IterNorm needs no full rank"


@pytest.mark.parametrize("name", [n for n in RESEARCH if n != "frozen_batch"])
def test_one_value_per_channel_in_training(name):
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nl.create_norm(name, 4, dim=1)(torch.randn(1, 4))


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(0, 4), (0, 4, 3, 3), (2, 4, 0, 3)])
@pytest.mark.parametrize("name", RESEARCH)
def test_empty_input_as_torch_batch_norm(name, shape, train):
    """An empty batch or a zero-size dim: what torch's BatchNorm does with one. The output is
    empty, the input gradient too, γ and β get zero gradients, the running statistics stay (only
    num_batches_tracked counts the batch, as torch's does), and nothing warns."""
    dim = 1 if len(shape) == 2 else 2
    layer = nl.create_norm(name, 4, dim=dim).train(train)
    reference = TORCH_BN[len(shape)](4).train(train)
    before = {n: b.clone() for n, b in layer.named_buffers()}
    x = torch.randn(shape, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = layer(x)
        y.backward(torch.randn(shape))
    assert y.shape == shape and y.dtype == x.dtype
    assert torch.equal(x.grad, torch.zeros(shape))
    for n, p in layer.named_parameters():
        if n in ("weight", "bias"):
            assert torch.equal(p.grad, torch.zeros_like(p)), n
    reference(torch.randn(shape))
    counted = int(reference.num_batches_tracked)
    for n, b in layer.named_buffers():
        expected = before[n] + counted if n == "num_batches_tracked" else before[n]
        assert torch.equal(b, expected), n
