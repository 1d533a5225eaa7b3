"""Research normalizations: the seeds' open questions as layers anyone can plug in (issue 7).

Every layer takes the channel count first and normalizes input x of shape (N, C, *) channel by
channel, so `get_norm_layer(name, dim)` works after Linear layers ((N, C)) and on maps
((N, C, H, W)). M = N·∏spatial is the number of values per channel. The math, the eval
behaviour, the gradient and the constraints of each layer are in docs/research_norms.md.

    name             class                  idea
    batch_renorm     BatchRenorm            Ioffe 2017: BN corrected towards the running statistics
    ghost_batch      GhostBatchNorm         Hoffer et al. 2017: BN over virtual batches
    whiten_zca       DecorrelatedBatchNorm  Huang et al. 2018: ZCA whitening of channel groups
    iternorm         IterNorm               Huang et al. 2019: whitening by Newton–Schulz steps
    rank_gauss       RankGaussNorm          empirical CDF, then the standard normal quantile
    frozen_batch     FrozenBatchNorm        BN's eval transform as buffers; see freeze_norms
    switchable       SwitchableNorm         Luo et al. 2019: a learned mix of BN, LN, IN statistics
    batch_mean_only  BatchMeanOnly          the book's "lite" BN: subtract the batch mean only
    batch_var_only   BatchVarOnly           ... or divide by the batch std only

Every layer with running statistics updates them in training with
    running ← (1 − momentum)·running + momentum·batch value
and, in eval, uses them and leaves them alone.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm as _TorchBatchNormShell

from . import functional as F
from .batchnorm import D2LBatchNorm, _BatchNorm
from .replace import replace_modules

__all__ = ["BatchRenorm", "GhostBatchNorm", "DecorrelatedBatchNorm", "IterNorm", "RankGaussNorm",
           "FrozenBatchNorm", "SwitchableNorm", "BatchMeanOnly", "BatchVarOnly", "freeze_norms",
           "RESEARCH_NORMS"]


def _per_channel(v: Tensor, x: Tensor) -> Tensor:
    """A (C,) tensor shaped to apply per channel to x (N, C, *)."""
    return F._per_channel(v, x.dim())


def _channel_rows(x: Tensor) -> Tensor:
    """(N, C, *) -> (C, M), contiguous: row c holds the M = N·∏spatial values of channel c."""
    return x.transpose(0, 1).reshape(x.shape[1], -1).contiguous()


def _from_channel_rows(rows: Tensor, like: Tensor) -> Tensor:
    """The inverse of _channel_rows: (C, M) -> (N, C, *) shaped like `like`, contiguous."""
    shape = (like.shape[1], like.shape[0], *like.shape[2:])
    return rows.reshape(shape).transpose(0, 1).contiguous()


def _check_rank(input: Tensor) -> None:
    if input.dim() < 2:
        raise ValueError(f"expected at least 2D input (N, C, *) (got {input.dim()}D input)")


# ---------------------------------------------------------------- batch renormalization

class BatchRenorm(_BatchNorm):
    """Batch Renormalization (Ioffe, 2017, https://arxiv.org/abs/1702.03275).

    Training, with σ_B = √(var_biased(x) + eps) and σ = √(running_var + eps):

        r = clip(σ_B/σ, 1/r_max, r_max)        d = clip((mean(x) − running_mean)/σ, −d_max, d_max)
        y = ((x − mean(x))/σ_B · r + d)·γ + β     r and d are constants in backward

    then the running statistics move as batch norm's do (running_var takes the unbiased
    variance). r = 1, d = 0 is batch norm; unclipped r, d give (x − running_mean)/σ, the eval
    output. Eval: y = (x − running_mean)/σ·γ + β. The paper's warm-up: r_max grows linearly
    from 1 to `r_max` between steps r_max_steps = (start, end), d_max from 0 to `d_max` between
    d_max_steps; the step is num_batches_tracked (training batches seen).
    track_running_stats is always on: r and d need the running statistics.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, *, r_max: float = 3.0, d_max: float = 5.0,
                 r_max_steps=(5000, 40000), d_max_steps=(5000, 25000),
                 device=None, dtype=None, bias: bool = True):
        super().__init__(num_features, eps, momentum, affine, True, device, dtype, bias=bias)
        if r_max < 1 or d_max < 0:
            raise ValueError(f"BatchRenorm needs r_max >= 1 and d_max >= 0, got r_max={r_max}, "
                             f"d_max={d_max} (r_max=1, d_max=0 is batch norm)")
        self.r_max, self.d_max = float(r_max), float(d_max)
        self.r_max_steps, self.d_max_steps = _steps(r_max_steps), _steps(d_max_steps)

    def _check_input_dim(self, input: Tensor) -> None:
        _check_rank(input)

    def current_limits(self) -> tuple[float, float]:
        """(r_max, d_max) at the current step, num_batches_tracked."""
        step = int(self.num_batches_tracked)
        return (1 + (self.r_max - 1) * _ramp(step, *self.r_max_steps),
                self.d_max * _ramp(step, *self.d_max_steps))

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if not self.training:
            return F.batch_norm(input, self.running_mean, self.running_var, self.weight,
                                self.bias, False, 0.0, self.eps)
        r_max, d_max = self.current_limits()  # before this batch is counted
        momentum = self._exponential_average_factor()
        with torch.no_grad():  # r and d, from the running statistics before this step's update
            mean, var, _ = F._batch_stats(input)
            sigma = (self.running_var + self.eps).sqrt()
            r = ((var + self.eps).sqrt() / sigma).clamp(1 / r_max, r_max)
            d = ((mean - self.running_mean) / sigma).clamp(-d_max, d_max)
        # (x̂·r + d)·γ + β = x̂·(γ·r) + (γ·d + β): batch norm with that scale and shift
        weight = r if self.weight is None else self.weight * r
        shift = d if self.weight is None else self.weight * d
        shift = shift if self.bias is None else shift + self.bias
        return F.batch_norm(input, self.running_mean, self.running_var, weight, shift, True,
                            momentum, self.eps)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, r_max={self.r_max}, d_max={self.d_max}, "
                f"r_max_steps={self.r_max_steps}, d_max_steps={self.d_max_steps}")


