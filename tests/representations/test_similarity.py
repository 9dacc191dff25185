"""Tests for seethrough.representations: CKA, streaming CKA, CKA between sites, CCA family, Procrustes.

Oracles: closed forms on representations with orthogonal columns (partial copies, non-isotropic
scaling); axioms and invariances (self-similarity 1, symmetry, orthogonal maps, isotropic scaling,
translation); independent slow references written here (Kornblith's n × n HSIC with an explicit
centering matrix; CCA from the covariance eigenproblem; PWCCA from Morcos et al.'s definition;
SciPy's orthogonal Procrustes solver); scikit-learn's iterative ``CCA`` as a peer; `capture` on the
whole batch for `cka_between`; chunking invariance with hypothesis-drawn split points.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import scipy.linalg
import torch
from hygiene import assert_unchanged, snapshot
from hypothesis import given, settings
from hypothesis import strategies as st
from models import TinyCNN, TinyMLP, TinyTransformer, images, tokens, vectors
from torch import Tensor, nn

import seethrough
from seethrough import Site
from seethrough.core import InputError, InputTypeError, NotFittedError, SiteNotFoundError
from seethrough.representations import (
    INDICES,
    SimilarityMatrix,
    StreamingCKA,
    cca_correlations,
    cka,
    cka_between,
    compare_sites,
    debiased_cka,
    kernel_cka,
    procrustes,
    pwcca,
    svcca,
)

HYPOTHESIS = settings(max_examples=25, deadline=None, derandomize=True)
# Same float64 quantity computed along different paths (Gram vs feature space, merged co-moments
# vs one pass): the sums differ in order only, so 1e-9 relative is ample and still catches any
# wrong formula (those are off by orders of magnitude more).
F64 = {"rtol": 1e-9, "atol": 1e-12}
CLOSE = {"rel": 1e-9, "abs": 1e-12}  # the same, for pytest.approx on floats
MEASURES: dict[str, Callable[[Any, Any], float]] = {
    "cka": cka, "svcca": svcca, "pwcca": pwcca, "procrustes": procrustes,
    "cca (mean)": lambda x, y: float(cca_correlations(x, y).mean()),
}


def _gaussian(n: int, d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d))


def _related(n: int, d1: int, d2: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A nonlinearly related pair: y mixes a tanh of x's first features with noise."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d1)) @ rng.standard_normal((d1, d1))
    y = np.tanh(x[:, : max(1, d1 // 2)] @ rng.standard_normal((max(1, d1 // 2), d2))) + rng.standard_normal((n, d2))
    return x, y


def _orthogonal(d: int, seed: int = 0) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def _orthogonal_columns(n: int, variances: list[float], seed: int = 0) -> np.ndarray:
    """Centered columns, mutually orthogonal, column i with squared norm ``variances[i]``, plus an offset."""
    raw = _gaussian(n, len(variances), seed)
    q, _ = np.linalg.qr(raw - raw.mean(0))  # orthonormal columns spanning centered vectors: centered too
    return q * np.sqrt(variances) + 3.0


def hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """The slow oracle: Kornblith et al.'s HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), K = XXᵀ, H = I − 11ᵀ/n."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n

    def hsic(k: np.ndarray, l_: np.ndarray) -> float:
        return float(np.trace(k @ h @ l_ @ h)) / (n - 1) ** 2

    k, l_ = x @ x.T, y @ y.T
    return hsic(k, l_) / math.sqrt(hsic(k, k) * hsic(l_, l_))


