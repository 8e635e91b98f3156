"""The analytic phantom k-space (closed forms of Koay, Sarlls & Ozarslan, Magn Reson Med 2007)
against quadrature and an exact DFT of the finely voxelised phantom; phantoms as package data."""

import json

import numpy as np
import pytest
from scipy.special import j1

from na23recon.errors import InputError
from na23recon.quant import relax
from na23recon.sim.kspace import compartment_fourier, phantom_kspace, unit_shape_fourier
from na23recon.sim.phantom import Compartment, Phantom, builtin_phantoms, load_phantom


def test_unit_ball_transform_matches_quadrature():
    # radial integral: B(q) = int_0^1 4 pi r^2 sinc(2 q r) dr, with np.sinc(x) = sin(pi x)/(pi x)
    r = np.linspace(0, 1, 20001)
    for q in [0.0, 1e-4, 0.3, 1.7, 4.2]:
        ref = np.trapezoid(4 * np.pi * r**2 * np.sinc(2 * q * r), r)
        assert unit_shape_fourier(np.array([[q, 0.0, 0.0]]))[0] == pytest.approx(ref, rel=1e-6, abs=1e-9)


def test_unit_shapes_match_closed_forms_with_scipy():
    # the engine's ball (with its Taylor branch near 0) and its cylinder (rational J1 approximation)
    # against the closed forms written with numpy / scipy's J1
    rng = np.random.default_rng(3)
    u = np.concatenate([rng.normal(size=(400, 3)) * 3, rng.normal(size=(50, 3)) * 1e-4, np.zeros((1, 3))])
    x = 2 * np.pi * np.linalg.norm(u, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ball = np.where(x > 1e-3, 4 * np.pi * (np.sin(x) - x * np.cos(x)) / x**3, 4 * np.pi / 3 * (1 - x**2 / 10))
        q = np.hypot(u[:, 0], u[:, 1])
        disc = np.where(q > 1e-8, j1(2 * np.pi * q) / q, np.pi)
    cyl = disc * 2 * np.sinc(2 * u[:, 2])
    assert np.abs(unit_shape_fourier(u) - ball).max() < 1e-9 * np.abs(ball).max()
    assert np.abs(unit_shape_fourier(u, "cylinder") - cyl).max() < 1e-6 * np.abs(cyl).max()


def _dft_of_voxelised(ph, k_per_m, t_s, step_mm, half_mm):
    ax = np.arange(-half_mm, half_mm, step_mm) + step_mm / 2
    w = ph.weights(np.array([t_s]))[:, 0]
    out = np.zeros(len(k_per_m), complex)
    for x in ax:  # slab by slab keeps memory small
        r = np.stack(np.meshgrid([x], ax, ax, indexing="ij"), -1).reshape(-1, 3)
        idx = ph.index_map(r)
        keep = idx >= 0
        vals, rr = w[idx[keep]], r[keep] * 1e-3
        out += np.exp(-2j * np.pi * rr @ k_per_m.T).T @ vals
    return out * (step_mm * 1e-3) ** 3


def test_brain_kspace_matches_fine_grid_dft():
    ph = load_phantom("brain")
    rng = np.random.default_rng(1)
    # k points out to 60 /m (a 240 mm FOV at matrix ~29), directions random
    d = rng.normal(size=(24, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    k = d * rng.uniform(0, 60, size=(24, 1))
    t = 2e-3
    ana = phantom_kspace(ph, k, t)
    dft = _dft_of_voxelised(ph, k, t, step_mm=1.0, half_mm=120)
    rel = np.linalg.norm(ana - dft) / np.linalg.norm(ana)
    assert rel < 0.01, rel


def test_partial_overlap_is_refused():
    a = Compartment("a", 1, 10.0, (0, 0, 0), (20, 20, 20))
    b = Compartment("b", 2, 20.0, (18, 0, 0), (5, 5, 5))
    with pytest.raises(InputError, match="overlaps"):
        Phantom("bad", [a, b])


def test_nested_values_and_decay():
    ph = load_phantom("brain")
    r = np.array([[0.0, 0.0, 0.0], [0, 0, 70.0], [98, 45, 0], [0, 0, 0.5]])
    assert ph.label_map(r[:3]).tolist() == [3, 1, 11]
    # biexponential decay: GM at t = T2*_short mixes 0.6 e^-1 and 0.4 e^(-3.9/26.3)
    gm = ph.compartments[1]
    assert gm.decay(3.9e-3) == pytest.approx(0.6 * np.exp(-1) + 0.4 * np.exp(-3.9 / 26.3))


def test_unknown_phantom_is_input_error():
    with pytest.raises(InputError, match="not found"):
        load_phantom("no_such_phantom")


def test_cylinder_transform_matches_quadrature():
    c = Compartment("c", 1, 1.0, (5.0, -3.0, 2.0), (12.0, 8.0, 20.0), rot_deg=30, shape="cylinder")
    step = 0.5
    ax = np.arange(-25, 25, step) + step / 2
    r = np.stack(np.meshgrid(ax + 5, ax - 3, ax + 2, indexing="ij"), -1).reshape(-1, 3)
    m = c.inside(r)
    rr = r[m] * 1e-3
    for k in np.array([[0, 0, 0.0], [30.0, -10, 5], [-20, 40, 25], [60, 0, -30]]):
        num = np.exp(-2j * np.pi * rr @ k).sum() * (step * 1e-3) ** 3
        ana = compartment_fourier(c, k[None])[0]
        assert abs(num - ana) < 0.01 * abs(compartment_fourier(c, np.zeros((1, 3)))[0]), (k, num, ana)


def test_qa_phantom_kspace_matches_fine_grid_dft():
    ph = load_phantom("qa_cylinders")
    assert ph.parents == [None, 0, 0, 0, 0, 0]
    rng = np.random.default_rng(2)
    d = rng.normal(size=(16, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    k = d * rng.uniform(0, 50, size=(16, 1))
    ana = phantom_kspace(ph, k, 1e-3)
    dft = _dft_of_voxelised(ph, k, 1e-3, step_mm=1.0, half_mm=100)
    assert np.linalg.norm(ana - dft) / np.linalg.norm(ana) < 0.01


def test_phantoms_are_package_data_naming_shared_relaxation_presets():
    assert {"brain", "qa_cylinders"} <= set(builtin_phantoms()) and "relaxation" not in builtin_phantoms()
    for name in ("brain", "qa_cylinders"):
        for c in load_phantom(name).compartments:
            preset = c.relaxation
            assert preset is not None and (c.medium is None or c.medium == preset), c.name
            assert c.relax == relax.PRESETS[preset], c.name
    vials = [c for c in load_phantom("brain").compartments if c.medium is not None]
    assert [c.name for c in vials] == ["vial_25", "vial_50", "vial_100", "vial_150"]


def test_phantom_file_relaxation_inline_preset_and_media(tmp_path):
    base = {"name": "x", "label": 1, "conc_mM": 50.0, "center_mm": [0, 0, 0], "semi_axes_mm": [20, 20, 20]}

    def write(comp, **top):
        p = tmp_path / "p.json"
        p.write_text(json.dumps({"name": "p", "compartments": [{**base, **comp}], **top}))
        return p

    inline = dict(t1_ms=33.0, t2s_short_ms=2.0, t2s_long_ms=20.0, frac_short=0.5)
    c = load_phantom(write(inline)).compartments[0]
    assert (c.t1_ms, c.relaxation) == (33.0, None)
    c = load_phantom(write({"relaxation": "wm"})).compartments[0]
    assert c.relax == relax.TISSUES["wm"]
    c = load_phantom(write({"medium": "agar2"}, media={"agar2": {"t1_ms": 45.0}})).compartments[0]
    assert c.t1_ms == 45.0 and c.t2s_long_ms == relax.MEDIA["agar2"].t2s_long_ms
    with pytest.raises(InputError, match="one or the other"):
        load_phantom(write({"relaxation": "gm", "t1_ms": 20.0}))
    with pytest.raises(InputError, match="unknown relaxation preset 'agar9'"):
        load_phantom(write({"medium": "agar9"}))