def _steps(steps) -> tuple[int, int]:
    start, end = (int(s) for s in steps)
    if not 0 <= start <= end:
        raise ValueError(f"BatchRenorm warm-up steps take (start, end) with 0 <= start <= end, got {steps}")
    return start, end


def _ramp(step: int, start: int, end: int) -> float:
    """0 up to `start`, 1 from `end`, linear between."""
    if step >= end:
        return 1.0
    return max(0.0, (step - start) / (end - start))


# ---------------------------------------------------------------- ghost batch norm

class GhostBatchNorm(_BatchNorm):
    """Ghost Batch Normalization (Hoffer et al., 2017, https://arxiv.org/abs/1705.08741).

    Training splits the batch into virtual batches of `virtual_batch_size` samples and applies
    batch norm (normlab's BatchNorm, same arguments) to each one in turn: each virtual batch is
    normalized with its own statistics and moves the running statistics by one momentum step
    (num_batches_tracked counts virtual batches). A batch no larger than virtual_batch_size is one
    virtual batch: plain batch norm. A larger batch must be a multiple of virtual_batch_size.
    Eval uses the running statistics, as batch norm does.
    """

    def __init__(self, num_features: int, virtual_batch_size: int = 32, eps: float = 1e-5,
                 momentum: float | None = 0.1, affine: bool = True, track_running_stats: bool = True,
                 device=None, dtype=None, *, bias: bool = True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype,
                         bias=bias)
        if int(virtual_batch_size) < 1:
            raise ValueError(f"GhostBatchNorm: virtual_batch_size must be at least 1, got {virtual_batch_size}")
        self.virtual_batch_size = int(virtual_batch_size)

    def _check_input_dim(self, input: Tensor) -> None:
        _check_rank(input)

    def forward(self, input: Tensor) -> Tensor:
        n, v = input.shape[0], self.virtual_batch_size
        batch_stats = self.training or self.running_mean is None
        if not batch_stats or n <= v:
            return super().forward(input)
        if n % v:
            fits = max(k for k in range(1, v + 1) if n % k == 0)
            raise ValueError(f"GhostBatchNorm: virtual_batch_size={v} does not divide the batch of "
                             f"{n} samples; use a batch size that is a multiple of {v}, or a "
                             f"virtual_batch_size that divides {n} (e.g. {fits})")
        return torch.cat([super(GhostBatchNorm, self).forward(chunk) for chunk in input.split(v)])

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, virtual_batch_size={self.virtual_batch_size}"


# ---------------------------------------------------------------- shared shell

