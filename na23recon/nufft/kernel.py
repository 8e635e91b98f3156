"""Gridding kernels (ES and PSWF): parameters, piecewise-polynomial fit, Fourier transform.

The kernel is FINUFFT's "exponential of semicircle",

    phi(z) = exp(beta * (sqrt(1 - (2 z / w)^2) - 1)),   |z| <= w / 2  (z in oversampled-grid units),

with support w (the number of taps per axis) and shape parameter beta, both chosen from the
requested tolerance eps and the upsampling factor sigma (Barnett, Magland & af Klinteberg,
"A parallel nonuniform fast Fourier transform library based on an 'exponential of semicircle'
kernel", SIAM J. Sci. Comput. 41(5), C479-C504, 2019).

At upsampling 2 and tight tolerances (PSWF_EPS <= eps < TIGHT_EPS) the kernel is instead the
prolate spheroidal wave function psi_0(c, 2 z / w) (Slepian & Pollak 1961, Bell Syst. Tech. J.
40:43), the function the ES kernel approximates and the one FINUFFT 2.5 uses: it reaches eps 1e-6
with 7 taps where the ES kernel needs 8 ((8/7)^3 = 1.5x the taps in 3D).

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
PSWF_EPS = 5e-7  # the PSWF rule (kernel_params) was measured down to this eps
PSWF_C_OVER_W = 2.34  # PSWF bandwidth parameter c / w at upsampling 2 (see kernel_params)


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
    """Kernel family, width and shape parameter for a tolerance: ("es", w, beta) from `es_params`,
    or ("pswf", w, c) at upsampling 2 for PSWF_EPS <= eps < TIGHT_EPS.

    PSWF rule: w = ceil(log10(10 / eps)) taps (FINUFFT's ES width rule, one tap fewer than
    `es_params` gives there), c = 2.34 w. A scan of c against the exact NUDFT (3D 30^3, 20 k
    random points, complex128) gave relative l2 errors 7.6e-7 at w = 7, c = 16.4 (eps 1e-6) and
    7.4e-6 at w = 6, c = 14 (eps 1e-5), minima of the scan; the ES kernel with one tap fewer
    reached only 1.4e-6 / 1.4e-5.
    """
    if upsampling == 2.0 and PSWF_EPS <= eps < TIGHT_EPS:
        w = int(min(max(math.ceil(-math.log10(eps / 10.0)), _MIN_WIDTH), _MAX_WIDTH))
        return "pswf", w, PSWF_C_OVER_W * w
    w, beta = es_params(eps, upsampling)
    return "es", w, beta


def pswf_kernel(z: np.ndarray, width: int, c: float) -> np.ndarray:
    """PSWF kernel psi_0(c, 2 z / w) / psi_0(c, 0) (peak 1, zero for |z| >= width / 2); z in grid cells."""
    z = np.asarray(z, dtype=np.float64)
    x = 2.0 * z / width
    inside = np.abs(x) < 1.0
    out = np.zeros_like(x)
    v0 = scipy.special.pro_ang1(0, 0, c, 0.0)[0]
    out[inside] = scipy.special.pro_ang1(0, 0, c, x[inside])[0] / v0
    return out


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
    for deg in range(max(3, width), max_degree + 1):
        coefs = np.empty((deg + 1, width))
        err = 0.0
        for j in range(width):
            s = (t_fit + width - 1) / 2.0
            c = np.polynomial.chebyshev.chebfit(t_fit, kernel_values(s - j, width, beta, kind), deg)
            poly = np.zeros(deg + 1)
            low = np.polynomial.chebyshev.cheb2poly(c)
            poly[: len(low)] = low
            poly = poly[::-1]  # highest power first
            coefs[:, j] = poly
            s_chk = (t_chk + width - 1) / 2.0
            err = max(err, float(np.max(np.abs(np.polyval(poly, t_chk) - kernel_values(s_chk - j, width, beta, kind)))))
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
