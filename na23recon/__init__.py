"""na23recon: sodium (23Na) MRI reconstruction and tissue sodium concentration (TSC) maps.

Chain: Siemens twix -> non-Cartesian k-space + trajectory -> numba NUFFT -> coil handling and
adjoint / CG / compressed-sensing reconstruction -> B1 correction -> TSC in mM -> NIfTI + QC.
Conventions (axes, units, trajectory scaling) are in DESIGN.md and restated in each module.
"""

__version__ = "0.1.0"

GAMMA_BAR_NA23_HZ_PER_T = 11.262e6
"""gamma / 2pi of 23Na in Hz/T."""
GAMMA_BAR_H1_HZ_PER_T = 42.577e6