class _ChannelNorm(nn.Module):
    """What the layers below share: num_features, momentum, per-channel γ and β (affine)."""

    def __init__(self, num_features: int, momentum: float = 0.1, affine: bool = True,
                 device=None, dtype=None):
        super().__init__()
        if not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"{type(self).__name__}: momentum must be in [0, 1], got {momentum}")
        self.num_features, self.momentum, self.affine = int(num_features), float(momentum), affine
        like = dict(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.ones(num_features, **like)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features, **like)) if affine else None

    def _check_input(self, input: Tensor) -> int:
        """M, the values per channel; a training batch must not have exactly one (torch's rule
        for batch norm: its variance is undefined; an empty batch is allowed)."""
        if input.dim() < 2 or input.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__} expects input (N, {self.num_features}, *), "
                             f"got {tuple(input.shape)}")
        M = F._values_per_channel(input)
        if self.training and M == 1:
            raise ValueError(f"{type(self).__name__}: expected more than 1 value per channel when "
                             f"training, got input size {tuple(input.shape)}")
        return M

    def forward(self, input: Tensor) -> Tensor:
        M = self._check_input(input)
        if M == 0:  # an empty batch: nothing to normalize, the running statistics stay (as
            return self._affine(input.clone())  # batch norm's); γ and β get zero gradients
        return self._normalize(input, M)

    def _normalize(self, input: Tensor, M: int) -> Tensor:
        """The layer on checked, non-empty input (N, C, *) with M values per channel."""
        raise NotImplementedError

    def _affine(self, y: Tensor) -> Tensor:
        if self.weight is None:
            return y
        return torch.addcmul(_per_channel(self.bias, y), y, _per_channel(self.weight, y))

    def extra_repr(self) -> str:
        return f"{self.num_features}, momentum={self.momentum}, affine={self.affine}"


# ---------------------------------------------------------------- the book's "lite" batch norms

class BatchMeanOnly(_ChannelNorm):
    """The book's exercise: batch norm that only centres.

    Training: y = (x − mean(x))·γ + β,  running_mean ← (1 − momentum)·running_mean + momentum·mean(x).
    Eval:     y = (x − running_mean)·γ + β.
    """

    def __init__(self, num_features: int, momentum: float = 0.1, affine: bool = True,
                 device=None, dtype=None):
        super().__init__(num_features, momentum, affine, device, dtype)
        self.register_buffer("running_mean", torch.zeros(num_features, device=device, dtype=dtype))

    def _normalize(self, input: Tensor, M: int) -> Tensor:
        if self.training:
            mean = input.mean(F._reduce_dims(input))
            with torch.no_grad():
                F._update_running_stats(self.running_mean, None, mean, None, input, self.momentum)
        else:
            mean = self.running_mean
        return self._affine(input - _per_channel(mean, input))


