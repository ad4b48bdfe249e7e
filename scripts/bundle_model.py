"""Copy a trained run into the package as the bundled default model, with fp16 weights.

    python scripts/bundle_model.py runs/bundled
    python scripts/bundle_model.py runs/bundled --check ../shared/data/imdb/test.parquet
    python scripts/bundle_model.py --export-only   # re-export the bundled copy to ONNX
    python scripts/bundle_model.py --calibrate ../shared/data   # refit its temperature, re-export

The copy is an ordinary run directory (config, tokenizer, labels, metrics, manifest) whose
weights are stored in float16 to halve the download; they are cast back to float32 on load. Its
config names the data by the portable ids of ``--data-from`` (default configs/bundled.yaml, i.e.
the hub ids) instead of the local paths it was trained from, so ``evaluate`` on a user's machine
looks for the data where the user can have it.
The bundled copy is then exported (``rnn-sentiment export``) next to it as
``assets/bundled-onnx``, which ``predict`` runs with onnxruntime, without importing torch.
``--calibrate DATA_ROOT`` fits the bundled copy's temperature on the validation split its
training carved (rebuilt from the same data under DATA_ROOT and seed; the review count is checked
against its metrics.json), saves calibration.json and exports it again.
``--check`` scores a labelled file with the original and the fp16 copy side by side and prints
both accuracies, so the cost of the conversion is measured, not assumed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save as save_safetensors

from rnn_sentiment.checkpoint import (
    atomic_write_bytes,
    atomic_write_json,
    load_run,
    write_manifest,
)
from rnn_sentiment.config import dump_config, load_config
from rnn_sentiment.inference.export import export_model
from rnn_sentiment.inference.models import BUNDLED_EXPORT_DIR, BUNDLED_MODEL_DIR
from rnn_sentiment.runfiles import (
    CONFIG_FILE,
    LABELS_FILE,
    METRICS_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
)
from rnn_sentiment.training.encoder import BUNDLED_ENCODER_DIR

BUNDLED_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "bundled.yaml"

MAX_WEIGHT_BYTES = 10 * 1024 * 1024


def bundle(run_dir: Path, dest: Path, data_from: Path = BUNDLED_CONFIG) -> Path:
    """Write the fp16 copy of ``run_dir`` to ``dest`` (replaced as a whole) and return it."""
    run = load_run(run_dir)  # verifies the manifest first
    portable = load_config(data_from).data
    config = run.config.model_copy(deep=True)
    config.data.source = portable.source
    config.data.extra_train_sources = list(portable.extra_train_sources)
    config.output = type(config.output)()  # not the dev machine's output folder
    tensors = {
        name: (t.half() if t.is_floating_point() else t).contiguous()
        for name, t in run.model.state_dict().items()
    }
    staging = Path(tempfile.mkdtemp(prefix=".bundled-", dir=dest.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the package is read by every user
    (staging / CONFIG_FILE).write_text(dump_config(config), encoding="utf-8")
    for name in (TOKENIZER_FILE, LABELS_FILE):
        shutil.copyfile(run_dir / name, staging / name)
    metrics = json.loads((run_dir / METRICS_FILE).read_text(encoding="utf-8"))
    start = metrics.get("pretraining") or {}
    if start.get("from") == str(BUNDLED_ENCODER_DIR):  # the shipped one, not this machine's path
        start["from"] = "bundled"
    atomic_write_json(staging / METRICS_FILE, metrics)
    metadata = {"format": "rnn-sentiment", "version": "1", "dtype": "float16"}
    atomic_write_bytes(staging / WEIGHTS_FILE, save_safetensors(tensors, metadata=metadata))
    write_manifest(staging)
    size = (staging / WEIGHTS_FILE).stat().st_size
    if size > MAX_WEIGHT_BYTES:
        shutil.rmtree(staging)
        sys.exit(f"error: fp16 weights are {size / 2**20:.1f} MiB, over the 10 MiB limit")
    if dest.exists():
        shutil.rmtree(dest)
    staging.rename(dest)
    return dest


def calibrate_bundle(dest: Path, data_root: Path) -> dict[str, object]:
    """Fit ``dest``'s temperature on the validation reviews its training carved."""
    from dataclasses import replace

    from rnn_sentiment.checkpoint import read_metrics, save_calibration
    from rnn_sentiment.data.sources import load_splits
    from rnn_sentiment.metrics import fit_calibration

    config = load_config(
        BUNDLED_CONFIG,
        [f"data.source={data_root / 'imdb'}",
         f"data.extra_train_sources=[{data_root / 'sst2'}, builtin]"],
    )  # fmt: skip
    splits = load_splits(config.data, config.training.seed)
    expected = read_metrics(dest)["validation"]["n"]
    if len(splits.validation.texts) != expected:
        sys.exit(
            f"error: rebuilt {len(splits.validation.texts)} validation reviews, not {expected}"
        )
    run = load_run(dest)
    from rnn_sentiment.inference.predictor import Predictor

    predictor = Predictor(replace(run, temperature=1.0))
    probs = predictor.predict_proba(splits.validation.texts).astype("float64")
    calibration = fit_calibration(probs, splits.validation.labels, "validation (carved, seed 42)")
    save_calibration(dest, calibration)
    return calibration


def accuracy(model_dir: Path, data: Path) -> float:
    from rnn_sentiment.inference.evaluate import evaluate

    return float(evaluate(model_dir, str(data), None, None, "label")["accuracy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, nargs="?")
    parser.add_argument("--export-only", action="store_true",
                        help="only re-export the bundled copy to ONNX")  # fmt: skip
    parser.add_argument("--calibrate", type=Path, metavar="DATA_ROOT",
                        help="refit the bundled copy's temperature, then re-export")  # fmt: skip
    parser.add_argument("--dest", type=Path, default=BUNDLED_MODEL_DIR)
    parser.add_argument("--data-from", type=Path, default=BUNDLED_CONFIG,
                        help="config whose data.source ids the copy records")  # fmt: skip
    parser.add_argument(
        "--check", type=Path, action="append", default=[],
        help="labelled file to score with both copies (repeatable)",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.calibrate is not None:
        print(calibrate_bundle(args.dest, args.calibrate))
        args.export_only = True
    if args.export_only:
        shutil.rmtree(args.dest.parent / BUNDLED_EXPORT_DIR.name, ignore_errors=True)
        exported = export_model(args.dest, args.dest.parent / BUNDLED_EXPORT_DIR.name)
        print(f"exported {args.dest} -> {exported}")
        return
    if args.run_dir is None:
        parser.error("give the run directory to bundle, or --export-only")
    dest = bundle(args.run_dir, args.dest, args.data_from)
    size = (dest / WEIGHTS_FILE).stat().st_size
    print(f"bundled {args.run_dir} -> {dest} ({size / 2**20:.2f} MiB of fp16 weights)")
    shutil.rmtree(dest.parent / BUNDLED_EXPORT_DIR.name, ignore_errors=True)  # the old export
    exported = export_model(dest, dest.parent / BUNDLED_EXPORT_DIR.name)
    print(f"exported {dest} -> {exported}")
    for data in args.check:
        fp32, fp16 = accuracy(args.run_dir, data), accuracy(dest, data)
        print(f"{data}: fp32 {fp32:.4f}  fp16 {fp16:.4f}  change {100 * (fp16 - fp32):+.2f} points")


if __name__ == "__main__":
    main()
