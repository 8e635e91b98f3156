"""B0 field maps for the off-resonance model: read one onto the reconstruction grid, or estimate one.

- `resample_b0_map`: a field map (NIfTI, Hz) on any grid in scanner coordinates, trilinearly
  resampled onto the reconstruction's voxels through both affines (voxel -> RAS mm), a 1H map scaled
  to the sodium frequency by gamma(23Na)/gamma(1H) = 11.262/42.577 (same field, other nucleus).
  A map finer than the reconstruction (a 1H map at 1-2 mm for sodium at 3-4 mm) is sampled at
  n^3 sub-voxel points per voxel (n per axis = the voxel / the map's voxel, rounded, at most
  `MAX_SUBVOXEL`): the frequencies within each voxel that the intravoxel-dephasing model of
  `recon.offres` averages.
- `estimate_b0`: the field from complex coil images at two echo times, f = arg(sum_c conj(x1_c)
  x2_c) / (2 pi dTE) (the coil-combined phase difference, as in the dual-echo field maps of Schneider
  & Glover, MRM 1991), masked to voxels with signal, taken about the masked mean phase (the unambiguous
  range, 1/dTE wide, centred on the mean field rather than on 0; no spatial unwrapping: a
  difference that still reaches +-0.8 pi is reported as possibly wrapped) and smoothed by a
  normalised (masked) Gaussian. The sign is the signal model's: a positive f advances the phase
  (`recon.offres`).
"""

from __future__ import annotations

import os

import numpy as np
from scipy import ndimage

from .. import GAMMA_BAR_H1_HZ_PER_T, GAMMA_BAR_NA23_HZ_PER_T
from ..core import Scan, Trajectory
from ..core.image import Image
from ..errors import InputError
from .adjoint import adjoint_recon
from .layout import default_dcf, kspace_layout
from .operators import make_nufft

__all__ = ["MAX_B0_HZ", "MAX_SUBVOXEL", "subvoxel_grid", "nucleus_scale",
           "resample_b0_map", "load_b0_map", "estimate_b0", "b0_from_scans"]

MAX_B0_HZ = 1000.0
"""Largest |f| accepted at the sodium frequency: 1 kHz is ~ 89 ppm at 3 T, ~ 38 ppm at 7 T, far beyond
any shimmed head; a larger value means a map in other units (rad/s, a 1H map read as 23Na, ...)."""


MAX_SUBVOXEL = 4
"""Most sub-voxel points per axis (4^3 = 64 frequencies per voxel: a 1 mm map at 3.75 mm voxels)."""


def subvoxel_grid(map_affine: np.ndarray, affine: np.ndarray) -> tuple[int, int, int]:
    """Sub-voxel points per axis of the grid `affine` for a map on `map_affine`: each voxel edge over
    the map's smallest voxel, rounded (1 where the map is not at least 1.5x finer), at most MAX_SUBVOXEL."""
    vox = np.linalg.norm(np.asarray(affine, np.float64)[:3, :3], axis=0)
    fine = float(np.min(np.linalg.norm(np.asarray(map_affine, np.float64)[:3, :3], axis=0)))
    return tuple(int(min(MAX_SUBVOXEL, max(1, np.floor(v / fine + 0.5)))) for v in vox)


def nucleus_scale(nucleus: str) -> float:
    """Factor from a map's Hz at `nucleus` to Hz at the sodium frequency."""
    if nucleus == "23Na":
        return 1.0
    if nucleus == "1H":
        return GAMMA_BAR_NA23_HZ_PER_T / GAMMA_BAR_H1_HZ_PER_T
    raise InputError(f"--b0-map-nucleus must be 23Na or 1H, got {nucleus!r}")


