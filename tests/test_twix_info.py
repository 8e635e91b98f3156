"""`na23recon info SCAN [--json]`."""

import json

import numpy as np

from na23recon.cli import main
from na23recon.core import Acquisition, Scan
from na23recon.io.twix import write_scan


def test_info_text_and_json(tmp_path, capsys):
    data = np.ones((1, 2, 3, 10, 16), np.complex64)
    acq = Acquisition(nucleus="23Na", te_ms=(0.3, 5.0), coil_names=("a", "b", "c"), protocol_name="na23")
    p = write_scan(tmp_path / "s.dat", Scan(data, acq, noise=np.ones((3, 40), np.complex64)), noise_measurement=True)
    assert main(["info", str(p)]) == 0
    text = capsys.readouterr().out
    assert "23Na" in text and "TE 0.3, 5 ms" in text and "(1, 2, 3, 10, 16)" in text and "coils (3)" in text
    assert "TR ? ms" in text and "FOV ? mm" in text  # unknown values shown as unknown
    assert main(["info", str(p), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert len(d["measurements"]) == 2
    assert d["measurements"][-1]["dims"] == {"nrep": 1, "necho": 2, "ncoil": 3, "nreadout": 10, "nsample": 16}
    assert d["measurements"][0]["noise_readouts"] == 3
    assert d["measurements"][-1]["tr_ms"] is None and d["measurements"][-1]["te_ms"] == [0.3, 5.0]


def test_info_bad_file_exit_2(tmp_path, capsys):
    q = tmp_path / "x.dat"
    q.write_bytes(b"\x00" * 20)
    assert main(["info", str(q)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err
