"""Hostile command lines, terminals and run directories (issue 18): a result or one error line.

The README's exit codes hold: 0 success, 1 runtime failure, 2 bad usage or input, 130
interrupted. What depends on the process itself (argv bytes, closed descriptors, a killed
build) runs in a real ``python -m rnn_sentiment``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rnn_sentiment.config import Config, load_config
from rnn_sentiment.errors import CheckpointError, ConfigError
from rnn_sentiment.inference.predictor import Predictor
from rnn_sentiment.training.loop import prepare_run_dir, train
from tests.helpers import NEGATIVE, POSITIVE, invoke, tiny_config, tiny_overrides

# Label names a labels.json may hold: rich markup ('[/]' ended a style and crashed, '[pos]'
# vanished), an ANSI screen clear, an OSC window title, a C1 control (CSI as one byte).
HOSTILE_LABELS = ["[pos]", "[/]\x1b[2j", "\x1b]0;owned\x07neg\x9b31m"]
RAW_CONTROLS = ("\x1b", "\x07", "\x9b")


def cli(*args: str | bytes, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    """``python -m rnn_sentiment ARGS`` in a process of its own."""
    command = [sys.executable, "-m", "rnn_sentiment", *args]
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    return subprocess.run(command, timeout=120, **{**streams, **kwargs})


def closing(fd: int) -> Callable[[], None]:
    """A ``preexec_fn`` that starts the command with ``fd`` closed (``<&-``, ``>&-``)."""
    return lambda: os.close(fd)


def one_error(stderr: str | bytes) -> str:
    """The single ``error: ...`` line that is all of ``stderr``."""
    text = stderr.decode() if isinstance(stderr, bytes) else stderr
    lines = text.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    return lines[0]


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained on reviews whose labels are :data:`HOSTILE_LABELS`."""
    tmp_path = tmp_path_factory.mktemp("hostile-labels")
    texts = [POSITIVE, NEGATIVE, ["so so", "it was fine", "average at best", "neither here"]]
    pairs = zip(HOSTILE_LABELS, texts, strict=True)
    rows = [{"text": text, "label": label} for label, group in pairs for text in group]
    (tmp_path / "reviews").mkdir()
    (tmp_path / "reviews" / "train.jsonl").write_text(
        "".join(json.dumps(row) + "\n" for row in rows * 5)
    )
    config = tiny_config(tmp_path, **{"data.source": str(tmp_path / "reviews")})
    run_dir = train(config).run_dir
    assert json.loads((run_dir / "labels.json").read_text())["labels"] == sorted(HOSTILE_LABELS)
    return run_dir


# --- 1. one run directory per training -------------------------------------------------------


def race_for(config: Config, racers: int) -> tuple[list[Path], list[str]]:
    """``prepare_run_dir(config)`` in ``racers`` threads at once: (claimed, refused messages)."""
    start = threading.Barrier(racers)
    claimed: list[Path] = []
    refused: list[str] = []

    def claim() -> None:
        start.wait()
        try:
            claimed.append(prepare_run_dir(config))
        except CheckpointError as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=claim) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return claimed, refused


def test_racing_trainings_claim_a_run_directory_once(tmp_path: Path) -> None:
    for round_ in range(10):
        config = tiny_config(tmp_path, **{"output.name": f"race-{round_}"})
        claimed, refused = race_for(config, 6)
        assert len(claimed) == 1 and len(refused) == 5
        assert all("already exists; choose another output.name" in m for m in refused)
    # without a name, runs started in the same second get names of their own
    claimed, refused = race_for(tiny_config(tmp_path, **{"output.name": ""}), 4)  # "": null
    assert len(set(claimed)) == 4 and not refused


def test_two_processes_training_one_name_leave_one_loadable_run(
    tmp_path: Path, jsonl_reviews: Path
) -> None:
    def start(cell: str) -> subprocess.Popen[bytes]:
        overrides = tiny_overrides(tmp_path, **{"data.source": jsonl_reviews, "model.cell": cell})
        command = [sys.executable, "-m", "rnn_sentiment", "train", "-q", *overrides]
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    processes = {cell: start(cell) for cell in ("lstm", "gru")}
    errors = {cell: p.communicate(timeout=120)[1] for cell, p in processes.items()}
    codes = {cell: p.returncode for cell, p in processes.items()}
    assert sorted(codes.values()) == [0, 2], errors
    [winner] = [cell for cell, code in codes.items() if code == 0]
    [loser] = [cell for cell, code in codes.items() if code == 2]
    assert "already exists" in one_error(errors[loser])
    run = Predictor.from_dir(tmp_path / "runs" / "tiny")  # config and weights of one training
    assert run.run.config.model.cell == winner