def resample_b0_map(fmap: Image, affine: np.ndarray, shape: tuple[int, ...], nucleus: str = "23Na",
                    what: str = "--b0-map", subvoxel: bool = False) -> np.ndarray:
    """The field (Hz at 23Na) at the voxel centres of the grid (affine, shape): float32 `shape`; with
    `subvoxel` and a map finer than the grid (`subvoxel_grid`), float32 (*shape, S) at S = n0 n1 n2
    points evenly inside each voxel (offsets (j + 1/2)/n - 1/2 voxel along each axis).

    InputError for a map holding a non-finite value, one with several volumes, one whose grid does not
    cover every voxel centre of the target (half a voxel of margin), or |f| above `MAX_B0_HZ`.
    """
    arr = np.asarray(fmap.array)
    if arr.ndim == 4:
        if arr.shape[3] != 1:
            raise InputError(f"{what} has {arr.shape[3]} volumes: give one field map (Hz)")
        arr = arr[..., 0]
    if np.iscomplexobj(arr):
        raise InputError(f"{what} is complex: give the field in Hz (real)")
    arr = arr.astype(np.float64)
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise InputError(f"{what} holds {bad} non-finite value(s): set voxels without a field estimate to 0")
    hz = arr * nucleus_scale(nucleus)
    if np.max(np.abs(hz)) > MAX_B0_HZ:
        raise InputError(f"{what} reaches {np.max(np.abs(hz)):.4g} Hz at the sodium frequency (limit {MAX_B0_HZ:g}): "
                         "is it in Hz, and is --b0-map-nucleus right?")
    shape = tuple(int(s) for s in shape)
    idx = np.indices(shape, dtype=np.float64).reshape(3, -1)
    world = affine[:3, :3] @ idx + affine[:3, 3:4]
    vox = np.linalg.solve(fmap.affine[:3, :3], world - fmap.affine[:3, 3:4])
    n = np.asarray(arr.shape[:3], dtype=np.float64)[:, None]
    outside = np.any((vox < -0.5 - 1e-3) | (vox > n - 0.5 + 1e-3), axis=0)
    if np.any(outside):
        raise InputError(f"{what} does not cover the reconstruction's field of view ({int(outside.sum())} of "
                         f"{outside.size} voxels outside it): check its affine / geometry")
    out = ndimage.map_coordinates(hz, vox, order=1, mode="nearest")
    grid = subvoxel_grid(fmap.affine, affine) if subvoxel else (1, 1, 1)
    if grid == (1, 1, 1):
        return out.reshape(shape).astype(np.float32)
    offs = [(np.arange(n) + 0.5) / n - 0.5 for n in grid]
    sub = np.empty((idx.shape[1], int(np.prod(grid))), np.float32)
    for s_, d in enumerate(np.stack(np.meshgrid(*offs, indexing="ij"), axis=-1).reshape(-1, 3)):
        w = affine[:3, :3] @ (idx + d[:, None]) + affine[:3, 3:4]
        v = np.linalg.solve(fmap.affine[:3, :3], w - fmap.affine[:3, 3:4])
        sub[:, s_] = ndimage.map_coordinates(hz, v, order=1, mode="nearest")
    return sub.reshape(shape + (sub.shape[1],))


def load_b0_map(path: str | os.PathLike, affine: np.ndarray, shape: tuple[int, ...], nucleus: str = "23Na",
                subvoxel: bool = False) -> np.ndarray:
    """`resample_b0_map` of the NIfTI file at `path` (InputError when it is missing or unreadable)."""
    if not os.path.isfile(path):
        raise InputError(f"--b0-map: file not found: {path}")
    return resample_b0_map(Image.load(path), affine, shape, nucleus, subvoxel=subvoxel)


