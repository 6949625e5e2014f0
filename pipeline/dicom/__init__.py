"""DICOM ingest: scan any folder layout, group by study/series, choose the diagnostic axial CT
series, validate its geometry and read it into a HU `Volume` (RAS affine).

Public entry for one series: `load_dicom_series`; for a whole archive see `pipeline.ingest`.
"""

from pipeline.dicom.errors import IngestError
from pipeline.dicom.geometry import GeometryOptions, SeriesGeometry, check_geometry
from pipeline.dicom.load import LoadTimings, load_dicom_series, load_series
from pipeline.dicom.scan import ScanResult, SliceHeader, group_studies, read_header, scan_dicom
from pipeline.dicom.select import SelectOptions, SeriesChoice, select_series

__all__ = [
    "GeometryOptions",
    "IngestError",
    "LoadTimings",
    "ScanResult",
    "SelectOptions",
    "SeriesChoice",
    "SeriesGeometry",
    "SliceHeader",
    "check_geometry",
    "group_studies",
    "load_dicom_series",
    "load_series",
    "read_header",
    "scan_dicom",
    "select_series",
]
