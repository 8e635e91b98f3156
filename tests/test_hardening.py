"""Hostile input: bad raw samples, corrupt counters, outputs onto inputs, exit codes, memory
checks, quiet coercions, batch locks. Each test fails on the code before its fix."""

import errno
import io
import json
import logging
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from na23recon.cli import main
from na23recon.core import Acquisition, Image, Scan
from na23recon.core.atomic import atomic_path
from na23recon.errors import InputError, OutputError
from na23recon.io.samples import check_samples
from na23recon.io.trajfile import load_traj
from na23recon.io.twix import read_scan, write_scan
from na23recon.io.twix.layout import acquisition_order, counter_problems


VIALS = json.dumps({"vials": [{"label": 1, "concentration_mM": 50, "medium": "saline"},
                              {"label": 2, "concentration_mM": 100, "medium": "saline"}]})


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    from na23recon.sim.scan import simulate_to_folder

    return simulate_to_folder(tmp_path_factory.mktemp("sim"), matrix=12, snr=30.0, seed=1, ncoil=1)


def _scan(tmp_path, data=None, name="s.dat", nro=40, ns=16):
    rng = np.random.default_rng(3)
    if data is None:
        data = (rng.standard_normal((1, 1, 2, nro, ns)) * 1e-3).astype(np.complex64)
        data[..., 0] = 0.05  # a k-space centre on every readout (radial)
    acq = Acquisition(nucleus="23Na", te_ms=(0.3,), tr_ms=100.0)
    return write_scan(tmp_path / name, Scan(data, acq)), data


# --- 1. raw samples -------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [np.nan, np.inf, 3e38, 1e6])
def test_bad_sample_refused_with_count_and_position(tmp_path, value):
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((1, 1, 2, 40, 16)) * 1e-3).astype(np.complex64)
    data[..., 0] = 0.05
    data[0, 0, 1, 7, 3] = value
    p, _ = _scan(tmp_path, data)
    with pytest.raises(InputError, match=r"1 raw sample\(s\).*coil 1, readout 7, sample 3") as e:
        read_scan(p)
    assert "\n" not in str(e.value)
    scan = read_scan(p, zero_bad_samples=True)
    assert scan.data[0, 0, 1, 7, 3] == 0 and scan.notes == {"bad_samples_zeroed": 1}
    assert np.array_equal(np.delete(scan.data.ravel(), np.ravel_multi_index((0, 0, 1, 7, 3), data.shape)),
                          np.delete(data.ravel(), np.ravel_multi_index((0, 0, 1, 7, 3), data.shape)))


def test_real_scale_samples_pass():
    # a radial k-space: every readout's peak ~1, the edges 1e-4: nothing flagged
    k = np.full((2, 100, 32), 1e-4, dtype=np.complex64)
    k[..., 0] = 1.0
    assert check_samples(k.copy(), "x", ("coil", "readout", "sample")) == 0


def test_zero_bad_samples_recorded_in_sidecar(tmp_path, sim):
    raw = bytearray(Path(sim["scan"]).read_bytes())
    s = read_scan(sim["scan"])
    # the first sample of some readout: find its bytes and write a NaN there
    needle = s.data[0, 0, 0, 5, 4].tobytes()
    off = bytes(raw).find(needle)
    raw[off: off + 8] = np.array([np.nan + 0j], dtype=np.complex64).tobytes()
    bad = tmp_path / "bad.dat"
    bad.write_bytes(bytes(raw))
    out = tmp_path / "r.nii.gz"
    assert main(["recon", str(bad), "--traj", str(sim["traj"]), "-o", str(out), "--no-png"]) == 2
    assert not out.exists()
    assert main(["recon", str(bad), "--traj", str(sim["traj"]), "-o", str(out), "--no-png", "--zero-bad-samples"]) == 0
    img = Image.load(out)
    assert np.all(np.isfinite(img.array))
    assert img.meta["recon"]["input_repairs"] == {"bad_samples_zeroed": 1}


