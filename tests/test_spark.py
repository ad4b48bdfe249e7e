"""The Spark recipe of docs/spark-recipe.md, run as written on a local Spark (``local[2]``).

Marked ``spark`` (a Spark session starts in 10-20 s); skipped without pyspark or a Java runtime.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rnn_sentiment.inference.models import BUNDLED_MODEL_DIR, load_predictor
from rnn_sentiment.inference.scoring import ScoringOptions, score_file

RECIPE = Path(__file__).parents[1] / "docs" / "spark-recipe.md"
TEXTS = [
    "A dull, slow start.<br /><br />Still, the ending was great and I loved it.",
    None,
    "",
    "i hated it 😡🎬 but the music 🎵 was wonderful 😍",
    "not bad at all",
] * 20

pyspark = pytest.importorskip("pyspark", reason="pyspark is not installed")
pytestmark = pytest.mark.spark


def java_runs() -> bool:
    java = shutil.which("java") or (
        os.environ.get("JAVA_HOME") and Path(os.environ["JAVA_HOME"], "bin", "java")
    )
    if not java:
        return False
    return subprocess.run([str(java), "-version"], capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    if not java_runs():
        pytest.skip("no Java runtime (Spark needs Java 17 or later)")
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable  # the workers import rnn_sentiment
    session = (
        SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    yield session
    session.stop()


def recipe() -> str:
    blocks = re.findall(r"```python\n(.*?)```", RECIPE.read_text(encoding="utf-8"), re.DOTALL)
    assert len(blocks) == 1
    return blocks[0]


def test_the_recipe_scores_as_predict_input_does(spark: object, tmp_path: Path) -> None:
    ids = pa.array(range(len(TEXTS)), pa.int64())
    pq.write_table(pa.table({"id": ids, "text": TEXTS}), tmp_path / "reviews.parquet")
    reviews = spark.read.parquet(str(tmp_path / "reviews.parquet"))  # type: ignore[attr-defined]
    output = tmp_path / "scored"
    exec(recipe(), {"MODEL": None, "OUTPUT": str(output), "reviews": reviews})
    scored = pq.read_table(output).sort_by("id")
    single = tmp_path / "single.parquet"
    one_chunk = ScoringOptions(chunk_size=len(TEXTS))  # as Spark's one batch of a small file
    score_file(load_predictor(BUNDLED_MODEL_DIR), tmp_path / "reviews.parquet", single, one_chunk)
    expected = pq.read_table(single)
    assert scored.num_rows == len(TEXTS)
    assert scored.schema.names == expected.schema.names
    assert scored.to_pylist() == expected.to_pylist()  # the sixth decimal too
    assert scored.column("error").to_pylist()[1:3] == ["missing text", "empty text"]
