"""Embed one CT study with a trained ct-glip model, score it zero-shot, and map text queries onto it.

The command line of ``model.inference.infer``:

    python -m model.infer --checkpoint data/models/grounded-XXXX/model --volume ct.nii.gz \\
        --mask organs.nii.gz --query "mass of the liver" --out out/
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from model.config import default_text_cache
from pipeline.ids import pseudonym

EPILOG = """\
The study goes through the pipeline's ingest (RAS, HU check, resampling to the checkpoint's spacing) and the
checkpoint's own preprocessing record: each organ of the label map is cropped centred, at its class's scale, with
the checkpoint's HU windows.

Writes into OUT:
  embeddings.parquet   organ, embedding: one row per organ with at least the checkpoint's minimum of voxels,
                       and a 'whole_study' row (the normalised mean of the organs')
  scores.json          per organ, per abnormality of the dictionary: abnormal minus normal prompt cosine
                       (paraphrases averaged) and its two-way softmax 'probability'
  heatmaps/Q.nii.gz    per --query, cosine of the organs' feature cells with the text, on the canonical grid
  heatmaps/Q.png       axial and coronal slices through the heatmap's peak over the CT
  summary.json         grid, organs found, seconds spent in ingest, segmentation, encoder, zero-shot scoring, heatmaps

Example:
  python -m model.infer --checkpoint data/models/grounded-XXXX/model --volume ct.nii.gz --mask organs.nii.gz \\
      --query "mass of the liver" --query "the spleen" --out out/

Without --mask the configured segmenter runs (TotalSegmentator; it needs its weights installed, docs/OWN_ARCHIVE.md).
Exit status: 0 done, 2 bad input (missing or foreign checkpoint, not a CT, missing weights), 1 anything else.
"""


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Which model and how it runs (checkpoint, device, precision, batch, text cache): the options every command
    applying a model shares."""
    p.add_argument(
        "--checkpoint",
        required=True,
        help="exported model folder (model.safetensors + config.json), the training "
        "run's folder holding it (data/models/grounded-XXXX/), or a step_*.pt checkpoint",
    )
    p.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu' or 'cuda[:N]' (default: auto)")
    p.add_argument(
        "--precision",
        choices=("float32", "bf16"),
        default="float32",
        help="bf16 autocasts the image encoder (default: float32)",
    )
    p.add_argument("--batch-size", type=int, default=16, help="organ crops per encoder call (default: 16)")
    p.add_argument(
        "--text-cache",
        default=str(default_text_cache()),
        help="folder caching the text encoder's frozen layers' states, so prompts (about 200 per organ for the "
        "dictionary) go through them on the first run only (default: $XDG_CACHE_HOME/ct-glip/text, else "
        "~/.cache/ct-glip/text; now %(default)s; '' = no disk cache: every run reads them again)",
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m model.infer",
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--volume", help="CT volume in HU (NIfTI .nii / .nii.gz)")
    src.add_argument("--dicom", help="folder holding one CT series (DICOM)")
    p.add_argument(
        "--mask", help="organ label map (NIfTI, TotalSegmentator 'total' v2 indices); default: run the segmenter"
    )
    p.add_argument(
        "--query", action="append", default=[], metavar="TEXT", help="text to map onto the study (repeatable)"
    )
    p.add_argument("--out", required=True, help="output folder (created; files in it are replaced)")
    add_model_options(p)
    p.add_argument(
        "--segmenter-device", default="auto", help="TotalSegmentator's device when no --mask (default: auto)"
    )
    p.add_argument(
        "--segmenter-full",
        action="store_true",
        help="TotalSegmentator's full-resolution model instead of the 3 mm 'fast' one",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        metavar="N",
        help="CPU threads for torch (default 0: torch's own choice, one per core). On a CPU shared with other "
        "jobs 1 can be much faster: threads that wait for each other lose the cores they spin on",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    from model.checkpoint import LegacyCheckpointError
    from model.inference import InferenceOptions, NotCTError, StudyInput, infer, write_outputs
    from pipeline.dicom.errors import IngestError
    from pipeline.segment import SegmenterConfig, SegmenterDependencyError, WeightsMissingError

    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    source = args.volume or args.dicom
    study = StudyInput(
        pseudonym("study", str(Path(source).resolve())), volume=args.volume, dicom=args.dicom, mask=args.mask
    )
    options = InferenceOptions(
        queries=tuple(args.query),
        device=args.device,
        text_cache_dir=args.text_cache or None,
        precision=args.precision,
        batch_size=args.batch_size,
        segmenter=SegmenterConfig(
            backend="totalsegmentator", fast=not args.segmenter_full, device=args.segmenter_device
        ),
    )
    try:
        for result in infer(args.checkpoint, [study], options):
            written = write_outputs(result, args.out, args.checkpoint)
    except (FileNotFoundError, LegacyCheckpointError, NotCTError, WeightsMissingError, SegmenterDependencyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except IngestError as err:
        print(f"error: the DICOM series cannot be read: {err.reason} ({err.detail})", file=sys.stderr)
        return 2
    except ValueError as err:  # another model version, a bad shape, no organ to embed
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"{result.study_id}: {len(result.embeddings) - 1} organs embedded; "
        + ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items())
    )
    for name, path in written.items():
        print(f"  {name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
