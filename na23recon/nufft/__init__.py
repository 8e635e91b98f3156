"""Non-uniform FFT: numba spreading/interpolation with an ES kernel, the `Nufft` plan, Toeplitz normal op."""
from .plan import Nufft

__all__ = ["Nufft"]