# --- 2. counters ----------------------------------------------------------------------------------
def _counters(lin, **others):
    import twixtools.mdh_def as mdh_def

    c = np.zeros(len(lin), dtype=np.dtype(mdh_def.Scan_header)["Counter"])
    c["Lin"] = lin
    for k, v in others.items():
        c[k] = v
    return c


def test_counter_problems_named():
    from na23recon.io.twix.layout import readout_keys

    good = _counters(np.arange(300))
    rep, eco, ro, _, _ = readout_keys(good)
    assert counter_problems(good, rep * 1 + eco, ro) == []
    lin = np.arange(300)
    lin[100] = 32767
    bad = _counters(lin)
    rep, eco, ro, _, _ = readout_keys(bad)
    assert ro[101] == 100  # the counter order shifts every later readout by one
    probs = counter_problems(bad, rep + eco, ro)
    assert probs and "Lin jumps from 299 to 32767" in probs[0]
    assert np.array_equal(acquisition_order(np.zeros(300, dtype=np.int64)), np.arange(300))
    ide = np.zeros(300)
    ide[10] = 32767
    rep, eco, ro, _, _ = readout_keys(_counters(np.arange(300), Ide=ide))
    assert any("Ide = 32767 on 1 of 300" in p for p in counter_problems(_counters(np.arange(300), Ide=ide), rep + eco, ro))


def _set_counter(path, readout, name, value):
    import struct

    import twixtools.mdh_def as mdh_def

    from na23recon.io.twix.header import split_header
    from na23recon.io.twix.layout import open_layout, walk

    lay = open_layout(path)
    m = lay.meas[-1]
    _, hl = split_header(lay.mm, m.offset, m.length)
    ro = walk(lay, m, hl)
    from na23recon.io.twix.layout import image_mask

    pos = int(ro.pos[image_mask(ro.mdh)[0]][readout])
    dt = np.dtype(mdh_def.Scan_header)
    off = pos + dt.fields["Counter"][1] + dt.fields["Counter"][0].fields[name][1]
    raw = bytearray(Path(path).read_bytes())
    struct.pack_into("<H", raw, off, value)
    Path(path).write_bytes(bytes(raw))


@pytest.mark.parametrize("name", ["Lin", "Ide"])
def test_corrupt_readout_counter_falls_back_to_acquisition_order(tmp_path, caplog, name):
    p, data = _scan(tmp_path)
    _set_counter(p, 11, name, 32767)
    with caplog.at_level(logging.WARNING):
        s = read_scan(p)
    assert "readout counters inconsistent" in caplog.text
    assert np.array_equal(s.data, data)


@pytest.mark.parametrize("name", ["Rep", "Eco", "Ave"])
def test_corrupt_rep_echo_counter_refused(tmp_path, name):
    p, _ = _scan(tmp_path)
    _set_counter(p, 5, name, 3)
    with pytest.raises(InputError, match="Rep, Ave or Eco counter"):
        read_scan(p)


# --- 3. header values -----------------------------------------------------------------------------
@pytest.mark.parametrize("field,value", [
    ("dwell_us", 0), ("tr_ms", -1), ("flip_deg", 1e11), ("b0_T", float("inf")), ("dwell_us", 1e400),
])
def test_impossible_acquisition_values(field, value):
    with pytest.raises(InputError, match="impossible|finite"):
        Acquisition(**{field: value})


@pytest.mark.parametrize("te", [(1e305,), (-0.001,)])
def test_impossible_te(te):
    with pytest.raises(InputError, match="TE"):
        Acquisition(te_ms=te)


@pytest.mark.parametrize("fov", [(240, 240, 1e-30), (240, 1e30, 240), (240, 0, 240)])
def test_impossible_fov_one_axis(fov):
    from na23recon.core.geometry import Geometry

    with pytest.raises(InputError, match="FOV"):
        Geometry(fov_mm=fov, matrix=(16, 16, 16))


