"""Toeplitz embedding of the NUFFT normal operator A^H diag(w) A.

For the NUFFT A in sigpy's convention, (A^H W A x)[t] = sum_s psf(t - s) x[s] with

    psf(d) = prod(N)^-1 sum_j w_j exp(+2 pi i k_j . d / N),   d in (-N, N) per axis,

a Toeplitz (block-Toeplitz) matrix: embedded in a circulant on the 2N grid it is applied with two
FFTs of that grid (Wajer & Pruessmann 2001, "Major speedup of reconstruction for sensitivity
encoding with arbitrary trajectories", Proc. ISMRM 9, p. 767; Fessler et al. 2005, "Toeplitz-based
iterative image reconstruction for MRI with correction for magnetic field inhomogeneity", IEEE
Trans. Signal Process. 53:3393). The psf is itself an
adjoint NUFFT (of w, at the points 2k on a 2N image), computed once per weight vector.

Each application uses pruned FFTs: the zero-padded input has data in one corner, so the
forward transform runs axis by axis on the non-zero lines only, and the inverse crops axis by
axis as soon as it can; that is ~0.58 of a full 3D FFT pair (0.75 in 2D).
"""
from __future__ import annotations

import hashlib

import numpy as np
import scipy.fft


def psf_kernel(nufft_cls, coord: np.ndarray, shape: tuple, weights: np.ndarray | None, eps: float,
               threads: int, dtype: np.dtype) -> np.ndarray:
    """Fourier-domain Toeplitz kernel K (the FFT of the wrapped psf) on the 2N grid.

    Args:
        nufft_cls: the Nufft class (passed in to avoid an import cycle).
        coord: (M, ndim) points in cycles per FOV.
        shape: image shape N.
        weights: (M,) real or complex sample weights, or None for all ones.
        eps: tolerance of the psf NUFFT.
        threads: threads for the psf NUFFT.
        dtype: complex dtype of the result's data (K is returned real, float32/float64, when the
            weights are real, since the psf is then Hermitian).

    Returns:
        K shaped 2N (uncentred FFT layout): A^H W A x = crop(IFFT(K * FFT(pad(x)))).
    """
    shape = tuple(shape)
    ndim = len(shape)
    big = tuple(2 * n for n in shape)
    m = coord.shape[0]
    cdt = np.dtype(dtype)
    w = np.ones(m, cdt) if weights is None else np.asarray(weights).reshape(m).astype(cdt)
    real = weights is None or not np.iscomplexobj(weights)
    op2 = nufft_cls(2.0 * np.asarray(coord, np.float64), big, eps=eps, threads=threads, dtype=cdt)
    psf = op2.adjoint(w)  # centred: index m <-> d = m - N
    del op2
    psf *= np.sqrt(float(np.prod(big))) / float(np.prod(shape))
    psf = np.fft.ifftshift(psf)  # index d mod 2N
    for a, n in enumerate(shape):  # d = -N never enters the convolution; 0 keeps psf Hermitian
        idx = [slice(None)] * ndim
        idx[a] = n
        psf[tuple(idx)] = 0
    k = scipy.fft.fftn(psf, workers=threads, overwrite_x=True)
    rdt = np.float32 if np.dtype(dtype) == np.complex64 else np.float64
    return k.real.astype(rdt) if real else k.astype(dtype)


class KernelCache:
    """The Toeplitz kernels of one plan: built on first use per weight vector and dtype, kept for
    the unweighted case and the last two weight vectors.

    Weights are keyed by a SHA-1 of their bytes; the hash (~ms) is remembered for the same array
    object while its sum and a sample of its entries are unchanged (an iterative solver passes
    the same array every time), so pass a new array rather than editing the old one in place.
    """

    def __init__(self, nufft_cls, coord: np.ndarray, shape: tuple, eps: float, threads: int) -> None:
        self._cls, self._coord, self._shape, self._eps, self._threads = nufft_cls, coord, tuple(shape), eps, threads
        self._m = coord.shape[0]
        self._cache: dict = {}
        self._key_memo: dict = {}

    def get(self, weights: np.ndarray | None, dtype) -> np.ndarray:
        """K for these weights (None: all ones) and complex dtype, as `psf_kernel` returns it."""
        if weights is None:
            key = None
        else:
            w = np.asarray(weights)
            if w.size != self._m:
                raise ValueError(f"normal: weights must have {self._m} entries, got shape {w.shape}")
            quick = (id(w), w.shape, w.dtype.str, complex(np.sum(w, dtype=np.complex128)),
                     w.reshape(-1)[:: max(1, w.size // 64)].tobytes())
            key = self._key_memo.get(quick)
            if key is None:
                key = hashlib.sha1(np.ascontiguousarray(w).view(np.uint8)).hexdigest() + str(w.dtype)
                self._key_memo = {quick: key}
        cached = self._cache.get((key, np.dtype(dtype)))
        if cached is not None:
            return cached
        kern = psf_kernel(self._cls, self._coord, self._shape, weights, self._eps, self._threads, np.dtype(dtype))
        weighted = [k for k in self._cache if k[0] is not None]
        if key is not None and len(weighted) >= 2:
            del self._cache[weighted[0]]
        self._cache[(key, np.dtype(dtype))] = kern
        return kern


def apply_normal(kernel: np.ndarray, x: np.ndarray, ndim: int, workers: int) -> np.ndarray:
    """crop(IFFT(K * FFT(pad(x)))) over the last ndim axes, with pruned FFTs.

    Args:
        kernel: K from psf_kernel, shape 2N.
        x: complex (B, *N).
        ndim: 2 or 3.
        workers: scipy.fft threads.

    Returns:
        complex (B, *N), dtype of x.
    """
    shape = x.shape[-ndim:]
    y = x
    for ax in range(-1, -ndim - 1, -1):  # zero-pad one axis at a time, transforming only non-zero lines
        y = scipy.fft.fft(y, n=2 * y.shape[ax], axis=ax, workers=workers, overwrite_x=y is not x)
    y *= kernel
    for i, ax in enumerate(range(-ndim, 0)):  # inverse, cropping each axis right after its pass
        y = scipy.fft.ifft(y, axis=ax, workers=workers, overwrite_x=True)
        idx = [slice(None)] * y.ndim
        idx[ax] = slice(0, shape[i])
        y = y[tuple(idx)]
    return np.ascontiguousarray(y, dtype=x.dtype)
