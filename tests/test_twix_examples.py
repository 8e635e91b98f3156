"""Reading real Siemens files (twixtools' example_data): header values and geometry vs twixtools,
and a Cartesian reconstruction of gre.dat whose energy sits in the middle of the FOV."""

import numpy as np
import pytest
from _twix_examples import assert_header_matches_twixtools, example_file

from na23recon.io.twix import list_measurements, read_scan

twixtools = pytest.importorskip("twixtools")


@pytest.fixture(scope="module", params=["gre.dat", "epi.dat"])
def example(request):
    path = example_file(request.param)
    tw = twixtools.read_twix(str(path), verbose=False)[-1]
    return path, tw, read_scan(path, allow_nucleus=True)


def test_proton_file_refused_without_allow(example):
    from na23recon.errors import InputError

    with pytest.raises(InputError, match="'1H'"):
        read_scan(example[0])


def test_header_values_match_twixtools(example):
    path, tw, scan = example
    y, info = tw["hdr"]["MeasYaps"], scan.acquisition
    assert_header_matches_twixtools(tw, info)
    assert info.matrix == (y["sKSpace"]["lBaseResolution"], y["sKSpace"]["lPhaseEncodingLines"], 1)  # 2D
    assert info.geometry.patient_position == "HFS"
    assert info.protocol_name == y["tProtocolName"]
    assert len(info.coil_names) == scan.ncoil == 2


def test_data_match_twixtools(example):
    path, tw, scan = example
    img = [m for m in tw["mdb"] if m.is_image_scan()]
    assert scan.data.shape[3] * scan.data.shape[1] * scan.data.shape[0] == len(img)
    lins = sorted(m.cLin for m in img)
    for m in img[:: max(1, len(img) // 20)]:
        r = lins.index(m.cLin)  # single slice/partition/segment per line in these files
        np.testing.assert_array_equal(scan.data[m.cRep, m.cEco, :, r, :], m.data)


def test_geometry_matches_twixtools(example):
    path, tw, scan = example
    geo = tw["geometry"][0]
    a = scan.acquisition.geometry.affine()
    r = np.diag([-1.0, -1.0, 1.0]) @ a[:3, :3]  # back to LPS
    u = r / np.linalg.norm(r, axis=0)
    prs = geo.prs_to_pcs()  # twixtools' columns from the readout quaternion: (-phase, read, slice)
    np.testing.assert_allclose(u[:, 0], prs[:, 1], atol=1e-6)
    np.testing.assert_allclose(u[:, 1], -prs[:, 0], atol=1e-6)
    np.testing.assert_allclose(u[:, 2], prs[:, 2], atol=1e-6)
    np.testing.assert_allclose(scan.acquisition.geometry.position_mm, geo.offset)
    np.testing.assert_allclose(np.linalg.norm(r, axis=0)[:2], geo.voxelsize[:2])


def test_list_measurements(example):
    meas = list_measurements(example[0])
    assert meas[-1]["image_readouts"] == len([m for m in example[1]["mdb"] if m.is_image_scan()])
    assert meas[-1]["complete"]


def test_gre_reconstructs_centred_image():
    scan = read_scan(example_file("gre.dat"), allow_nucleus=True)
    k = scan.kspace()  # (ncoil, nlin, ncol) with 2x readout oversampling
    ncol = k.shape[-1]
    img = np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(k, axes=-1), axis=-1), axes=-1)
    img = img[..., ncol // 4: ncol // 4 + ncol // 2]  # drop the oversampled read FOV
    img = np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(img, axes=-2), axis=-2), axes=-2)
    rss = np.sqrt((np.abs(img) ** 2).sum(0))  # (phase, read)
    assert rss.shape == (160, 160)
    e = rss ** 2 / (rss ** 2).sum()
    ys, xs = np.indices(e.shape)
    cy, cx = (e * ys).sum(), (e * xs).sum()
    assert abs(cy - 80) < 12 and abs(cx - 80) < 12, (cy, cx)
    # the head fills the FOV but not its edges: the outer 8-voxel band holds little energy
    band = np.ones_like(e, bool)
    band[8:-8, 8:-8] = False
    assert e[band].sum() < 0.08
