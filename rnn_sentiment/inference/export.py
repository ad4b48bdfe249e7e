"""Export a run directory as a portable model directory: ONNX, no pickle, checksummed.

The layout, the inputs and outputs of ``model.onnx`` and how it is loaded are in
:mod:`rnn_sentiment.inference.exported`. Exporting needs torch and the ``onnx`` package (the
``onnx`` extra); using the result needs neither.

The exporter. torch 2.13's default exporter (``torch.export`` + onnxscript) unrolls ``nn.RNN``
over the example's time steps, so its graph accepts only that review length, and its LSTM graph
fails in onnxruntime on any other length. The TorchScript exporter (``dynamo=False``, deprecated
since torch 2.9 and present in the pinned 2.13) maps ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` to
ONNX's RNN / LSTM / GRU operators with free batch and time dimensions, which is also the form
onnxruntime's int8 LSTM kernel takes.

int8 is onnxruntime's dynamic quantization: weights int8 ahead of time, activations quantized
per batch at run time. What it covers depends on the cell, because onnxruntime has an int8 LSTM
kernel and none for GRU or the plain RNN:

==========  ================================================  ============================
cell        int8                                              stays fp32
==========  ================================================  ============================
lstm        recurrent layers, embedding table, classifier     the pooling
gru, rnn    embedding table, classifier                       the recurrent layers
==========  ================================================  ============================

So a GRU or RNN exported in int8 gets a file about 3.5x smaller and about fp32's speed; the
export says so in its notes (``export.json``, the model card, and ``predict``'s stderr).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from rnn_sentiment import __version__
from rnn_sentiment.checkpoint import (
    LoadedRun,
    atomic_write_bytes,
    load_run,
    read_metrics,
    write_manifest,
)
from rnn_sentiment.data.batching import predict_proba_ids
from rnn_sentiment.errors import CheckpointError, ConfigError, RnnSentimentError
from rnn_sentiment.inference.exported import (
    CARD_FILE,
    EXPORT_FILE,
    EXPORTED_FILES,
    INPUTS,
    ONNX_FILE,
    OUTPUTS,
    ExportInfo,
    OnnxSettings,
    Precision,
    Source,
    TextSettings,
    is_exported_dir,
    load_exported,
    onnx_session,
)
from rnn_sentiment.model import SentimentRNN
from rnn_sentiment.runfiles import (
    CALIBRATION_FILE,
    LABELS_FILE,
    METRICS_FILE,
    TOKENIZER_FILE,
    given_path,
    replaces_model_file,
)
from rnn_sentiment.tokenizer import UNK_ID

Quantize = Literal["int8"]
OPSET = 17  # ONNX 1.12 (2022): every current runtime reads it
FP32_TOLERANCE = 1e-4  # largest |probability difference| from PyTorch an fp32 export may have
# The operators dynamic quantization may turn to int8: the embedding lookup, the classifier and
# the LSTM (onnxruntime has no int8 GRU or RNN operator).
INT8_CANDIDATES = ("Gather", "Gemm", "MatMul", "LSTM")
# What each operator of a quantized graph that reads int8 weights is, for people.
INT8_PARTS = {
    "Gather": "embedding table",
    "MatMulInteger": "classifier",
    "DynamicQuantizeLSTM": "LSTM layers",
}


def _load_source(source: Path) -> LoadedRun:
    """The run directory to export, loaded and checked; an exported model is refused by name."""
    if is_exported_dir(source):
        raise CheckpointError(
            f"{source} is an exported model already; export takes the run directory it was "
            "exported from (an exported model predicts, evaluates and serves as it is)"
        )
    return load_run(source)


def export_model(
    run_dir: str | Path, output_dir: str | Path, quantize: Quantize | None = None
) -> Path:
    """Write the run directory ``run_dir`` as an exported model directory ``output_dir``.

    The directory appears whole or not at all (it is written beside the target and renamed),
    and is loaded back and checked before it is published: in fp32 its probabilities equal the
    PyTorch model's to 1e-4 on a probe batch of every length up to the trained one.

    Args:
        run_dir: a run directory (checked as ``predict`` checks it).
        output_dir: the folder to create; it must not exist, or be empty.
        quantize: ``"int8"``: onnxruntime's dynamic quantization (see the module docstring).

    Returns:
        ``output_dir``.

    Raises:
        CheckpointError: the run cannot be loaded, or ``output_dir`` is taken or unwritable.
    """
    source = given_path(run_dir, "run directory", "give the run directory to export")
    target = given_path(output_dir, "output", "give a new folder to export into")
    if quantize not in (None, "int8"):  # anything else was exported in fp32, silently
        raise ConfigError([f"quantize must be 'int8' or None, not {quantize!r}"])
    _check_target(target, source)
    run = _load_source(source)
    metrics = read_metrics(source)
    network = onnx_network(run.model)
    precision: Precision = "fp32"
    int8_parts: list[str] = []
    if quantize == "int8":
        network, int8_parts = quantize_int8(network)
        precision = "int8"
    difference = _max_difference(run, network)
    if precision == "fp32" and difference > FP32_TOLERANCE:
        raise RnnSentimentError(
            f"the exported network disagrees with the run's model (max |dp| {difference:.2g}); "
            "this is a bug in rnn-sentiment, please report it"
        )
    settings = OnnxSettings(
        opset=OPSET,
        precision=precision,
        int8_parts=int8_parts,
        max_abs_diff=difference,
        notes=_notes(run.config.model.cell, precision, int8_parts, difference),
    )
    info = _export_info(run, source, settings)
    files = {
        ONNX_FILE: network,
        TOKENIZER_FILE: run.tokenizer.to_str().encode("utf-8"),
        LABELS_FILE: _json({"labels": run.label_names}),
        EXPORT_FILE: info.model_dump_json(indent=2).encode("utf-8") + b"\n",
        METRICS_FILE: _json(metrics),
        CARD_FILE: model_card(info, run.label_names, metrics).encode("utf-8"),
    }
    if run.temperature != 1.0:  # the run's calibration travels with it (named as in EXPORT_FILE)
        files[CALIBRATION_FILE] = _json({"temperature": run.temperature, "from": info.source.run})
    _publish(files, target)
    return target


def onnx_network(model: SentimentRNN) -> bytes:
    """``model`` (on the CPU) as ONNX bytes: ids and lengths in, logits and probabilities out,
    batch and time free (see :mod:`rnn_sentiment.inference.exported`)."""
    ids = torch.full((3, 3), UNK_ID, dtype=torch.int64)
    lengths = torch.tensor([3, 2, 1])
    with tempfile.TemporaryDirectory(prefix="rnn-sentiment-onnx-") as folder:
        path = Path(folder) / ONNX_FILE
        with warnings.catch_warnings():
            # The exporter's deprecation notice, and its warning that an LSTM exported with a
            # batch of 3 may fail on other batch sizes (it does not here: the tests score batches
            # of 1 to 300), are for the developer, not for the user running `export`.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Scores(model).eval(),
                (ids, lengths),
                path,
                dynamo=False,
                input_names=list(INPUTS),
                output_names=list(OUTPUTS),
                dynamic_axes={"ids": {0: "batch", 1: "time"}, "lengths": {0: "batch"}},
                opset_version=OPSET,
            )
        return path.read_bytes()


class _Scores(nn.Module):
    """The classifier with its softmax, so the network gives probabilities as well as logits."""

    def __init__(self, model: SentimentRNN) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = self.model(ids, lengths)
        return logits, torch.softmax(logits, dim=-1)


def quantize_int8(network: bytes) -> tuple[bytes, list[str]]:
    """``network`` with onnxruntime's dynamic int8 quantization, and the parts that became int8
    (read from the quantized graph: the operators that take int8 weights)."""
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise CheckpointError(
            "--quantize int8 needs onnx and onnxruntime: pip install 'rnn-sentiment[onnx]'"
        ) from None

    with tempfile.TemporaryDirectory(prefix="rnn-sentiment-int8-") as folder:
        fp32, int8 = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
        fp32.write_bytes(network)
        with _quiet_logging():  # its advice to pre-process the model goes to the root logger
            quantize_dynamic(
                fp32,
                int8,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=list(INT8_CANDIDATES),
            )
        quantized = int8.read_bytes()
    graph = onnx.load_from_string(quantized).graph
    eight_bit = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)  # the embedding table: uint8
    int8_weights = {t.name for t in graph.initializer if t.data_type in eight_bit}
    ops = {n.op_type for n in graph.node if int8_weights.intersection(n.input)}
    return quantized, [part for op, part in INT8_PARTS.items() if op in ops]


@contextmanager
def _quiet_logging() -> Iterator[None]:
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _max_difference(run: LoadedRun, network: bytes) -> float:
    """Largest |probability difference| between ``network`` and the run's model on a probe
    batch: 48 random reviews of 1 token to the trained length (every special id included)."""
    rng = np.random.default_rng(0)
    longest = run.config.tokenizer.max_length
    vocab = run.tokenizer.get_vocab_size()
    lengths = np.unique(np.geomspace(1, longest, num=48).astype(int))
    probe = [rng.integers(0, vocab, size=n).tolist() for n in lengths]
    torch_probs = predict_proba_ids(run.model, probe)
    session = onnx_session(network, Path(ONNX_FILE), threads=1)
    padded = np.zeros((len(probe), int(lengths.max())), dtype=np.int64)
    for row, ids in enumerate(probe):
        padded[row, : len(ids)] = ids
    onnx_probs = session.run(["probabilities"], {"ids": padded, "lengths": lengths})[0]
    return float(np.abs(onnx_probs - torch_probs).max())


def _notes(cell: str, precision: str, int8_parts: list[str], difference: float) -> list[str]:
    """What a user of an int8 export should know: what is int8, and what is not and why."""
    if precision == "fp32":
        return []
    name = cell.upper()
    kept = (
        ""
        if "LSTM layers" in int8_parts
        else f"; the {name} layers stay fp32 (onnxruntime has no int8 {name} kernel), so the "
        "file is smaller but scores at about fp32's speed"
    )
    return [
        f"int8: {', '.join(int8_parts) or 'nothing'}{kept}; the largest probability change "
        f"from fp32 on the export's probe reviews is {difference:.2g}"
    ]


def _export_info(run: LoadedRun, source: Path, onnx: OnnxSettings) -> ExportInfo:
    return ExportInfo(
        text=TextSettings(clean_html=run.config.data.clean_html, tokenizer=run.config.tokenizer),
        model=run.config.model,
        vocab_size=run.tokenizer.get_vocab_size(),
        onnx=onnx,
        source=Source(
            run=source.resolve().name,
            manifest_sha256=run.manifest_sha256,
            rnn_sentiment_version=__version__,
        ),
    )


def model_card(info: ExportInfo, label_names: list[str], metrics: dict[str, Any]) -> str:
    """A short Markdown card: what the model is, how well it did, how to use it, its limits."""
    m, text = info.model, info.text
    shape = (
        f"{'bidirectional ' if m.bidirectional else ''}{m.cell.upper()}, {m.num_layers} "
        f"layer(s) of {m.hidden_size}, {m.embedding_dim}-dim embeddings, {m.pooling} pooling, "
        f"{info.vocab_size:,}-word vocabulary ({text.tokenizer.kind})"
    )
    scores = [
        f"- {split}: accuracy {block['accuracy']:.4f}, macro-F1 {block['macro_f1']:.4f} "
        f"({block['n']:,} reviews)"
        for split in ("test", "validation")
        if isinstance(block := metrics.get(split), dict)
        and all(isinstance(block.get(k), (int, float)) for k in ("accuracy", "macro_f1", "n"))
    ]
    keep = "end" if text.tokenizer.truncation_side == "left" else "beginning"
    lines = [
        f"# Sentiment model `{info.source.run}` (exported)",
        "",
        f"A recurrent sentiment classifier: {shape}. Labels: {', '.join(label_names)}.",
        f"Precision: {info.onnx.precision}. Exported by rnn-sentiment "
        f"{info.source.rnn_sentiment_version}.",
        *[f"Note: {note}." for note in info.onnx.notes],
        "",
        "## Measured (on the run's own splits, in PyTorch fp32)",
        *(scores or ["- no held-out metrics were recorded"]),
        "",
        "## Use",
        '- `rnn-sentiment predict --model DIR "This movie is not good"` (no torch needed)',
        "- Python: `ExportedPredictor.from_dir(DIR).predict([...])` from "
        "`rnn_sentiment.inference.exported`",
        f"- Other runtimes: `{ONNX_FILE}` takes `ids` int64 [batch, time], right-padded with 0, "
        "and `lengths` int64 [batch]; it gives `logits` and `probabilities` [batch, labels]. "
        f"Prepare text as `{EXPORT_FILE}` says: "
        f"{'HTML line breaks to spaces, ' if text.clean_html else ''}the tokenizer in "
        f"`{TOKENIZER_FILE}`, an empty review as one `[UNK]`.",
        "",
        "## Limits",
        f"- Reviews are cut to {text.tokenizer.max_length} tokens, keeping the {keep} "
        "(`--long-reviews window` scores all of a long review).",
        "- Trained on the data its run used (English movie reviews for the bundled model); "
        "other domains and languages score worse, and sarcasm often fools it.",
        "",
    ]
    return "\n".join(lines)


def _check_target(target: Path, source: Path) -> None:
    """Refuse a target that is taken, inside the run as one of a model's file names, or that
    cannot be made (checked before the export is done, not after)."""
    if target.is_symlink() or (target.exists() and not _empty_dir(target)):
        raise CheckpointError(f"{target} already exists; choose a new --output folder or remove it")
    if replaces_model_file(target, source):
        raise CheckpointError(f"{target} would add a model file to the run {source}; "
                              "choose a folder outside it")  # fmt: skip
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"cannot create {target}: {exc.strerror or exc}") from None


def _empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def _publish(files: dict[str, bytes], target: Path) -> None:
    """Write ``files`` and their manifest beside ``target``, load the result back, then rename
    it into place (so a killed export never leaves a directory that looks finished)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for name, data in files.items():
            atomic_write_bytes(staging / name, data)
        write_manifest(staging, EXPORTED_FILES)
        load_exported(staging, threads=1)
        os.chmod(staging, 0o755)  # mkdtemp's 0700 would keep other users from the model
        try:
            os.rename(staging, target)
        except OSError as exc:
            raise CheckpointError(f"cannot create {target}: {exc.strerror}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=2) + "\n").encode("utf-8")
