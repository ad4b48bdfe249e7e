"""Real-data checks on ../shared/data (IMDB, SST-2); they skip when it is absent.

Run with: make test-slow   (or: pytest -m slow)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordLevel

from rnn_sentiment.config import load_config
from rnn_sentiment.data.sources import load_splits
from rnn_sentiment.inference.evaluate import evaluate
from rnn_sentiment.text import TextPipeline
from rnn_sentiment.training.loop import train
from tests.helpers import SHARED_DATA

CONFIGS = Path(__file__).parents[1] / "configs"
pytestmark = pytest.mark.slow


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


def test_imdb_preset_learns_from_a_subset(tmp_path: Path) -> None:
    imdb = need(SHARED_DATA / "imdb")
    config = load_config(
        CONFIGS / "imdb-lstm.yaml",
        [f"data.source={imdb}", "data.test_split=null", "data.max_train_samples=8000",
         "tokenizer.max_length=200", "training.epochs=2", "pretraining.method=none",
         f"output.dir={tmp_path}"],
    )  # fmt: skip
    result = train(config)
    # learned (chance is 0.5): 0.7796 on a CPU with AVX2 only (2026-12-02), over 0.78 on one
    # with AVX-512, whose kernels round differently
    assert result.metrics["validation"]["accuracy"] > 0.76
    assert result.metrics["validation"]["n"] == 2500  # 10% of 25,000, stratified
    # the <br /> markup was cleaned before the tokenizer saw it
    assert "br" not in (result.run_dir / "tokenizer.json").read_text().split('"vocab"')[1][:2000]


def test_imdb_presets_pretrain_on_the_unlabelled_reviews() -> None:
    imdb = need(SHARED_DATA / "imdb")
    for name in ("imdb-rnn", "imdb-lstm", "imdb-gru"):
        config = load_config(CONFIGS / f"{name}.yaml", [f"data.source={imdb}"])
        assert config.pretraining.method == "word2vec"
        assert config.data.unlabelled_split == "unsupervised"
    # The bundled model starts from the shipped encoder, which read them while pretraining.
    bundled = load_config(CONFIGS / "bundled.yaml", [f"data.source={imdb}"]).pretraining
    assert (bundled.from_, bundled.vocabulary) == ("bundled", "own")
    # The hub calls the split 'unsupervised'; the local copy's unsup.parquet is found for it.
    splits = load_splits(config.data, config.training.seed, unlabelled=True)
    assert len(splits.unlabelled) == 50_000
    assert "<br" in "".join(splits.unlabelled[:1000])  # raw, as in the file
    prepared = TextPipeline(Tokenizer(WordLevel()), config.data.clean_html).prepare(
        splits.unlabelled[:1000]
    )
    assert "<br" not in "".join(prepared)  # the text pipeline cleans them like training texts


def test_evaluate_on_a_parquet_file(tmp_path: Path) -> None:
    imdb = need(SHARED_DATA / "imdb")
    config = load_config(
        CONFIGS / "imdb-gru.yaml",
        [f"data.source={imdb}", "data.test_split=null", "data.max_train_samples=1000",
         "training.epochs=1", "model.hidden_size=32", "pretraining.method=none",
         f"output.dir={tmp_path}"],
    )  # fmt: skip
    run_dir = train(config).run_dir
    metrics = evaluate(run_dir, source=str(imdb / "test.parquet"))
    assert metrics["n"] == 25_000
    assert sum(metrics["per_class"][c]["support"] for c in ("negative", "positive")) == 25_000


def test_sst2_preset_finds_the_text_column_locally(tmp_path: Path) -> None:
    sst2 = need(SHARED_DATA / "sst2")
    config = load_config(
        CONFIGS / "sst2-lstm.yaml",
        [f"data.source={sst2}", "data.max_train_samples=20000", "training.epochs=1",
         f"output.dir={tmp_path}"],
    )  # fmt: skip
    result = train(config)
    assert result.metrics["validation"]["n"] == 872
    assert result.metrics["validation"]["accuracy"] > 0.72


def test_the_bundled_model_keeps_its_model_card_figures(tmp_path: Path) -> None:
    from rnn_sentiment.inference.models import BUNDLED_MODEL_DIR

    sst2 = need(SHARED_DATA / "sst2")
    imdb = need(SHARED_DATA / "imdb" / "test.parquet")
    assert evaluate(BUNDLED_MODEL_DIR, str(sst2), "validation")["accuracy"] == pytest.approx(
        0.8899, abs=0.002
    )
    # A stratified 2,000-review slice of IMDB test keeps this fast; the card's 0.9202 is on 25,000.
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(imdb, columns=["text", "label"])
    rows = pa.concat_tables([table.slice(0, 1000), table.slice(table.num_rows - 1000, 1000)])
    sample = tmp_path / "imdb-sample.parquet"
    pq.write_table(rows, sample)
    assert evaluate(BUNDLED_MODEL_DIR, str(sample))["accuracy"] > 0.88


def test_the_small_data_recipe_beats_nbsvm_on_1000_sst2_sentences(tmp_path: Path) -> None:
    # configs/small-data.yaml from the shipped encoder, as scripts/benchmark_small_data.py runs it
    # (SST-2, 1,000 sentences, seed 0: 0.7936 against NB-SVM's 0.7007 on the 872 validation
    # sentences); the margin asked, 3 points, is a third of the measured one.
    pytest.importorskip("sklearn")
    import importlib.util
    import sys

    sst2 = need(SHARED_DATA / "sst2")
    spec = importlib.util.spec_from_file_location(
        "benchmark_small_data", CONFIGS.parent / "scripts" / "benchmark_small_data.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    task = bench.load_task("sst2", sst2.parent)
    drawn = bench.draw(task.pool, 1000, 0)
    source = bench.write_reviews(tmp_path / "mine.parquet", drawn, task.label_names)
    held_out = bench.write_reviews(tmp_path / "held.parquet", task.held_out, task.label_names)
    config = load_config(CONFIGS / "small-data.yaml", [f"data.source={source}",
                         "data.cache_dir=null", f"output.dir={tmp_path}"])  # fmt: skip
    result = train(config)
    assert result.metrics["pretraining"]["recurrent_layers"] == "from encoder"
    recipe = evaluate(result.run_dir, source=str(held_out))["accuracy"]
    nbsvm = bench.NBSVM().fit(drawn.texts, drawn.labels).predict(task.held_out.texts)
    baseline = float((nbsvm == task.held_out.labels).mean())
    assert recipe > baseline + 0.03, (recipe, baseline)
