"""The automatic NUFFT plan meets its tolerance in every branch, against the exact NUDFT.

Every (upsampling, eps, dtype, working precision) the automatic choice produces: the cost-model
branch with many points (upsampling 2) and with few (1.25), and the large-grid branch (the
memory threshold lowered so the 2x grid no longer fits). Exact sums in complex128 on a subset of
points (forward) and voxels (adjoint). complex64 at upsampling 1.25 and eps <= 1e-4 (3D) is the
case float32 grids cannot reach (the 1 / Phi range amplifies their rounding): it must run in
double precision and still return complex64.
"""
import logging

import numpy as np
import pytest

from na23recon.errors import InputError
from na23recon.nufft import Nufft, planning

SHAPE = (24, 22, 20)
EPS = [1e-2, 1e-3, 1e-4, 1e-5, 1e-6]


def exact_forward(x, k):
    """y(k) = prod(N)^-1/2 sum_m x[m] exp(-2 pi i k.(m - N//2)/N), separable, complex128."""
    n = x.shape
    e = [np.exp(-2j * np.pi * np.multiply.outer(k[:, a], np.arange(n[a]) - n[a] // 2) / n[a]) for a in range(len(n))]
    t = np.tensordot(e[0], x.astype(np.complex128), (1, 0))
    if len(n) == 2:
        return np.einsum("pj,pj->p", t, e[1]) / np.sqrt(np.prod(n))
    return np.einsum("pjk,pj,pk->p", t, e[1], e[2]) / np.sqrt(np.prod(n))


def exact_adjoint(y, k, shape, vox):
    """x[v] = prod(N)^-1/2 sum_j y_j exp(+2 pi i k_j.(v - N//2)/N) at voxels vox (V, ndim)."""
    ph = sum(np.multiply.outer(vox[:, a] - shape[a] // 2, k[:, a]) / shape[a] for a in range(len(shape)))
    return np.exp(2j * np.pi * ph) @ y.astype(np.complex128) / np.sqrt(np.prod(shape))


def rel(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def case(shape, m, seed):
    rng = np.random.default_rng(seed)
    k = (rng.random((m, len(shape))) - 0.5) * np.array(shape)
    x = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    y = rng.standard_normal(m) + 1j * rng.standard_normal(m)
    sub = rng.choice(m, min(m, 300), replace=False)
    vox = np.stack([rng.integers(0, n, 60) for n in shape], 1)
    return k, x, y, sub, vox


def check(op, k, x, y, sub, vox, dtype, eps):
    xd, yd = x.astype(dtype), y.astype(dtype)
    yf, xa = op.forward(xd), op.adjoint(yd)
    assert yf.dtype == dtype and xa.dtype == dtype
    ef = rel(yf[sub], exact_forward(xd, k[sub]))
    ea = rel(xa[tuple(vox.T)], exact_adjoint(yd, k, op.shape, vox))
    assert max(ef, ea) <= 1.5 * eps, (op, op.work_dtype, ef, ea)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128], ids=["c64", "c128"])
@pytest.mark.parametrize("eps", EPS)
@pytest.mark.parametrize("branch", ["many-points", "few-points", "large-grid"])
def test_automatic_plan_meets_eps(branch, eps, dtype, monkeypatch):
    m = 50 if branch == "few-points" else 40000
    k, x, y, sub, vox = case(SHAPE, m, seed=int(-np.log10(eps)))
    if branch == "large-grid":  # the 2x grid exceeds the threshold, the 1.25 grids (even double) fit
        two = int(np.prod([2 * n for n in SHAPE])) * np.dtype(dtype).itemsize
        monkeypatch.setattr(planning, "MAX_GRID_BYTES", two - 1)
    op = Nufft(k, SHAPE, eps=eps, dtype=dtype)
    assert op.upsampling == (2.0 if branch == "many-points" else 1.25)
    # double precision exactly where the float32 error model misses eps (3D: 1.25 below ~2e-4)
    f32_ok = planning.single_precision_error(op.width, op.beta, op.upsampling, 3, op.kernel) \
        <= planning.F32_ERROR_SHARE * eps
    assert op.work_dtype == (np.complex64 if f32_ok else np.complex128)
    if op.upsampling == 1.25:
        assert op.work_dtype == (np.complex64 if eps >= 1e-3 else np.complex128)
    check(op, k, x, y, sub, vox, dtype, eps)


@pytest.mark.parametrize("eps", [1e-4, 1e-6])
def test_forced_upsampling_125_complex64_2d_and_3d(eps):
    for shape in [(40, 36), SHAPE]:
        k, x, y, sub, vox = case(shape, 20000, seed=11)
        op = Nufft(k, shape, eps=eps, upsampling=1.25)
        check(op, k, x, y, sub, vox, np.complex64, eps)
        # batches of a double-precision plan come back complex64 and equal the single items
        xb = np.stack([x, 2j * x]).astype(np.complex64)
        yb = op.forward(xb)
        assert yb.dtype == np.complex64
        np.testing.assert_allclose(yb[1], 2j * op.forward(x.astype(np.complex64)), rtol=0, atol=1e-5)


def test_single_precision_error_model_bounds_the_float32_error():
    """The modelled float32 error is not below the measured complex64-minus-complex128 error."""
    k, x, y, sub, vox = case(SHAPE, 30000, seed=5)
    for eps in [1e-3, 1e-4, 1e-5]:
        op = Nufft(k, SHAPE, eps=eps, upsampling=1.25)
        op._promote = False  # force float32 grids to measure what they lose
        e32 = max(rel(op.forward(x.astype(np.complex64)), op.forward(x)),
                  rel(op.adjoint(y.astype(np.complex64)), op.adjoint(y)))
        model = planning.single_precision_error(op.width, op.beta, 1.25, 3)
        assert e32 <= model <= 4 * e32


def test_large_grid_branch_takes_smallest_grid_and_logs_why(monkeypatch, caplog):
    k, *_ = case(SHAPE, 40000, seed=1)
    monkeypatch.setattr(planning, "MAX_GRID_BYTES", 1000)  # no plan fits: the smallest that meets eps
    with caplog.at_level(logging.INFO, logger="na23recon.nufft.planning"):
        op = Nufft(k, SHAPE, eps=1e-6)
    assert op.upsampling == 1.25 and op.work_dtype == np.complex128 and op.width == 12
    msg = caplog.text
    assert "upsampling 1.25, width 12, double precision" in msg and "smallest grid" in msg
    assert "dropped 1.25 single (float32 error" in msg


def test_refuses_when_memory_forces_a_plan_that_misses_eps(monkeypatch):
    k, *_ = case(SHAPE, 1000, seed=2)
    monkeypatch.setattr(planning, "MAX_GRID_BYTES", 1000)
    # 1.25 single (30x28x26 complex64, 0.17 MB) fits 0.2 MB; a double grid (0.33 MB) does not
    monkeypatch.setattr(planning, "GRID_BYTES_LIMIT", 200_000)
    op = Nufft(k, SHAPE, eps=1e-3)
    assert op.upsampling == 1.25 and op.work_dtype == np.complex64
    with pytest.raises(InputError, match=r"no plan meets eps.*2 single: [\d.]+ MB.*1.25 double: [\d.]+ MB"):
        Nufft(k, SHAPE, eps=1e-6)
