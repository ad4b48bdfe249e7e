"""Regenerate the built-in movie-review corpus in rnn_sentiment/assets/builtin/.

Usage: python scripts/make_corpus.py [--check] [--seed N] [--out DIR]

Without --check it (re)writes train.jsonl, validation.jsonl and test.jsonl. With --check it
generates into a temporary folder and exits 1 if the committed files differ, so CI can tell when
someone edited rnn_sentiment/data/corpus.py without regenerating the corpus (or the reverse).
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # run from a checkout even without `pip install -e .`

from rnn_sentiment.data.corpus import SPLIT_SIZES, write_builtin_corpus  # noqa: E402

DEFAULT_OUT = REPO_ROOT / "rnn_sentiment" / "assets" / "builtin"
DEFAULT_SEED = 13  # the seed the committed corpus was generated with


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the files are stale")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="generator seed")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="corpus folder")
    return parser.parse_args(argv)


def stale_files(committed: Path, fresh: Path) -> list[str]:
    """Names of split files that are missing from ``committed`` or differ from ``fresh``."""
    names = [f"{split}.jsonl" for split in SPLIT_SIZES]
    return [
        name
        for name in names
        if not (committed / name).is_file()
        or not filecmp.cmp(committed / name, fresh / name, shallow=False)
    ]


def check(out: Path, seed: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        write_builtin_corpus(Path(tmp), seed=seed)
        stale = stale_files(out, Path(tmp))
    if stale:
        print(f"out of date in {out}: {', '.join(stale)}; run: python scripts/make_corpus.py")
        return 1
    print(f"{out} is up to date")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.check:
        return check(args.out, args.seed)
    counts = write_builtin_corpus(args.out, seed=args.seed)
    for split, rows in counts.items():
        size = (args.out / f"{split}.jsonl").stat().st_size
        print(f"{split}: {rows} rows, {size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
