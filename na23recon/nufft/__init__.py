"""Non-uniform FFT for 2D/3D MRI: ES-kernel numba gridding, the `Nufft` plan, Toeplitz normal operator.

    from na23recon.nufft import Nufft
    op = Nufft(coord, shape, eps=1e-3)   # coord (..., ndim) in cycles/FOV, edge of the matrix at +-N/2
    y = op.forward(x)                    # (..., *shape) -> (..., *coord.shape[:-1]), = sigpy.nufft
    x = op.adjoint(y)                    # exact adjoint, = sigpy.nufft_adjoint
    z = op.normal(x, weights=None)       # A^H diag(w) A x by Toeplitz embedding
    g = op.spread(v); v = op.interp(g)   # gridding only (kernel convolution on the oversampled grid)
    A = op.linop()                       # sigpy Linop (A.H, A.N)

Modules: kernel (ES kernel, Horner fit, Fourier transform), spread (numba kernels), planning
(grid size, upsampling choice, point sorting and work partition, thread pool), plan (`Nufft`),
toeplitz (normal operator and its kernel cache), linop (sigpy wrappers: the package's only NUFFT
Linops).
"""
from .plan import Nufft

__all__ = ["Nufft"]
