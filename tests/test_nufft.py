"""NUFFT engine against the exact non-uniform DFT, sigpy and (when installed) FINUFFT."""
import numpy as np
import pytest

from na23recon.nufft import Nufft


def nudft_matrix(k: np.ndarray, shape) -> np.ndarray:
    """Exact forward NUDFT matrix (M, prod(shape)) in sigpy's convention (orthonormal, centred)."""
    grids = np.meshgrid(*[np.arange(n) - n // 2 for n in shape], indexing="ij")
    ph = sum(np.multiply.outer(k[:, a], grids[a].ravel()) / shape[a] for a in range(len(shape)))
    return np.exp(-2j * np.pi * ph) / np.sqrt(np.prod(shape))


def rel(a, b) -> float:
    return float(np.linalg.norm(np.ravel(a - b)) / np.linalg.norm(np.ravel(b)))


def random_case(shape, m, seed=0):
    rng = np.random.default_rng(seed)
    k = (rng.random((m, len(shape))) - 0.5) * np.array(shape)
    x = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    y = rng.standard_normal(m) + 1j * rng.standard_normal(m)
    return k, x, y


def radial_coord(n, nspoke, nsamp, seed=0):
    """Centre-out 3D radial spokes (random directions), (nspoke, nsamp, 3) in cycles/FOV."""
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((nspoke, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    r = np.arange(nsamp) / nsamp * (n / 2)
    return (d[:, None, :] * r[None, :, None]).astype(np.float32)


SHAPES = [(16, 20), (12, 10, 14)]


@pytest.mark.parametrize("shape", SHAPES, ids=["2d", "3d"])
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("eps", [1e-2, 1e-3, 1e-6])
@pytest.mark.parametrize("upsampling", [2.0, 1.25])
def test_forward_adjoint_match_exact_nudft(shape, dtype, eps, upsampling):
    if dtype == np.complex64 and eps < 1e-5:
        pytest.skip("complex64 cannot resolve 1e-6")
    k, x, y = random_case(shape, 600, seed=len(shape))
    a = nudft_matrix(k, shape)
    op = Nufft(k, shape, eps=eps, upsampling=upsampling)
    yf = op.forward(x.astype(dtype))
    xa = op.adjoint(y.astype(dtype))
    assert yf.dtype == dtype and xa.dtype == dtype
    assert yf.shape == (600,) and xa.shape == shape
    tol = 3 * max(eps, 1e-5 if dtype == np.complex64 else 0)
    assert rel(yf, a @ x.ravel()) < tol
    assert rel(xa.ravel(), a.conj().T @ y) < tol


@pytest.mark.parametrize("shape", SHAPES, ids=["2d", "3d"])
@pytest.mark.parametrize("dtype,tol", [(np.complex64, 1e-5), (np.complex128, 1e-12)])
def test_adjointness(shape, dtype, tol):
    k, x, y = random_case(shape, 700, seed=3)
    op = Nufft(k, shape, eps=1e-3)
    lhs = np.vdot(y.astype(dtype), op.forward(x.astype(dtype)))
    rhs = np.vdot(op.adjoint(y.astype(dtype)), x.astype(dtype))
    assert abs(lhs - rhs) / abs(lhs) < tol


def test_batch_dims_and_coord_shape():
    shape = (10, 12, 8)
    rng = np.random.default_rng(5)
    k = (rng.random((7, 9, 3)) - 0.5) * np.array(shape)
    op = Nufft(k, shape, eps=1e-4)
    x = (rng.standard_normal((2, 3) + shape) + 1j * rng.standard_normal((2, 3) + shape)).astype(np.complex64)
    y = op.forward(x)
    assert y.shape == (2, 3, 7, 9)
    np.testing.assert_allclose(y[1, 2], op.forward(x[1, 2]), rtol=0, atol=1e-6)
    xa = op.adjoint(y)
    assert xa.shape == (2, 3) + shape
    np.testing.assert_allclose(xa[0, 1], op.adjoint(y[0, 1]), rtol=0, atol=1e-6)


def test_matches_sigpy_within_its_error():
    sp = pytest.importorskip("sigpy")
    shape = (16, 16, 16)
    k, x, y = random_case(shape, 800, seed=7)
    a = nudft_matrix(k, shape)
    exact = a @ x.ravel()
    ys = sp.nufft(x, k)
    op = Nufft(k, shape, eps=1e-3)
    ours = op.forward(x)
    assert rel(ours, ys) <= 1.5 * rel(ys, exact) + 1e-3
    xs = sp.nufft_adjoint(y, k, oshape=shape)
    assert rel(op.adjoint(y), xs) <= 1.5 * rel(xs.ravel(), a.conj().T @ y) + 1e-3


def test_matches_finufft():
    finufft = pytest.importorskip("finufft")
    shape = (16, 18, 20)
    k, x, y = random_case(shape, 900, seed=9)
    pts = [2 * np.pi * k[:, a] / shape[a] for a in range(3)]
    scale = 1 / np.sqrt(np.prod(shape))
    yf = finufft.nufft3d2(*pts, x, isign=-1, eps=1e-9) * scale
    xf = finufft.nufft3d1(*pts, y, shape, isign=1, eps=1e-9) * scale
    op = Nufft(k, shape, eps=1e-6, dtype=np.complex128)
    assert rel(op.forward(x), yf) < 3e-6
    assert rel(op.adjoint(y), xf) < 3e-6


def test_spread_interp_are_transposes_and_centred():
    shape = (12, 16)
    k, _, y = random_case(shape, 300, seed=11)
    op = Nufft(k, shape, eps=1e-3, upsampling=2.0)
    g = op.spread(y)
    assert g.shape == op.grid_shape
    rng = np.random.default_rng(0)
    h = rng.standard_normal(op.grid_shape) + 1j * rng.standard_normal(op.grid_shape)
    lhs = np.vdot(h, g)
    rhs = np.vdot(op.interp(h), y)
    assert abs(lhs - rhs) / abs(lhs) < 1e-12
    # One point at k = 0: its kernel footprint sits at the grid centre and peaks there.
    op0 = Nufft(np.zeros((1, 2)), shape, eps=1e-3, upsampling=2.0)
    g0 = np.abs(op0.spread(np.ones(1, np.complex128)))
    centre = tuple(n // 2 for n in op0.grid_shape)
    assert np.unravel_index(np.argmax(g0), g0.shape) == centre
    assert g0[centre] == pytest.approx(1.0, abs=1e-4)
    assert np.count_nonzero(g0 > 1e-12) == op0.width**2


@pytest.mark.parametrize("shape", [(30, 26), (22, 18, 20)], ids=["2d", "3d"])
def test_threads_do_not_change_result(shape):
    # Points clustered around the wrap edge and the centre: stresses the slab colouring.
    rng = np.random.default_rng(13)
    k = (rng.random((4000, len(shape))) - 0.5) * 3
    k[::2] += np.array(shape) / 2 - 1
    y = (rng.standard_normal(4000) + 1j * rng.standard_normal(4000))
    one = Nufft(k, shape, eps=1e-6, threads=1, dtype=np.complex128)
    many = Nufft(k, shape, eps=1e-6, threads=2, dtype=np.complex128)
    np.testing.assert_allclose(many.adjoint(y), one.adjoint(y), rtol=0, atol=1e-12)
    a = nudft_matrix(k, shape)
    assert rel(many.adjoint(y).ravel(), a.conj().T @ y) < 3e-6


def _radial_forward(n, nspokes, nsample, seed, nsub):
    """Forward NUFFT of a random image on centre-out radial spokes; error against the exact NUDFT
    on `nsub` random samples. Returns (op, x, error)."""
    k = radial_coord(n, nspokes, nsample, seed=seed)
    shape = (n, n, n)
    rng = np.random.default_rng(seed + 1)
    x = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    op = Nufft(k, shape, eps=1e-3)
    y = op.forward(x).reshape(-1)
    sub = rng.choice(y.size, nsub, replace=False)
    exact = nudft_matrix(k.reshape(-1, 3)[sub].astype(np.float64), shape) @ x.ravel()
    return op, x, rel(y[sub], exact)


def test_radial_3d_accuracy_on_subset():
    assert _radial_forward(24, 300, 40, seed=1, nsub=400)[2] < 3e-3


def test_attributes_and_errors():
    k = np.zeros((5, 3))
    op = Nufft(k, (8, 8, 8), eps=1e-3, upsampling=2.0)
    assert op.eps == 1e-3 and op.width == 4 and op.upsampling == 2.0
    assert op.grid_shape == (16, 16, 16) and op.dtype == np.complex64
    with pytest.raises(ValueError, match="coord"):
        Nufft(np.zeros((5, 2)), (8, 8, 8))
    with pytest.raises(ValueError, match="non-finite"):
        Nufft(np.full((5, 3), np.nan), (8, 8, 8))
    with pytest.raises(ValueError, match="forward"):
        op.forward(np.zeros((8, 8, 9), np.complex64))
    with pytest.raises(ValueError, match="adjoint"):
        op.adjoint(np.zeros(6, np.complex64))


def test_automatic_upsampling_prefers_small_grid_for_few_points():
    assert Nufft(np.zeros((10, 3)), (64, 64, 64), eps=1e-3).upsampling == 1.25
    k = radial_coord(32, 2000, 16)
    assert Nufft(k, (32, 32, 32), eps=1e-3).upsampling == 2.0


@pytest.mark.parametrize("shape", [(20, 18), (14, 12, 16)], ids=["2d", "3d"])
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_toeplitz_normal_matches_adjoint_of_forward(shape, dtype):
    k, x, _ = random_case(shape, 1500, seed=17)
    rng = np.random.default_rng(4)
    w = rng.random(1500) + 0.5
    op = Nufft(k, shape, eps=1e-5 if dtype == np.complex128 else 1e-4)
    xs = np.stack([x, 2 * x.conj()]).astype(dtype)
    for weights in (None, w):
        ref = op.adjoint((1 if weights is None else weights) * op.forward(xs))
        z = op.normal(xs, weights=weights)
        assert z.dtype == dtype and z.shape == xs.shape
        assert rel(z, ref) < 1e-3
    a = nudft_matrix(k, shape)
    exact = a.conj().T @ (w * (a @ x.ravel()))
    assert rel(op.normal(x.astype(dtype), w).ravel(), exact) < 1e-3
    with pytest.raises(ValueError, match="weights"):
        op.normal(x, weights=np.ones(3))


def test_sigpy_linop_and_solver():
    sp = pytest.importorskip("sigpy")
    shape = (12, 12, 12)
    k = radial_coord(12, 400, 8, seed=3)
    op = Nufft(k, shape, eps=1e-4)
    A = op.linop(batch_shape=(2,))
    assert tuple(A.ishape) == (2,) + shape and tuple(A.oshape) == (2, 400, 8)
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((2,) + shape) + 1j * rng.standard_normal((2,) + shape)).astype(np.complex64)
    y = A(x)
    np.testing.assert_allclose(y, op.forward(x), rtol=0, atol=1e-6)
    np.testing.assert_allclose(A.H(y), op.adjoint(y), rtol=0, atol=1e-6)
    assert rel(A.N(x), op.adjoint(op.forward(x))) < 1e-3
    # Least squares with sigpy's CG on the normal equations recovers a band-limited image.
    b = op.forward(x[0])
    A1 = op.linop()
    xhat = sp.app.LinearLeastSquares(A1, b, max_iter=60, show_pbar=False).run()
    assert rel(A1(xhat), b) < 0.05
    N = op.normal_linop(weights=np.ones(k.shape[:-1]))
    assert rel(N(x[0]), A1.N(x[0])) < 1e-5


@pytest.mark.parametrize("shape", SHAPES, ids=["2d", "3d"])
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_stored_weights_match_on_the_fly(shape, dtype):
    k, x, y = random_case(shape, 900, seed=21)
    on = Nufft(k, shape, eps=1e-5, precompute=True)
    off = Nufft(k, shape, eps=1e-5, precompute=False)
    xs, ys = x.astype(dtype), y.astype(dtype)
    scale = np.abs(off.forward(xs)).max()
    np.testing.assert_allclose(on.forward(xs), off.forward(xs), rtol=0, atol=1e-6 * scale)
    scale = np.abs(off.adjoint(ys)).max()
    np.testing.assert_allclose(on.adjoint(ys), off.adjoint(ys), rtol=0, atol=1e-6 * scale)


@pytest.mark.parametrize("shape", [(16, 15), (8, 9, 10)], ids=["2d", "3d"])
def test_points_on_the_period_edge_and_odd_sizes(shape):
    # k = +-N/2 exactly (the sigpy convention's edge), just inside, and beyond (wraps periodically).
    rng = np.random.default_rng(23)
    nd = len(shape)
    half = np.array(shape) / 2
    k = np.concatenate([
        np.tile(half, (3, 1)), np.tile(-half, (3, 1)), np.tile(half - 1e-12, (2, 1)),
        (rng.random((50, nd)) - 0.5) * np.array(shape) * 1.6,
    ])
    x = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    op = Nufft(k, shape, eps=1e-6, dtype=np.complex128)
    assert rel(op.forward(x), nudft_matrix(k, shape) @ x.ravel()) < 3e-6


@pytest.mark.slow
def test_full_size_radial_64():
    op, x, err = _radial_forward(64, 10000, 128, seed=7, nsub=200)
    assert err < 3e-3
    z = op.normal(x)
    assert rel(z, op.adjoint(op.forward(x))) < 3e-3


def test_toeplitz_kernel_follows_new_weights():
    shape = (12, 14)
    k, x, _ = random_case(shape, 500, seed=29)
    op = Nufft(k, shape, eps=1e-4)
    w1 = np.linspace(0.5, 1.5, 500)
    w2 = w1.copy()
    w2[::3] *= 2
    for w in (w1, w2, w1):
        ref = op.adjoint(w * op.forward(x))
        assert rel(op.normal(x, w), ref) < 1e-3


def test_generated_kernels_are_up_to_date():
    """_kernels.py is generated by _gen_kernels.py and committed: they must not drift apart."""
    from pathlib import Path

    from na23recon.nufft import _gen_kernels

    committed = (Path(_gen_kernels.__file__).parent / "_kernels.py").read_text()
    assert _gen_kernels.generate() == committed, "run: python -m na23recon.nufft._gen_kernels"