def estimate_b0(x1: np.ndarray, x2: np.ndarray, dte_s: float, threshold: float = 0.15, smooth_vox: float = 1.0
                ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Field map (Hz) and mask from complex coil images (ncoil, *shape) at TE1 and TE2 = TE1 + dte_s.

    threshold: mask voxels whose combined magnitude is below this fraction of its 99th percentile.
    smooth_vox: Gaussian SD (voxels) of the masked smoothing (0: none). Returns (float32 Hz, 0
    outside the mask; bool mask; a dict for the sidecar: dTE, mask size, range, `possibly_wrapped`).
    """
    if not np.isfinite(dte_s) or abs(dte_s) < 1e-6:
        raise InputError(f"the echo times must differ (dTE = {dte_s * 1e3:.4g} ms)")
    x1 = np.asarray(x1, np.complex128)
    x2 = np.asarray(x2, np.complex128)
    if x1.shape != x2.shape:
        raise InputError(f"the two echoes' images differ in shape: {x1.shape} and {x2.shape}")
    prod = np.sum(np.conj(x1) * x2, axis=0)
    mag = np.sqrt(np.sqrt(np.sum(np.abs(x1) ** 2, axis=0) * np.sum(np.abs(x2) ** 2, axis=0)))
    ref = float(np.percentile(mag, 99))
    if not ref > 0:
        raise InputError("the echo images hold no signal: cannot estimate a field map")
    mask = mag >= threshold * ref
    centre = np.angle(np.sum(prod[mask]))          # mean phase of the object
    phase = np.angle(prod * np.exp(-1j * centre))  # about it: +-pi around the mean field
    wrapped = bool(np.any(np.abs(phase[mask]) > 0.8 * np.pi))
    hz = np.where(mask, (phase + centre) / (2 * np.pi * dte_s), 0.0)
    if smooth_vox > 0:  # normalised convolution: the mask's edge is not pulled towards 0
        num = ndimage.gaussian_filter(hz * mask, smooth_vox)
        den = ndimage.gaussian_filter(mask.astype(np.float64), smooth_vox)
        hz = np.where(mask, num / np.maximum(den, 1e-6), 0.0)
    info = {"dte_ms": round(dte_s * 1e3, 6), "mask_voxels": int(mask.sum()), "threshold": threshold,
            "smooth_vox": smooth_vox, "range_hz": [float(hz[mask].min()), float(hz[mask].max())] if mask.any() else None,
            "unambiguous_range_hz": round(1.0 / abs(dte_s), 3), "possibly_wrapped": wrapped}
    return hz.astype(np.float32), mask, info


def b0_from_scans(scans: list[Scan], traj: Trajectory, threshold: float = 0.15, smooth_vox: float = 1.0,
                  eps: float = 1e-3) -> Image:
    """Field map from the first two echoes of one multi-echo scan, or from two single-echo scans at
    different TE read with the same k-space trajectory (only its k is used; the echo times come from
    the scans' protocols). Each echo is reconstructed coil by coil with the density-compensated
    adjoint at the protocol's matrix (3D trajectories), then `estimate_b0`. Returns an Image in Hz
    on the scan's grid with a `b0map` sidecar block."""
    echoes = []  # (scan, echo index, TE ms)
    for sc in scans:
        tes = sc.acquisition.te_ms
        for e in range(sc.necho):
            te = tes[e] if tes is not None and e < len(tes) else None
            echoes.append((sc, e, te))
    if len(echoes) < 2:
        raise InputError("a field map needs two echoes: a multi-echo scan or two scans at different TE")
    (s1, e1, te1), (s2, e2, te2) = echoes[:2]
    if te1 is None or te2 is None:
        raise InputError("the scans' protocols give no echo time: cannot turn the phase into Hz")
    geom = s1.acquisition.geometry
    if geom is None:
        raise InputError("the scan's header gives no field of view / matrix: cannot place the field map")
    if s2 is not s1 and (s2.acquisition.geometry is None or s2.acquisition.geometry.to_dict() != geom.to_dict()
                         or s2.data.shape[2:] != s1.data.shape[2:]):
        raise InputError("the two scans differ in geometry, coils or readouts: they must be the same protocol "
                         "at two echo times")
    for sc in {id(s1): s1, id(s2): s2}.values():
        sc.check_trajectory(traj)
    coord = traj.coord(geom.fov_mm)
    if kspace_layout(coord) != "3d":
        raise InputError("b0map reconstructs 3D trajectories only")
    shape = tuple(int(v) for v in geom.matrix)
    dcf = traj.dcf if traj.dcf is not None else default_dcf(coord, "3d", shape)[0]
    op = make_nufft(coord, shape, eps=eps)
    imgs = [adjoint_recon(sc.data[:, e].mean(axis=0), coord, dcf, shape, op=op) for sc, e, _ in ((s1, e1, te1),
                                                                                               (s2, e2, te2))]
    hz, mask, info = estimate_b0(imgs[0], imgs[1], (te2 - te1) * 1e-3, threshold=threshold, smooth_vox=smooth_vox)
    info["te_ms"] = [te1, te2]
    info["method"] = "coil-combined phase difference of the adjoint images / (2 pi dTE), masked, smoothed"
    return Image(hz, geom.affine(shape), {"acquisition": s1.acquisition.sidecar(), "unit": "Hz at 23Na",
                                          "b0map": info})
