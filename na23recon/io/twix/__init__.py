"""Siemens twix (.dat) input and output, built on twixtools' binary layouts.

    header.py    the protocol header's text buffers -> `Acquisition` (`acquisition_from_header`)
    layout.py    the file layout: measurements, readout headers (MDH), counters -> indices
    read.py      `read_scan`: one measurement -> `Scan`, samples copied through a memory map
    write.py     `write_scan`: `Scan` -> a VD/VE file through `twixtools.write_twix`
    describe.py  `describe` / `format_description`: the `na23recon info` summary

Readout <-> counter mapping (the same in both directions, see `layout.readout_keys`):

- `Eco` is the echo index, `Rep` the repetition; `Ave` is kept apart, never averaged: the
  repetition axis of `Scan.data` runs over (Rep, Ave) pairs, Ave fastest.
- The readout (spoke) index is the rank of the remaining counters
  (Sli, Phs, Set, Ida..Ide, Par, Lin, Seg) in lexicographic order, plus an occurrence number for
  readouts whose counters are all equal (so repeated lines stay apart). For a Cartesian scan
  that is phase-encoding line order per partition. Sli ranks first, so a multi-slice 2D scan
  (sSliceArray.lSize > 1, `Geometry.slice_positions_mm`) comes out slice-major: the slices are
  consecutive groups of readouts (`core.scan`).
- The writer stores readout r as Lin = r % 65536, Par = r // 65536 (counters are uint16), so
  a 3D radial scan of any size round-trips in acquisition order; a multi-slice geometry's
  readouts as Sli = slice, Lin/Par = readout within the slice, with one slice-array entry each.
- Noise-adjust readouts (flag NOISEADJSCAN) of the measurement, or, if it has none, of the
  measurement just before it, are concatenated along samples into `Scan.noise` (ncoil, nnoise).
"""

from .describe import describe, format_description
from .header import Header, acquisition_from_header, parse_ascconv
from .read import SUPPORTED_NUCLEUS, list_measurements, read_header, read_scan
from .write import build_header, write_scan

__all__ = ["read_scan", "read_header", "write_scan", "build_header", "describe", "format_description",
           "acquisition_from_header", "list_measurements", "parse_ascconv", "Header", "SUPPORTED_NUCLEUS"]
