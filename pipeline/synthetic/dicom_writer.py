"""Write a volume as a real DICOM series, one file per slice along the array's k axis.

The geometry is the inverse of what a reader does: our affine maps ``(i, j, k)`` to RAS+ mm
(nibabel's convention), DICOM stores LPS, so x and y flip sign. Within a slice the DICOM column
index runs along ``i`` and the row index along ``j``; the pixel matrix of slice ``k`` is therefore
``array[:, :, k].T`` (rows = j, columns = i).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

from pipeline.volume import spacing_of

# Uncompressed syntaxes are written as is; anything else goes through pydicom's encoders.
_NATIVE = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}
_SOP_CLASS = {"CT": CTImageStorage, "MR": MRImageStorage}
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class SeriesHeader:
    """Header values of one series; identifying fields look like a hospital's on purpose."""

    patient_name: str  # DICOM PN, e.g. "DOE^JANE"
    patient_id: str  # MRN-like
    patient_birth_date: str  # YYYYMMDD
    patient_sex: str  # "F" / "M" / "O"
    accession_number: str
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    study_date: str  # YYYYMMDD
    study_time: str = "101500"
    study_id: str = "1"
    study_description: str = "CT CHEST ABDOMEN PELVIS WITH CONTRAST"
    series_number: int = 2
    series_description: str = "AXIAL 5.0 SOFT TISSUE"
    institution_name: str = "SAINT ELSEWHERE GENERAL HOSPITAL"
    referring_physician_name: str = ""
    modality: str = "CT"
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL")
    manufacturer: str = "GE MEDICAL SYSTEMS"
    manufacturer_model_name: str = "Revolution CT"
    kvp: float = 120.0
    body_part_examined: str = "CHEST"
    convolution_kernel: str = "STANDARD"
    contrast_bolus_agent: str = ""
    patient_position: str = "HFS"
    slice_thickness: float | None = None  # None -> the spacing along k
    # Stored = (HU - intercept) / slope. A negative intercept gives unsigned 12-bit storage (the
    # common scanner layout, HU clipped to [intercept, intercept + 4095]); 0 gives signed int16.
    rescale_intercept: float = -1024.0
    rescale_slope: float = 1.0
    window_center: float = 40.0
    window_width: float = 400.0


def lps_geometry(affine: np.ndarray) -> tuple[list[float], list[float]]:
    """(ImageOrientationPatient, PixelSpacing) of the slices of a RAS affine."""
    lin = RAS_TO_LPS @ affine[:3, :3]
    spacing = spacing_of(affine)  # a sign flip (RAS -> LPS) keeps the columns' lengths
    row_cos = lin[:, 0] / spacing[0]  # direction in which the column index (i) grows
    col_cos = lin[:, 1] / spacing[1]  # direction in which the row index (j) grows
    iop = [float(v) for v in np.concatenate([row_cos, col_cos])]
    pixel_spacing = [float(spacing[1]), float(spacing[0])]  # DICOM: (between rows, between columns)
    return iop, pixel_spacing


def slice_positions(affine: np.ndarray, n_slices: int) -> np.ndarray:
    """ImagePositionPatient (LPS mm) of slices k = 0..n-1, shape (n, 3)."""
    lps = RAS_TO_LPS @ affine[:3, :4]
    k = np.arange(n_slices, dtype=float)
    return lps[:, 3][None, :] + k[:, None] * lps[:, 2][None, :]


def _stored(hu_slice: np.ndarray, header: SeriesHeader) -> tuple[np.ndarray, int, int]:
    """(stored pixels, PixelRepresentation, BitsStored) for one slice of HU."""
    values = np.rint((hu_slice.astype(np.float64) - header.rescale_intercept) / header.rescale_slope)
    if header.rescale_intercept < 0:
        return np.clip(values, 0, 4095).astype(np.uint16), 0, 12
    return np.clip(values, -32768, 32767).astype(np.int16), 1, 16


def _ds(value: float) -> str:
    """A DICOM DS string (at most 16 characters) without float noise such as 0.30000000000000004."""
    for digits in (12, 11, 10, 9, 8):
        text = format(float(value), f".{digits}g")
        if len(text) <= 16:
            return "0" if text == "-0" else text
    raise ValueError(f"cannot write {value!r} as a DICOM decimal string")


