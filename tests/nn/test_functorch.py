"""torch.func transforms over normlab's norms, against torch's layers: vmap (shared or per-problem
parameters and running statistics), grad, jacrev, jacfwd, hessian, jvp, functional_call, and
vmap over grad (per-sample gradients). Where torch refuses (vmap in training with shared running
statistics, a grad transform that would update a captured buffer), normlab raises the same error.
"""
from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import functional_call, grad, hessian, jacfwd, jacrev, jvp, vmap

import normlab.nn as nl
from parity import assert_close, assert_same_error, copy_params, examples, randomize_affine

f64 = dict(dtype=torch.float64)
BN = {2: (nl.BatchNorm1d, torch.nn.BatchNorm1d), 3: (nl.BatchNorm1d, torch.nn.BatchNorm1d),
      4: (nl.BatchNorm2d, torch.nn.BatchNorm2d), 5: (nl.BatchNorm3d, torch.nn.BatchNorm3d)}
SHAPES = [(4, 3), (4, 3, 5), (2, 3, 2, 3), (2, 3, 2, 2, 2)]  # one problem: (N, C, *)


def twins(rank: int, **kw):
    ours_cls, torch_cls = BN[rank]
    ref = torch_cls(3, **kw, **f64)
    randomize_affine(ref, torch.Generator().manual_seed(1))
    ours = ours_cls(3, **kw, **f64)
    copy_params(ref, ours)
    return ours, ref


def same(ours, theirs, what: str) -> None:
    for i, (a, b) in enumerate(zip(torch.utils._pytree.tree_leaves(ours),
                                   torch.utils._pytree.tree_leaves(theirs))):
        assert_close(a, b, f"{what} [{i}]")


def both(f, ours, ref, what: str):
    """f(module) for each twin; the results and the modules' buffers must agree."""
    results = [f(m) for m in (ours, ref)]
    same(*results, what)
    same(list(ours.buffers()), list(ref.buffers()), f"{what}: buffers")
    return results


# --------------------------------------------------------------------------- vmap

@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["train (no running stats)", "eval"])
def test_vmap_over_problems_matches_torch(shape, mode):
    ours, ref = twins(len(shape), track_running_stats=mode == "eval")
    if mode == "eval":
        for m in (ours, ref):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)
        ours.load_state_dict(ref.state_dict())
        ours.eval(), ref.eval()
    x = torch.randn(5, *shape, **f64)  # 5 problems
    both(lambda m: vmap(m)(x), ours, ref, mode)
    both(lambda m: vmap(m, in_dims=1)(x.movedim(0, 1).contiguous()), ours, ref, f"{mode}, in_dims=1")


@pytest.mark.parametrize("shape", SHAPES)
def test_vmap_training_with_shared_running_stats_is_refused_as_torch(shape):
    ours, ref = twins(len(shape))
    x = torch.randn(5, *shape, **f64)
    assert_same_error(lambda: vmap(ours)(x), lambda: vmap(ref)(x))
    same(list(ours.buffers()), list(ref.buffers()), "nothing was updated")


@pytest.mark.parametrize("shape", SHAPES)
def test_vmap_with_per_problem_parameters_and_running_stats(shape):
    """An ensemble: 5 copies of the layer, stacked parameters and buffers, one vmap; training
    updates each copy's running statistics in place."""
    ours, ref = twins(len(shape))
    x = torch.randn(5, *shape, **f64)
    g = torch.Generator().manual_seed(2)
    stacked = {name: torch.rand(5, *t.shape, generator=g, **f64) + 0.5 if t.is_floating_point()
               else t.expand(5).clone() for name, t in ref.state_dict().items()}

    def ensemble(m):
        state = copy.deepcopy(stacked)
        y = vmap(lambda s, xi: functional_call(m, s, (xi,)))(state, x)
        return y, state["running_mean"], state["running_var"]

    both(ensemble, ours, ref, "per-problem everything")
    params = {k: v for k, v in stacked.items() if k in ("weight", "bias")}
    both(lambda m: vmap(lambda p, xi: functional_call(m, p, (xi,)), in_dims=(0, None))(params, x[0]),
         *twins(len(shape), track_running_stats=False), "batched γ, β; one x")