def classical_cca(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The textbook oracle: sqrt of the eigenvalues of Σxx⁻¹ Σxy Σyy⁻¹ Σyx, descending (full-rank inputs)."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    sxx, syy, sxy = xc.T @ xc, yc.T @ yc, xc.T @ yc
    m = np.linalg.solve(sxx, sxy) @ np.linalg.solve(syy, sxy.T)
    k = min(x.shape[1], y.shape[1])
    return np.sqrt(np.clip(np.sort(np.linalg.eigvals(m).real)[::-1][:k], 0.0, 1.0))


def pwcca_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Morcos et al.'s definition with x's canonical variates (x must have no more features than y)."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    sxx, syy, sxy = xc.T @ xc, yc.T @ yc, xc.T @ yc
    wx = scipy.linalg.fractional_matrix_power(sxx, -0.5).real
    wy = scipy.linalg.fractional_matrix_power(syy, -0.5).real
    u, rho, _ = np.linalg.svd(wx @ sxy @ wy, full_matrices=False)
    h = xc @ wx @ u  # canonical variates of x, unit norm and mutually orthogonal
    h = h / np.linalg.norm(h, axis=0)
    alpha = np.abs(h.T @ xc).sum(1)
    return float((alpha * rho).sum() / alpha.sum())


def procrustes_reference(x: np.ndarray, y: np.ndarray) -> float:
    """min over orthogonal R of ||X R − Y||_F² with SciPy's solver, after centering, unit Frobenius norm, zero-padding."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    xc, yc = xc / np.linalg.norm(xc), yc / np.linalg.norm(yc)
    d = max(xc.shape[1], yc.shape[1])
    xc = np.pad(xc, ((0, 0), (0, d - xc.shape[1])))
    yc = np.pad(yc, ((0, 0), (0, d - yc.shape[1])))
    r, _ = scipy.linalg.orthogonal_procrustes(xc, yc)
    return float(np.linalg.norm(xc @ r - yc) ** 2)


# -- cka: axioms and invariances ------------------------------------------------------------------


@pytest.mark.parametrize("n, d", [(50, 5), (2, 1), (8, 40)])
def test_cka_of_a_representation_with_itself_is_one(n: int, d: int) -> None:
    x = _gaussian(n, d)
    assert cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert cka(x, x.copy()) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("n, d1, d2", [(60, 7, 3), (6, 30, 2), (5, 20, 30)])
def test_cka_is_symmetric(n: int, d1: int, d2: int) -> None:
    x, y = _related(n, d1, d2)
    assert cka(x, y) == pytest.approx(cka(y, x), **CLOSE)


@pytest.mark.parametrize("side", ["x", "y"])
@pytest.mark.parametrize("n, d1, d2", [(80, 6, 4), (10, 25, 12)])
def test_cka_is_invariant_to_orthogonal_maps_isotropic_scaling_and_translation(side: str, n: int, d1: int,
                                                                               d2: int) -> None:
    x, y = _related(n, d1, d2)
    base = cka(x, y)
    if side == "x":
        moved = [(x @ _orthogonal(d1), y), (0.003 * x, y), (x + 1e4, y), (-7.0 * x @ _orthogonal(d1, 1) + 2, y)]
    else:
        moved = [(x, y @ _orthogonal(d2)), (x, 250.0 * y), (x, y - 40.0), (x, 0.5 * y @ _orthogonal(d2, 1) + 9)]
    for a, b in moved:
        # the 1e4 shift costs ~1e-12 of the data's relative precision before any centering
        assert cka(a, b) == pytest.approx(base, rel=1e-9)


def test_cka_is_not_invariant_to_non_isotropic_scaling_closed_form() -> None:
    # X has orthogonal centered columns of equal norm, so CKA(X, X D) = Σ dᵢ² / sqrt(d Σ dᵢ⁴) < 1.
    x = _orthogonal_columns(100, [1.0] * 4)
    scales = np.array([1.0, 2.0, 0.5, 3.0])
    expected = (scales**2).sum() / math.sqrt(4 * (scales**4).sum())
    got = cka(x, x * scales)
    assert got == pytest.approx(expected, **CLOSE)
    assert got < 0.9  # visibly changed (expected ≈ 0.76)
    assert cka(x, x * 2.0) == pytest.approx(1.0, abs=1e-12)  # isotropic scaling does not change it


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_cka_of_a_partial_copy_closed_form(k: int) -> None:
    # Orthogonal columns with variances λ: CKA(X, X[:, :k]) = sqrt(Σ_{i≤k} λᵢ² / Σ λᵢ²).
    variances = [4.0, 3.0, 2.0, 1.0, 0.5]
    x = _orthogonal_columns(60, variances)
    lam = np.array(variances)
    assert cka(x, x[:, :k]) == pytest.approx(math.sqrt((lam[:k] ** 2).sum() / (lam**2).sum()), **CLOSE)
    isotropic = _orthogonal_columns(60, [1.0] * 5, seed=1)
    assert cka(isotropic, isotropic[:, :k]) == pytest.approx(math.sqrt(k / 5), **CLOSE)


def test_cka_of_independent_representations_is_near_sqrt_d1_d2_over_n() -> None:
    # For independent isotropic Gaussians, E||XᵀY||² ≈ n d1 d2 and ||XᵀX||_F ≈ n sqrt(d1 (1 + d1/n)),
    # so CKA ≈ sqrt(d1 d2) / (n sqrt((1 + d1/n)(1 + d2/n))): tiny when n ≫ d. The numerator is a sum of
    # d1·d2 = 200 squared near-Gaussians, relative spread sqrt(2/200) = 0.1, so ±35% is a 3.5σ band.
    n, d1, d2 = 4000, 10, 20
    expected = math.sqrt(d1 * d2) / (n * math.sqrt((1 + d1 / n) * (1 + d2 / n)))
    got = cka(_gaussian(n, d1, seed=1), _gaussian(n, d2, seed=2))
    assert 0.65 * expected < got < 1.35 * expected


@HYPOTHESIS
@given(n=st.integers(2, 24), d1=st.integers(1, 40), d2=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_cka_matches_the_n_by_n_hsic_reference_over_shapes(n: int, d1: int, d2: int, seed: int) -> None:
    x, y = _related(n, d1, d2, seed)
    got = cka(x, y)
    assert isinstance(got, float)
    assert 0.0 <= got <= 1.0
    assert got == pytest.approx(hsic_cka(x, y), rel=1e-8, abs=1e-12)


@HYPOTHESIS
@given(d1=st.integers(1, 12), d2=st.integers(1, 12), extra=st.integers(2, 30), seed=st.integers(0, 2**16),
       scale=st.floats(1e-3, 1e3), shift=st.floats(-100, 100))
def test_every_measure_is_invariant_to_rotation_scaling_and_translation(d1: int, d2: int, extra: int, seed: int,
                                                                        scale: float, shift: float) -> None:
    n = d1 + d2 + extra  # enough examples that no canonical correlation is 1 by construction
    x, y = _related(n, d1, d2, seed)
    rotated = scale * x @ _orthogonal(d1, seed) + shift
    rng = np.random.default_rng(seed)
    # PWCCA weights canonical directions by |⟨h, z_j⟩| over the weighted side's own neurons z_j, so it
    # is invariant to permutations and sign flips of those neurons, not to general rotations of them.
    relabelled = scale * x[:, rng.permutation(d1)] * rng.choice([-1.0, 1.0], d1) + shift
    for name, measure in MEASURES.items():
        base = measure(x, y)
        assert 0.0 <= base <= (2.0 if name == "procrustes" else 1.0), name
        moved = relabelled if name == "pwcca" else rotated
        assert measure(moved, y) == pytest.approx(base, rel=1e-7, abs=1e-10), name
        assert measure(y, moved) == pytest.approx(measure(y, x), rel=1e-7, abs=1e-10), name


def test_pwcca_depends_on_the_neuron_basis_of_the_weighted_side() -> None:
    # Rotating the weighted side (x, the side with fewer directions) changes its neurons and so the weights;
    # rotating the other side changes neither the canonical variates nor the correlations.
    x, y = _related(300, 3, 6, seed=8)
    assert abs(pwcca(x @ _orthogonal(3, 1), y) - pwcca(x, y)) > 1e-4
    assert pwcca(x, y @ _orthogonal(6, 1)) == pytest.approx(pwcca(x, y), **CLOSE)


def test_cka_gives_the_same_float_for_numpy_and_torch_inputs() -> None:
    x, y = _related(40, 6, 3)
    expected = cka(x, y)
    assert cka(torch.from_numpy(x), torch.from_numpy(y)) == expected
    assert cka(torch.from_numpy(x), y) == expected
    assert cka(x.astype(np.float32), y.astype(np.float32)) == cka(torch.from_numpy(x).float(),
                                                                  torch.from_numpy(y).float())
    assert type(expected) is float


def test_cka_of_float32_and_float64_inputs_agree_to_1e_6() -> None:
    x, y = _related(200, 16, 8)
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    assert abs(cka(x32, y32) - cka(x, y)) < 1e-6
    assert abs(cka(torch.from_numpy(x32), torch.from_numpy(y)) - cka(x, y)) < 1e-6
    # half precision only rounds the inputs (to ~1e-3 relative); the arithmetic is float64 still
    assert abs(cka(torch.from_numpy(x).bfloat16(), torch.from_numpy(y).half()) - cka(x, y)) < 2e-2


def test_cka_detaches_tensors_that_require_grad() -> None:
    x = torch.randn(20, 4, requires_grad=True)
    assert cka(x, x * 2) == pytest.approx(1.0, abs=1e-12)
    assert x.grad is None


def test_cka_accepts_integer_arrays() -> None:
    x = np.arange(20).reshape(10, 2) % 7
    assert cka(x, x.astype(np.float64)) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cka_on_cuda_matches_cpu() -> None:
    x, y = _related(300, 20, 10)
    got = cka(torch.from_numpy(x).float().cuda(), torch.from_numpy(y).float().cuda())
    assert got == pytest.approx(cka(x.astype(np.float32), y.astype(np.float32)), rel=1e-9)


# -- errors (every measure) ---------------------------------------------------------------------------


def _constant(n: int = 10, d: int = 3) -> np.ndarray:
    return np.full((n, d), 0.1)


ERRORS: list[tuple[str, Callable[[], tuple[Any, Any]], type[Exception], str]] = [
    ("different n", lambda: (_gaussian(10, 3), _gaussian(11, 3)), InputError, "x has 10 examples .* y has 11"),
    ("one example", lambda: (_gaussian(1, 3), _gaussian(1, 2)), InputError, "at least 2 examples"),
    ("1-d x", lambda: (np.arange(10.0), _gaussian(10, 2)), InputError, r"shape \(10,\).*x\.reshape\(n, -1\)"),
    ("3-d y", lambda: (_gaussian(4, 3), torch.zeros(4, 2, 2)), InputError, r"y has shape \(4, 2, 2\).*reshape"),
    ("NaN", lambda: (np.where(np.eye(10, 3) > 0, np.nan, 1.0), _gaussian(10, 2)), InputError, "3 NaN/inf"),
    ("inf", lambda: (_gaussian(10, 3), torch.tensor(_gaussian(10, 2)).index_fill(0, torch.tensor([4]), math.inf)),
     InputError, "y contains 2 NaN/inf"),
    ("constant x", lambda: (_constant(), _gaussian(10, 2)), InputError, "x is constant.*zero variance"),
    ("constant y", lambda: (_gaussian(10, 3), torch.ones(10, 4)), InputError, "y is constant.*undefined"),
    ("no features", lambda: (np.zeros((10, 0)), _gaussian(10, 2)), InputError, "no features"),
    ("complex", lambda: (_gaussian(10, 3) * 1j, _gaussian(10, 2)), InputTypeError, "real numbers"),
]


@pytest.mark.parametrize("measure", list(MEASURES), ids=str)
@pytest.mark.parametrize("case, make, error, message", ERRORS, ids=[e[0] for e in ERRORS])
def test_invalid_inputs_raise_clear_errors(measure: str, case: str, make: Callable[[], tuple[Any, Any]],
                                           error: type[Exception], message: str) -> None:
    x, y = make()
    with pytest.raises(error, match=message):
        MEASURES[measure](x, y)


def test_errors_name_the_function_and_derive_from_seethrough_error() -> None:
    with pytest.raises(seethrough.SeethroughError, match="^procrustes: x is constant"):
        procrustes(_constant(), _gaussian(10, 2))
    with pytest.raises(ValueError, match="^cka: x has shape"):  # InputError is also a ValueError
        cka(np.zeros((2, 3, 4)), np.zeros((2, 3)))


# -- StreamingCKA --------------------------------------------------------------------------------------


def _stream(x: np.ndarray, y: np.ndarray, cuts: list[int]) -> StreamingCKA:
    acc = StreamingCKA()
    for xb, yb in zip(np.split(x, sorted(cuts)), np.split(y, sorted(cuts)), strict=True):
        acc.update(torch.from_numpy(xb), yb)  # torch and numpy batches mix
    return acc


@HYPOTHESIS
@given(cuts=st.lists(st.integers(0, 50), max_size=8), seed=st.integers(0, 2**16))
def test_streaming_cka_equals_cka_on_the_concatenation(cuts: list[int], seed: int) -> None:
    x, y = _related(50, 7, 4, seed)
    x = x + 1e3  # far from the origin: a naive Σx² − n·mean² would lose digits here
    acc = _stream(x, y, cuts)  # repeated cuts give empty batches, which must be harmless
    assert acc.count == 50
    assert acc.value == pytest.approx(cka(x, y), **CLOSE)
    assert acc.value == pytest.approx(hsic_cka(x, y), rel=1e-8)


def test_streaming_cka_with_one_row_batches() -> None:
    x, y = _related(12, 3, 5, seed=3)
    acc = _stream(x, y, list(range(1, 12)))  # every batch alone is constant; together they are not
    assert acc.value == pytest.approx(cka(x, y), **CLOSE)


def _state_bytes(acc: StreamingCKA) -> int:
    """Bytes of every tensor the accumulator holds, however deep (the memory-independence oracle)."""
    seen: set[int] = set()

    def walk(obj: Any) -> int:
        if id(obj) in seen:
            return 0
        seen.add(id(obj))
        if isinstance(obj, Tensor):
            return obj.numel() * obj.element_size()
        if isinstance(obj, dict):
            return sum(walk(v) for v in obj.values())
        if isinstance(obj, (list, tuple)):
            return sum(walk(v) for v in obj)
        if hasattr(obj, "__dict__"):
            return walk(vars(obj))
        return 0

    return walk(acc)


def test_streaming_cka_memory_does_not_grow_with_n() -> None:
    d1, d2 = 6, 4
    sizes = []
    for n in (20, 20_000):
        x, y = _related(n, d1, d2)
        acc = _stream(x, y, list(range(10, n, 10)))
        sizes.append(_state_bytes(acc))
        assert acc.value == pytest.approx(cka(x, y), rel=1e-8)
    assert sizes[0] == sizes[1]
    # means and shifts (2·(d1+d2)) and the co-moments (d1² + d2² + d1·d2), in float64
    assert sizes[0] == 8 * (2 * (d1 + d2) + d1 * d1 + d2 * d2 + d1 * d2)


def test_streaming_cka_errors() -> None:
    acc = StreamingCKA()
    assert acc.count == 0
    with pytest.raises(NotFittedError, match="seen no data; call update"):
        _ = acc.value
    acc.update(np.ones((1, 3)), np.zeros((1, 2)))
    with pytest.raises(InputError, match="at least 2 examples"):
        _ = acc.value
    with pytest.raises(InputError, match=r"widths \(d1, d2\) = \(4, 2\).*\(3, 2\)"):
        acc.update(np.ones((2, 4)), np.zeros((2, 2)))
    with pytest.raises(InputError, match="x has 2 examples .* y has 3"):
        acc.update(np.ones((2, 3)), np.zeros((3, 2)))
    with pytest.raises(InputError, match="NaN/inf"):
        acc.update(np.full((2, 3), np.nan), np.zeros((2, 2)))
    acc.update(np.ones((4, 3)), np.arange(8.0).reshape(4, 2))
    with pytest.raises(InputError, match="x is constant"):
        _ = acc.value
    assert acc.count == 5  # failed updates changed nothing


# -- cka_between --------------------------------------------------------------------------------------


def _captured_cka(model_a: nn.Module, model_b: nn.Module, inputs: Any, sites_a: list, sites_b: list,
                  batch_size: int) -> Tensor:
    """The oracle: `capture` each chunk, concatenate, flatten, and call `cka` on every pair.

    Chunks match the streamed ones because float32 forward passes of different batch sizes may
    round differently in the last bits (~1e-8 relative in CKA); the float64 maths is then
    compared at 1e-9.
    """
    chunks = list(seethrough.core.batches(inputs, batch_size))
    with torch.no_grad():
        va = [seethrough.capture(model_a, c, sites_a) for c in chunks]
        vb = [seethrough.capture(model_b, c, sites_b) for c in chunks]
    out = torch.empty(len(sites_a), len(sites_b), dtype=torch.float64)
    for i, a in enumerate(sites_a):
        for j, b in enumerate(sites_b):
            out[i, j] = cka(torch.cat([v[a] for v in va]).flatten(1), torch.cat([v[b] for v in vb]).flatten(1))
    return out


def test_cka_between_a_model_and_itself_has_ones_on_the_diagonal_and_is_symmetric() -> None:
    model, x = TinyMLP().eval(), vectors(40)
    sites = ["fc1", "act", "fc2"]
    sim = cka_between(model, model, x, sites, sites, batch_size=16)
    assert isinstance(sim, SimilarityMatrix)
    assert sim.values.shape == (3, 3) and sim.values.dtype == torch.float64
    torch.testing.assert_close(sim.values.diagonal(), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-12)
    assert torch.equal(sim.values, sim.values.T)  # each pair is computed once, from one accumulator
    torch.testing.assert_close(sim.values, _captured_cka(model, model, x, sites, sites, 16), **F64)
    assert sim.sites_a == sim.sites_b == tuple(Site(s) for s in sites)


@pytest.mark.parametrize("batch_size", [1, 7, 40, 256])
def test_cka_between_two_models_equals_cka_on_captured_values(batch_size: int) -> None:
    a, b, x = TinyMLP(seed=0).eval(), TinyMLP(seed=1).eval(), vectors(40)
    sites_a, sites_b = ["fc1", "fc2"], ["fc1", "act", Site("fc2", point="input")]
    sim = cka_between(a, b, x, sites_a, sites_b, batch_size=batch_size)
    assert sim.values.shape == (2, 3)
    torch.testing.assert_close(sim.values, _captured_cka(a, b, x, sites_a, sites_b, batch_size), **F64)


@pytest.mark.parametrize("batch_size", [3, 5, 100])
def test_cka_between_wide_sites_of_a_cnn_and_a_transformer(batch_size: int) -> None:
    # Wide flattened values (144 = 4·6·6 conv features, 5·8 = 40 token features) and few examples:
    # the values are kept and compared through Gram matrices instead of d × d co-moments.
    cnn, x = TinyCNN().eval(), images(12)
    sim = cka_between(cnn, cnn, x, ["conv", "act"], ["conv", "act", "head"], batch_size=batch_size)
    torch.testing.assert_close(sim.values, _captured_cka(cnn, cnn, x, ["conv", "act"], ["conv", "act", "head"],
                                                              batch_size), **F64)
    transformer, ids = TinyTransformer().eval(), tokens(batch=12)
    sites = ["embed", "blocks.0", "blocks.1"]
    sim = cka_between(transformer, TinyTransformer(seed=1).eval(), ids, sites, sites, batch_size=batch_size)
    torch.testing.assert_close(sim.values, _captured_cka(transformer, TinyTransformer(seed=1).eval(), ids, sites,
                                                         sites, batch_size), **F64)


def test_cka_between_leaves_the_models_as_found() -> None:
    a, b, x = TinyMLP(seed=0), TinyMLP(seed=1).train(), vectors(20)
    fired: list[str] = []
    handle = a.register_forward_hook(lambda *args: fired.append("user"))
    before_a, before_b = snapshot(a), snapshot(b)
    cka_between(a, b, x, ["fc1", "act"], ["fc2"], batch_size=8)
    assert_unchanged(before_a, snapshot(a), "cka_between (model a)")
    assert_unchanged(before_b, snapshot(b), "cka_between (model b)")
    assert fired == ["user"] * 3  # three chunks; the user's own hook still fires
    with pytest.raises(SiteNotFoundError):
        cka_between(a, b, x, ["fc1"], ["fc9"])
    assert_unchanged(before_a, snapshot(a), "cka_between after an invalid site")
    handle.remove()


class _SeqFirst(nn.Module):
    """Returns its input transposed: the batch is not dim 0."""

    def forward(self, x: Tensor) -> Tensor:
        return x.T


class _Constant(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.ones_like(x)


def test_cka_between_errors_are_clear_and_come_before_any_forward_pass() -> None:
    model, x = TinyMLP(), vectors(10)
    calls: list[int] = []
    handle = model.register_forward_hook(lambda *args: calls.append(1))
    with pytest.raises(SiteNotFoundError, match="fc3"):
        cka_between(model, model, x, ["fc1"], ["fc3"])
    with pytest.raises(InputError, match="batch_size must be an int ≥ 1"):
        cka_between(model, model, x, ["fc1"], ["fc2"], batch_size=0)
    with pytest.raises(InputError, match="at least 2 examples"):
        cka_between(model, model, x[:1], ["fc1"], ["fc2"])
    with pytest.raises(InputError, match="NaN/inf"):
        cka_between(model, model, x * math.nan, ["fc1"], ["fc2"])
    assert calls == []
    handle.remove()
    odd = nn.Sequential(nn.Linear(4, 3), _SeqFirst())
    with pytest.raises(InputError, match=r"value at Site\('1'\) has shape \(3, 4\).*batch as dim 0"):
        cka_between(odd, odd, vectors(10), ["0"], ["1"], batch_size=4)
    flat = nn.Sequential(nn.Linear(4, 3), _Constant())
    with pytest.raises(InputError, match="site '1' is constant"):
        cka_between(flat, flat, vectors(10), ["0"], ["1"], batch_size=4)


def test_similarity_matrix_frame_plot_and_html() -> None:
    from matplotlib.figure import Figure

    model = nn.Sequential()
    model.add_module("lin", nn.Linear(4, 5))
    model.add_module("<b>bold</b>", nn.Tanh())
    sim = cka_between(model, model, vectors(30), ["lin", "<b>bold</b>"], ["lin", Site("lin", units=[0, 1])])
    frame = sim.to_frame()
    assert list(frame.columns) == ["site_a", "site_b", "cka"] and len(frame) == 4
    assert frame.loc[(frame.site_a == "lin") & (frame.site_b == "lin"), "cka"].item() == pytest.approx(1.0)
    assert frame.site_b.tolist()[1] == "Site('lin', units=(0, 1))"
    assert frame.cka.tolist() == sim.values.flatten().tolist()
    fig = sim.plot()
    assert isinstance(fig, Figure) and len(fig.axes[0].images) == 1
    page = sim._repr_html_()
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert page.count("<tr>") == 3


# -- canonical correlations ------------------------------------------------------------------------------


def test_canonical_correlations_of_an_invertible_linear_map_are_all_one() -> None:
    x = _gaussian(100, 6)
    a = np.random.default_rng(1).standard_normal((6, 6))
    got = cca_correlations(x, x @ a + 5)
    assert got.dtype == torch.float64 and got.shape == (6,)
    torch.testing.assert_close(got, torch.ones(6, dtype=torch.float64), rtol=0, atol=1e-10)


def test_canonical_correlations_match_the_covariance_eigenproblem() -> None:
    x, y = _related(300, 5, 4, seed=2)
    got = cca_correlations(x, y)
    assert torch.all(got[:-1] >= got[1:])  # sorted, largest first
    torch.testing.assert_close(got, torch.from_numpy(classical_cca(x, y).copy()), rtol=1e-8, atol=1e-10)


def test_first_canonical_correlation_agrees_with_scikit_learn() -> None:
    from sklearn.cross_decomposition import CCA

    x, y = _related(500, 4, 3, seed=4)
    model = CCA(n_components=1, scale=False, max_iter=5000, tol=1e-12).fit(x, y)
    x_scores, y_scores = model.transform(x, y)
    peer = np.corrcoef(x_scores[:, 0], y_scores[:, 0])[0, 1]
    # sklearn's NIPALS iterations stop at tol on the weights; 1e-6 is far above that and far below
    # the gap to the second correlation.
    assert float(cca_correlations(x, y)[0]) == pytest.approx(peer, abs=1e-6)


def test_canonical_correlations_drop_directions_below_the_numerical_rank() -> None:
    x = _gaussian(80, 3)
    x = np.concatenate([x, x[:, :1] + x[:, 1:2]], axis=1)  # rank 3 in 4 columns
    got = cca_correlations(x, x[:, :2])
    torch.testing.assert_close(got, torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-10)
    assert cca_correlations(x, _gaussian(80, 5, seed=3)).shape == (3,)


def test_canonical_correlations_warn_when_there_are_too_few_examples() -> None:
    with pytest.warns(UserWarning, match="at least 2 canonical correlation"):
        got = cca_correlations(_gaussian(6, 4), _gaussian(6, 3, seed=1))
    torch.testing.assert_close(got[:2], torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-10)


def test_svcca_and_pwcca_of_a_representation_with_itself_are_one() -> None:
    x = _gaussian(300, 8)
    for measure in (svcca, pwcca):
        assert measure(x, x) == pytest.approx(1.0, abs=1e-10)
        assert measure(x, x @ np.random.default_rng(2).standard_normal((8, 8)) - 1) == pytest.approx(1.0, abs=1e-10)


def test_svcca_and_pwcca_of_independent_noise_are_small() -> None:
    # The largest canonical correlation of independent Gaussians is about sqrt(d1/n) + sqrt(d2/n) ≈ 0.09.
    x, y = _gaussian(3000, 10, seed=1), _gaussian(3000, 10, seed=2)
    assert svcca(x, y) < 0.1
    assert pwcca(x, y) < 0.1


def test_svcca_keeps_the_directions_that_carry_the_variance() -> None:
    # Three shared high-variance directions plus seven tiny independent ones on each side.
    rng = np.random.default_rng(5)
    signal = rng.standard_normal((400, 3))
    x = np.concatenate([signal @ rng.standard_normal((3, 3)), 1e-3 * rng.standard_normal((400, 7))], axis=1)
    y = np.concatenate([signal @ rng.standard_normal((3, 3)), 1e-3 * rng.standard_normal((400, 7))], axis=1)
    assert svcca(x, y, keep=0.99) == pytest.approx(1.0, abs=1e-5)
    everything = cca_correlations(x, y)
    assert float(everything.mean()) < 0.5  # the noise directions drag the plain mean down
    assert svcca(x, y, keep=1.0) == pytest.approx(float(everything.mean()), **CLOSE)


@pytest.mark.parametrize("keep", [0.0, -0.5, 1.5])
def test_svcca_rejects_a_bad_keep(keep: float) -> None:
    with pytest.raises(InputError, match=r"keep .* in \(0, 1\]"):
        svcca(_gaussian(20, 3), _gaussian(20, 3), keep=keep)


@pytest.mark.parametrize("d1, d2", [(3, 5), (4, 4), (6, 2)])
def test_pwcca_matches_morcos_definition(d1: int, d2: int) -> None:
    x, y = _related(400, d1, d2, seed=6)
    # the side with fewer directions is weighted (x on ties): swap the reference's arguments if y is
    expected = pwcca_reference(x, y) if d1 <= d2 else pwcca_reference(y, x)
    got = pwcca(x, y)
    assert got == pytest.approx(expected, rel=1e-8)
    rho = cca_correlations(x, y)
    assert float(rho.min()) <= got <= float(rho.max())
    if d1 != d2:
        assert pwcca(y, x) == pytest.approx(got, **CLOSE)


# -- Procrustes ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, d", [(50, 4), (6, 20)])
def test_procrustes_is_zero_up_to_rotation_scaling_and_translation(n: int, d: int) -> None:
    x = _gaussian(n, d)
    assert procrustes(x, x) < 1e-12
    assert procrustes(x, -3.0 * x @ _orthogonal(d) + 11.0) < 1e-12
    assert procrustes(x, x * np.linspace(0.5, 2.0, d)) > 1e-3  # non-isotropic scaling is not a rotation


def test_procrustes_closed_form_for_scaled_orthogonal_columns() -> None:
    # X = Q (orthonormal centered columns), Y = X D: distance = 2 − 2 Σ|dᵢ| / sqrt(d Σ dᵢ²).
    x = _orthogonal_columns(40, [1.0] * 4)
    scales = np.array([1.0, -2.0, 0.5, 3.0])
    expected = 2 - 2 * np.abs(scales).sum() / math.sqrt(4 * (scales**2).sum())
    assert procrustes(x, x * scales) == pytest.approx(expected, **CLOSE)


@pytest.mark.parametrize("n, d1, d2", [(60, 5, 5), (60, 3, 7), (8, 20, 12)])
def test_procrustes_matches_scipy_orthogonal_procrustes(n: int, d1: int, d2: int) -> None:
    x, y = _related(n, d1, d2, seed=7)
    got = procrustes(x, y)
    assert 0.0 <= got <= 2.0
    assert got == pytest.approx(procrustes_reference(x, y), rel=1e-9, abs=1e-12)
    assert procrustes(y, x) == pytest.approx(got, **CLOSE)


# -- debiased and kernel CKA (issue #13 item 3) -----------------------------------------------------


def unbiased_hsic(k: np.ndarray, l_: np.ndarray) -> float:
    """Song et al.'s unbiased HSIC, written from the paper (zero-diagonal Gram matrices, no centering)."""
    n = k.shape[0]
    k, l_ = k.copy(), l_.copy()
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l_, 0.0)
    one = np.ones(n)
    return float((np.trace(k @ l_) + (one @ k @ one) * (one @ l_ @ one) / ((n - 1) * (n - 2))
                  - 2.0 / (n - 2) * (one @ k @ l_ @ one)) / (n * (n - 3)))


