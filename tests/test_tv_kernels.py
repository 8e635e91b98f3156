"""The fused TV primal-dual step computes exactly what the numpy step does."""

import numpy as np

import na23recon.recon.solvers as solvers


def _run(monkeypatch, fused: bool):
    rng = np.random.default_rng(0)
    sh = (12, 10, 14)
    x = (rng.standard_normal(sh) + 1j * rng.standard_normal(sh)).astype(np.complex64)
    b = (rng.standard_normal(sh) + 1j * rng.standard_normal(sh)).astype(np.complex64)
    if not fused:
        monkeypatch.setattr(solvers, "fused_available", lambda *a: False)
    alg = solvers.PrimalDualGradient(lambda v: (0.7 * v).astype(np.complex64), b, x, 0.3, 1.5, 2.0, max_iter=6)
    for _ in range(6):
        alg.update()
    monkeypatch.undo()
    return alg


def test_fused_step_matches_numpy_step(monkeypatch):
    a, b = _run(monkeypatch, True), _run(monkeypatch, False)
    scale = np.abs(b.x).max()
    assert np.abs(a.x - b.x).max() < 1e-5 * scale
    assert np.abs(a.u - b.u).max() < 1e-5 * max(np.abs(b.u).max(), 1e-12)
    np.testing.assert_allclose(a.objective, b.objective, rtol=1e-5)
    assert abs(a.change - b.change) < 1e-5 * b.change
    # the dual constraint |u_v| <= lam holds after projection
    assert np.sqrt(np.sum(np.abs(a.u) ** 2, axis=0)).max() <= 0.3 * (1 + 1e-5)
