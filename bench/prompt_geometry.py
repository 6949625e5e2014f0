"""Where the zero-shot AD prompts land in a model's text space, beside its organ's normal text: does the text side read
negation? (issue 33, item 3)

    python bench/prompt_geometry.py --checkpoint data/benchmark/benchmark_runs/seed0/grounded_XXXX/model
    python bench/prompt_geometry.py                      # the packaged MiniLM as it ships (the baseline)
    python bench/prompt_geometry.py --checkpoint M --pair liver:mass --pair spleen:splenomegaly

For each (organ, abnormality) pair -- by default the AD tasks of bench/results/benchmark.json -- and each of the
evaluation's paraphrase pairs ("Mass is not present in the liver." / "Mass is present in the liver.", ...): the cosine
of the negated and of the affirmed prompt with the organ's normal text ("liver: The liver is unremarkable.", the text a
normal organ is trained with, ``model.data.normal_text``), in the model's joint space (a checkpoint: its trained text
side and projection) or in the encoder's own sentence space (no checkpoint). A text side that reads negation puts every
negated prompt nearer the normal text than its affirmed twin. The baseline is measured in the same run. No split is
read. Writes --out (default bench/results/prompt_geometry.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from record import file_input, write_record  # noqa: E402

DEFAULT_OUT = REPO / "bench" / "results" / "prompt_geometry.json"
FALLBACK_PAIRS = ("liver:mass", "kidney_left:cyst", "spleen:splenomegaly", "lung_upper_lobe_left:nodule", "pancreas:mass",
                  "gallbladder:stone")


def geometry(encode, pairs: list[tuple[str, str]]) -> dict:
    """Per pair and paraphrase: cos(negated, normal text) and cos(affirmed, normal text) under ``encode`` (texts -> unit
    vectors); ``nearer`` counts the paraphrases whose negated prompt is the nearer one."""
    from model.data import normal_text
    from model.prompts import abnormality_prompts

    rows, nearer, total = [], 0, 0
    for organ, abn in pairs:
        negated, affirmed = abnormality_prompts(organ, abn)
        vec = encode([normal_text(organ), *negated, *affirmed])
        normal, neg, aff = vec[0], vec[1 : 1 + len(negated)], vec[1 + len(negated) :]
        n_cos, a_cos = (neg @ normal).tolist(), (aff @ normal).tolist()
        ok = sum(n > a for n, a in zip(n_cos, a_cos))
        nearer, total = nearer + ok, total + len(n_cos)
        rows.append({"organ": organ, "abnormality": abn, "negated_cos": [round(x, 4) for x in n_cos],
                     "affirmed_cos": [round(x, 4) for x in a_cos], "negated_nearer": ok, "paraphrases": len(n_cos)})
    return {"pairs": rows, "negated_nearer": nearer, "prompts": total,
            "every_pair": all(r["negated_nearer"] == r["paraphrases"] for r in rows)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/prompt_geometry.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--checkpoint", help="a trained model (its folder, run folder or step checkpoint); without: the encoder as shipped only")
    ap.add_argument("--pair", action="append", help="ORGAN:ABNORMALITY (vocabulary names); default: the AD tasks of the benchmark record")
    ap.add_argument("--record", type=Path, default=REPO / "bench" / "results" / "benchmark.json", help="where the default pairs come from")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    for pair in args.pair or []:
        if pair.count(":") != 1 or not all(pair.split(":")):
            ap.error(f"--pair takes ORGAN:ABNORMALITY, e.g. liver:mass; got {pair!r}")
    if args.pair:
        pairs, pairs_from = [tuple(p.split(":")) for p in args.pair], "--pair"
    elif args.record.is_file() and json.loads(args.record.read_text()).get("cohort", {}).get("ad_tasks"):
        pairs = [tuple(t) for t in json.loads(args.record.read_text())["cohort"]["ad_tasks"]]
        pairs_from = file_input(args.record)["path"]
    else:
        pairs, pairs_from = [tuple(p.split(":")) for p in FALLBACK_PAIRS], "FALLBACK_PAIRS of bench/prompt_geometry.py"

    import torch

    from model.config import ModelConfig
    from model.text import TextTower, build_text_states

    def unit(fn):
        return lambda texts: torch.nn.functional.normalize(fn(texts).float(), dim=-1).detach()

    shipped = TextTower(build_text_states(ModelConfig(text_trainable_layers=0))).eval()
    record = {"pairs_from": pairs_from, "baseline": {"encoder": "packaged MiniLM, frozen",
              **geometry(unit(shipped), pairs)}}
    if args.checkpoint:
        from model.checkpoint import load_model

        model = load_model(args.checkpoint)
        with torch.no_grad():
            record["model"] = {"checkpoint": str(args.checkpoint), **geometry(unit(lambda t: model.encode_text(t)), pairs)}
    inputs = {"pairs": pairs_from, **({"checkpoint": str(args.checkpoint)} if args.checkpoint else {})}
    record = write_record("prompt_geometry", record, script=__file__, argv=argv, inputs=inputs, out=args.out)
    for name in ("baseline", "model"):
        if name not in record:
            continue
        r = record[name]
        print(f"\n{name}: negated prompt nearer the organ's normal text for {r['negated_nearer']} of {r['prompts']} "
              f"paraphrases; every pair: {r['every_pair']}")
        for p in r["pairs"]:
            print(f"  {p['organ']:24s} {p['abnormality']:18s} {p['negated_nearer']}/{p['paraphrases']}  "
                  f"negated {min(p['negated_cos']):.3f}..{max(p['negated_cos']):.3f}  affirmed {min(p['affirmed_cos']):.3f}..{max(p['affirmed_cos']):.3f}")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
