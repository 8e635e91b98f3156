"""Signal equation and relaxation presets (quant/relax.py)."""

import json

import numpy as np
import pytest

from na23recon.errors import InputError
from na23recon.quant import relax
from na23recon.sim.phantom import DATA_SIM, load_phantom


def test_media_presets_equal_the_simulator_media():
    media = json.loads((DATA_SIM / "brain.json").read_text())["media"]
    assert set(media) <= set(relax.MEDIA)
    for name, vals in media.items():
        p = relax.MEDIA[name]
        for key, v in vals.items():
            assert getattr(p, key) == pytest.approx(v), (name, key)


def test_tissue_presets_equal_the_phantom_compartments():
    ph = load_phantom("brain")
    byname = {c.name: c for c in ph.compartments}
    for name in ("gm", "wm", "csf", "lesion"):
        c, p = byname[name], relax.TISSUES[name]
        assert (p.t1_ms, p.t2s_short_ms, p.t2s_long_ms, p.frac_short) == pytest.approx(
            (c.t1_ms, c.t2s_short_ms, c.t2s_long_ms, c.frac_short))


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
