"""Trajectories as the scanner plays them (k in 1/m, t in s, G in T/m) and their density compensation.

radial (3D radial, 2D golden angle), dar (Nagel 2009), tpi (Boada 1997), gradients (result type and
limit checks), dcf (analytic shells, Pipe-Menon), make (generate/write for the CLI), figure (PNG).
"""
