"""Copy a pretrained encoder into the package as the shipped one (``pretraining.from=bundled``).

    python scripts/bundle_encoder.py ../models/lm/imdb-encoder

The encoder is the one ``rnn-sentiment pretrain configs/imdb-lm.yaml
data.source=../shared/data/imdb`` writes: a bidirectional GRU language model pretrained on IMDB's
training and unlabelled reviews. The copy stores its weights in float16 (cast back to float32 on
load) to halve the download, names its data by the hub id of ``configs/imdb-lm.yaml`` instead of
the local path it was trained from, and leaves out the resumable training state. It is refused
over ``MAX_BYTES`` in all, and written to a staging folder first, so a failure leaves the
previous copy in place.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from safetensors.torch import save as save_safetensors

from rnn_sentiment.checkpoint import atomic_write_bytes, write_manifest
from rnn_sentiment.config import dump_config, load_config
from rnn_sentiment.runfiles import CONFIG_FILE, METRICS_FILE, TOKENIZER_FILE
from rnn_sentiment.training.encoder import (
    BUNDLED_ENCODER_DIR,
    ENCODER_FILE,
    ENCODER_FILES,
    load_encoder,
)

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "imdb-lm.yaml"
MAX_BYTES = 20 * 2**20  # issue 23: the shipped encoder stays within 20 MB


def bundle(encoder_dir: Path, dest: Path = BUNDLED_ENCODER_DIR) -> Path:
    encoder = load_encoder(encoder_dir)  # verifies the manifest and every shape first
    if encoder.metrics.get("status") != "complete":
        sys.exit(f"error: {encoder_dir} has not finished pretraining (pretrain --resume it)")
    config = encoder.config.model_copy(deep=True)
    portable = load_config(CONFIG).data
    config.data.source = portable.source
    config.output = type(config.output)()
    metrics = dict(encoder.metrics)
    metrics["data"] = {**metrics.get("data", {}), "source": portable.source}
    tensors = {name: t.half().contiguous() for name, t in encoder.tensors.items()}
    staging = Path(tempfile.mkdtemp(prefix=".encoder-", dir=dest.parent))
    staging.chmod(0o755)
    (staging / CONFIG_FILE).write_text(dump_config(config), encoding="utf-8")
    shutil.copyfile(encoder_dir / TOKENIZER_FILE, staging / TOKENIZER_FILE)
    (staging / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    blob = save_safetensors(
        tensors, metadata={"format": "rnn-sentiment-encoder", "dtype": "float16"}
    )
    atomic_write_bytes(staging / ENCODER_FILE, blob)
    write_manifest(staging, ENCODER_FILES)
    size = sum(f.stat().st_size for f in staging.iterdir())
    if size > MAX_BYTES:
        shutil.rmtree(staging)
        sys.exit(f"error: the copy is {size / 2**20:.1f} MiB, over {MAX_BYTES / 2**20:.0f} MiB")
    if dest.exists():
        shutil.rmtree(dest)
    staging.rename(dest)
    load_encoder(dest)  # the copy loads, checked
    print(f"{dest}: {size / 2**20:.1f} MiB, perplexity {metrics['perplexity']}")
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("encoder_dir", type=Path)
    args = parser.parse_args()
    bundle(args.encoder_dir)


if __name__ == "__main__":
    main()
