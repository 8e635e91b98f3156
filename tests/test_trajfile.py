"""Trajectory files: .npz contract round trip, .npy, text/CSV and .mat imports, validation."""

import numpy as np
import pytest
import scipy.io

from na23recon.core.trajectory import Trajectory
from na23recon.errors import InputError
from na23recon.io.trajfile import import_text, load_traj, save_traj
from na23recon.traj.radial import radial_3d

FOV_MM, N = 240.0, 32
KMAX = N / (2 * FOV_MM * 1e-3)


@pytest.fixture
def k():
    return radial_3d(20, 17, KMAX)


def test_npz_round_trip(tmp_path, k):
    dcf = np.random.default_rng(0).random(k.shape[:2])
    t = np.arange(17) * 1e-5
    p = save_traj(tmp_path / "tr.npz", Trajectory(k, t=t, dcf=dcf, kind="radial", meta={"kmax_per_m": KMAX}))
    tr = load_traj(p, fov_mm=FOV_MM, matrix=N)
    assert isinstance(tr, Trajectory)
    assert np.array_equal(tr.k, k) and np.array_equal(tr.dcf, dcf) and np.array_equal(tr.t, t)
    assert tr.kind == "radial" and tr.meta["kind"] == "radial" and tr.meta["kmax_per_m"] == KMAX
    kc = tr.coord(FOV_MM)
    assert kc.dtype == np.float32 and abs(np.abs(kc).max() - N / 2) < 1e-4
    assert not list(tmp_path.glob(".*tmp*"))


def test_npy_only_k(tmp_path, k):
    np.save(tmp_path / "k.npy", k)
    tr = load_traj(tmp_path / "k.npy")
    assert np.array_equal(tr.k, k) and tr.dcf is None and tr.t is None


def test_wrong_shape(tmp_path, k):
    np.savez(tmp_path / "bad.npz", k=k[..., :2])
    with pytest.raises(InputError, match=r"\(nreadout, nsample, 3\), found \(20, 17, 2\)"):
        load_traj(tmp_path / "bad.npz")
    np.savez(tmp_path / "bad2.npz", k=k, dcf=np.ones((20, 16)))
    with pytest.raises(InputError, match=r"^bad2\.npz: .*dcf must have shape"):
        load_traj(tmp_path / "bad2.npz")
    np.savez(tmp_path / "bad4.npz", k=k, t=np.zeros(16))
    with pytest.raises(InputError, match=r"^bad4\.npz: .*t must have shape \(17,\)"):
        load_traj(tmp_path / "bad4.npz")
    np.savez(tmp_path / "bad3.npz", kx=k)
    with pytest.raises(InputError, match="must hold an array 'k'"):
        load_traj(tmp_path / "bad3.npz")


def test_non_finite(tmp_path, k):
    k = k.copy()
    k[1, 2, 0] = np.nan
    with pytest.raises(InputError, match="finite"):
        save_traj(tmp_path / "x.npz", Trajectory(k))
    np.savez(tmp_path / "nan.npz", k=k)
    with pytest.raises(InputError, match=r"^nan\.npz: .*1 NaN"):
        load_traj(tmp_path / "nan.npz")


def test_beyond_kmax_warns(tmp_path, k):
    save_traj(tmp_path / "big.npz", Trajectory(2 * k))
    with pytest.warns(UserWarning, match="beyond kmax"):
        load_traj(tmp_path / "big.npz", fov_mm=FOV_MM, matrix=N)


def test_text_and_csv_import(tmp_path, k):
    rows = (k / KMAX).reshape(-1, 3)
    np.savetxt(tmp_path / "k.txt", rows, header="kx ky kz normalised to kmax")
    tr = load_traj(tmp_path / "k.txt", units="kmax", fov_mm=FOV_MM, matrix=N, nsample=17)
    assert np.allclose(tr.k, k)
    np.savetxt(tmp_path / "k.csv", rows * 0.5, delimiter=",")
    tr = import_text(tmp_path / "k.csv", nsample=17, units="kmax_half", fov_mm=FOV_MM, matrix=N)
    assert np.allclose(tr.k, k)
    with pytest.raises(InputError, match="needs fov_mm and matrix"):
        import_text(tmp_path / "k.csv", nsample=17, units="kmax")
    with pytest.raises(InputError, match="whole number of readouts"):
        import_text(tmp_path / "k.csv", nsample=16, units="per_m")


def test_mat_import(tmp_path, k):
    scipy.io.savemat(tmp_path / "k.mat", {"traj": np.transpose(k, (2, 1, 0))})
    tr = load_traj(tmp_path / "k.mat", units="per_m")
    assert np.allclose(tr.k, k)
    scipy.io.savemat(tmp_path / "k2.mat", {"k": k / KMAX, "dcf": np.ones(k.shape[:2])})
    tr = load_traj(tmp_path / "k2.mat", units="kmax", fov_mm=FOV_MM, matrix=N)
    assert np.allclose(tr.k, k) and tr.dcf.shape == k.shape[:2]
    scipy.io.savemat(tmp_path / "k3.mat", {"other": k})
    with pytest.raises(InputError, match="no trajectory variable"):
        load_traj(tmp_path / "k3.mat", units="per_m")


def test_npz_rejects_units(tmp_path, k):
    save_traj(tmp_path / "a.npz", Trajectory(k))
    with pytest.raises(InputError, match="1/m by contract"):
        load_traj(tmp_path / "a.npz", units="kmax")


def test_save_refuses_2d_k_and_non_scalar_meta(tmp_path, k):
    with pytest.raises(InputError, match=r"\(nreadout, nsample, 3\)"):
        save_traj(tmp_path / "a.npz", Trajectory(k[..., :2]))
    with pytest.raises(InputError, match="must be a scalar"):
        save_traj(tmp_path / "b.npz", Trajectory(k, meta={"angles": [1.0, 2.0]}))
    assert list(tmp_path.iterdir()) == []


def test_coord_and_from_coord_are_inverse(k):
    tr = Trajectory(k)
    back = Trajectory.from_coord(tr.coord(FOV_MM), FOV_MM)
    assert np.allclose(back.k, k, rtol=1e-6)
    with pytest.raises(InputError, match="FOV must be positive"):
        tr.coord(0.0)


def test_selecting_whole_readouts_keeps_one_time_axis(tmp_path, k):
    """A crop (or a readout subset) keeps t (nsample',) so the result still fits the file contract."""
    from na23recon.core.trajectory import SampleSelection

    t = 1e-4 + np.arange(17) * 1e-5
    tr = Trajectory(k, t=t, dcf=np.ones(k.shape[:2]))
    small, sel = tr.crop(N // 2, FOV_MM)
    assert sel is not None and small.t.shape == (small.nsample,) and small.nsample < 17
    assert np.array_equal(small.t, t[:small.nsample])
    sub = tr.select(SampleSelection((np.arange(0, 20, 3), slice(None))))
    assert sub.k.shape == (7, 17, 3) and np.array_equal(sub.t, t)
    back = load_traj(save_traj(tmp_path / "sub.npz", sub))
    assert np.array_equal(back.t, t) and back.dcf.shape == (7, 17)