class BatchVarOnly(_ChannelNorm):
    """The book's exercise: batch norm that only scales, by the batch std (about the batch mean,
    which is not subtracted).

    Training: y = x/√(var_biased(x) + eps)·γ + β,
              running_var ← (1 − momentum)·running_var + momentum·var_unbiased(x).
    Eval:     y = x/√(running_var + eps)·γ + β.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True, device=None, dtype=None):
        super().__init__(num_features, momentum, affine, device, dtype)
        self.eps = eps
        self.register_buffer("running_var", torch.ones(num_features, device=device, dtype=dtype))

    def _normalize(self, input: Tensor, M: int) -> Tensor:
        if self.training:
            var = input.var(F._reduce_dims(input), correction=0)
            with torch.no_grad():
                F._update_running_stats(None, self.running_var, None, var, input, self.momentum)
        else:
            var = self.running_var
        return self._affine(input * _per_channel((var + self.eps).rsqrt(), input))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, eps={self.eps}"


# ---------------------------------------------------------------- switchable normalization

class SwitchableNorm(_ChannelNorm):
    """Switchable Normalization (Luo et al., 2019, https://arxiv.org/abs/1806.10779).

    The statistics of batch norm (per channel), layer norm (per sample) and instance norm (per
    sample and channel), all biased, are mixed with learned softmax weights, one set for the means
    and one for the variances (logits `mean_weight`, `var_weight`, 0 at the start: equal weights):

        mean = Σ_k softmax(mean_weight)_k·mean_k    var = Σ_k softmax(var_weight)_k·var_k,  k ∈ (bn, ln, in)
        y = (x − mean)/√(var + eps)·γ + β

    Training keeps batch norm's running statistics (running_var takes the unbiased variance);
    eval uses them for the BN term, while the LN and IN terms come from the sample itself.
    instance=False drops the IN term (vectors (N, C) have one value per sample and channel, so
    their instance variance is 0): the factory does so for dim=1.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True, instance: bool = True, device=None, dtype=None):
        super().__init__(num_features, momentum, affine, device, dtype)
        self.eps, self.instance = eps, instance
        like = dict(device=device, dtype=dtype)
        kinds = 3 if instance else 2
        self.mean_weight = nn.Parameter(torch.zeros(kinds, **like))
        self.var_weight = nn.Parameter(torch.zeros(kinds, **like))
        self.register_buffer("running_mean", torch.zeros(num_features, **like))
        self.register_buffer("running_var", torch.ones(num_features, **like))

    def _normalize(self, input: Tensor, M: int) -> Tensor:
        if self.instance and input.dim() == 2:
            raise ValueError("SwitchableNorm: on (N, C) vectors each sample has one value per channel, "
                             "so the instance variance is 0; build it with instance=False "
                             "(get_norm_layer('switchable', dim=1) does)")
        xs = input.reshape(input.shape[0], self.num_features, -1)  # (N, C, L)
        stats = [torch.var_mean(xs, (1, 2), correction=0, keepdim=True)]  # layer: (N, 1, 1)
        if self.instance:
            stats.append(torch.var_mean(xs, 2, correction=0, keepdim=True))  # instance: (N, C, 1)
        if self.training:
            var_bn, mean_bn = torch.var_mean(xs, (0, 2), correction=0, keepdim=True)  # (1, C, 1)
            with torch.no_grad():
                F._update_running_stats(self.running_mean, self.running_var, mean_bn.flatten(),
                                        var_bn.flatten(), input, self.momentum)
        else:
            var_bn, mean_bn = self.running_var.view(1, -1, 1), self.running_mean.view(1, -1, 1)
        variances, means = zip((var_bn, mean_bn), *stats)
        mean = sum(w * m for w, m in zip(self.mean_weight.softmax(0), means))
        var = sum(w * v for w, v in zip(self.var_weight.softmax(0), variances))
        y = (xs - mean) * (var + self.eps).rsqrt()
        return self._affine(y.view_as(input))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, eps={self.eps}, instance={self.instance}"


# ---------------------------------------------------------------- whitening