def test_vmap_of_the_other_norms_matches_torch():
    x = torch.randn(5, 4, 6, 3, 3, **f64)
    pairs = [(nl.LayerNorm((3, 3)), torch.nn.LayerNorm((3, 3))), (nl.GroupNorm(2, 6), torch.nn.GroupNorm(2, 6)),
             (nl.InstanceNorm2d(6, affine=True), torch.nn.InstanceNorm2d(6, affine=True))]
    for ours, ref in pairs:
        ours, ref = ours.double(), ref.double()
        randomize_affine(ref, torch.Generator().manual_seed(3))
        copy_params(ref, ours)
        both(lambda m: vmap(m)(x), ours, ref, type(ours).__name__)
        both(lambda m: jacfwd(m)(x[0, :2]), ours, ref, f"{type(ours).__name__} jacfwd")


@settings(max_examples=examples(15), deadline=None)
@given(rank=st.integers(2, 5), problems=st.integers(1, 4), n=st.integers(2, 4), eval_mode=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_vmap_property(rank, problems, n, eval_mode, seed):
    shape = (n, 3, *([2] * (rank - 2)))
    ours, ref = twins(rank, track_running_stats=eval_mode)
    ours.train(not eval_mode), ref.train(not eval_mode)
    x = torch.randn(problems, *shape, generator=torch.Generator().manual_seed(seed), **f64)
    both(lambda m: vmap(m)(x), ours, ref, "vmap")
    both(lambda m: jacrev(lambda x: vmap(m)(x).pow(2).sum())(x), ours, ref, "grad of vmap")


# --------------------------------------------------------------------------- autodiff transforms

@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_grad_jacrev_jacfwd_hessian_jvp_match_torch(shape, mode):
    ours, ref = twins(len(shape), track_running_stats=mode == "eval")
    ours.train(mode == "train"), ref.train(mode == "train")
    x = torch.randn(shape, **f64)
    small = x[:2, :, :1] if x.dim() > 2 else x[:2]

    def loss(m):
        return lambda x: m(x).pow(3).sum()

    both(lambda m: grad(loss(m))(x), ours, ref, "grad wrt x")
    params = {k: v.detach() for k, v in ref.named_parameters()}
    both(lambda m: grad(lambda p: functional_call(m, p, (x,)).pow(3).sum())(params), ours, ref, "grad wrt γ, β")
    both(lambda m: jacrev(m)(small), ours, ref, "jacrev")
    both(lambda m: jacfwd(m)(small), ours, ref, "jacfwd")
    both(lambda m: hessian(loss(m))(small), ours, ref, "hessian")
    tangent = torch.randn_like(x)
    both(lambda m: jvp(m, (x,), (tangent,)), ours, ref, "jvp")
    both(lambda m: jvp(lambda p: functional_call(m, p, (x,)), (params,),
                       ({k: torch.ones_like(v) for k, v in params.items()},)),
         ours, ref, "jvp along γ, β")


def test_per_sample_gradients_match_torch():
    """vmap(grad): the gradient of each problem's loss with respect to γ and β."""
    ours, ref = twins(4, track_running_stats=False)
    x = torch.randn(6, 4, 3, 2, 2, **f64)
    params = {k: v.detach() for k, v in ref.named_parameters()}

    def per_sample(m):
        def loss(p, xi):
            return functional_call(m, p, (xi,)).pow(3).sum()
        return vmap(grad(loss), in_dims=(None, 0))(params, x)

    both(per_sample, ours, ref, "per-sample grads")


def test_functional_call_trains_the_given_buffers_as_torch():
    ours, ref = twins(4)
    x = torch.randn(4, 3, 2, 2, **f64)

    def step(m):
        state = {k: v.clone() for k, v in ref.state_dict().items()}
        y = functional_call(m, state, (x,))
        return y, state

    both(step, ours, ref, "functional_call")


def test_a_grad_transform_that_would_update_a_captured_buffer_is_refused_as_torch():
    ours, ref = twins(4)
    x = torch.randn(4, 3, 2, 2, **f64)
    assert_same_error(lambda: grad(lambda x: ours(x).sum())(x), lambda: grad(lambda x: ref(x).sum())(x))
