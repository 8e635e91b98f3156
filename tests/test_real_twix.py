"""Real Siemens files nobody here wrote (../shared/data/real-twix/, see its README): VB (B19),
E12 (a double-oblique 7 T slice with in-plane rotation -1 deg) and XA61.

Checks: the files are the ones SHA256SUMS names; `info` / `read_scan` agree with twixtools on
header values, dims, coil names and samples; the image axes of the affine agree with the
scanner's own per-readout quaternion (MDH SliceData.Quaternion) to 1e-5.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _twix_examples import assert_header_matches_twixtools

from na23recon.core.geometry import ORIENTATION_TOL
from na23recon.io.twix import describe, read_scan
from na23recon.io.twix.layout import image_mask, open_layout, walk
from na23recon.io.twix.header import split_header
from na23recon.io.twix.slicedata import quaternion_to_matrix

twixtools = pytest.importorskip("twixtools")

REPO = Path(__file__).resolve().parents[1]
FOLDER = Path(os.environ.get("NA23RECON_REAL_TWIX") or REPO.parent / "shared" / "data" / "real-twix")
FILES = ("gre2d_7T_oblique_E12.dat", "gre2d_VB_4ch.dat", "gre2d_XA61_2ch.dat")
LPS2RAS = np.diag([-1.0, -1.0, 1.0])


def _checked_folder() -> Path:
    sums = FOLDER / "SHA256SUMS"
    if not sums.is_file():
        pytest.skip(f"real twix files not available: no {sums} (set NA23RECON_REAL_TWIX to their folder)")
    listed = {}
    for line in sums.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            listed[name.lstrip("*")] = digest
    for name in FILES:
        assert name in listed, f"{name} is not in {sums}"
        h = hashlib.sha256((FOLDER / name).read_bytes()).hexdigest()
        assert h == listed[name], f"{FOLDER / name} does not match SHA256SUMS: a different or damaged file"
    return FOLDER


@pytest.fixture(scope="module")
def folder():
    return _checked_folder()


@pytest.fixture(scope="module", params=FILES)
def real(request, folder):
    path = folder / request.param
    tw = twixtools.read_twix(str(path), verbose=False)[-1]
    return path, tw, read_scan(path, allow_nucleus=True)


def _mdh_quaternion_axes(path):
    """(read, phase, slice) columns in LPS from the first image readout's quaternion, read here
    through the layout only (columns of the Siemens matrix: phase, -read, slice)."""
    lay = open_layout(path)
    m = lay.meas[-1]
    _, hl = split_header(lay.mm, m.offset, m.length)
    ro = walk(lay, m, hl)
    q = ro.mdh[image_mask(ro.mdh)[0]]["SliceData"]["Quaternion"]
    assert (q == q[0]).all(), "one slice, one orientation"
    mq = quaternion_to_matrix(q[0])
    return np.stack([-mq[:, 1], mq[:, 0], mq[:, 2]], axis=1)


def test_affine_axes_equal_readout_quaternion(real):
    path, tw, scan = real
    geo = scan.acquisition.geometry
    a = geo.affine()
    u = LPS2RAS @ (a[:3, :3] / np.linalg.norm(a[:3, :3], axis=0))  # affine axes back in LPS
    q = _mdh_quaternion_axes(path)
    err = np.abs(u - q).max()
    one_minus_cos = 1 - np.sum(u * q, axis=0)
    print(f"{path.name}: |affine axis - quaternion axis| max {err:.2e}, 1 - cos (read, phase, slice) "
          f"{one_minus_cos[0]:.1e} {one_minus_cos[1]:.1e} {one_minus_cos[2]:.1e}")
    assert err < ORIENTATION_TOL
    assert geo.orientation_source == "header+mdh"  # the header agrees: nothing was overridden
    # twixtools' own reading of the quaternion (columns -phase, read, slice)
    prs = tw["geometry"][0].prs_to_pcs()
    np.testing.assert_allclose(u, np.stack([prs[:, 1], -prs[:, 0], prs[:, 2]], axis=1), atol=1e-5)
    np.testing.assert_allclose(geo.position_mm, tw["geometry"][0].offset)


def test_oblique_file_in_plane_rotation(folder):
    """The E12 slice is double-oblique with in-plane rotation -1 deg: the axes differ from the
    unrotated ones by 1 deg, in the direction the quaternion says."""
    scan = read_scan(folder / FILES[0], allow_nucleus=True)
    geo = scan.acquisition.geometry
    assert geo.inplane_rot_rad == pytest.approx(np.deg2rad(-1.0), abs=1e-9)
    assert min(abs(v) for v in geo.normal[:2]) > 0.02  # tilted towards both Sag and Cor
    r = geo.rotation_lps()
    r0 = type(geo)(fov_mm=geo.fov_mm, matrix=geo.matrix, normal=geo.normal).rotation_lps()
    assert np.degrees(np.arccos(np.clip(r[:, 0] @ r0[:, 0], -1, 1))) == pytest.approx(1.0, abs=1e-6)


def test_header_values_match_twixtools(real):
    path, tw, scan = real
    y, info = tw["hdr"]["MeasYaps"], scan.acquisition
    assert_header_matches_twixtools(tw, info)
    assert info.matrix[:2] == (y["sKSpace"]["lBaseResolution"], y["sKSpace"]["lPhaseEncodingLines"])
    if "sCoilSelectMeas" in y:
        elements = y["sCoilSelectMeas"]["aRxCoilSelectData"][0]["asList"]
    else:  # VB
        elements = y["asCoilSelectMeas"][0]["asList"]
    names = tuple(e["sCoilElementID"]["tElement"] for e in elements)
    assert info.coil_names == names
    assert len(names) == scan.ncoil


def test_info_matches_twixtools(real):
    path, tw, scan = real
    d = describe(path)
    m = d["measurements"][-1]
    assert d["version"] == ("VB" if "VB" in path.name else "VD/VE")
    img = [mdb for mdb in tw["mdb"] if mdb.is_image_scan()]
    assert m["image_readouts"] == len(img) and m["complete"]
    assert m["dims"] == {"nrep": 1, "necho": 1, "ncoil": img[0].data.shape[0], "nreadout": len(img),
                         "nsample": img[0].data.shape[1]}
    assert m["coil_names"] == list(scan.acquisition.coil_names)
    assert m["geometry"]["orientation_source"] == "header+mdh"
    assert m["b0_T"] == scan.acquisition.b0_T and m["nucleus"] == "1H"


def test_samples_match_twixtools(real):
    path, tw, scan = real
    img = [mdb for mdb in tw["mdb"] if mdb.is_image_scan()]
    assert scan.data.shape[0] * scan.data.shape[1] * scan.data.shape[3] == len(img)
    order = sorted(range(len(img)), key=lambda i: (img[i].cLin, i))
    for r, i in list(enumerate(order))[:: max(1, len(img) // 16)]:
        np.testing.assert_array_equal(scan.data[0, 0, :, r, :], img[i].data)


def test_info_cli_json_and_closed_pipe(folder):
    """`na23recon info --json` on the VB file lists its four coil elements; with the reader gone
    before anything is written (`| head -1`) it exits quietly with 141, as a shell reports a process
    ended by SIGPIPE."""
    path = folder / FILES[1]
    code = "import sys; from na23recon.cli import main; sys.exit(main(sys.argv[1:]))"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code, "info", "--json", str(path)], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["measurements"][0]["coil_names"] == ["H3P", "H4P", "H1P", "H2P"]
    p = subprocess.Popen([sys.executable, "-c", code, "info", str(path)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    p.stdout.close()  # the reader is gone before the first line is printed
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141
    assert err == ""


# --- small real-file defects, checked without the files ---------------------------------------------

def test_vb_coil_list_is_read():
    from na23recon.io.twix.header import Header, coil_names

    yaps = "### ASCCONV BEGIN ###\n" + "".join(
        f'asCoilSelectMeas[0].asList[{i}].sCoilElementID.tElement = "H{i}P"\n'
        f'asCoilSelectMeas[0].asList[{i}].sCoilElementID.tCoilID = "HeadMatrix"\n' for i in range(3)) + \
        "### ASCCONV END ###\n"
    assert coil_names(Header({"MeasYaps": yaps})) == ("H0P", "H1P", "H2P")
    assert coil_names(Header({"MeasYaps": "### ASCCONV BEGIN ###\n### ASCCONV END ###\n"})) == ()


def test_sidecar_names_installed_versions():
    from importlib import metadata

    from na23recon.provenance import library_versions

    v = library_versions()
    assert v["twixtools"] == metadata.version("twixtools") != "unknown"
    assert v["numpy"] == np.__version__


def test_missing_header_fields_are_null_with_a_warning(tmp_path, caplog):
    """TR, flip angle and dwell left out of the header: null in the sidecar (never 0), one warning."""
    from na23recon.core import Acquisition, Geometry, Scan
    from na23recon.io.twix import write_scan

    acq = Acquisition(nucleus="23Na", b0_T=7.0, te_ms=(0.3,),
                      geometry=Geometry(fov_mm=(200.0,) * 3, matrix=(16,) * 3))
    p = write_scan(tmp_path / "m.dat", Scan(np.ones((1, 1, 1, 3, 4), np.complex64), acq))
    with caplog.at_level("WARNING"):
        back = read_scan(p).acquisition
    side = back.sidecar()
    assert side["tr_ms"] is None and side["flip_deg"] is None and side["dwell_us"] is None
    assert side["b0_T"] == 7.0 and side["te_ms"] == [0.3]
    warn = [r.getMessage() for r in caplog.records if "recorded as unknown" in r.getMessage()]
    assert len(warn) == 1 and all(k in warn[0] for k in ("tr_ms", "flip_deg", "dwell_us"))
