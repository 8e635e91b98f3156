"""Bad twix input: every refusal is one InputError line; a fuzz test never crashes or hangs."""

import struct

import numpy as np
import pytest

from na23recon.core import Acquisition, Scan, Trajectory
from na23recon.errors import InputError
from na23recon.io.twix import read_scan, write_scan


def _small(tmp_path, name="s.dat", nucleus="23Na", ncoil=2, nro=6, ns=8, noise=True):
    rng = np.random.default_rng(1)
    data = rng.standard_normal((1, 2, ncoil, nro, ns)).astype(np.complex64)
    acq = Acquisition(nucleus=nucleus, te_ms=(0.3, 4.0), tr_ms=100.0, coil_names=[f"c{i}" for i in range(ncoil)])
    nz = rng.standard_normal((ncoil, 16)).astype(np.complex64) if noise else None
    return write_scan(tmp_path / name, Scan(data, acq, noise=nz))


def _one_line(exc):
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


def test_wrong_nucleus_refused_unless_allowed(tmp_path):
    p = _small(tmp_path, nucleus="1H")
    with pytest.raises(InputError, match=r"nucleus is '1H', expected '23Na'") as e:
        read_scan(p)
    _one_line(e)
    assert read_scan(p, allow_nucleus=True).acquisition.nucleus == "1H"


def test_truncated_file_refused(tmp_path):
    p = _small(tmp_path)
    raw = p.read_bytes()
    off, length = struct.unpack_from("<QQ", raw, 16)
    end = off + length  # bytes after it are only padding
    for cut in (end - 10, end - 200, end - 1000, 12000, 10300, 5000, 10):
        q = tmp_path / f"cut{cut}.dat"
        q.write_bytes(raw[:cut])
        with pytest.raises(InputError, match="truncated|not a twix") as e:
            read_scan(q)
        _one_line(e)


def test_missing_acqend_refused(tmp_path):
    # a scanner file cut at a readout boundary, with the raid header saying so: no ACQEND
    p = _small(tmp_path, noise=False)
    raw = bytearray(p.read_bytes())
    off, length = struct.unpack_from("<QQ", raw, 16)
    hdr_len = struct.unpack_from("<I", raw, off)[0]
    block = 192 + 2 * (32 + 8 * 8)
    new_len = hdr_len + 3 * block
    struct.pack_into("<Q", raw, 24, new_len)
    q = tmp_path / "noacqend.dat"
    q.write_bytes(bytes(raw[: off + new_len]))
    with pytest.raises(InputError, match="no ACQEND"):
        read_scan(q)


def _first_readout(raw) -> int:
    """Byte offset of the first readout of a VD/VE file's first measurement: the measurement's
    offset (MrParcRaidFileEntry at byte 16) plus its header length (first uint32 there)."""
    off = struct.unpack_from("<Q", raw, 16)[0]
    return off + struct.unpack_from("<I", raw, off)[0]


def test_empty_readout_refused(tmp_path):
    p = _small(tmp_path, noise=False)
    raw = bytearray(p.read_bytes())
    first = _first_readout(raw)
    struct.pack_into("<H", raw, first + 48, 0)  # SamplesInScan = 0, as twixtools leaves a cut readout
    q = tmp_path / "empty.dat"
    q.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="empty readout"):
        read_scan(q)


def test_corrupted_header_refused(tmp_path):
    p = _small(tmp_path)
    raw = bytearray(p.read_bytes())
    off = struct.unpack_from("<Q", raw, 16)[0]
    struct.pack_into("<I", raw, off, 0xFFFFFF)  # header length beyond the measurement
    q = tmp_path / "hdr.dat"
    q.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="corrupted|truncated"):
        read_scan(q)
    raw = bytearray(p.read_bytes())
    raw[off + 8: off + 14] = b"\x01\x02\x03\x04\x05\x06"  # buffer name
    q.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="corrupted twix header"):
        read_scan(q)


def test_bad_header_value_refused(tmp_path):
    p = _small(tmp_path)
    raw = p.read_bytes().replace(b"alTR[0]                                          = 100",
                                 b"alTR[0]                                          = x00")
    q = tmp_path / "tr.dat"
    q.write_bytes(raw)
    with pytest.raises(InputError, match="alTR"):
        read_scan(q)


def test_no_image_readouts_refused(tmp_path):
    p = _small(tmp_path, noise=True)
    raw = bytearray(p.read_bytes())
    pos = _first_readout(raw)
    while True:  # flag every readout as noise
        dma, mask, ns, nch = struct.unpack_from("<I36xQHH", raw, pos)
        if mask & 1:
            break
        struct.pack_into("<Q", raw, pos + 40, mask | (1 << 25))
        pos += 192 + nch * (32 + 8 * ns)
    q = tmp_path / "noimg.dat"
    q.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="no image readouts"):
        read_scan(q)


def test_not_a_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_scan(tmp_path / "nothere.dat")
    (tmp_path / "tiny.dat").write_bytes(b"abc")
    with pytest.raises(InputError, match="not a twix"):
        read_scan(tmp_path / "tiny.dat")


def test_meas_index_out_of_range(tmp_path):
    with pytest.raises(InputError, match="measurement"):
        read_scan(_small(tmp_path), meas=3)


def test_check_trajectory_names_both_numbers():
    scan = Scan(np.zeros((1, 1, 2, 10, 32), np.complex64), Acquisition())
    scan.check_trajectory(Trajectory(np.zeros((10, 32, 3))))
    with pytest.raises(InputError, match="12 readouts x 32 samples but the scan has 10 readouts"):
        scan.check_trajectory(Trajectory(np.zeros((12, 32, 3))))
    with pytest.raises(InputError, match="10 readouts x 30 samples but the scan has 10 readouts x 32"):
        scan.check_trajectory(Trajectory(np.zeros((10, 30, 3))))


def test_reading_is_silent(tmp_path, capsys):
    read_scan(_small(tmp_path))
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_fuzz_truncations_and_byte_flips(tmp_path):
    """Seeded, bounded: every mutant either reads or raises InputError (never another error)."""
    p = _small(tmp_path, noise=True)
    raw = p.read_bytes()
    rng = np.random.default_rng(1234)
    q = tmp_path / "fuzz.dat"
    outcomes = {"read": 0, "refused": 0}
    for i in range(150):
        b = bytearray(raw)
        kind = i % 3
        if kind == 0:
            b = b[: int(rng.integers(0, len(b)))]
        else:
            # flips concentrated where they matter: raid header, protocol header, readout headers
            region = rng.choice([(0, 400), (10240, 10240 + 3000), (10240, len(b))])
            for _ in range(int(rng.integers(1, 8))):
                j = int(rng.integers(region[0], min(region[1], len(b))))
                b[j] ^= 1 << int(rng.integers(0, 8))
            if kind == 2:
                b = b[: int(rng.integers(len(b) // 2, len(b) + 1))]
        q.write_bytes(bytes(b))
        try:
            s = read_scan(q)
            assert s.data.ndim == 5
            outcomes["read"] += 1
        except InputError as exc:
            assert "\n" not in str(exc)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0