@pytest.mark.parametrize("name", ["../escaped", "/tmp/absolute", "a/b", "a\\b", ".", "..", '""'])
def test_run_name_cannot_leave_the_output_folder(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, [f"output.dir={tmp_path / 'runs'}", f"output.name={name}"])
    [problem] = caught.value.problems
    assert problem.startswith("output.name: must be a plain folder name")
    code, _, err = invoke("train", f"output.dir={tmp_path / 'runs'}", f"output.name={name}")
    assert code == 2 and "output.name" in one_error(err)
    assert list(tmp_path.iterdir()) == []  # nothing created, inside or outside


# --- 2. one line and exit 2, not an internal error -------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        [b"predict", b"caf\xe9"],  # a review in Latin-1
        [b"predict", b"--model", b"runs/caf\xe9", b"good"],  # a path
        [b"train", b"output.name=caf\xe9"],  # a config value
    ],
    ids=["text", "path", "override"],
)
def test_arguments_that_are_not_utf8_are_refused(args: list[bytes]) -> None:
    done = cli(*args)
    assert done.returncode == 2 and done.stdout == b""
    assert "caf\\xe9' is not valid UTF-8" in one_error(done.stderr)


@pytest.mark.parametrize("seed", ["99999999999999999999", "-1", "4294967296"])
def test_seed_out_of_range_names_the_key(seed: str) -> None:
    code, _, err = invoke("train", f"training.seed={seed}")
    assert code == 2 and one_error(err).startswith("error: training.seed: ")
    assert load_config(None, ["training.seed=4294967295"]).training.seed == 2**32 - 1


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (["train", ""], "CONFIG"),
        (["train", "", "training.epochs=1"], "CONFIG"),
        (["train", "--resume", ""], "'--resume'"),
        (["pretrain", ""], "CONFIG"),
        (["compare", "--out", "", "training.epochs=1"], "'--out'"),
        (["evaluate", ""], "'RUN_DIR'"),
        (["evaluate", "--data", ""], "'--data'"),
        (["evaluate", "--plot", ""], "'--plot'"),
        (["calibrate", ""], "'RUN_DIR'"),
        (["predict", "--model", "", "good"], "'--model'"),
        (["predict", "--file", ""], "'--file'"),
        (["predict", "--input", ""], "'--input'"),
        (["predict", "--input", "reviews.txt", "-o", ""], "'--output'"),
        (["export", "", "-o", "out"], "'RUN_DIR'"),
        (["check", "--suite", ""], "'--suite'"),
        (["serve", ""], "'MODEL'"),
    ],
)
def test_an_empty_path_is_a_usage_error_not_this_folder(
    args: list[str], name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pathlib reads "" as ".": `--model "$UNSET"` used to mean the current folder, and
    # `predict --input r.txt -o ""` ended in an internal error.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reviews.txt").write_text("good\n")
    code, out, err = invoke(*args)
    assert code == 2 and out == ""
    line = one_error(err)  # "for '--model' / '-m': ..." where the option has a short name
    assert line.startswith(f"error: invalid value for {name}") and ": an empty path; " in line
    assert sorted(path.name for path in tmp_path.iterdir()) == ["reviews.txt"]  # nothing made


def test_deeply_nested_values_are_config_errors(tmp_path: Path) -> None:
    deep = "[" * 5000 + "]" * 5000
    code, _, err = invoke("train", f"model.cell={deep}")
    assert code == 2 and "'model.cell': the value is nested too deeply" in one_error(err)
    config = tmp_path / "deep.yaml"
    config.write_text(f"model:\n  cell: {deep}\n")
    code, _, err = invoke("train", str(config))
    assert code == 2 and "nested too deeply" in one_error(err)


@pytest.mark.parametrize("args", [["predict", "-"], ["predict", "--input", "-"]])
def test_closed_stdin_is_a_usage_error(args: list[str]) -> None:
    done = cli(*args, preexec_fn=closing(0))
    assert done.returncode == 2 and "stdin is closed" in one_error(done.stderr)


def test_closed_stdout_is_refused_before_any_work(hostile_run: Path, tmp_path: Path) -> None:
    for args in (["predict", "-m", str(hostile_run), "good"], ["train", "training.epochs=1"]):
        done = cli(*args, preexec_fn=closing(1), cwd=tmp_path)
        assert done.returncode == 2 and "stdout is closed" in one_error(done.stderr)
    assert list(tmp_path.iterdir()) == []  # the training did not start
    # scoring a file into a file needs no stdout
    (tmp_path / "in.csv").write_text("text\na wonderful film\n")
    out = tmp_path / "out.csv"
    files = ["-i", str(tmp_path / "in.csv"), "-o", str(out)]
    done = cli("predict", "-q", "-m", str(hostile_run), *files, preexec_fn=closing(1))
    assert done.returncode == 0, done.stderr
    assert len(list(csv.DictReader(out.open()))) == 1


def test_a_tokenizer_panic_is_a_one_line_internal_error(
    hostile_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokenizers import Regex, Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Split

    # A regex that runs out of backtracking makes the Rust library panic: pyo3's PanicException,
    # a BaseException, not an Exception.
    tokenizer = Tokenizer(WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Split(Regex("(a+)+c"), "isolated")
    monkeypatch.setattr(Predictor, "predict", lambda *_: tokenizer.encode("a" * 40 + "x"))
    code, out, err = invoke("predict", "-m", str(hostile_run), "aaa")
    assert code == 1 and out == ""
    line = one_error(err)
    assert line.startswith("error: internal error: PanicException: ")
    assert line.endswith("(rerun with --debug)")

    # Ctrl-C and an explicit exit are still theirs, not internal errors
    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Predictor, "predict", interrupted)
    code, _, err = invoke("predict", "-m", str(hostile_run), "aaa")
    assert code == 130 and one_error(err) == "error: interrupted"
    monkeypatch.setattr(Predictor, "predict", lambda *_: sys.exit(3))
    assert invoke("predict", "-m", str(hostile_run), "aaa")[0] == 3


def test_closed_pipe_ends_quietly(hostile_run: Path) -> None:
    # `predict ... | head` once head has gone: exit 141 (128 + SIGPIPE) and no message, as a
    # shell reports for `cat big | head`'s cat
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = cli("predict", "-m", str(hostile_run), "--format", "jsonl", "good", "bad",
                   stdout=write_end)  # fmt: skip
    finally:
        os.close(write_end)
    assert done.returncode == 141 and done.stderr == b""


# --- 3. what reaches a terminal --------------------------------------------------------------


def test_label_names_and_reviews_reach_the_terminal_escaped(
    hostile_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # no line breaks inside what is checked
    model = ["-m", str(hostile_run)]
    review = "a wonderful\x1b[31m film"
    outputs = [
        invoke("predict", *model, review, "i hated it"),
        invoke("predict", *model, "--explain", review),
        invoke(
            "evaluate",
            str(hostile_run),
            "--data",
            str(hostile_run.parent.parent / "reviews"),
            "--split",
            "train",
        ),  # fmt: skip
        invoke("predict", "-m", str(hostile_run.parent / "missing\x1b]0;x\x07[/]"), "good"),
    ]
    for code, out, err in outputs:
        assert code in (0, 2), err
        assert not any(c in out + err for c in RAW_CONTROLS), out + err
    table = outputs[0][1]
    assert "[pos]" in table and "\\x1b[31m" in table  # markup shown, the escape visible
    assert "[/]\\x1b[2j" in outputs[2][1]  # evaluate's per-class and confusion tables
    assert "missing\\x1b]0;x\\x07[/]" in one_error(outputs[3][2])


def test_machine_output_keeps_label_names_exact(hostile_run: Path) -> None:
    model = ["-m", str(hostile_run)]
    code, out, err = invoke("predict", *model, "--format", "json", "a wonderful\x1b film")
    assert code == 0, err
    [row] = json.loads(out)
    assert row["text"] == "a wonderful\x1b film" and row["label"] in HOSTILE_LABELS
    assert {key.removeprefix("p_") for key in row if key.startswith("p_")} == set(HOSTILE_LABELS)
    code, out, _ = invoke("predict", *model, "--format", "csv", "i hated it")
    header = next(csv.reader(io.StringIO(out)))
    assert header[3:] == [f"p_{label}" for label in sorted(HOSTILE_LABELS)]


# --- 4. the compiled scorer's build ----------------------------------------------------------

FAKE_COMPILER = """#!/bin/sh
case "$1" in
  -v|--version) echo "COLLECT_GCC=c++"; echo "gcc version 12.2.0 (fake)"; exit 0;;
  -dumpfullversion|-dumpversion) echo "12.2.0"; exit 0;;
esac
echo $$ >> "$FAKE_COMPILER_PIDS"
exec sleep 60
"""


def _ninja_available() -> bool:
    try:
        import ninja  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
    except ImportError:
        return shutil.which("ninja") is not None
    return True


def _running(pid: int) -> bool:
    try:  # a zombie is dead, only not yet reaped by init
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_waiting_for_the_build_lock_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import fcntl

    from rnn_sentiment.inference import native

    lock = tmp_path / "build.lock"
    with native._exclusive(lock, patience=0.1):  # free: taken at once, nothing said
        pass
    assert capsys.readouterr().err == ""
    entered = threading.Event()

    def wait_for_lock() -> None:
        with native._exclusive(lock, patience=0.1):
            entered.set()

    with lock.open("a") as other_process:
        fcntl.flock(other_process, fcntl.LOCK_EX)
        waiter = threading.Thread(target=wait_for_lock)
        waiter.start()
        time.sleep(0.5)
        assert not entered.is_set()
        fcntl.flock(other_process, fcntl.LOCK_UN)
    waiter.join(10)
    assert entered.is_set()
    assert capsys.readouterr().err == (
        "rnn-sentiment: waiting for another process to finish building the fast CPU scorer "
        f"(lock: {lock})\n"
    )


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not _ninja_available(),
    reason="PR_SET_PDEATHSIG and ninja are needed",
)
def test_a_killed_build_leaves_no_compiler_running(tmp_path: Path) -> None:
    compiler, pids = tmp_path / "bin" / "c++", tmp_path / "compiler-pids"
    compiler.parent.mkdir()
    compiler.write_text(FAKE_COMPILER)
    compiler.chmod(0o755)
    env = {**os.environ, "CXX": str(compiler), "FAKE_COMPILER_PIDS": str(pids),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}  # fmt: skip
    build = [sys.executable, "-c", "from rnn_sentiment.inference import native; native.build()"]

    def started() -> list[int]:
        return [int(pid) for pid in pids.read_text().split()] if pids.exists() else []

    first = subprocess.Popen(build, env=env, stderr=subprocess.DEVNULL)
    second: subprocess.Popen[bytes] | None = None
    second_err = tmp_path / "second.err"
    try:
        assert _wait_for(lambda: len(started()) == 1, 60), "the first build never compiled"
        with second_err.open("wb") as err:
            second = subprocess.Popen(build, env=env, stderr=err)
        assert _wait_for(lambda: b"waiting for another" in second_err.read_bytes(), 60)
        first.kill()  # SIGKILL: nothing of it runs to clean up
        first.wait()
        assert _wait_for(lambda: not _running(started()[0]), 5), "its compiler kept running"
        # the waiting process takes over the build; killed too, it leaves no compiler either
        assert _wait_for(lambda: len(started()) == 2, 60), "the second build never compiled"
        second.kill()
        second.wait()
        assert _wait_for(lambda: not _running(started()[1]), 5), "its compiler kept running"
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
        for pid in started():
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
    assert "waiting for another process to finish building" in second_err.read_text()


def test_predict_passes_max_review_chars_to_the_scorer(hostile_run: Path, tmp_path: Path) -> None:
    reviews = tmp_path / "reviews.csv"
    reviews.write_text("text\na wonderful film\n" + "long " * 10 + "\n")
    args = ["predict", "-q", "-m", str(hostile_run), "--input", str(reviews), "--output", "-"]
    code, out, err = invoke(*args, "--max-review-chars", "20")
    assert code == 0, err
    short, long = (json.loads(line) for line in out.splitlines())
    assert short["label"] in HOSTILE_LABELS and not short.get("error")
    assert long["label"] is None and "longer than 20 characters" in long["error"]
    code, _, err = invoke(*args, "--max-review-chars", "0")
    assert code == 2 and "max-review-chars" in err


def test_a_line_over_the_longest_review_on_stdin_or_file_is_one_line(
    hostile_run: Path, tmp_path: Path
) -> None:
    huge = "a" * 1_000_001 + "\n"
    (tmp_path / "huge.txt").write_text("fine\n" + huge)
    for args, stdin in ((["-f", str(tmp_path / "huge.txt")], None), (["-"], "fine\n" + huge)):
        code, _, err = invoke("predict", "-m", str(hostile_run), *args, stdin=stdin)
        assert code == 2 and "line 2" in err and "--input" in err, err
        assert "internal error" not in err


def test_invisible_format_characters_are_shown_on_a_terminal() -> None:
    from rnn_sentiment.console import shown

    assert shown("pos\u202egnp") == "pos\\u202egnp"  # a right-to-left override, made visible
    assert shown("zero\u200bwidth") == "zero\\u200bwidth"


@pytest.mark.parametrize(
    ("option", "name", "message"),
    [
        ("-o", "labelled.csv", "would replace the data being evaluated"),
        ("-o", "folder", "is a folder; name a file in it, such as"),
        ("-o", "nowhere/m.json", "does not exist; create it"),
        ("-o", "m.txt", "name a .json file"),
        ("--plot", "labelled.csv", "would replace the data being evaluated"),
        ("--plot", "plot.txt", "name a .png or .svg or .pdf file"),
        ("--plot", "folder", "is a folder"),
        ("--plot", "nowhere/p.png", "does not exist"),
    ],
)
def test_evaluate_refuses_an_output_it_could_not_write_before_any_scoring(
    tmp_path: Path, option: str, name: str, message: str
) -> None:
    data = tmp_path / "labelled.csv"
    data.write_text("text,label\na joy,positive\na bore,negative\n")
    (tmp_path / "folder").mkdir()
    code, out, err = invoke("evaluate", "--data", str(data), option, str(tmp_path / name))
    assert code == 2 and message in err and err.count("\n") == 1 and not out, err
    assert data.read_text() == "text,label\na joy,positive\na bore,negative\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "labelled.csv"]


def test_evaluate_without_data_never_writes_over_what_it_reads_or_the_model(
    tmp_path: Path,
) -> None:
    # Found by a red-team pass: with no --data, evaluate reads the run's own data.source, which
    # -o could replace; and -o could replace the model's labels.json or metrics.json.

    from tests.helpers import untrained_run

    folder = tmp_path / "reviews"
    folder.mkdir()
    for split in ("train", "test"):
        (folder / f"{split}.csv").write_text("text,label\na joy,positive\na bore,negative\n")
    data = folder / "test.csv"
    run = untrained_run(tmp_path, **{"data.source": str(folder)})
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    for option, target, message in [
        ("-o", data, "would replace the data being evaluated"),
        ("--plot", data, "would replace the data being evaluated"),
        ("-o", folder / "train.csv", "would replace the data being evaluated"),
        # found by a red-team pass: a new test.json there would be read as a split next time
        ("-o", folder / "test.json", "would add a file to the data folder being evaluated"),
        ("-o", run / "metrics.json", "would replace a file of the model"),
        ("-o", run / "labels.json", "would replace a file of the model"),
        ("--plot", run / "labels.json", "would replace a file of the model"),
    ]:
        code, out, err = invoke("evaluate", str(run), option, str(target))
        assert code == 2 and message in err and err.count("\n") == 1 and not out, err
    assert data.read_text() == "text,label\na joy,positive\na bore,negative\n"
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    code, out, err = invoke("evaluate", str(run), "-o", str(run / "eval.json"), "--format", "json")
    assert code == 0 and json.loads((run / "eval.json").read_text())["accuracy"] >= 0, err


@pytest.mark.parametrize("command", [["predict", "ok"], ["serve"], ["check"]])
def test_an_absurd_thread_count_is_refused_before_anything_starts(command: list[str]) -> None:
    # Found by a red-team pass: --threads 100000 crashed the process with a segfault and no
    # message (and exhausted the machine's processes on onnxruntime).
    code, out, err = invoke(command[0], "--threads", "100000", *command[1:])
    assert code == 2 and "less than or equal to 256" in err and err.count("\n") == 1, err
    assert not out


def test_the_thread_cap_holds_in_the_library_too() -> None:
    from rnn_sentiment.inference.models import BUNDLED_MODEL_DIR, load_predictor

    for quantize in (None, "int8"):  # onnxruntime, then PyTorch
        with pytest.raises(ConfigError, match="threads must be 1 to 256, not 100000"):
            load_predictor(BUNDLED_MODEL_DIR, quantize=quantize, threads=100_000)


def test_a_plot_through_a_link_into_the_model_is_refused(tmp_path: Path) -> None:
    from rnn_sentiment.inference.models import BUNDLED_MODEL_DIR

    model = Path(shutil.copytree(BUNDLED_MODEL_DIR, tmp_path / "model"))
    (tmp_path / "r.png").symlink_to(model / "labels.json")
    data = tmp_path / "labelled.csv"
    data.write_text("text,label\na joy,positive\na bore,negative\n")
    before = (model / "labels.json").read_bytes()
    code, _, err = invoke("evaluate", str(model), "--data", str(data), "--plot",
                          str(tmp_path / "r.png"))  # fmt: skip
    assert code == 2 and "would replace a file of the model" in err, err
    assert (model / "labels.json").read_bytes() == before
