"""Property-based tests (hypothesis) of the twix header number parser and the range checks."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from na23recon.core import Acquisition
from na23recon.core.acquisition import _RANGES, MAX_TE_MS
from na23recon.core.geometry import MAX_FOV_MM, MIN_FOV_MM, Geometry
from na23recon.errors import InputError
from na23recon.io.twix.header import MAX_HEADER_INT, parse_number

numbers_text = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-10**30, max_value=10**30).map(str),
    st.sampled_from(["1e400", "-1e400", "inf", "nan", "0x7fffffff", "0xZZ", "", "  ", "1.5.2", "1e", "--1"]),
    st.text(max_size=20),
)


@settings(max_examples=400, deadline=None)
@given(numbers_text, st.sampled_from([float, int]))
def test_parse_number_is_finite_or_one_line_input_error(text, kind):
    try:
        v = parse_number(text, "key", kind)
    except InputError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(v, int if kind is int else float) and math.isfinite(v)
    if kind is int:
        assert abs(v) <= MAX_HEADER_INT


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False, width=64))
def test_parse_number_round_trips_finite_floats(x):
    assert parse_number(repr(x), "key") == x


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(_RANGES)), st.one_of(st.floats(), st.integers(-10**6, 10**6)))
def test_acquisition_range_checks(name, value):
    lo, hi, closed = _RANGES[name]
    ok = isinstance(value, int | float) and math.isfinite(value) and ((value >= lo) if closed else (value > lo)) and value <= hi
    try:
        acq = Acquisition(**{name: value})
    except InputError as exc:
        assert not ok and "\n" not in str(exc)
        return
    assert ok and getattr(acq, name) == float(value)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(), min_size=1, max_size=3))
def test_te_range(te):
    ok = all(math.isfinite(t) and 0 <= t <= MAX_TE_MS for t in te)
    try:
        Acquisition(te_ms=tuple(te))
    except InputError:
        assert not ok
        return
    assert ok


@settings(max_examples=200, deadline=None)
@given(st.tuples(st.floats(), st.floats(), st.floats()))
def test_geometry_fov_range_any_axis(fov):
    ok = all(math.isfinite(f) and MIN_FOV_MM <= f <= MAX_FOV_MM for f in fov)
    try:
        g = Geometry(fov_mm=fov, matrix=(16, 16, 16))
    except InputError:
        assert not ok
        return
    assert ok
    import numpy as np

    vox = np.linalg.norm(g.affine()[:3, :3], axis=0)
    assert np.all(vox > 0) and np.all(np.isfinite(vox))


@pytest.mark.parametrize("text", ["inf", "1e400", "-1e400", "nan", "1e40"])
def test_integer_header_fields_refuse_overflow(text):
    with pytest.raises(InputError):
        parse_number(text, "lBaseResolution", int)
