"""The semi-supervised ablation on IMDB: word2vec only -> + LM pretraining -> + adversarial ->
+ virtual adversarial -> + entropy minimisation, each next to TF-IDF + LR from the same run.

    rnn-sentiment pretrain configs/imdb-lm.yaml data.source=../shared/data/imdb \
        output.dir=../models/lm output.name=imdb-encoder                    # the encoder, first
    python scripts/benchmark_semi_supervised.py --data ../shared/data \
        --encoder ../models/lm/imdb-encoder --runs ../models/semi --reuse
    python scripts/benchmark_semi_supervised.py ... --rows word2vec,lm,lm+at --seeds 42,43

Every row is a real ``train`` on IMDB's 22,500 training reviews (validation carved with the
seed, as the presets do), scored once on the 25,000 test reviews; ``word2vec`` is the
``imdb-gru`` preset, the others ``imdb-lm`` started from ``--encoder`` with the row's losses
on. "training time" is the fine-tuning's, plus (for rows from the encoder) the encoder's own
word2vec and language-model time from its metrics.json. ``--reuse`` takes a finished run of
the same recipe instead of training it again, so rows can be added across sessions. The table
(Markdown) and all figures (JSON) are written to ``--out``. Needs scikit-learn (``.[bench]``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmark_accuracy import preset_config, tfidf_baseline, trained_run

from rnn_sentiment.compare import measure
from rnn_sentiment.data.sources import load_splits

# Radii in units of the embedding RMS (training.adversarial): 5, as Miyato et al. used on
# normalised embeddings; entropy weight 1, each term weighted alike as in Sachan et al.
LOSSES = {
    "at": ["training.adversarial.epsilon={at}"],
    "vat": ["training.adversarial.vat_epsilon={vat}"],
    "em": ["training.adversarial.entropy_weight={em}"],
}
ROWS = {
    "word2vec": "word2vec only (imdb-gru)",
    "lm": "+ LM pretraining (imdb-lm)",
    "lm+at": "+ adversarial",
    "lm+vat": "+ virtual adversarial (alone)",
    "lm+em": "+ entropy minimisation (alone)",
    "lm+at+vat": "+ adversarial + virtual adversarial",
    "lm+at+vat+em": "+ all three",
}
DEFAULT_ROWS = "word2vec,lm,lm+at,lm+at+vat,lm+at+vat+em"


def row_overrides(row: str, args: argparse.Namespace) -> tuple[str, list[str]]:
    """(preset, overrides) of one ablation row."""
    if row == "word2vec":
        return "imdb-gru", []
    sets = [f"pretraining.from={args.encoder}"]
    for part in row.split("+")[1:]:
        sets += [s.format(at=args.at, vat=args.vat, em=args.em) for s in LOSSES[part]]
    return "imdb-lm", sets


def encoder_seconds(encoder: Path) -> float:
    metrics = json.loads((encoder / "metrics.json").read_text())
    word2vec = (metrics.get("word2vec") or {}).get("seconds", 0.0)
    return float(metrics["pretraining_seconds"]) + float(word2vec)


def run_row(row: str, seed: int, args: argparse.Namespace, baselines: dict[str, Any]) -> dict:
    preset, sets = row_overrides(row, args)
    name = f"{row}-s{seed}"
    sets += [f"training.seed={seed}", f"output.name={name}", *args.set]
    config = preset_config(preset, args.data, args.runs, sets)
    run_dir, metrics = trained_run(config, name, args.reuse, None)
    outcome = measure(config, run_dir, metrics)
    if seed not in baselines:
        baselines[seed] = tfidf_baseline(load_splits(config.data, seed))
    pretraining = encoder_seconds(args.encoder) if row != "word2vec" else 0.0
    return {
        "row": row,
        "seed": seed,
        "accuracy": outcome.accuracy,
        "macro_f1": outcome.macro_f1,
        "parameters": outcome.parameters,
        "train_seconds": outcome.train_seconds,
        "pretraining_seconds": pretraining,
        "best_epoch": metrics.get("best_epoch"),
        "val_accuracy": (metrics.get("best") or {}).get("val_accuracy"),
        "baseline": baselines[seed],
        "run_dir": str(run_dir),
    }


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| recipe | seed | test accuracy | macro-F1 | TF-IDF+LR (same rows) | training time |"
        " parameters |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        minutes = r["train_seconds"] / 60
        encoder = (
            f" + {r['pretraining_seconds'] / 60:.0f} min encoder"
            if r["pretraining_seconds"]
            else ""
        )
        lines.append(
            f"| {ROWS[r['row']]} | {r['seed']} | **{r['accuracy']:.4f}** | {r['macro_f1']:.4f} | "
            f"{r['baseline']['accuracy']:.4f} | {minutes:.1f} min{encoder} | {r['parameters']:,} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument(
        "--encoder", type=Path, required=True, help="rnn-sentiment pretrain's output"
    )
    parser.add_argument("--runs", type=Path, default=Path("runs/semi-supervised"))
    parser.add_argument("--rows", default=DEFAULT_ROWS, help=f"of {', '.join(ROWS)}")
    parser.add_argument("--seeds", default="42")
    parser.add_argument("--at", type=float, default=5.0, help="adversarial radius")
    parser.add_argument("--vat", type=float, default=5.0, help="virtual adversarial radius")
    parser.add_argument("--em", type=float, default=1.0, help="entropy minimisation weight")
    parser.add_argument(
        "--reuse", action="store_true", help="take finished runs of the same recipe"
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise SystemExit(f"error: unknown row {unknown[0]!r}; rows are {', '.join(ROWS)}")
    if not (args.encoder / "metrics.json").is_file():
        raise SystemExit(
            f"error: {args.encoder} is not an encoder directory (rnn-sentiment pretrain)"
        )
    baselines: dict[str, Any] = {}
    results = [
        run_row(row, int(seed), args, baselines) for row in rows for seed in args.seeds.split(",")
    ]
    table = markdown(results)
    out = args.out or args.runs / "ablation"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(table)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(table)
    print(f"written: {out.with_suffix('.md')}, {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
