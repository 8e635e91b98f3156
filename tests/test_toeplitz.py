"""Toeplitz normal operator A^H W A against the exact normal matrix from a dense NUDFT.

The 2N-grid embedding (Wajer & Pruessmann, Proc. ISMRM 2001; Fessler et al., IEEE Trans. Signal
Process. 2005) holds the point-spread function at lags d in (-N, N) per axis. The plane at
index N of the 2N grid (lag -N) never reaches the cropped output (t - s for t, s in [0, N) is
never -N mod 2N), so whatever it holds the output is the same; zeroing it makes the psf
Hermitian, and so the kernel's FFT real, for real weights. Points at and near k = +-N/2 put the
most weight on that plane.
"""
import numpy as np
import pytest
from test_nufft import nudft_matrix, rel

from na23recon.nufft import Nufft

CASES = [(12, 12), (8, 8, 8), (9, 7)]


def _case(shape, m=300, seed=1):
    """Random points, a few within 1e-3 of +-N/2 and some exactly on it; positive weights."""
    rng = np.random.default_rng(seed)
    nd = len(shape)
    half = np.array(shape) / 2
    k = (rng.random((m, nd)) - 0.5) * np.array(shape)
    k[:12] = np.where(rng.random((12, nd)) < 0.5, -1, 1) * (half - 1e-3 * rng.random((12, nd)))
    k[12:15] = half
    k[15:18] = -half
    w = rng.random(m) + 0.2
    x = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    return k, w, x


def _exact_normal(k, w, shape):
    a = nudft_matrix(k, shape)
    return a.conj().T @ (w[:, None] * a)


@pytest.mark.parametrize("shape", CASES, ids=["2d-12", "3d-8", "2d-odd"])
def test_toeplitz_normal_matches_dense_exact(shape):
    k, w, x = _case(shape)
    exact = (_exact_normal(k, w, shape) @ x.ravel()).reshape(shape)
    op = Nufft(k, shape, eps=1e-6, dtype=np.complex128)
    assert rel(op.normal(x, w), exact) < 1e-4
    # complex weights (a non-Hermitian A^H W A) take the complex kernel
    wc = w * np.exp(1j * np.linspace(0, 3, w.size))
    exact_c = (_exact_normal(k, wc, shape) @ x.ravel()).reshape(shape)
    assert rel(op.normal(x, wc), exact_c) < 1e-4
    # complex64 at the default tolerance: the kernel is built at 1e-4
    op32 = Nufft(k, shape, eps=1e-3)
    assert rel(op32.normal(x.astype(np.complex64), w), exact) < 1e-3


@pytest.mark.parametrize("shape", CASES, ids=["2d-12", "3d-8", "2d-odd"])
def test_sigpy_linops_match_dense_exact(shape):
    """The sigpy Linops of the plan (A, A.H, A.N, normal_linop(w)) against the dense NUDFT."""
    k, w, x = _case(shape)
    a = nudft_matrix(k, shape)
    op = Nufft(k, shape, eps=1e-6, dtype=np.complex128)
    A = op.linop()
    y = np.random.default_rng(2).standard_normal(len(k)) + 0j
    assert rel(A(x), a @ x.ravel()) < 1e-4
    assert rel(A.H(y).ravel(), a.conj().T @ y) < 1e-4
    assert rel(A.N(x).ravel(), a.conj().T @ (a @ x.ravel())) < 1e-4
    Nw = op.normal_linop(w)
    assert tuple(Nw.ishape) == tuple(Nw.oshape) == shape
    exact = _exact_normal(k, w, shape) @ x.ravel()
    assert rel(Nw(x).ravel(), exact) < 1e-4
    assert rel(Nw.H(x).ravel(), exact) < 1e-4  # self-adjoint for real weights


@pytest.mark.parametrize("shape", CASES, ids=["2d-12", "3d-8", "2d-odd"])
def test_kernel_is_real_for_real_weights(shape):
    """With the lag -N plane zeroed the psf is Hermitian, so the real kernel stored for real
    weights is the whole kernel."""
    from na23recon.nufft.toeplitz import psf_kernel

    k, w, _ = _case(shape)
    real = psf_kernel(Nufft, k, shape, w, 1e-8, 1, np.dtype(np.complex128))
    full = psf_kernel(Nufft, k, shape, w.astype(np.complex128), 1e-8, 1, np.dtype(np.complex128))
    assert real.dtype == np.float64 and full.dtype == np.complex128
    assert np.abs(full.imag).max() < 1e-9 * np.abs(full).max()
    np.testing.assert_allclose(real, full.real, rtol=0, atol=1e-9 * np.abs(full).max())
