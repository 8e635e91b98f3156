"""Many channels at bounded memory: streamed coils, buffered Toeplitz normal operator, factored
Walsh maps, automatic coil compression and the memory model, against independent truth (the
exact NUDFT, dense least squares, scipy's trilinear interpolation, the analytic phantom)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from _multicoil import make_case, nrmse
from scipy import ndimage

from na23recon.core import ReconOptions
from na23recon.core.memory import PlanMemory, recon_stage_bytes
from na23recon.errors import InputError
from na23recon.nufft import Nufft
from na23recon.recon import coils
from na23recon.recon.adjoint import adjoint_recon
from na23recon.recon.app import reconstruct_arrays
from na23recon.recon.maps import expand_maps, walsh_factors
from na23recon.recon.operators import ToeplitzNormal
from na23recon.recon.solvers import SenseProblem, cg_sense
from na23recon.traj.dcf import normalise_dcf


def rel(a, b):
    return float(np.linalg.norm(np.ravel(a) - np.ravel(b)) / np.linalg.norm(np.ravel(b)))


def nudft_matrix(coord, shape):
    """Exact A (M, prod(shape)) in sigpy's convention."""
    grids = np.meshgrid(*[np.arange(n) - n // 2 for n in shape], indexing="ij")
    r = np.stack([g.ravel() / n for g, n in zip(grids, shape)], -1)
    k = np.asarray(coord, np.float64).reshape(-1, len(shape))
    return np.exp(-2j * np.pi * k @ r.T) / np.sqrt(np.prod(shape))


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(1)
    shape = (10, 12, 8)
    coord = (rng.random((60, 7, 3)) - 0.5) * np.array(shape)
    w = rng.random(coord.shape[:-1]) + 0.5
    return shape, coord, w, nudft_matrix(coord, shape)


@pytest.mark.parametrize("two_d", [False, True])
def test_buffered_toeplitz_equals_dense_normal(small, two_d):
    shape, coord, w, a = small
    if two_d:
        shape, coord = shape[:2], coord[..., :2]
        a = nudft_matrix(coord, shape)
    op = Nufft(coord, shape, eps=1e-6)
    t = ToeplitzNormal(op, coord, w)
    rng = np.random.default_rng(2)
    for _ in range(2):  # the buffer is reused: the second call must not see the first's data
        x = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
        exact = a.conj().T @ (w.ravel() * (a @ x.ravel()))
        assert rel(t(x), exact) < 2e-4
    out = np.empty(shape, np.complex64)
    assert t(x, out=out) is out and rel(out, exact) < 2e-4


def test_streamed_adjoint_equals_nudft_for_any_batch(small):
    shape, coord, w, a = small
    rng = np.random.default_rng(3)
    y = (rng.standard_normal((2, 5) + coord.shape[:-1]) + 1j * rng.standard_normal((2, 5) + coord.shape[:-1]))
    y = y.astype(np.complex64)
    wn = normalise_dcf(w, coord).ravel()
    exact = np.einsum("pm,abm->abp", a.conj().T, y.reshape(2, 5, -1) * wn).reshape((2, 5) + shape)
    op = Nufft(coord, shape, eps=1e-6)
    for batch in (1, 3, 10):
        assert rel(adjoint_recon(y, coord, w, shape, op=op, coil_batch=batch), exact) < 1e-5


def test_factored_maps_solve_the_full_channel_problem_exactly(small):
    """SENSE over 12 channels whose maps are basis @ 3 virtual maps, solved on the 3 virtual
    coils, equals the dense least-squares solution over all 12 channels."""
    shape, coord, w, a = small
    rng = np.random.default_rng(4)
    nc, nv = 12, 3
    basis = np.linalg.qr(rng.standard_normal((nc, nv)) + 1j * rng.standard_normal((nc, nv)))[0]
    vm = rng.standard_normal((nv,) + shape) + 1j * rng.standard_normal((nv,) + shape)
    full = expand_maps(basis.astype(np.complex64), vm.astype(np.complex64))
    y = (rng.standard_normal((nc,) + coord.shape[:-1]) + 1j * rng.standard_normal((nc,) + coord.shape[:-1]))
    y = y.astype(np.complex64)
    wn = normalise_dcf(w, coord).ravel()
    e = np.concatenate([a * full[c].ravel()[None, :] for c in range(nc)])  # (nc M, nvox)
    ww = np.tile(wn, nc)
    lam = 0.5
    exact = np.linalg.solve(e.conj().T @ (ww[:, None] * e) + lam * np.eye(e.shape[1]),
                            e.conj().T @ (ww * y.ravel()))
    op = Nufft(coord, shape, eps=1e-6)
    fact = SenseProblem(op, coord, vm, w, basis=basis)
    dense = SenseProblem(op, coord, full, w)
    assert fact.ncoil == nc and fact.N.maps.shape[0] == nv
    assert rel(fact.rhs(y), dense.rhs(y)) < 1e-5
    x, lg = cg_sense(fact, y, lam=lam, max_iter=200, tol=1e-7)
    assert rel(x, exact) < 1e-3
    xd, lgd = cg_sense(dense, y, lam=lam, max_iter=200, tol=1e-7)
    assert rel(x, xd) < 1e-3
    assert lg.residuals[-1] == pytest.approx(lgd.residuals[-1], rel=1e-3)  # the same objective
    # the objective at x = 0, accumulated coil by coil, against the dense sum in double precision
    assert fact.data_energy(y) == pytest.approx(0.5 * np.sum(ww * np.abs(y.ravel().astype(np.complex128)) ** 2), rel=1e-9)


def test_walsh_in_a_subspace_equals_full_walsh_when_the_images_lie_in_it():
    rng = np.random.default_rng(5)
    nc, nv, n = 10, 3, 12
    base = rng.standard_normal((nv, n, n, n)) + 1j * rng.standard_normal((nv, n, n, n))
    base = ndimage.uniform_filter(base.real, 3) + 1j * ndimage.uniform_filter(base.imag, 3)
    mix = rng.standard_normal((nc, nv)) + 1j * rng.standard_normal((nc, nv))
    imgs = np.tensordot(mix, base, axes=(1, 0)).astype(np.complex64)
    full = coils.walsh_maps(imgs)
    basis, vm = walsh_factors(imgs, rank=nv)
    assert basis.shape == (nc, nv) and vm.shape == (nv, n, n, n)
    np.testing.assert_allclose(basis.conj().T @ basis, np.eye(nv), atol=1e-5)
    sub = expand_maps(basis, vm)
    # the same dominant eigenvector (power iterations; slower where lambda_2 ~ lambda_1)
    mismatch = 1 - np.abs(np.sum(np.conj(sub) * full, axis=0))
    assert np.median(mismatch) < 1e-5 and np.percentile(mismatch, 99) < 1e-2
    assert rel(sub, full) < 1e-2 and rel(coils.walsh_maps(imgs, rank=nv), sub) < 1e-5
    b2, m2 = walsh_factors(imgs, rank=None)
    assert b2 is None and rel(m2, full) < 1e-6


@pytest.mark.parametrize("scale", [1.0, 1e15, 1e-15])
def test_power_iterations_match_eigh_at_any_scale(scale):
    """Batched power iterations against LAPACK eigh, also for covariances whose squares overflow
    float32 (k-space in raw scanner units) or underflow it."""
    from na23recon.recon.maps import dominant_eigenvectors

    rng = np.random.default_rng(8)
    x = rng.standard_normal((500, 8, 3)) + 1j * rng.standard_normal((500, 8, 3))
    x[..., 0] *= 3
    r = (x @ x.conj().transpose(0, 2, 1)) * scale
    v = dominant_eigenvectors(r.astype(np.complex64))
    e = np.linalg.eigh(r)[1][..., -1]
    assert np.all(np.isfinite(v))
    assert np.max(1 - np.abs(np.sum(np.conj(v) * e, axis=-1))) < 1e-4


def test_separable_resampling_equals_trilinear_interpolation():
    rng = np.random.default_rng(6)
    low, shape = (7, 8, 6), (20, 17, 12)
    maps = (rng.standard_normal((3,) + low) + 1j * rng.standard_normal((3,) + low)).astype(np.complex64)
    grids = [((np.arange(n) - n // 2) / n) * m + m // 2 for n, m in zip(shape, low)]
    pts = np.meshgrid(*grids, indexing="ij")
    ref = np.stack([ndimage.map_coordinates(m.real, pts, order=1, mode="nearest")
                    + 1j * ndimage.map_coordinates(m.imag, pts, order=1, mode="nearest") for m in maps])
    ref /= np.sqrt(np.sum(np.abs(ref) ** 2, axis=0))
    assert rel(coils.resample_maps(maps, shape), ref) < 1e-5
    q = np.linalg.qr(rng.standard_normal((5, 3)) + 1j * rng.standard_normal((5, 3)))[0].astype(np.complex64)
    assert rel(coils.resample_maps(maps, shape, basis=q), np.tensordot(q, ref, axes=(1, 0))) < 1e-5


def test_compression_plan_and_option():
    nv, info = coils.compression_plan(32, "auto")
    assert nv == coils.AUTO_VIRTUAL and info["mode"] == "auto" and "32 channels" in info["why"]
    assert coils.compression_plan(8, "auto")[0] is None
    assert coils.compression_plan(32, "none")[0] is None
    assert coils.compression_plan(32, 12)[0] == 12
    with pytest.raises(InputError, match="has 4 coils"):
        coils.compression_plan(4, 6)
    assert ReconOptions().coil_compress == "auto"
    assert ReconOptions(coil_compress="6").coil_compress == 6 and ReconOptions(coil_compress=None).coil_compress == "none"
    with pytest.raises(InputError, match="auto, none or a number"):
        ReconOptions(coil_compress="most")


def test_memory_model_bounds_the_measured_adjoint_peak():
    rng = np.random.default_rng(7)
    n, nc = 24, 6
    coord = (rng.random((600, 24, 3)) - 0.5) * n
    w = np.ones(coord.shape[:-1])
    y = (rng.standard_normal((nc,) + coord.shape[:-1]) + 1j * rng.standard_normal((nc,) + coord.shape[:-1]))
    y = y.astype(np.complex64)
    op = Nufft(coord, (n,) * 3, eps=1e-3)
    pm = PlanMemory(y[0].size, 3, op.grid_shape, op.work_dtype.itemsize, op.width)
    tracemalloc.start()
    adjoint_recon(y, coord, w, (n,) * 3, op=op)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    model = recon_stage_bytes((n,) * 3, y[0].size, nc, "adjoint", pm)
    held = 2 * y.nbytes + pm.plan_bytes + y[0].size * 12  # the model's resident part (data, plan, weights)
    assert peak <= model["adjoint"] - held + y.nbytes  # what the stage allocates is within the model
    assert model["adjoint"] - held >= 0.5 * peak
    # a tighter tolerance's plan (double precision or a wider kernel) is asked for, not assumed
    tight = Nufft(coord, (n,) * 3, eps=1e-6)
    pt = PlanMemory(y[0].size, 3, tight.grid_shape, tight.work_dtype.itemsize, tight.width)
    assert pt.grid_bytes == int(np.prod(tight.grid_shape)) * tight.work_dtype.itemsize
    many = recon_stage_bytes((n,) * 3, y[0].size, 32, "cg", pm, ncoil_solved=8)
    few = recon_stage_bytes((n,) * 3, y[0].size, 8, "cg", pm, ncoil_solved=8)
    assert many["adjoint"] > few["adjoint"] and many["solve"] > few["solve"]
    assert set(many) == {"read", "adjoint", "maps", "kernel", "solve"}


@pytest.fixture(scope="module")
def case16():
    return make_case(n=20, ncoil=16, snr=20.0, undersampling=2.0)


def test_auto_compression_costs_little_on_the_analytic_phantom(case16):
    """16 channels (> 12): auto compresses to 8 virtual coils; CG-SENSE NRMSE against the truth
    within 0.01 of keeping every channel (whose maps are rank 8: the same cost)."""
    c = case16
    shape = (c.n,) * 3
    ref, head = c.truth * c.rss, c.labels > 0
    errs, infos = {}, {}
    for cc in ("auto", "none", "16"):
        img, info = reconstruct_arrays(c.kspace, c.coord, c.dcf, shape, ReconOptions(method="cg", coil_compress=cc),
                                       noise=c.noise)
        errs[cc], infos[cc] = nrmse(img, ref, head), info
    assert infos["auto"]["ncoil"] == 8 and infos["auto"]["coil_compression"]["mode"] == "auto"
    assert 0.9 < infos["auto"]["coil_compression"]["energy_kept"] <= 1.0
    assert infos["none"]["ncoil"] == 16 and infos["none"]["maps_rank"]["rank"] == coils.MAPS_RANK
    assert errs["auto"] <= errs["none"] + 0.01, errs
    assert errs["none"] < 0.35, errs
