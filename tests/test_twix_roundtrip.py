"""write_scan -> read_scan round trip: data bit-exact, every Acquisition field identical."""

import numpy as np
import pytest

from na23recon.core import Acquisition, Geometry, Scan
from na23recon.errors import InputError
from na23recon.io.twix import list_measurements, read_header, read_scan, write_scan


def _scan(nrep=2, necho=3, ncoil=4, nro=37, ns=24, nnoise=100, seed=0) -> Scan:
    rng = np.random.default_rng(seed)
    shape = (nrep, necho, ncoil, nro, ns)
    data = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    noise = (rng.standard_normal((ncoil, nnoise)) + 1j * rng.standard_normal((ncoil, nnoise))).astype(np.complex64)
    geo = Geometry(fov_mm=(220.0, 230.0, 240.0), matrix=(48, 50, 52), position_mm=(1.5, -3.25, 10.0),
                   normal=(0.0, 0.2, 0.9797958971132712), inplane_rot_rad=0.1, patient_position="FFP")
    acq = Acquisition(
        nucleus="23Na", b0_T=2.89362, larmor_hz=32587432.0, te_ms=(0.3, 2.07, 5.1)[:necho], tr_ms=120.0,
        flip_deg=82.5, dwell_us=12.5, geometry=geo, ref_voltage=341.7,
        coil_names=tuple(f"Na{i}" for i in range(ncoil)), software_version="syngo MR E11",
        protocol_name="na23_radial 3D+te",
    )
    return Scan(data=data, acquisition=acq, noise=noise)


@pytest.mark.parametrize("noise_measurement", [False, True])
def test_round_trip_bit_exact(tmp_path, noise_measurement):
    scan = _scan()
    path = write_scan(tmp_path / "sim.dat", scan, noise_measurement=noise_measurement, noise_readout=30)
    back = read_scan(path)
    assert back.data.dtype == np.complex64 and back.data.shape == scan.data.shape
    assert np.array_equal(back.data, scan.data)
    assert np.array_equal(back.noise, scan.noise)
    assert back.acquisition == scan.acquisition
    meas = list_measurements(path)
    assert len(meas) == (2 if noise_measurement else 1)
    assert meas[-1]["image_readouts"] == 2 * 3 * 37
    assert meas[0]["noise_readouts"] == 4  # 100 samples in readouts of 30


def test_round_trip_unknowns_and_no_noise(tmp_path):
    # an acquisition that knows only its nucleus: every other value reads back as unknown
    scan = Scan(np.arange(2 * 5 * 7, dtype=np.complex64).reshape(1, 1, 2, 5, 7), Acquisition(nucleus="23Na"))
    back = read_scan(write_scan(tmp_path / "a.dat", scan))
    assert back.noise is None
    assert np.array_equal(back.data, scan.data)
    assert back.acquisition == scan.acquisition
    assert back.acquisition.tr_ms is None and back.acquisition.geometry is None and back.acquisition.te_ms is None


def test_unusual_float_values_round_trip(tmp_path):
    scan = _scan(nrep=1, necho=2, ncoil=1, nro=3, ns=5)
    scan.acquisition = scan.acquisition.with_(te_ms=(0.07, 0.1 + 0.2), tr_ms=1 / 3, dwell_us=0.1 * 3)
    back = read_scan(write_scan(tmp_path / "a.dat", scan))
    assert back.acquisition == scan.acquisition


def test_more_than_65535_readouts_use_par(tmp_path):
    nro = 65536 + 3
    data = np.zeros((1, 1, 1, nro, 2), np.complex64)
    data[0, 0, 0, :, 0] = np.arange(nro)
    back = read_scan(write_scan(tmp_path / "big.dat", Scan(data, Acquisition(nucleus="23Na", coil_names=("c",)))))
    assert np.array_equal(back.data, data)


def test_twixtools_reads_what_we_write(tmp_path):
    twixtools = pytest.importorskip("twixtools")
    scan = _scan(nrep=1, necho=2, ncoil=3, nro=5, ns=8)
    path = write_scan(tmp_path / "s.dat", scan)
    tw = twixtools.read_twix(str(path), verbose=False)[-1]
    img = [m for m in tw["mdb"] if m.is_image_scan()]
    assert len(img) == 10
    for m in img:
        c = m.mdh.Counter
        np.testing.assert_array_equal(m.data, scan.data[c.Rep, c.Eco, :, c.Lin, :])
        # every channel has its own header
        assert [h.ChannelId for h in m.channel_hdr] == [0, 1, 2]
    yaps = tw["hdr"]["MeasYaps"]
    assert yaps["sTXSPEC"]["asNucleusInfo"][0]["tNucleus"] == "23Na"
    assert yaps["alTE"][:2] == [300, 2070]
    assert tw["hdr"]["Dicom"]["flMagneticFieldStrength"] == pytest.approx(2.89362)
    assert tw["hdr"]["Meas"]["tPatientPosition"] == "FFP"


def test_overwrite_is_atomic_and_refusable(tmp_path):
    p = tmp_path / "s.dat"
    a = _scan(nro=4, seed=1)
    b = _scan(nro=4, seed=2)
    write_scan(p, a)
    write_scan(p, b)  # overwrites through a temporary name
    assert np.array_equal(read_scan(p).data, b.data)
    with pytest.raises(InputError, match="exists"):
        write_scan(p, a, overwrite=False)
    assert [f.name for f in tmp_path.iterdir()] == ["s.dat"]


def test_header_b_keys_read_raw(tmp_path):
    p = write_scan(tmp_path / "s.dat", _scan(nro=2))
    hdr = read_header(p)
    assert hdr.yaps("sKSpace.ucDimension") == "0x4"


def test_echo_count_must_match_te(tmp_path):
    s = _scan(necho=2)
    s.acquisition = s.acquisition.with_(te_ms=(1.0,))
    with pytest.raises(InputError, match="echoes"):
        write_scan(tmp_path / "x.dat", s)


@pytest.mark.slow
def test_simulator_size_round_trip(tmp_path):
    nro = int(48 ** 2 * np.pi)
    scan = _scan(nrep=1, necho=1, ncoil=8, nro=nro, ns=150, nnoise=2000)
    back = read_scan(write_scan(tmp_path / "big.dat", scan))
    assert np.array_equal(back.data, scan.data)