def _base_dataset(header: SeriesHeader) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = list(header.image_type)
    ds.SOPClassUID = _SOP_CLASS[header.modality]
    ds.StudyDate = header.study_date
    ds.SeriesDate = header.study_date
    ds.AcquisitionDate = header.study_date
    ds.ContentDate = header.study_date
    ds.StudyTime = header.study_time
    ds.SeriesTime = header.study_time
    ds.AccessionNumber = header.accession_number
    ds.Modality = header.modality
    ds.Manufacturer = header.manufacturer
    ds.InstitutionName = header.institution_name
    ds.ReferringPhysicianName = header.referring_physician_name
    ds.StudyDescription = header.study_description
    ds.SeriesDescription = header.series_description
    ds.ManufacturerModelName = header.manufacturer_model_name
    ds.PatientName = header.patient_name
    ds.PatientID = header.patient_id
    ds.PatientBirthDate = header.patient_birth_date
    ds.PatientSex = header.patient_sex
    ds.BodyPartExamined = header.body_part_examined
    if header.contrast_bolus_agent:
        ds.ContrastBolusAgent = header.contrast_bolus_agent
    if header.modality == "CT":
        ds.KVP = _ds(header.kvp)
        ds.ConvolutionKernel = header.convolution_kernel
    ds.PatientPosition = header.patient_position
    ds.StudyInstanceUID = header.study_instance_uid
    ds.SeriesInstanceUID = header.series_instance_uid
    ds.StudyID = header.study_id
    ds.SeriesNumber = header.series_number
    ds.FrameOfReferenceUID = header.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.RescaleIntercept = _ds(header.rescale_intercept)
    ds.RescaleSlope = _ds(header.rescale_slope)
    ds.RescaleType = "HU" if header.modality == "CT" else "US"
    ds.WindowCenter = _ds(header.window_center)
    ds.WindowWidth = _ds(header.window_width)
    return ds


def _file_names(n: int, file_order_seed: int | None) -> tuple[list[str], list[int]]:
    """(name per slice, order in which slices are written)."""
    if file_order_seed is None:
        return [f"IM{k + 1:05d}.dcm" for k in range(n)], list(range(n))
    rng = np.random.default_rng(file_order_seed)
    # Some PACS exports name files by an opaque hash without extension; a reader must not rely
    # on names or on directory order, so both are scrambled here.
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:
        name = "".join(rng.choice(list("0123456789ABCDEF"), size=8))
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names, [int(k) for k in rng.permutation(n)]


def write_ct_series(
    hu: np.ndarray,
    affine: np.ndarray,
    out_dir: Path,
    header: SeriesHeader,
    *,
    file_order_seed: int | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> list[Path]:
    """Write ``hu[:, :, k]`` as one DICOM file per k into ``out_dir``; return the paths in k order.

    ``affine`` maps (i, j, k, 1) to RAS+ mm. Any orientation works (axial, coronal, a one-slice
    localizer). UIDs of the instances derive from the series UID and k, so output is deterministic.
    With ``file_order_seed`` file names are random and files are written in a shuffled order.
    """
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise ValueError(f"expected a 3-d (i, j, k) array, got shape {hu.shape}")
    affine = np.asarray(affine, dtype=float)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ni, nj, nk = hu.shape
    iop, pixel_spacing = lps_geometry(affine)
    positions = slice_positions(affine, nk)
    thickness = header.slice_thickness or spacing_of(affine)[2]
    # The slice normal (row x column) tells which coordinate is the "slice location".
    normal = np.cross(np.asarray(iop[:3]), np.asarray(iop[3:]))
    sop_uids = [generate_uid(entropy_srcs=[header.series_instance_uid, str(k)]) for k in range(nk)]
    names, order = _file_names(nk, file_order_seed)
    syntax = UID(transfer_syntax)
    template = _base_dataset(header)
    template.Rows, template.Columns = nj, ni
    template.ImageOrientationPatient = [_ds(v) for v in iop]
    template.PixelSpacing = [_ds(v) for v in pixel_spacing]
    template.SliceThickness = _ds(thickness)

    paths = [out_dir / name for name in names]
    for k in order:
        ds = template.copy()
        ds.SOPInstanceUID = sop_uids[k]
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds(v) for v in positions[k]]
        ds.SliceLocation = _ds(float(positions[k] @ normal))
        pixels, representation, bits = _stored(hu[:, :, k].T, header)
        ds.PixelRepresentation = representation
        ds.BitsStored = bits
        ds.HighBit = bits - 1
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = "CTGLIP_SYNTH"
        ds.file_meta = meta
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
        if syntax in _NATIVE:
            ds.file_meta.TransferSyntaxUID = syntax
        else:
            ds.compress(syntax, np.ascontiguousarray(pixels))
        ds.save_as(paths[k], enforce_file_format=True)
    return paths
