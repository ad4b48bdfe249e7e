"""scripts/benchmark_small_data.py: its NB-SVM baseline, and the whole script in smoke mode."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

SCRIPT = Path(__file__).parents[1] / "scripts" / "benchmark_small_data.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("benchmark_small_data", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_nbsvm_separates_by_words_and_bigrams() -> None:
    pytest.importorskip("sklearn")
    positive = ["a good film", "a great story", "not bad at all", "good acting", "great fun"]
    negative = ["a bad film", "an awful story", "not good at all", "bad acting", "awful fun"]
    model = _script().NBSVM().fit(positive + negative, [1] * 5 + [0] * 5)
    assert model.predict(positive + negative).tolist() == [1] * 5 + [0] * 5
    # Unseen reviews: the words carry over, and "not good" is negative through its bigram
    # although "good" alone is positive.
    assert model.predict(["great acting", "awful acting", "not good"]).tolist() == [1, 0, 0]
    vocabulary = model.vectorizer.vocabulary_
    assert model.r[vocabulary["good"]] > 0 > model.r[vocabulary["not good"]]


def test_nbsvm_refuses_labels_other_than_0_and_1() -> None:
    pytest.importorskip("sklearn")
    with pytest.raises(ValueError, match="binary"):
        _script().NBSVM().fit(["good", "bad", "fine"], [0, 1, 2])


def test_dev_rows_are_set_aside_from_every_draw_and_never_the_held_out_set() -> None:
    script = _script()
    from rnn_sentiment.data.sources import Reviews

    pool = Reviews([f"review {i}" for i in range(100)], [i % 2 for i in range(100)])
    held_out = Reviews(["a test review"], [1])
    task = script.set_aside(script.Task("t", pool, held_out, ["neg", "pos"]), 30)
    assert len(task.held_out.texts) == 30 and len(task.pool.texts) == 70
    assert "a test review" not in task.held_out.texts
    assert sorted(task.held_out.texts + task.pool.texts) == sorted(pool.texts)
    for seed in range(3):  # the biggest draw takes the whole rest, and no set-aside row
        assert not set(script.draw(task.pool, 70, seed).texts) & set(task.held_out.texts)
    again = script.set_aside(script.Task("t", pool, held_out, ["neg", "pos"]), 30)
    assert again.held_out.texts == task.held_out.texts  # the same rows in every run
    labels = dict(zip(pool.texts, pool.labels, strict=True))
    assert [labels[t] for t in task.held_out.texts] == task.held_out.labels
    with pytest.raises(SystemExit, match="leaves nothing"):
        script.set_aside(task, 70)


@pytest.mark.parametrize(
    "argv",
    [
        ["--dev", "100", "--validation-only"],
        ["--dev", "-5"],
        ["--dev", "100", "--plot", "a.png"],
        ["--sizes", ","],
        ["--sizes", "0,500"],
        ["--sizes", "1k"],
    ],  # fmt: skip
)
def test_tuning_options_refuse_what_makes_no_sense(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        _script().parse_args(argv)


@pytest.mark.slow
def test_smoke_run_compares_every_arm_and_plots(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    out, figure = tmp_path / "out", tmp_path / "curves.png"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(out), "--plot", str(figure)],
        capture_output=True, text=True, timeout=300, cwd=SCRIPT.parents[1],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| labelled examples | small-data recipe | same model from scratch | TF-IDF + LR | " \
        "NB-SVM | recipe − NB-SVM (points) |" in done.stdout  # fmt: skip
    rows = json.loads((out / "builtin.json").read_text())["rows"]
    assert {(r["arm"], r["size"]) for r in rows} == {
        (arm, size) for arm in ("recipe", "scratch", "tfidf", "nbsvm") for size in (200, 400)
    }
    assert all(0.0 <= r["held_out"] <= 1.0 for r in rows)
    assert all(0.0 <= r["validation"] <= 1.0 for r in rows if r["arm"] in ("recipe", "scratch"))
    assert figure.read_bytes().startswith(b"\x89PNG")
    assert not (out / "runs" / "recipe-builtin-200-seed0").exists()  # runs removed once scored


def test_resume_keeps_saved_runs_and_refuses_other_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("sklearn")
    script, out = _script(), tmp_path / "out"
    base = ["--dataset", "builtin", "--arms", "nbsvm", "--sizes", "40", "--out", str(out)]
    script.main([*base, "--seeds", "1"])
    saved = out / "builtin.json"
    data = json.loads(saved.read_text())
    assert [(r["size"], r["seed"]) for r in data["rows"]] == [(40, 0)]
    data["rows"][0]["held_out"] = 0.123  # a mark: a resumed run must keep this row, not redo it
    saved.write_text(json.dumps(data))

    script.main([*base, "--seeds", "2", "--sizes", "40,60", "--resume"])
    rows = json.loads(saved.read_text())["rows"]
    assert [(r["size"], r["seed"]) for r in rows] == [(40, 0), (40, 1), (60, 0), (60, 1)]
    assert all(r["commit"] == script.COMMIT for r in rows[1:])  # the code each was made with
    assert rows[0]["held_out"] == 0.123 and rows[1]["held_out"] != 0.123
    assert "(saved)" in capsys.readouterr().out

    with pytest.raises(SystemExit, match="config_sha256 differs"):  # another recipe
        script.main([*base, "--resume", "--set", "training.lr=0.5"])
    with pytest.raises(SystemExit, match="dev differs"):
        script.main([*base, "--resume", "--dev", "10"])
    data = json.loads(saved.read_text())
    for broken in (
        {**data, "settings": {**data["settings"], "newer": 1}},  # a key this version lacks
        {**data, "rows": data["rows"] + data["rows"][:1]},  # a run twice
        {**data, "rows": [{k: v for k, v in data["rows"][0].items() if k != "held_out"}]},
        "not json",
    ):
        saved.write_text(broken if isinstance(broken, str) else json.dumps(broken))
        with pytest.raises(SystemExit, match="newer differs|not a whole results file"):
            script.main([*base, "--resume"])
    script.main([*base, "--seeds", "1"])  # without --resume: starts over
    assert len(json.loads(saved.read_text())["rows"]) == 1


def test_first_seed_runs_one_seed_of_a_cell_as_the_whole_run_draws_it(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    script = _script()
    base = ["--dataset", "builtin", "--arms", "nbsvm", "--sizes", "40"]
    script.main([*base, "--seeds", "3", "--out", str(tmp_path / "all")])
    script.main([*base, "--seeds", "1", "--first-seed", "2", "--out", str(tmp_path / "one")])
    whole, alone = (json.loads((tmp_path / d / "builtin.json").read_text())["rows"]
                    for d in ("all", "one"))  # fmt: skip
    assert [r["seed"] for r in alone] == [2]
    assert alone[0]["held_out"] == whole[2]["held_out"]
    drawn = "data/builtin-40-seed2.parquet"
    assert (tmp_path / "one" / drawn).read_bytes() == (tmp_path / "all" / drawn).read_bytes()
    with pytest.raises(SystemExit):
        script.main([*base, "--first-seed", "-1", "--out", str(tmp_path / "bad")])


def test_by_length_scores_each_half_of_the_held_out_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("sklearn")
    script = _script()
    argv = ["--smoke", "--by-length", "--arms", "recipe,nbsvm", "--sizes", "200"]
    script.main([*argv, "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert "By length (the held-out reviews split at their median length in words)" in printed
    assert "warning" not in printed  # the predictor's and evaluate's held-out accuracy agree
    task = script.load_task("builtin", tmp_path)
    halves = script.Halves.of(task.held_out)
    words = np.array([len(text.split()) for text in task.held_out.texts])
    assert set(words[halves.long]) and min(words[halves.long]) > max(words[~halves.long])
    shorter, longer = int((~halves.long).sum()), int(halves.long.sum())
    for row in json.loads((tmp_path / "out" / "builtin.json").read_text())["rows"]:
        whole = (row["held_out_short"] * shorter + row["held_out_long"] * longer) / len(words)
        assert whole == pytest.approx(row["held_out"], abs=1e-9), row["arm"]
    with pytest.raises(SystemExit):
        script.parse_args(["--by-length", "--validation-only"])


def test_a_bad_override_or_encoder_fails_before_any_run(tmp_path: Path) -> None:
    script, out = _script(), tmp_path / "out"
    with pytest.raises(SystemExit, match="unknown key 'training.bogus'"):
        script.main(["--dataset", "builtin", "--out", str(out), "--set", "training.bogus=1"])
    with pytest.raises(SystemExit, match="is no encoder"):
        script.main(["--dataset", "builtin", "--out", str(out), "--encoder", str(tmp_path / "x")])
    assert not (out / "builtin.json").exists()


def test_table_of_a_run_still_going_says_how_many_seeds_each_cell_has() -> None:
    script = _script()

    def row(arm: str, size: int, seed: int, held_out: float) -> dict[str, object]:
        return {"arm": arm, "size": size, "seed": seed, "held_out": held_out, "seconds": 2.0}

    rows = [row("recipe", 100, seed, 0.80 + seed / 100) for seed in range(3)]
    rows += [row("nbsvm", 100, seed, 0.75) for seed in range(3)]
    rows += [row("scratch", 100, 0, 0.6), row("recipe", 200, 0, 0.9), row("recipe", 200, 2, 0.7)]
    rows += [row("nbsvm", 200, seed, 0.5) for seed in range(2)]
    lines = script.markdown(rows, ["recipe", "scratch", "nbsvm"], "held_out").splitlines()
    assert (
        lines[2]
        == "| 100 | 0.8100 ± 0.0100 | 0.6000 (1 of 3 seeds) | 0.7500 ± 0.0000 | +6.0 ± 1.0 |"
    )
    # the margin pairs seed 0 only: seed 2 has no NB-SVM run, seed 1 no recipe run
    assert lines[3] == (
        "| 200 | 0.8000 ± 0.1414 (2 of 3 seeds) | - | 0.5000 ± 0.0000 (2 of 3 seeds) "
        "| +40.0 (1 of 3 seeds) |"
    )
    assert "| 200 | 2.0 | - | 2.0 |" in lines


def test_report_prints_what_a_stopped_run_saved_and_fits_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("sklearn")
    script, out = _script(), tmp_path / "out"
    base = ["--dataset", "builtin", "--arms", "tfidf,nbsvm", "--sizes", "40,60", "--out", str(out)]
    with pytest.raises(SystemExit, match="holds no run"):
        script.main([*base, "--report"])
    script.main([*base, "--seeds", "2"])
    saved = out / "builtin.json"
    data = json.loads(saved.read_text())
    data["rows"] = [r for r in data["rows"] if (r["arm"], r["size"], r["seed"]) != ("nbsvm", 60, 1)]
    saved.write_text(json.dumps(data))  # as if stopped before its last run
    capsys.readouterr()

    script.main([*base, "--seeds", "2", "--report"])
    printed = capsys.readouterr().out
    assert "saved runs, nothing fitted" in printed
    assert "| 60 | " in printed and " (1 of 2 seeds) |" in printed
    assert json.loads(saved.read_text()) == data  # nothing fitted, nothing saved
    with pytest.raises(SystemExit):
        script.main([*base, "--report", "--smoke"])