def debiased_reference(x: np.ndarray, y: np.ndarray) -> float:
    """The O(n²) oracle: unbiased HSIC of the raw (uncentered) linear Gram matrices."""
    k, l_ = x @ x.T, y @ y.T
    return unbiased_hsic(k, l_) / math.sqrt(unbiased_hsic(k, k) * unbiased_hsic(l_, l_))


def rbf_reference(x: np.ndarray, y: np.ndarray, bandwidth: float, debiased: bool) -> float:
    """The O(n²) oracle: SciPy distances, numpy's median, an explicit centering matrix (or unbiased HSIC)."""
    import scipy.spatial.distance as distance

    def gram(z: np.ndarray) -> np.ndarray:
        d = distance.cdist(z, z, "sqeuclidean")
        return np.exp(-d / (2 * bandwidth**2 * np.median(d)))

    k, l_ = gram(np.asarray(x, float)), gram(np.asarray(y, float))
    if debiased:
        return unbiased_hsic(k, l_) / math.sqrt(unbiased_hsic(k, k) * unbiased_hsic(l_, l_))
    h = np.eye(len(k)) - 1.0 / len(k)
    kc, lc = h @ k @ h, h @ l_ @ h
    return float((kc * lc).sum() / math.sqrt((kc * kc).sum() * (lc * lc).sum()))


