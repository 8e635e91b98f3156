"""QC figures and the HTML report: object-API matplotlib (no pyplot, no backend switch), valid PNGs."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PNG_SIG = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """(width, height) of a PNG, after checking its signature, IHDR chunk and IEND trailer."""
    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIG, f"{path} is not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    assert data[-12:] == b"\x00\x00\x00\x00IEND\xaeB`\x82", f"{path} is truncated"
    return struct.unpack(">II", data[16:24])


# Makes every figure of na23recon.report; shared by the in-process test and the subprocess check.
MAKE_ALL = textwrap.dedent("""
    import numpy as np
    from na23recon.quant.tsc import Calibration
    from na23recon.report.figures import calibration_png, montage_png, trajectory_png, tsc_png
    from na23recon.traj.make import generate, trajectory_dcf

    def make_all(d):
        rng = np.random.default_rng(0)
        img = rng.random((24, 24, 20)).astype(np.float32)
        cal = Calibration(a=2.0, b=0.5, cov=np.eye(2) * 1e-4, r2=0.999, intercept="fit",
                          points=[{"label": i + 1, "concentration_mM": c, "mean": 2 * c + 0.5, "se": 0.3,
                                   "voxels": 50} for i, c in enumerate((0.0, 40.0, 80.0, 120.0))])
        tr = generate("radial", 16, 240.0, undersampling=8.0)
        return {
            "montage": montage_png(d / "m.png", img + 1j * img, title="<b>x</b> & y", unit="a.u."),
            "tsc": tsc_png(d / "tsc.png", img * 150, mask=img > 0.5),
            "calibration": calibration_png(d / "cal.png", cal),
            "trajectory": trajectory_png(d / "traj.png", tr.with_dcf(trajectory_dcf(tr))),
        }
""")

# (figsize in inches at the dpi each function uses) -> expected pixel sizes
EXPECTED = {"montage": (4 * 2.2 * 80, (3 * 2.2 + 0.4) * 80),  # 12 slices: 4 x 3, dpi 80
            "tsc": ((2.1 * 4 + 3.2) * 80, (2.1 * 2 + 0.3) * 80),  # 8 slices: 4 x 2 + histogram, dpi 80
            "calibration": (4.5 * 90, 3.6 * 90), "trajectory": (11 * 90, 8.5 * 90)}


def _check_pngs(paths: dict) -> None:
    assert set(paths) == set(EXPECTED)
    for name, p in paths.items():
        w, h = png_size(p)
        ew, eh = EXPECTED[name]
        assert abs(w - ew) <= 2 and abs(h - eh) <= 2, (name, (w, h), (ew, eh))
        assert 100 <= w <= 2000 and 100 <= h <= 2000
        assert Path(p).stat().st_size > 2000  # drawn, not blank
        assert not [q for q in Path(p).parent.iterdir() if ".tmp" in q.name]


def test_figures_leave_backend_and_never_import_pyplot(tmp_path):
    """In a fresh interpreter with an explicit backend: every figure function runs, the backend
    stays what the user chose and matplotlib.pyplot is never imported."""
    code = MAKE_ALL + textwrap.dedent("""
        import sys, json, pathlib
        import matplotlib
        before = matplotlib.get_backend()
        out = make_all(pathlib.Path(sys.argv[1]))
        assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
        after = matplotlib.get_backend()
        assert after == before, (before, after)
        print(json.dumps({"backend": after, "paths": {k: str(v) for k, v in out.items()}}))
    """)
    env = dict(os.environ, MPLBACKEND="pdf", PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env,
                         timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["backend"] == "pdf"
    _check_pngs(out["paths"])


def test_report_package_imports_no_pyplot():
    """Importing the report modules (and the CLI) loads neither pyplot nor a backend."""
    code = ("import sys, na23recon.report, na23recon.report.html, na23recon.report.figures, na23recon.cli\n"
            "import matplotlib\n"
            "assert 'matplotlib.pyplot' not in sys.modules\n"
            "get = getattr(matplotlib.rcParams, '_get_backend_or_none', None)\n"
            "assert get is None or get() is None  # backend still unresolved\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("MPLBACKEND", None)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                         check=False)
    assert res.returncode == 0, res.stderr[-3000:]


def test_figures_in_process_keep_backend(tmp_path):
    import matplotlib

    ns: dict = {}
    exec(MAKE_ALL, ns)  # noqa: S102 - the same figure code as the subprocess check
    before = matplotlib.get_backend()
    paths = ns["make_all"](tmp_path)
    assert matplotlib.get_backend() == before
    _check_pngs(paths)
    assert isinstance(paths["trajectory"], Path) and isinstance(paths["montage"], str)


def test_montage_refuses_non_3d(tmp_path):
    from na23recon.report.figures import montage_png

    with pytest.raises(ValueError, match="3D"):
        montage_png(tmp_path / "x.png", np.zeros((4, 4)))
    assert list(tmp_path.iterdir()) == []


def test_html_report_self_contained_and_escaped(tmp_path):
    import base64

    from na23recon.core.nifti import save_nifti
    from na23recon.report import html_report
    from na23recon.report.figures import montage_png

    img = np.random.default_rng(1).random((8, 8, 8)).astype(np.float32)
    nii = save_nifti(tmp_path / "recon.nii.gz", img, np.eye(4),
                     {"recon": {"method": "<script>alert(1)</script>"}, "other": "not shown"})
    png = Path(montage_png(tmp_path / "recon.png", img))
    out = html_report(tmp_path / "report.html", "scan <a&b>", {"recon": nii})
    text = Path(out).read_text()
    assert text.startswith("<!doctype html>")
    assert "scan &lt;a&amp;b&gt;" in text and "<a&b>" not in text
    assert "&lt;script&gt;" in text and "<script>" not in text
    assert "not shown" not in text
    assert "src='data:image/png;base64," in text  # embedded, no external file needed
    b64 = text.split("data:image/png;base64,")[1].split("'")[0]
    assert base64.b64decode(b64) == png.read_bytes()
    assert (Path(out).stat().st_mode & 0o777) == 0o666 & ~_umask()


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m
