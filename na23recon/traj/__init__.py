"""Trajectories as the scanner plays them (k in 1/m, t in s from excitation, G in T/m) and their
density compensation. Every generator returns a `core.Trajectory` whose `design` is a
`gradients.GradientDesign`.

radial (3D radial, 2D golden angle), dar (density-adapted radial; Nagel et al. MRM 2009), tpi
(twisted projections; Boada et al. MRM 1997), gradients (GradientDesign and the limit checks), dcf
(analytic shells, Pipe & Menon MRM 1999), make (generate/write for the CLI), figure (PNG).
"""
