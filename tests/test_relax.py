"""Signal equation and relaxation presets (quant/relax.py)."""

import json
from importlib.resources import files

import numpy as np
import pytest

from na23recon.errors import InputError
from na23recon.quant import relax


def test_presets_come_from_the_package_data_file():
    # one table (na23recon/data/relaxation.json) for the quantification and the simulator's phantoms
    d = json.loads((files("na23recon") / "data" / "relaxation.json").read_text())
    assert set(d["tissues"]) == set(relax.TISSUES) == {"gm", "wm", "csf", "lesion"}
    assert set(d["media"]) == set(relax.MEDIA) == {"saline", "agar2", "agar4"}
    # the numbers (unchanged when they moved out of the code)
    assert relax.TISSUES["gm"] == relax.Relaxation(35.0, 3.9, 26.3, 0.6)
    assert relax.TISSUES["wm"] == relax.Relaxation(30.0, 3.4, 23.5, 0.6)
    assert relax.TISSUES["csf"] == relax.Relaxation(55.0, 55.0, 55.0, 0.0)
    assert relax.TISSUES["lesion"] == relax.Relaxation(40.0, 4.5, 32.0, 0.5)
    assert relax.MEDIA["saline"] == relax.Relaxation(60.0, 60.0, 60.0, 0.0)
    assert relax.MEDIA["agar2"] == relax.Relaxation(40.0, 5.0, 30.0, 0.4)
    assert relax.MEDIA["agar4"] == relax.Relaxation(32.0, 3.5, 22.0, 0.5)


def test_spgr_weight_limits_and_b1_scaling():
    gm = relax.TISSUES["gm"]
    # TR >> T1, TE = 0: pure sin(k a)
    assert relax.spgr_weight(gm, 90.0, 1e6, 0.0) == pytest.approx(1.0)
    b1 = np.array([0.5, 1.0, 1.5])
    np.testing.assert_allclose(relax.spgr_weight(gm, 60.0, 1e6, 0.0, b1), np.sin(np.deg2rad(60 * b1)), rtol=1e-12)
    # Ernst-angle check: the SPGR weight peaks at arccos(E1)
    e1 = np.exp(-50.0 / gm.t1_ms)
    flips = np.linspace(1, 120, 2381)
    w = relax.spgr_weight(gm, 1.0, 50.0, 0.0, flips)
    assert flips[np.argmax(w)] == pytest.approx(np.rad2deg(np.arccos(e1)), abs=0.1)
    # biexponential decay by hand, TE = 2 ms
    d = 0.6 * np.exp(-2 / 3.9) + 0.4 * np.exp(-2 / 26.3)
    assert relax.spgr_weight(gm, 90.0, 1e6, 2.0) == pytest.approx(d)


def test_config_overrides_and_errors():
    p = relax.get_preset("agar2", {"agar2": {"t1_ms": 45}})
    assert p.t1_ms == 45 and p.t2s_long_ms == relax.MEDIA["agar2"].t2s_long_ms
    new = relax.get_preset("gel", {"gel": {"t1_ms": 30, "t2s_short_ms": 4, "t2s_long_ms": 25, "frac_short": 0.5}})
    assert new.frac_short == 0.5
    with pytest.raises(InputError, match="unknown tissue or medium 'agar9'"):
        relax.get_preset("agar9")
    with pytest.raises(InputError, match="unknown field"):
        relax.presets({"gm": {"t3_ms": 1}})
    with pytest.raises(InputError, match="needs"):
        relax.presets({"gel": {"t1_ms": 30}})
    with pytest.raises(InputError, match="impossible"):
        relax.presets({"gm": {"frac_short": 1.5}})


@pytest.mark.parametrize("flip,tr,te", [(400, 60, 0.3), (180, 60, 0.3), (0, 60, 0.3), (-10, 60, 0.3),
                                        (float("nan"), 60, 0.3), (80, -60, 0.3), (80, 0, 0.3),
                                        (80, float("nan"), 0.3), (80, 60, -0.3), (80, 60, float("nan"))])
def test_impossible_acquisition_is_refused(flip, tr, te):
    with pytest.raises(InputError):
        relax.spgr_weight(relax.PRESETS["gm"], flip, tr, te)
