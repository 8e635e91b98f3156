"""Gridding kernels (ES and PSWF): parameters, piecewise-polynomial fit, Fourier transform.

The kernel is FINUFFT's "exponential of semicircle",

    phi(z) = exp(beta * (sqrt(1 - (2 z / w)^2) - 1)),   |z| <= w / 2  (z in oversampled-grid units),

with support w (the number of taps per axis) and shape parameter beta, both chosen from the
requested tolerance eps and the upsampling factor sigma (Barnett, Magland & af Klinteberg,
"A parallel nonuniform fast Fourier transform library based on an 'exponential of semicircle'
kernel", SIAM J. Sci. Comput. 41(5), C479-C504, 2019).

At upsampling 2 and 5e-7 <= eps < 1e-2 the kernel is instead the
prolate spheroidal wave function psi_0(c, 2 z / w) (Slepian & Pollak 1961, Bell Syst. Tech. J.
40:43), the function the ES kernel approximates and the one FINUFFT 2.5 uses: it meets eps with
FINUFFT's widths (4 taps at 1e-3, 7 at 1e-6) where the ES kernel missed eps 1e-3 by up to 10% at
4 taps and needed 8 at 1e-6 ((8/7)^3 = 1.5x the taps in 3D).

Kernel values are evaluated from a piecewise polynomial (one polynomial per tap, Horner's rule)
fitted here at plan time, so the spreader evaluates w polynomials once per point and axis instead
of an exp and a sqrt per tap. The kernel's Fourier transform, used to deapodise, is computed by
Gauss-Legendre quadrature of the true kernel.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import scipy.special

__all__ = ["es_params", "kernel_params", "es_kernel", "pswf_kernel", "kernel_values", "fit_horner", "kernel_ft",
           "deapodisation"]

# Smallest width we accept: below 2 taps the ES kernel cannot reach even eps = 1e-2.
_MIN_WIDTH = 2
_MAX_WIDTH = 16
TIGHT_EPS = 2e-5  # below this the width rules get one tap more (see es_params)
PSWF_EPS = (5e-7, 1e-2)  # eps range of the PSWF rule at upsampling 2 (see kernel_params)
PSWF_C = {4: 9.4, 5: 11.5, 6: 14.0, 7: 16.2}  # PSWF bandwidth parameter c per width (see kernel_params)


def es_params(eps: float, upsampling: float) -> tuple[int, float]:
    """Kernel width (taps per axis) and ES shape parameter beta for a tolerance.

    Width follows FINUFFT's rules (Barnett et al. 2019, sec. 3 and the library's
    `setup_spreader`). At upsampling 2, beta / w is re-tuned: a scan of the relative l2 error
    against an exact NUDFT (3D, random points) put the minimum at 2.10 (w=3), 2.20 (w=4),
    2.25 (w=5, 6), 2.30 (w>=7), which brings the error to ~1-1.4 x eps where FINUFFT's
    2.38 / 2.30 gave up to ~2.8 x eps. At other upsampling one tap more than FINUFFT's rule:
    without it our errors reached ~3.9 x eps at sigma 1.25. Below eps TIGHT_EPS (2e-5) one more
    tap at either upsampling: at eps 1e-5 and 1e-6 the rules above measured 1.3-1.9 x eps
    (forward and adjoint, random and radial 3D points, 32^3, against the exact NUDFT).

    Args:
        eps: requested relative l2 accuracy, 1e-2 .. 1e-6 (smaller values are clamped to 1e-14).
        upsampling: grid oversampling factor sigma (> 1), typically 2.0 or 1.25.

    Returns:
        (width, beta): width in grid cells, beta dimensionless.
    """
    if not (upsampling > 1.0):
        raise ValueError(f"upsampling must be > 1, got {upsampling}")
    eps = max(float(eps), 1e-14)
    if upsampling == 2.0:
        w = math.ceil(-math.log10(eps / 10.0))
    else:
        w = math.ceil(-math.log(eps) / (math.pi * math.sqrt(1.0 - 1.0 / upsampling))) + 1
    if eps < TIGHT_EPS:
        w += 1
    w = int(min(max(w, _MIN_WIDTH), _MAX_WIDTH))
    if upsampling == 2.0:
        beta_over_w = {2: 2.05, 3: 2.10, 4: 2.20, 5: 2.25, 6: 2.25}.get(w, 2.30)
    else:
        beta_over_w = 0.97 * math.pi * (1.0 - 1.0 / (2.0 * upsampling))
    return w, beta_over_w * w


def kernel_params(eps: float, upsampling: float) -> tuple[str, int, float]:
    """Kernel family, width and shape parameter for a tolerance: ("pswf", w, c) at upsampling 2
    for 5e-7 <= eps < 1e-2 (PSWF_EPS), otherwise ("es", w, beta) from `es_params`.

    PSWF rule: w = ceil(log10(10 / eps)) taps (FINUFFT's width rule; one tap fewer than
    `es_params` below 2e-5), c from PSWF_C. c was scanned against the exact NUDFT (3D 30^3,
    20 k random points, complex128); the minima, used here: w = 4, c = 9.4: 7.8e-4; w = 5,
    c = 11.5: 8.2e-5; w = 6, c = 14: 7.4e-6; w = 7, c = 16.2: 8.0e-7 (all within eps = 10^-(w-1); 16.2 rather than the
    minimum at 16.4, 7.6e-7, which left shuffled radial points at 1.1e-6 in complex64),
    where the ES kernel at the same width reached 1.1e-3, -, 1.4e-5, 1.4e-6.
    """
    if upsampling == 2.0 and PSWF_EPS[0] <= eps < PSWF_EPS[1]:
        w = math.ceil(-math.log10(eps / 10.0))
        if w in PSWF_C:
            return "pswf", w, PSWF_C[w]
    w, beta = es_params(eps, upsampling)
    return "es", w, beta


def pswf_kernel(z: np.ndarray, width: int, c: float) -> np.ndarray:
    """PSWF kernel psi_0(c, 2 z / w) / psi_0(c, 0) (peak 1, zero for |z| > width / 2); z in grid cells."""
    z = np.asarray(z, dtype=np.float64)
    x = 2.0 * z / width
    inside = np.abs(x) <= 1.0
    out = np.zeros_like(x)
    out[inside] = np.polynomial.chebyshev.chebval(x[inside], _pswf_cheb(float(c)))
    return out


@functools.lru_cache(maxsize=16)
def _pswf_cheb(c: float) -> np.ndarray:
    """Chebyshev series of psi_0(c, x) / psi_0(c, 0) on [-1, 1] (scipy's pro_ang1 costs ~0.1 ms a
    value; 96 nodes interpolate it to ~1e-15 for c <= 40)."""
    n = 96
    xc = np.cos(np.pi * (np.arange(n) + 0.5) / n)
    v = scipy.special.pro_ang1(0, 0, c, xc)[0] / scipy.special.pro_ang1(0, 0, c, 0.0)[0]
    coef = np.polynomial.chebyshev.chebfit(xc, v, n - 1)
    coef.setflags(write=False)
    return coef


def kernel_values(z: np.ndarray, width: int, beta: float, kind: str = "es") -> np.ndarray:
    """The kernel of family `kind` ("es" or "pswf") at z (grid cells)."""
    if kind == "pswf":
        return pswf_kernel(z, width, beta)
    if kind != "es":
        raise ValueError(f"unknown kernel {kind!r}")
    return es_kernel(z, width, beta)


def es_kernel(z: np.ndarray, width: int, beta: float) -> np.ndarray:
    """ES kernel phi(z) (peak 1 at z = 0, zero for |z| > width / 2); z in grid cells."""
    z = np.asarray(z, dtype=np.float64)
    x = 2.0 * z / width
    inside = np.abs(x) <= 1.0
    out = np.zeros_like(x)
    out[inside] = np.exp(beta * (np.sqrt(1.0 - x[inside] ** 2) - 1.0))
    return out


def fit_horner(width: int, beta: float, tol: float = 1e-9, max_degree: int = 20, kind: str = "es") -> np.ndarray:
    """Fit one polynomial per tap to the kernel, for evaluation by Horner's rule.

    A point at grid coordinate u has taps l = i0 + j, j = 0..w-1, with i0 = floor(u - w/2) + 1, so
    s = u - i0 lies in [w/2 - 1, w/2) and tap j needs phi(s - j). With t = 2 s - w + 1 in [-1, 1):

        phi(s - j) ~= sum_p C[p, j] t^(P-1-p)   (C[0] is the highest power).

    The degree grows until the maximum fit error on a fine sample is below `tol` (absolute, the
    kernel peak is 1) or `max_degree` is reached.

    Returns:
        C: float64 array (P, width), highest power first.
    """
    t_fit = np.cos(np.pi * (np.arange(200) + 0.5) / 200)  # Chebyshev points on (-1, 1)
    t_chk = np.linspace(-1.0, 1.0, 2001)[:-1]
    taps = np.arange(width)
    # kernel values at every fit / check point (rows) for every tap (columns), computed once
    y_fit = kernel_values((t_fit[:, None] + width - 1) / 2.0 - taps, width, beta, kind)
    y_chk = kernel_values((t_chk[:, None] + width - 1) / 2.0 - taps, width, beta, kind)
    for deg in range(max(3, width), max_degree + 1):
        cheb = np.polynomial.chebyshev.chebfit(t_fit, y_fit, deg)  # (deg + 1, width), all taps at once
        coefs = np.zeros((deg + 1, width))
        for j in range(width):
            low = np.polynomial.chebyshev.cheb2poly(cheb[:, j])
            coefs[deg + 1 - len(low):, j] = low[::-1]  # highest power first
        fit = np.zeros_like(y_chk)
        for p in range(deg + 1):  # Horner on all taps, as the kernels evaluate it
            fit = fit * t_chk[:, None] + coefs[p]
        err = float(np.max(np.abs(fit - y_chk)))
        if err < tol:
            break
    return coefs


def kernel_ft(xi: np.ndarray, width: int, beta: float, kind: str = "es") -> np.ndarray:
    """Fourier transform of the kernel, Phi(xi) = int phi(z) cos(2 pi z xi) dz.

    Args:
        xi: frequencies in cycles per grid cell (|xi| <= 1 / (2 sigma) where used).

    Returns:
        float64 array shaped like xi. Gauss-Legendre quadrature on [0, w/2] with enough nodes
        for full double precision at the widths we use.
    """
    xi = np.asarray(xi, dtype=np.float64)
    nodes, weights = _leggauss(8 * width + 40)
    z = (nodes + 1.0) * (width / 4.0)  # map [-1, 1] -> [0, w/2]
    wz = weights * (width / 4.0) * kernel_values(z, width, beta, kind)
    return 2.0 * np.cos(2.0 * np.pi * np.multiply.outer(xi, z)) @ wz


@functools.lru_cache(maxsize=32)
def _leggauss(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights (numpy solves an eigenproblem each call: cached)."""
    nodes, weights = np.polynomial.legendre.leggauss(n)
    nodes.setflags(write=False)
    weights.setflags(write=False)
    return nodes, weights


def deapodisation(shape, grid_shape, width: int, beta: float, kind: str = "es") -> list[np.ndarray]:
    """1 / Phi per axis on the image grid (index m at frequency (m - N//2) / n_grid), the first
    axis times the orthonormal scale prod(N)^-1/2; float64."""
    out = []
    for n_img, n_grid in zip(shape, grid_shape):
        t = np.arange(n_img) - n_img // 2
        out.append(1.0 / kernel_ft(t / n_grid, width, beta, kind))
    out[0] = out[0] / math.sqrt(float(np.prod(shape)))
    return out