@pytest.mark.parametrize("n, d1, d2", [(40, 5, 3), (12, 30, 4), (8, 20, 25), (200, 10, 10)])
def test_debiased_cka_matches_the_unbiased_hsic_oracle(n: int, d1: int, d2: int) -> None:
    x, y = _related(n, d1, d2, seed=n)
    x = x + 5.0  # the oracle does not center: the U-statistic is translation invariant by itself
    assert debiased_cka(x, y) == pytest.approx(debiased_reference(x, y), **CLOSE)


def test_debiased_cka_invariances_and_self_similarity() -> None:
    x, y = _related(80, 6, 4, seed=3)
    base = debiased_cka(x, y)
    assert debiased_cka(x @ _orthogonal(6, 1) * 7.0 - 2.0, y) == pytest.approx(base, **CLOSE)
    assert debiased_cka(x, 0.01 * y @ _orthogonal(4, 2) + 9.0) == pytest.approx(base, **CLOSE)
    assert debiased_cka(x, x) == pytest.approx(1.0, **CLOSE)
    assert debiased_cka(x, y) == pytest.approx(debiased_cka(y, x), **CLOSE)


def test_debiased_cka_of_independent_data_shrinks_to_zero_while_cka_keeps_its_bias() -> None:
    # Independent Gaussians, d = 50: the biased CKA sits near sqrt(d1 d2) / n; the debiased one near 0.
    for n in (200, 2000):
        x, y = _gaussian(n, 50, seed=1), _gaussian(n, 50, seed=2)
        assert cka(x, y) == pytest.approx(50 / n, rel=0.3)
        assert abs(debiased_cka(x, y)) < 0.5 * 50 / n
    big = [abs(debiased_cka(_gaussian(4000, 20, seed=s), _gaussian(4000, 20, seed=s + 100))) for s in range(3)]
    assert max(big) < 0.002