class _GroupWhitening(_ChannelNorm):
    """Whitening of groups of `group_size` channels: per group, with x_g the (g, M) values,

        Σ = (x_g − μ)(x_g − μ)ᵀ/M + eps·I      y_g = W(Σ)·(x_g − μ)      W(Σ) ≈ Σ^{-1/2}

    so the g outputs of a group are decorrelated with unit variance (then γ, β per channel).
    Subclasses say how W is computed. Training moves running_mean (C,) and running_whitening
    (G, g, g) towards the batch's μ and W (the papers' choice: the running W is an average of
    whitening matrices, not the whitening matrix of an average covariance); eval uses them:
    y_g = running_W·(x_g − running_μ). group_size=None takes gcd(C, 16): 16-channel groups where
    C allows (the DBN paper's size), smaller ones for LeNet's 6 channels (2) or 120 features (8).
    """

    def __init__(self, num_features: int, group_size: int | None = None, eps: float = 1e-5,
                 momentum: float = 0.1, affine: bool = True, device=None, dtype=None):
        super().__init__(num_features, momentum, affine, device, dtype)
        name, C = type(self).__name__, self.num_features
        g = math.gcd(C, 16) if group_size is None else int(group_size)
        if g < 1 or C % g:
            raise ValueError(f"{name}: group_size={group_size} does not divide num_features={C}; "
                             f"choose a divisor of {C} (e.g. {math.gcd(C, max(g, 1))}), or "
                             f"group_size=None for gcd({C}, 16) = {math.gcd(C, 16)}")
        self.eps, self.group_size, self.num_groups = eps, g, C // g
        like = dict(device=device, dtype=dtype)
        self.register_buffer("running_mean", torch.zeros(C, **like))
        self.register_buffer("running_whitening", torch.eye(g, **like).repeat(C // g, 1, 1))

    def whitening_matrix(self, cov: Tensor) -> Tensor:
        """W(Σ) for covariances Σ of shape (G, g, g)."""
        raise NotImplementedError

    def _check_batch(self, input: Tensor, M: int) -> None:
        """Batch-size rules of the subclass beyond the two values per channel of every layer."""

    def _normalize(self, input: Tensor, M: int) -> Tensor:
        xg = _channel_rows(input).view(self.num_groups, self.group_size, M)  # (G, g, M)
        if self.training:
            self._check_batch(input, M)
            mean = xg.mean(-1, keepdim=True)  # (G, g, 1)
            xc = xg - mean
            eye = torch.eye(self.group_size, dtype=xc.dtype, device=xc.device)
            cov = torch.baddbmm(eye, xc, xc.mT, beta=self.eps, alpha=1 / M)  # (G, g, g)
            whitening = self.whitening_matrix(cov)
            with torch.no_grad():
                self.running_mean.lerp_(mean.flatten().to(self.running_mean.dtype), self.momentum)
                self.running_whitening.lerp_(whitening.to(self.running_whitening.dtype), self.momentum)
        else:
            xc = xg - self.running_mean.view(self.num_groups, self.group_size, 1)
            whitening = self.running_whitening
        y = torch.bmm(whitening, xc)  # (G, g, M)
        return self._affine(_from_channel_rows(y.view(self.num_features, M), input))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, group_size={self.group_size}, eps={self.eps}"


class _InverseSquareRoot(torch.autograd.Function):
    """W = Σ^{-1/2} of symmetric positive definite matrices Σ (G, g, g), by torch.linalg.eigh:
    Σ = U·diag(λ)·Uᵀ, W = U·diag(s⁻¹)·Uᵀ with s = √λ (eigenvalues below eps, rounding errors,
    are raised to eps).

    Backward is the Daleckii–Krein formula for a function of a symmetric matrix,

        ∂L/∂Σ = U·(K ∘ Uᵀ·sym(∂L/∂W)·U)·Uᵀ,   K_ij = (s_i⁻¹ − s_j⁻¹)/(λ_i − λ_j) = −1/(s_i·s_j·(s_i + s_j)),

    whose last form needs no difference of eigenvalues and is f'(λ_i) = −½·λ_i^{-3/2} when
    λ_i = λ_j. Autograd through eigh would divide by λ_i − λ_j instead, which is infinite for
    repeated eigenvalues: a group with two dead (all-zero) channels after a ReLU has two
    eigenvalues equal to eps, and its gradient would be NaN.
    """

    @staticmethod
    def forward(ctx, cov: Tensor, eps: float) -> Tensor:
        eigenvalues, u = torch.linalg.eigh(cov)  # ascending λ: (G, g), U: (G, g, g)
        s = eigenvalues.clamp(min=eps).sqrt()
        ctx.save_for_backward(u, s)
        return (u / s.unsqueeze(-2)) @ u.mT

    @staticmethod
    def backward(ctx, dw: Tensor):
        u, s = ctx.saved_tensors
        si, sj = s.unsqueeze(-1), s.unsqueeze(-2)
        k = -1 / (si * sj * (si + sj))
        inner = u.mT @ ((dw + dw.mT) / 2) @ u
        return u @ (k * inner) @ u.mT, None


class DecorrelatedBatchNorm(_GroupWhitening):
    """Decorrelated Batch Normalization (Huang et al., 2018, https://arxiv.org/abs/1804.08450):
    ZCA whitening, W = Σ^{-1/2} = U·diag(λ^{-1/2})·Uᵀ from the eigendecomposition Σ = U·diag(λ)·Uᵀ
    (torch.linalg.eigh; backward by the Daleckii–Krein formula, see _InverseSquareRoot).

    Training needs more than group_size values per channel (M > g): a covariance from M values
    has rank at most M − 1, and whitening a rank-deficient estimate scales the directions the
    batch does not span by eps^{-1/2}.
    """

    def whitening_matrix(self, cov: Tensor) -> Tensor:
        return _InverseSquareRoot.apply(cov, self.eps)

    def _check_batch(self, input: Tensor, M: int) -> None:
        g = self.group_size
        if M <= g:
            raise ValueError(
                f"DecorrelatedBatchNorm: input {tuple(input.shape)} has {M} values per channel, too few "
                f"to estimate the {g}×{g} covariance of a group of {g} channels (its rank is at most "
                f"{M - 1}); it needs more than {g} values per channel (N·∏spatial > group_size): use "
                f"a larger batch or a smaller group_size (a divisor of {self.num_features} below {M})")


class IterNorm(_GroupWhitening):
    """Iterative Normalization (Huang et al., 2019, https://arxiv.org/abs/1904.03441): whitening by
    T Newton–Schulz iterations on the trace-normalized covariance, no eigendecomposition:

        Σ_N = Σ/tr(Σ)     P_0 = I     P_k = (3·P_{k−1} − P_{k−1}³·Σ_N)/2     W = P_T/√tr(Σ)

    P_k → Σ_N^{-1/2} as k grows (the eigenvalues of Σ_N lie in (0, 1], where the iteration
    converges); a finite T whitens the small-eigenvalue directions only partly, the paper's
    intended stabilization. The paper's recursion amplifies rounding errors once P is close to
    Σ_N^{-1/2} and Σ_N's condition number exceeds about 2.4, and then diverges (in float64 from
    about T = 15 for a condition number of 20), so P_k is computed by the coupled form
    (Higham, Functions of Matrices, 2008, §6.7), equal in exact arithmetic and stable for any T:

        Y_0 = Σ_N, Z_0 = I,   M_k = (3I − Z_{k−1}·Y_{k−1})/2,   Y_k = Y_{k−1}·M_k,   P_k = Z_k = M_k·Z_{k−1}

    Three (g×g) products per step, as the paper's. Autograd differentiates the iterations.
    Any M ≥ 2 works.
    """

    def __init__(self, num_features: int, group_size: int | None = None, T: int = 5,
                 eps: float = 1e-5, momentum: float = 0.1, affine: bool = True, device=None, dtype=None):
        super().__init__(num_features, group_size, eps, momentum, affine, device, dtype)
        if int(T) < 1:
            raise ValueError(f"IterNorm: T (Newton–Schulz iterations) must be at least 1, got {T}")
        self.T = int(T)

    def whitening_matrix(self, cov: Tensor) -> Tensor:
        trace = cov.diagonal(dim1=-2, dim2=-1).sum(-1).view(-1, 1, 1)  # (G, 1, 1)
        eye = torch.eye(self.group_size, dtype=cov.dtype, device=cov.device)
        y, p = cov / trace, eye.expand_as(cov)  # Y_0 = Σ_N, P_0 = I
        for _ in range(self.T):
            m = torch.baddbmm(eye, p, y, beta=1.5, alpha=-0.5)  # (3I − P·Y)/2
            y, p = y @ m, m @ p
        return p * trace.rsqrt()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, T={self.T}"


# ---------------------------------------------------------------- rank-Gauss normalization

def _tie_blocks(sorted_rows: Tensor) -> tuple[Tensor, Tensor]:
    """For each position j of rows sorted ascending (C, M), the tie block [a_j, b_j) that holds it:
    a_j = #{values < x_(j)}, b_j = #{values ≤ x_(j)}. Without ties a_j = j, b_j = j + 1."""
    C, M = sorted_rows.shape
    position = torch.arange(M, device=sorted_rows.device)
    starts = torch.ones(C, M, dtype=torch.bool, device=sorted_rows.device)  # a block starts here
    torch.ne(sorted_rows[:, 1:], sorted_rows[:, :-1], out=starts[:, 1:])
    ends = torch.ones_like(starts)  # a block ends here (the next one starts after it)
    ends[:, :-1] = starts[:, 1:]
    a = torch.where(starts, position, 0).cummax(-1).values  # the last start at or before j
    b = torch.where(ends, position + 1, M).flip(-1).cummin(-1).values.flip(-1)  # the first end from j
    return a, b


def rank_gauss(rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The rank-Gauss transform of each row of (C, M): returns (z, slope, sorted rows).

    z_i = Φ⁻¹(u_i),  u_i = (#{x_j < x_i} + #{x_j ≤ x_i})/(2M): the mid-distribution function, so
    u_i = (rank_i − 0.5)/M without ties and a tie block gets its average rank (one z for all).
    slope_i is the local scale of the gradient used in backward: the slope of the monotone map from the sorted
    values x_(j) to the normal scores Z_j = Φ⁻¹((j + 0.5)/M) (j = 0..M−1) across a window of
    k = round(√M) order statistics on each side of x_i's tie block [a, b):

        slope_i = (Z_hi − Z_lo)/(x_(hi) − x_(lo)),   lo = max(a − k, 0),  hi = min(b − 1 + k, M − 1)

    (0 where x_(hi) = x_(lo): a constant row). It estimates f(x)/φ(z), the derivative of
    Φ⁻¹(F(x)) for a smooth CDF F with density f; for x ~ N(μ, σ²) it is ≈ 1/σ, batch norm's scale.
    Everything is computed in sorted order and scattered back; the sort is most of the cost.
    """
    M = rows.shape[-1]
    sorted_rows, order = rows.sort(-1)
    a, b = _tie_blocks(sorted_rows)
    k = max(1, round(math.sqrt(M)))
    lo, hi = (a - k).clamp(min=0), (b - 1 + k).clamp(max=M - 1)
    scores = torch.special.ndtri((torch.arange(M, device=rows.device, dtype=rows.dtype) + 0.5) / M)
    dx = sorted_rows.gather(-1, hi) - sorted_rows.gather(-1, lo)
    slope = torch.where(dx > 0, (scores[hi] - scores[lo]) / torch.where(dx > 0, dx, 1.0), 0.0)
    z = torch.special.ndtri((a + b).to(rows.dtype) / (2 * M))

    def unsort(t: Tensor) -> Tensor:  # sorted order -> the rows' own order
        return torch.empty_like(t).scatter_(-1, order, t)
    return unsort(z), unsort(slope), sorted_rows


class _RankGaussFunction(torch.autograd.Function):
    """Forward: rank_gauss(rows); backward: g_i = dL/dz_i · slope_i, projected like batch norm's
    gradient onto the directions the forward sees (per row: Σ_i dL/dx_i = 0 and
    Σ_i dL/dx_i·(x_i − x̄) = 0, since shifting or scaling a row leaves its ranks unchanged):

        dL/dx = g − mean(g) − (x − x̄)·Σ(g·(x − x̄))/Σ(x − x̄)²
    """

    @staticmethod
    def forward(ctx, rows: Tensor):
        z, slope, sorted_rows = rank_gauss(rows)
        ctx.save_for_backward(slope, rows)
        ctx.mark_non_differentiable(sorted_rows)
        return z, sorted_rows

    @staticmethod
    def backward(ctx, dz, _):
        slope, rows = ctx.saved_tensors
        g = dz * slope
        # the forward is blind to shifting and scaling a row: remove those two directions
        g = g - g.mean(-1, keepdim=True)
        xc = rows - rows.mean(-1, keepdim=True)
        norm2 = xc.square().sum(-1, keepdim=True)
        return g - xc * (g * xc).sum(-1, keepdim=True) / torch.where(norm2 > 0, norm2, 1.0)


def _interpolate(rows: Tensor, knots: Tensor, scores: Tensor, side: str) -> Tensor:
    """Piecewise-linear map through (knots[c, j], scores[j]) for each row c, extended beyond the
    end knots by the end segments; `side` says which segment a value equal to a knot takes."""
    K = knots.shape[-1]
    j = torch.searchsorted(knots, rows, side=side).clamp(1, K - 1)  # segment [j − 1, j]
    q0, q1 = knots.gather(-1, j - 1), knots.gather(-1, j)
    z0, z1 = scores[j - 1], scores[j]
    dq = q1 - q0
    t = torch.where(dq > 0, (rows - q0) / torch.where(dq > 0, dq, 1.0), 0.5)
    return z0 + t * (z1 - z0)


class RankGaussNorm(_ChannelNorm):
    """A probability-integral-transform normalization: within the batch, each channel's values go
    through their empirical CDF, then the standard normal quantile Φ⁻¹ (torch.special.ndtri):

        training: y = Φ⁻¹((rank − 0.5)/M)·γ + β    (ties: their average rank; see rank_gauss)

    so every channel's outputs have N(0, 1) marginals (for inputs without ties), whatever the
    input distribution. The rank transform is piecewise constant (its true gradient is 0 almost
    everywhere), so backward uses a straight-through gradient scaled by the local density: the
    slope of the sorted-values → normal-scores map over a window of √M order statistics (see
    rank_gauss), no cross terms between values.

    Eval uses running quantiles: running_quantiles (C, K) at the probabilities p_j = (j + 0.5)/K,
    moved towards the batch's quantiles (linear interpolation between order statistics at position
    p_j·M − 0.5) in each training step; they start at Φ⁻¹(p_j), so an untrained layer is about
    the identity. Eval maps x piecewise-linearly through the points (q_j, Φ⁻¹(p_j)), linearly
    beyond the end points, and gives a value on a flat stretch (tied quantiles) the mean of the
    two end scores; autograd differentiates that map.
    """

    def __init__(self, num_features: int, num_quantiles: int = 128, momentum: float = 0.1,
                 affine: bool = True, device=None, dtype=None):
        super().__init__(num_features, momentum, affine, device, dtype)
        if int(num_quantiles) < 2:
            raise ValueError(f"RankGaussNorm: num_quantiles must be at least 2, got {num_quantiles}")
        self.num_quantiles = K = int(num_quantiles)
        probabilities = (torch.arange(K, dtype=torch.float64) + 0.5) / K
        like = dict(device=device, dtype=dtype or torch.get_default_dtype())
        self.register_buffer("probabilities", probabilities.to(**like), persistent=False)
        self.register_buffer("running_quantiles",
                             torch.special.ndtri(probabilities).to(**like).repeat(num_features, 1))

    def _normalize(self, input: Tensor, M: int) -> Tensor:
        rows = _channel_rows(input)  # (C, M)
        if self.training:
            z, sorted_rows = _RankGaussFunction.apply(rows)
            with torch.no_grad():
                self.running_quantiles.lerp_(self._quantiles(sorted_rows, M), self.momentum)
        else:
            knots = self.running_quantiles.to(rows.dtype)
            scores = torch.special.ndtri(self.probabilities.to(rows.dtype))
            z = (_interpolate(rows, knots, scores, "left") + _interpolate(rows, knots, scores, "right")) / 2
        return self._affine(_from_channel_rows(z, input))

    def _quantiles(self, sorted_rows: Tensor, M: int) -> Tensor:
        """(C, K) quantiles at self.probabilities: the order statistic at position p·M − 0.5
        (0-based; the inverse of u = (rank − 0.5)/M), interpolated between neighbours."""
        position = (self.probabilities.to(sorted_rows.dtype) * M - 0.5).clamp(0, M - 1)
        lo = position.floor().long()
        hi = (lo + 1).clamp(max=M - 1)
        frac = position - lo
        q = torch.lerp(sorted_rows[:, lo], sorted_rows[:, hi], frac)
        return q.to(self.running_quantiles.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_quantiles={self.num_quantiles}"


# ---------------------------------------------------------------- frozen batch norm

class FrozenBatchNorm(nn.Module):
    """Batch norm with everything frozen: γ, β and the running statistics are buffers (no
    parameters), and training and eval both compute batch norm's eval transform

        y = (x − running_mean)/√(running_var + eps)·γ + β

    (normlab.nn.functional.batch_norm with training=False, so a frozen copy of a BatchNorm gives
    its eval outputs exactly). The input still gets its gradient, γ/invstd per channel. Built empty
    it is the identity up to 1/√(1 + eps); freeze_norms fills it from a trained batch norm.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        self.num_features, self.eps = int(num_features), eps
        like = dict(device=device, dtype=dtype)
        for name, fill in (("weight", 1), ("bias", 0), ("running_mean", 0), ("running_var", 1)):
            self.register_buffer(name, torch.full((num_features,), float(fill), **like))

    def forward(self, input: Tensor) -> Tensor:
        _check_rank(input)
        return F.batch_norm(input, self.running_mean, self.running_var, self.weight, self.bias,
                            False, 0.0, self.eps)

    @classmethod
    def from_batch_norm(cls, bn: nn.Module) -> FrozenBatchNorm:
        """A frozen copy of a batch norm's eval transform (torch's, normlab's or the book's)."""
        if isinstance(bn, D2LBatchNorm):
            weight, bias, mean, var = bn.gamma, bn.beta, bn.moving_mean, bn.moving_var
        else:
            if bn.running_mean is None or bn.running_var is None:
                raise ValueError(f"freeze_norms: {bn!r} keeps no running statistics (track_running_stats"
                                 "=False), so its eval output uses each batch's statistics: nothing to freeze")
            weight, bias, mean, var = bn.weight, bn.bias, bn.running_mean, bn.running_var
        frozen = cls(mean.numel(), eps=bn.eps, device=mean.device, dtype=mean.dtype)
        with torch.no_grad():
            for name, value in (("weight", weight), ("bias", bias), ("running_mean", mean),
                                ("running_var", var)):
                if value is not None:
                    getattr(frozen, name).copy_(value.reshape(-1))
        return frozen.train(bn.training)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def freeze_norms(model: nn.Module) -> nn.Module:
    """Swap every batch norm in `model` (torch's, normlab's, the book's, BatchRenorm,
    GhostBatchNorm) for a FrozenBatchNorm holding its γ, β and running statistics, so the model's
    eval outputs do not change and those layers no longer train or update. Returns the model (a
    new module if `model` itself is a batch norm). A batch norm without running statistics raises.
    """
    return replace_modules(model, lambda m: FrozenBatchNorm.from_batch_norm(m)
                           if isinstance(m, (_TorchBatchNormShell, D2LBatchNorm)) else None)


# every layer class above, for code that looks for norm layers in a model
RESEARCH_NORMS = (BatchRenorm, GhostBatchNorm, DecorrelatedBatchNorm, IterNorm, RankGaussNorm,
                  FrozenBatchNorm, SwitchableNorm, BatchMeanOnly, BatchVarOnly)
