"""Synthetic CT cohort: DICOM series, RIS reports and ground truth that look like a hospital export.

`dicom_writer.write_ct_series` writes any volume as a DICOM series; `cohort.generate_cohort` writes a
whole cohort; `cohort.synthesize_study` returns one study in memory (for reader tests).
"""