def test_debiased_cka_errors() -> None:
    with pytest.raises(InputError, match="at least 4 examples"):
        debiased_cka(_gaussian(3, 2), _gaussian(3, 2))
    with pytest.raises(InputError, match="x is constant"):
        debiased_cka(_constant(), _gaussian(10, 2))


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("bandwidth", [0.5, 1.0])
def test_kernel_cka_matches_the_n_by_n_oracle(bandwidth: float, debiased: bool) -> None:
    x, y = _related(60, 5, 3, seed=4)
    assert kernel_cka(x, y, bandwidth=bandwidth, debiased=debiased) == pytest.approx(
        rbf_reference(x, y, bandwidth, debiased), **CLOSE)


def test_kernel_cka_invariances_and_its_linear_limit() -> None:
    x, y = _related(70, 6, 4, seed=5)
    base = kernel_cka(x, y)
    assert kernel_cka(3.0 * x @ _orthogonal(6, 1) + 4.0, y) == pytest.approx(base, **CLOSE)
    assert kernel_cka(x, 1e-3 * y @ _orthogonal(4, 3) - 1.0) == pytest.approx(base, **CLOSE)
    assert kernel_cka(x, x) == pytest.approx(1.0, **CLOSE)
    # A very wide kernel is 1 − D / (2σ²) to first order, and centered −D is 2 Xᶜ Xᶜᵀ: linear CKA.
    assert kernel_cka(x, y, bandwidth=1e3) == pytest.approx(cka(x, y), abs=1e-5)
    assert abs(kernel_cka(x, y, bandwidth=1e3) - cka(x, y)) > 1e-12  # and it is not the same code path


