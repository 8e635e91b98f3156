"""Results for PACS and shared studies: DICOM series, BIDS-style derivatives, de-identification.

    deid.py   who and which study the outputs belong to (`Identity`), read from the twix header or a
              reference DICOM series, and its de-identified form (DICOM PS3.15 Annex E basic profile)
    dicom.py  `export_dicom`: an image (TSC, its SD, B1, sodium) -> an integer MR derived series with
              RescaleSlope/Intercept, a Parametric Map with float pixels (mM maps), the QC montage as
              Secondary Capture
    bids.py   BIDS-style derivative names, `dataset_description.json` and the BIDS sidecar keys
"""

from .bids import bids_keys, bids_prefix, write_dataset_description
from .deid import Identity, identity_for
from .dicom import export_dicom

__all__ = ["export_dicom", "Identity", "identity_for", "bids_keys", "bids_prefix", "write_dataset_description"]
