#!/usr/bin/env bash
# IMDB semi-supervised on one CUDA GPU, within a fixed time budget: a larger encoder than
# configs/imdb-lm.yaml's (256-dim embeddings, bidirectional GRU of 512) pretrained as a language
# model on IMDB's 22,500 training and 50,000 unlabelled reviews for LM_MINUTES, then fine-tuned
# with adversarial and virtual adversarial training for FT_MINUTES, then scored once on the
# 25,000 test reviews. Everything goes through `python -m rnn_sentiment` and configs/imdb-lm.yaml.
#
#   scripts/imdb_lm_gpu.sh DATA_DIR OUT_DIR        # DATA_DIR holds train/test/unsup.parquet
#   LM_MINUTES=3 FT_MINUTES=3 PRECISION=bf16 scripts/imdb_lm_gpu.sh ../shared/data/imdb /tmp/gpu
#
# A smoke run on 400 of the reviews comes first (under a minute on a GPU); if bf16 fails there,
# everything runs in fp32. RUNS (default /tmp/imdb-lm-gpu) is the script's own: emptied first.
# Written to OUT_DIR: summary.json (both runs' metrics), the two logs.
set -u -o pipefail
DATA=${1:?data directory with train/test/unsup.parquet}
OUT=${2:?output directory}
LM_MINUTES=${LM_MINUTES:-3}
FT_MINUTES=${FT_MINUTES:-3}
PRECISION=${PRECISION:-bf16}
DEVICE=${DEVICE:-cuda}
RUNS=${RUNS:-/tmp/imdb-lm-gpu}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
rm -rf -- "${RUNS:?}"; mkdir -p "$OUT" "$RUNS"
SHAPE=(model.embedding_dim=256 model.hidden_size=512 pretraining.method=none
       training.device="$DEVICE" output.dir="$RUNS")
TRAIN=(training.adversarial.epsilon=5 training.adversarial.vat_epsilon=5
       training.epochs=8 training.patience=3 training.lr=0.001)

smoke() {  # a tiny IMDB sample, the same two commands
  rm -rf "$RUNS/smoke-enc" "$RUNS/smoke"
  $PY - "$DATA" "$RUNS/tiny" <<'EOF'
import sys, pathlib, pyarrow.parquet as pq
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]); dst.mkdir(parents=True, exist_ok=True)
for name, rows in (("train", 400), ("test", 200), ("unsup", 400)):
    t = pq.read_table(src / f"{name}.parquet")
    pq.write_table(t.take(list(range(0, t.num_rows, t.num_rows // rows))[:rows]), dst / f"{name}.parquet")
EOF
  $PY -m rnn_sentiment pretrain configs/imdb-lm.yaml data.source="$RUNS/tiny" "${SHAPE[@]}" \
    pretraining.lm.epochs=1 training.precision="$1" output.name=smoke-enc --format json \
    > "$OUT/smoke.log" 2>&1 &&
  $PY -m rnn_sentiment train configs/imdb-lm.yaml data.source="$RUNS/tiny" "${SHAPE[@]}" \
    "${TRAIN[@]}" training.epochs=1 training.precision="$1" output.name=smoke \
    pretraining.from="$RUNS/smoke-enc" >> "$OUT/smoke.log" 2>&1
}
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, rnn_sentiment; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
if ! smoke "$PRECISION"; then
  tail -20 "$OUT/smoke.log"; echo "smoke with $PRECISION failed; trying fp32"
  PRECISION=fp32; smoke fp32 || { tail -30 "$OUT/smoke.log"; exit 2; }
fi
echo "smoke passed with $PRECISION at $(date -u +%T)"
[ -n "${SMOKE_ONLY:-}" ] && exit 0

$PY -m rnn_sentiment pretrain configs/imdb-lm.yaml data.source="$DATA" "${SHAPE[@]}" \
  pretraining.lm.epochs=10 pretraining.lm.max_minutes="$LM_MINUTES" pretraining.lm.batch_size=128 \
  training.precision="$PRECISION" output.name=encoder > "$OUT/pretrain.log" 2>&1
echo "pretrain rc $? at $(date -u +%T)"; tail -12 "$OUT/pretrain.log"
$PY -m rnn_sentiment train configs/imdb-lm.yaml data.source="$DATA" "${SHAPE[@]}" "${TRAIN[@]}" \
  training.max_minutes="$FT_MINUTES" training.precision="$PRECISION" \
  pretraining.from="$RUNS/encoder" output.name=classifier > "$OUT/train.log" 2>&1
echo "train rc $? at $(date -u +%T)"; tail -25 "$OUT/train.log"
$PY - "$RUNS" "$OUT/summary.json" <<'EOF'
import json, sys, pathlib
runs = pathlib.Path(sys.argv[1])
found = {n: json.loads((runs / n / "metrics.json").read_text())
         for n in ("encoder", "classifier") if (runs / n / "metrics.json").is_file()}
pathlib.Path(sys.argv[2]).write_text(json.dumps(found, indent=1))
for n, m in found.items():
    print(n, m.get("status"), {k: m.get(k) for k in ("perplexity", "pretraining_seconds", "real_tokens_trained",
          "best_epoch", "train_seconds", "real_tokens_per_second") if k in m})
    if "test" in m:
        print(n, "validation", m["validation"].get("accuracy"), "test", m["test"]["accuracy"])
EOF