def test_kernel_cka_errors() -> None:
    x = _gaussian(10, 3)
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(InputError, match="bandwidth"):
            kernel_cka(x, x, bandwidth=bad)
    with pytest.raises(InputError, match="at most 5000 examples"):
        kernel_cka(np.zeros((5001, 1)), np.zeros((5001, 1)))
    with pytest.raises(InputError, match="median squared distance"):
        kernel_cka(np.r_[np.zeros((8, 2)), np.ones((2, 2))], x)


# -- cka of large float32 inputs: float32 products, float64 sums ----------------------------------


def formula64(x: np.ndarray, y: np.ndarray) -> float:
    """The float64 feature-space formula (the speed goal's reference)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    x, y = x - x.mean(0), y - y.mean(0)
    return float(np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


@pytest.mark.parametrize("offset, scale", [(0.0, 1.0), (1e3, 1.0), (-1e-12, 1e-12), (1e4, 1e12)])
def test_cka_of_large_float32_inputs_is_within_1e_6_of_the_float64_formula(offset: float, scale: float) -> None:
    # 20,000 × (64 + 32) float32 values: above 2²⁰, so cka multiplies in float32 over row chunks.
    x, y = _related(20_000, 64, 32, seed=7)
    x32, y32 = (x * scale + offset).astype(np.float32), (y * scale + offset).astype(np.float32)
    assert abs(cka(x32, y32) - formula64(x32, y32)) < 1e-6
    assert abs(cka(torch.from_numpy(x32), torch.from_numpy(y32)) - formula64(x32, y32)) < 1e-6


def test_cka_of_large_float32_inputs_with_constant_columns_and_bad_values() -> None:
    x, y = _related(20_000, 64, 32, seed=8)
    x32 = x.astype(np.float32)
    x32[:, 5] = 7.0
    assert abs(cka(x32, y.astype(np.float32)) - formula64(x32, y)) < 1e-6
    with pytest.raises(InputError, match="x is constant"):
        cka(np.full((20_000, 64), 3.0, np.float32), y.astype(np.float32))
    x32[3, 3] = np.nan
    with pytest.raises(InputError, match="NaN/inf"):
        cka(x32, y.astype(np.float32))


# -- compare_sites: any index, permutation baselines, bootstrap intervals -----------------------------


def test_compare_sites_equals_each_index_on_captured_values() -> None:
    a, b, x = TinyMLP(seed=0).eval(), TinyMLP(seed=1).eval(), vectors(60)
    sites = ["fc1", "act", "fc2"]
    with torch.no_grad():
        va, vb = seethrough.capture(a, x, sites), seethrough.capture(b, x, sites)
    for index, fn in INDICES.items():
        sim = compare_sites(a, b, x, sites, sites, index=index, batch_size=16)
        assert sim.index == index and sim.values.shape == (3, 3)
        expected = torch.tensor([[fn(va[s], vb[t]) for t in sites] for s in sites], dtype=torch.float64)
        torch.testing.assert_close(sim.values, expected, **F64)
    linear = compare_sites(a, b, x, sites, sites, index="cka", batch_size=16)
    torch.testing.assert_close(linear.values, cka_between(a, b, x, sites, sites, batch_size=16).values, **F64)


def test_compare_sites_permutation_baseline_and_bootstrap() -> None:
    model, x = TinyMLP().eval(), vectors(80)
    sim = compare_sites(model, model, x, ["fc1", "fc2"], ["fc1", "fc2"], n_permutations=19, n_bootstrap=30, seed=3)
    assert sim.p_values is not None and sim.null_95 is not None and sim.ci_low is not None and sim.ci_high is not None
    # A site against itself beats all 19 shuffles: p = 1/20; the shuffled CKA is far below 1.
    torch.testing.assert_close(sim.p_values.diagonal(), torch.full((2,), 0.05, dtype=torch.float64))
    assert bool((sim.null_95 < 0.5).all())
    assert bool((sim.ci_low <= sim.values + 1e-12).all() and (sim.values <= sim.ci_high + 1e-12).all())
    # The null by hand: the same shuffles (same generator order) give the same 95th percentile.
    gen = torch.Generator().manual_seed(3)
    perms = [torch.randperm(80, generator=gen) for _ in range(19)]
    with torch.no_grad():
        v = seethrough.capture(model, x, ["fc1", "fc2"])
    shuffled = torch.tensor([cka(v["fc1"][p], v["fc2"]) for p in perms], dtype=torch.float64)
    assert float(sim.null_95[0, 1]) == pytest.approx(float(shuffled.quantile(0.95)), **CLOSE)
    # Independent noise: the permutation test does not call it similar.
    noise = nn.Sequential(_Noise())
    sim = compare_sites(model, noise, x, ["fc1"], ["0"], n_permutations=19, seed=1)
    assert float(sim.p_values[0, 0]) > 0.05
    # The distance runs the other way: a site against itself has Procrustes 0 and p = 1/20.
    dist = compare_sites(model, model, x, ["fc1"], ["fc1"], index="procrustes", n_permutations=19)
    assert float(dist.values[0, 0]) < 1e-12 and float(dist.p_values[0, 0]) == pytest.approx(0.05)
    assert dist.best_match().tolist() == [0]


class _Noise(nn.Module):
    """Returns fixed Gaussian noise of the batch's size: independent of the input."""

    def forward(self, x: Tensor) -> Tensor:
        gen = torch.Generator().manual_seed(x.shape[0])
        return torch.randn(x.shape[0], 6, generator=gen)


