"""The NUFFT meets eps for every point order, against the exact NUDFT.

Point orders the plan must sort (Barnett, Magland & af Klinteberg 2019, SIAM J. Sci. Comput.
41:C479: bin-sorting makes spreading local whatever the acquisition order): uniform random
points, TPI readouts (Boada et al. 1997, MRM 38:1022; na23recon's generator) in acquisition
order and shuffled, and centre-out radial spokes shuffled (a golden-angle-like order). Relative
l2 errors of forward (300 samples) and adjoint (60 voxels, all samples) must be within eps at
eps 1e-3 and 1e-6, complex64 and complex128; at 1e-6 the plan uses the PSWF kernel (7 taps).
"""
import numpy as np
import pytest

from na23recon.nufft import Nufft
from na23recon.traj.tpi import tpi_3d

from test_nufft_tolerance import exact_adjoint, exact_forward, rel

N = 24
SHAPE = (N, N, N)


def points(order: str) -> np.ndarray:
    rng = np.random.default_rng(7)
    if order == "random":
        return (rng.random((30000, 3)) - 0.5) * N
    if order in ("tpi", "tpi-shuffled"):
        k = tpi_3d(N, 220.0).coord(220.0)[::3].reshape(-1, 3)  # every third readout: ~60 k points
        return k[rng.permutation(len(k))] if order == "tpi-shuffled" else k
    i = np.arange(800) + 0.5  # radial, shuffled
    z = 1 - 2 * i / 800
    phi = np.pi * (1 + 5**0.5) * i
    d = np.stack([np.sqrt(1 - z * z) * np.cos(phi), np.sqrt(1 - z * z) * np.sin(phi), z], 1)
    k = (d[:, None, :] * (np.arange(40) / 40 * N / 2)[None, :, None]).reshape(-1, 3)
    return k[rng.permutation(len(k))]


@pytest.fixture(scope="module", params=["random", "tpi", "tpi-shuffled", "radial-shuffled"])
def case(request):
    k = points(request.param)
    rng = np.random.default_rng(3)
    x = rng.standard_normal(SHAPE) + 1j * rng.standard_normal(SHAPE)
    y = rng.standard_normal(len(k)) + 1j * rng.standard_normal(len(k))
    sub = rng.choice(len(k), 300, replace=False)
    vox = rng.integers(0, N, (60, 3))
    return k, x, y, sub, vox, exact_forward(x, k[sub]), exact_adjoint(y, k, SHAPE, vox)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128], ids=["c64", "c128"])
@pytest.mark.parametrize("eps", [1e-3, 1e-6])
def test_point_orders_meet_eps(case, eps, dtype):
    k, x, y, sub, vox, ref_f, ref_a = case
    op = Nufft(k, SHAPE, eps=eps, threads=2)
    if eps == 1e-6:
        assert op.kernel == "pswf" and op.width == 7 and op.upsampling == 2.0
    yf = op.forward(x.astype(dtype))
    xa = op.adjoint(y.astype(dtype))
    assert yf.dtype == dtype and xa.dtype == dtype
    ef, ea = rel(yf[sub], ref_f), rel(xa[tuple(vox.T)], ref_a)
    assert max(ef, ea) <= eps, (ef, ea)


@pytest.mark.parametrize("nthread", [1, 2, 3])
@pytest.mark.parametrize("ndim", [2, 3])
def test_point_sort_is_the_stable_sort_by_slab_and_bin(nthread, ndim):
    """`planning.setup_points` (keys and a counting sort, in parallel over chunks of points) against
    numpy: every point wrapped into [0, n) grid cells, keyed by (slab of its first tap along axis 0,
    16-cell bin along each other axis), sorted stably; slab_ptr the first point of every slab."""
    from na23recon.nufft import planning

    rng = np.random.default_rng(ndim + 10 * nthread)
    shape, width = (24, 20, 22)[:ndim], 5
    grid = tuple(2 * s for s in shape)
    k = (rng.random((20000, ndim)) - 0.5) * 1.3 * np.array(shape)  # beyond the FOV too: wrapped
    k[:50] = np.array(shape) / 2  # exactly at the period edge
    pts = planning.setup_points(k, shape, grid, width, nthread)
    n = np.array(grid, np.float64)
    u = np.mod(k * n / np.array(shape), n)
    u[u >= n] = 0.0
    nslab = grid[0] // width
    slab = ((np.floor(u[:, 0] - width / 2).astype(int) + 1) % grid[0]) * nslab // grid[0]
    nb = [(g + 15) // 16 for g in grid] + [1]
    key = slab.copy()
    for a in (1, 2):
        key = key * nb[a] + ((np.floor(u[:, a]).astype(int) % grid[a]) // 16 if a < ndim else 0)
    perm = np.argsort(key, kind="stable")
    np.testing.assert_array_equal(pts.perm, perm)
    np.testing.assert_allclose(pts.u, u[perm], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(pts.slab_ptr, np.searchsorted(key[perm], np.arange(nslab + 1) * nb[1] * nb[2]))