# --- 7. outputs onto inputs -----------------------------------------------------------------------
def _nifti(path, arr=None):
    arr = np.ones((8, 8, 8), np.float32) if arr is None else arr
    Image(arr, np.eye(4), {}).save(path)
    return path


def test_quantify_refuses_overwriting_its_inputs(tmp_path, capsys):
    img = _nifti(tmp_path / "img.nii.gz")
    lab = _nifti(tmp_path / "lab.nii.gz")
    vials = tmp_path / "v.json"
    vials.write_text(VIALS)
    before = img.read_bytes()
    for extra, out in (([], img), (["--labels", str(lab)], lab), (["--labels", str(lab)], tmp_path / "lab.nii")):
        if out.suffix == ".nii":
            out.symlink_to(lab)
        assert main(["quantify", str(img), "--vials", str(vials), "-o", str(out), *extra]) == 2
        assert "refusing to overwrite an input" in capsys.readouterr().err
    assert img.read_bytes() == before


def test_recon_refuses_output_onto_scan(tmp_path, capsys):
    p, _ = _scan(tmp_path, name="s.nii.gz")
    assert main(["recon", str(p), "--traj", str(p), "-o", str(p)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


def test_batch_refuses_inputs_inside_outroot(tmp_path, capsys):
    (tmp_path / "out" / "a").mkdir(parents=True)
    scan = tmp_path / "out" / "a" / "recon.nii.gz"
    scan.write_bytes(b"x")
    man = tmp_path / "m.csv"
    man.write_text(f"id,scan,traj\na,{scan},{scan}\n")
    assert main(["batch", str(man), "-o", str(tmp_path / "out")]) == 2
    assert "inside OUTROOT" in capsys.readouterr().err
    assert scan.read_bytes() == b"x"


# --- 8. exit codes --------------------------------------------------------------------------------
def test_deeply_nested_vials_is_input_error(tmp_path, capsys):
    img = _nifti(tmp_path / "img.nii.gz")
    v = tmp_path / "v.json"
    v.write_text("[" * 100000 + "]" * 100000)
    assert main(["quantify", str(img), "--vials", str(v), "-o", str(tmp_path / "t.nii.gz")]) == 2
    assert "nests too deeply" in capsys.readouterr().err


def test_relaxation_config_not_a_table(tmp_path, capsys):
    img = _nifti(tmp_path / "img.nii.gz")
    v = tmp_path / "v.json"
    v.write_text(VIALS)
    c = tmp_path / "c.json"
    c.write_text('{"relaxation": "x"}')
    assert main(["quantify", str(img), "--vials", str(v), "--config", str(c), "-o", str(tmp_path / "t.nii.gz")]) == 2
    assert "'relaxation' must be an object" in capsys.readouterr().err


def test_te_ms_out_of_range_is_input_error(tmp_path, capsys):
    img = _nifti(tmp_path / "img.nii.gz")
    assert main(["quantify", str(img), "--vials", "x.json", "--te-ms", "1e9", "-o", str(tmp_path / "t.nii.gz")]) == 2


@pytest.mark.parametrize("value", ["5", '""', "[1]"])
def test_output_dir_must_be_a_string(tmp_path, value, capsys):
    p, _ = _scan(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[input]\nscan = "{p}"\ntraj = "{p}"\n[output]\ndir = {value}\n')
    assert main(["run", str(cfg)]) == 2
    assert "dir must be a folder name" in capsys.readouterr().err


def test_manifest_id_summary_refused(tmp_path, capsys):
    man = tmp_path / "m.csv"
    man.write_text("id,scan,traj\nsummary.csv,a.dat,t.npz\n")
    assert main(["batch", str(man), "-o", str(tmp_path / "o")]) == 2
    assert "summary.csv" in capsys.readouterr().err


def test_bom_in_csv_header(tmp_path):
    from na23recon.pipeline.config import read_manifest

    man = tmp_path / "m.csv"
    man.write_text("\ufeffid,scan,traj\na,s.dat,t.npz\n", encoding="utf-8")
    assert read_manifest(man)[0].id == "a"


def test_full_disk_names_the_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "x.nii.gz"

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError, match=r"cannot write .*x\.nii\.gz: No space left on device"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            full()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["image", "png"])
def test_full_disk_exit_code(tmp_path, monkeypatch, capsys, sim, where):
    import na23recon.core.nifti as nifti
    import na23recon.pipeline.recon_step as recon_step

    def nospace(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "image":
        monkeypatch.setattr(nifti.nib, "save", nospace)
    else:  # the image and sidecar are written, the PNG is not: none of them may stay
        monkeypatch.setattr(recon_step, "montage_png", nospace)
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main(["recon", str(sim["scan"]), "--traj", str(sim["traj"]), "-o", str(tmp_path / "r.nii.gz")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "No space left on device" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_info_into_closed_pipe_is_quiet():
    real = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real-twix" / "gre2d_VB_4ch.dat"
    if not real.is_file():
        pytest.skip("real twix files not found (../shared/data/real-twix)")
    code = ("import sys, os; r, w = os.pipe(); os.close(r); os.dup2(w, 1); "
            "from na23recon.cli import main; sys.exit(main(['info', sys.argv[1]]))")
    res = subprocess.run([sys.executable, "-c", code, str(real)], capture_output=True, text=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert res.stderr == "" and res.returncode == 141, res.stderr


# --- 9. memory ------------------------------------------------------------------------------------
def test_npz_declaring_huge_array_refused_before_loading(tmp_path):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (200000, 1000, 3)})
    p = tmp_path / "t.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("k.npy", buf.getvalue() + b"0" * 1000)
    with pytest.raises(InputError, match=r"declares shape \(200000, 1000, 3\)"):
        load_traj(p)


def test_huge_trajectory_refused_with_figure(capsys, tmp_path):
    assert main(["traj", "radial", "--matrix", "4096", "-o", str(tmp_path / "t.npz")]) == 2
    assert "GiB of memory" in capsys.readouterr().err
    assert not (tmp_path / "t.npz").exists()


# --- 10. coercions --------------------------------------------------------------------------------
def test_integer_k_refused(tmp_path):
    p = tmp_path / "t.npz"
    np.savez(p, k=np.ones((4, 5, 3), dtype=np.int64))
    with pytest.raises(InputError, match="floating point"):
        load_traj(p)


def test_complex_nifti_refused(tmp_path):
    p = tmp_path / "c.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.complex64), np.eye(4)), str(p))
    with pytest.raises(InputError, match="complex"):
        Image.load(p)


def test_4d_labels_refused(tmp_path, capsys):
    img = _nifti(tmp_path / "img.nii.gz")
    lab = _nifti(tmp_path / "lab.nii.gz", np.ones((8, 8, 8, 2), np.float32))
    v = tmp_path / "v.json"
    v.write_text(VIALS)
    assert main(["quantify", str(img), "--vials", str(v), "--labels", str(lab), "-o", str(tmp_path / "t.nii.gz")]) == 2
    assert "2 volumes" in capsys.readouterr().err


# --- 4. per-scan lock -----------------------------------------------------------------------------
def test_scan_lock_second_holder_skips(tmp_path):
    from na23recon.pipeline.batch import _run_job, lock_holder, scan_lock
    from na23recon.pipeline.config import Job, RunOptions

    d = tmp_path / "a"
    d.mkdir()
    (d / ".recon.abc.tmp").mkdir()  # a killed worker's staging folder
    fd = scan_lock(d)
    assert fd is not None and lock_holder(tmp_path, "a") == __import__("os").getpid()
    res = _run_job(Job("a", str(tmp_path / "s.dat"), str(tmp_path / "t.npz")), str(tmp_path), RunOptions())
    assert res.status == "skipped" and "another batch" in res.message
    __import__("os").close(fd)
    res = _run_job(Job("a", str(tmp_path / "s.dat"), str(tmp_path / "t.npz")), str(tmp_path), RunOptions())
    assert res.status == "failed" and "input not found" in res.message
    assert not (d / ".recon.abc.tmp").exists()