def test_compare_sites_errors_come_before_any_forward_pass() -> None:
    model, x = TinyMLP(), vectors(10)
    calls: list[int] = []
    handle = model.register_forward_hook(lambda *args: calls.append(1))
    with pytest.raises(InputError, match="unknown index 'cosine'"):
        compare_sites(model, model, x, ["fc1"], ["fc2"], index="cosine")
    with pytest.raises(InputError, match="n_permutations"):
        compare_sites(model, model, x, ["fc1"], ["fc2"], n_permutations=-1)
    with pytest.raises(SiteNotFoundError):
        compare_sites(model, model, x, ["fc1"], ["fc9"])
    assert calls == []
    handle.remove()


def test_similarity_matrix_with_controls_frame_plot_and_html() -> None:
    from matplotlib.figure import Figure

    # SimilarityMatrix has its contract factory (cka_between) in tests/test_result_contract.py; the
    # fields compare_sites adds are checked here, with a hostile site name.
    model, x = nn.Sequential(), vectors(40)
    model.add_module("fc1", nn.Linear(4, 5))
    model.add_module("<b>bold</b>", nn.Tanh())
    sim = compare_sites(model, model, x, ["fc1", "<b>bold</b>"], ["fc1"], index="rbf_cka", n_permutations=9,
                        n_bootstrap=9)
    frame = sim.to_frame()
    assert list(frame.columns) == ["site_a", "site_b", "rbf_cka", "null_95", "p_value", "ci_low", "ci_high"]
    assert frame.site_a.tolist() == ["fc1", "<b>bold</b>"]
    assert frame.rbf_cka.tolist() == sim.values.flatten().tolist()
    assert frame.p_value.tolist() == sim.p_values.flatten().tolist()
    fig = sim.plot()
    assert isinstance(fig, Figure) and len(fig.axes[0].images) == 1
    page = sim._repr_html_()
    assert "RBF CKA" in page and "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
