"""Where the zero-shot AD prompts land in the frozen text encoder's space, beside the grounded model's own
training strings: why zero-shot abnormality detection does not transfer (README, "What the record says").

    python bench/prompt_geometry.py                     # the demo's frozen MiniLM, six (organ, abnormality) pairs
    python bench/prompt_geometry.py --pair liver:mass --pair spleen:splenomegaly

For each pair: the mean cosine of the normal prompts ("Mass is not present in the liver.", ...) and of the
abnormal prompts ("Mass is present in the liver.", ...) with the training strings "normal liver"
(`model.data.normal_text`) and "mass of the liver" (`model.data.dictionary_text`), in the encoder's own sentence
space, before any trained projection. Where the normal prompts sit nearer the abnormal training string than the
normal one, the projection learned on training strings cannot tell the two prompt sets apart by what they mean.
No weights are trained and no split is read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PAIRS = ("liver:mass", "kidney_left:cyst", "spleen:splenomegaly", "lung_upper_lobe_left:nodule", "pancreas:mass",
         "gallbladder:stone")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/prompt_geometry.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--pair", action="append", help="ORGAN:ABNORMALITY (vocabulary names); default six pairs")
    args = ap.parse_args(argv)
    for pair in args.pair or []:
        if pair.count(":") != 1 or not all(pair.split(":")):
            ap.error(f"--pair takes ORGAN:ABNORMALITY, e.g. liver:mass; got {pair!r}")

    import torch

    from model.config import demo
    from model.data import dictionary_text, normal_text
    from model.eval.prompts import abnormality_prompts
    from model.text import build_text_encoder

    encoder = build_text_encoder(demo().model)

    def unit(texts: list[str]) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.as_tensor(encoder(texts), dtype=torch.float32), dim=-1)

    print(f"{'organ':24s} {'abnormality':14s} {'normal prompts vs':>22s} {'abnormal prompts vs':>22s}")
    print(f"{'':24s} {'':14s} {'normal':>10s} {'abnormal':>11s} {'normal':>10s} {'abnormal':>11s}  (training strings)")
    closer = 0
    pairs = args.pair or list(PAIRS)
    for pair in pairs:
        organ, abnormality = pair.split(":")
        train = unit([normal_text(organ), dictionary_text(abnormality, organ)])
        normal, abnormal = abnormality_prompts(organ, abnormality)
        n, a = (unit(normal) @ train.T).mean(0), (unit(abnormal) @ train.T).mean(0)
        closer += int(n[1] > n[0])
        print(f"{organ:24s} {abnormality:14s} {n[0]:10.3f} {n[1]:11.3f} {a[0]:10.3f} {a[1]:11.3f}")
    print(f"normal prompts nearer the abnormal training string than the normal one: {closer} of {len(pairs)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
