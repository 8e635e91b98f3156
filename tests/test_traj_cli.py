"""`na23recon traj` writes a contract-conforming .npz and a PNG; impossible requests exit 2."""

import numpy as np
import pytest

from na23recon.io.trajfile import load_traj
from na23recon.traj.make import generate, trajectory_dcf, write_trajectory


def main(argv):
    from na23recon.cli import main as cli_main

    return cli_main(argv)


@pytest.mark.parametrize("kind", ["radial", "dar", "tpi"])
def test_write_trajectory_round_trip(tmp_path, kind):
    """generate -> trajectory_dcf -> write_trajectory -> load_traj keeps k, dcf, t (from excitation), meta."""
    tr = generate(kind, 16, 200.0, te_ms=0.3)
    tr = tr.with_dcf(trajectory_dcf(tr, "analytic"))
    paths = write_trajectory(tmp_path / f"{kind}.npz", tr)
    back = load_traj(paths["traj"], fov_mm=200, matrix=16)
    assert back.kind == kind and back.meta["te_s"] == pytest.approx(0.3e-3)
    assert np.array_equal(back.k, tr.k) and np.array_equal(back.dcf, tr.dcf) and np.array_equal(back.t, tr.t)
    assert back.t[0] == pytest.approx(0.3e-3, abs=1e-15)
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_pipe_menon_dcf_of_a_generated_trajectory():
    tr = generate("radial", 12, 200.0)
    w = trajectory_dcf(tr, "pipe-menon")
    assert w.shape == tr.shape and np.all(w > 0)
    assert trajectory_dcf(tr, "none") is None


@pytest.mark.parametrize("kind", ["radial", "dar", "tpi"])
def test_traj_cli_writes_npz_and_png(tmp_path, kind, capsys):
    out = tmp_path / f"{kind}.npz"
    rc = main(["traj", kind, "--matrix", "16", "--fov-mm", "200", "-o", str(out)])
    assert rc == 0
    tr = load_traj(out, fov_mm=200, matrix=16)
    assert tr.k.shape[-1] == 3 and tr.dcf.shape == tr.k.shape[:2] and tr.t.shape == (tr.k.shape[1],)
    assert abs(np.linalg.norm(tr.k, axis=-1).max() - 16 / (2 * 0.2)) < 1e-6
    assert tr.meta["kind"] == kind
    png = out.with_suffix(".png")
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"


def test_traj_cli_impossible_tpi_exits_2(tmp_path, capsys):
    rc = main(["traj", "tpi", "--matrix", "16", "--g-mT-m", "20", "--slew-T-m-s", "100", "-o",
               str(tmp_path / "x.npz")])
    err = capsys.readouterr().err
    assert rc == 2 and "error" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.parametrize("kind,opts,name", [
    ("radial", ["--fov-mm", "nan"], "fov_mm"),
    ("radial", ["--raster-us", "0"], "raster_us"),
    ("radial", ["--dwell-us", "inf"], "dwell_us"),
    ("radial", ["--undersampling=-2"], "undersampling"),
    ("radial", ["--te-ms", "nan"], "te_ms"),
    ("radial", ["--matrix", "1"], "matrix"),
    ("dar", ["--raster-us", "0"], "raster_us"),
    ("dar", ["--slew-T-m-s", "nan"], "slew_T_m_s"),
    ("dar", ["--g-mT-m", "nan"], "g0_mT_m"),
    ("dar", ["--p", "0"], "p"),
    ("dar", ["--gmax-mT-m=-40"], "gmax_mT_m"),
    ("tpi", ["--raster-us", "0"], "raster_us"),
    ("tpi", ["--fov-mm=-inf"], "fov_mm"),
    ("tpi", ["--g-mT-m", "0"], "g_mT_m"),
    ("tpi", ["--max-readout-ms", "nan"], "max_readout_ms"),
    ("tpi", ["--te-ms=-1"], "te_ms"),
])
def test_traj_cli_non_finite_or_out_of_range_parameter_exits_2(tmp_path, capsys, kind, opts, name):
    out = tmp_path / "x.npz"
    capsys.readouterr()
    rc = main(["traj", kind, "--matrix", "16", *opts, "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1 and name in err and "internal" not in err
    assert list(tmp_path.iterdir()) == []


def test_dar_and_tpi_share_one_gradient_choice(monkeypatch):
    """Both generators pick their readout gradient through gradients.choose_readout_gradient."""
    from na23recon.traj import dar, gradients, tpi

    calls = []
    real = gradients.choose_readout_gradient

    def spy(what, g_mT_m, *a, **kw):
        calls.append((what, g_mT_m))
        return real(what, g_mT_m, *a, **kw)

    monkeypatch.setattr(dar, "choose_readout_gradient", spy)
    monkeypatch.setattr(tpi, "choose_readout_gradient", spy)
    dar.dar_3d(16, 200.0)
    tpi.tpi_3d(16, 200.0, g_mT_m=2.0)
    assert calls == [("DA-radial", None), ("TPI", 2.0)]
    # the explicit-value checks are the same for both: Gmax, Nyquist along the readout, slew rate
    for gen, kw in ((dar.dar_3d, "g0_mT_m"), (tpi.tpi_3d, "g_mT_m")):
        with pytest.raises(gradients.InputError, match="exceeds Gmax"):
            gen(16, 200.0, gmax_mT_m=10.0, **{kw: 20.0})
        with pytest.raises(gradients.InputError, match="undersamples the readout"):
            gen(16, 200.0, dwell_us=100.0, **{kw: 5.0})
        with pytest.raises(gradients.InputError, match="slew rate"):
            gen(48, 240.0, slew_T_m_s=20.0, **{kw: 30.0})
