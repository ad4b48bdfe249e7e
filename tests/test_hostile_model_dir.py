"""Hostile model and run directories: bounded memory, nothing read from outside, one-line errors.

A model directory may come from anyone. Each test plants what an attacker (or an unlucky copy)
would, usually with the manifest rebuilt to match so that the deeper check is the one exercised,
and checks that loading (``load_run``: ``predict``, ``evaluate``, the Python API) and resuming
(``train --resume``) refuse it with one line that does not quote the planted file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from rnn_sentiment.atomic import write_bytes
from rnn_sentiment.checkpoint import (
    load_run,
    read_metrics,
    save_metrics,
    verify_run,
    write_manifest,
)
from rnn_sentiment.errors import CheckpointError
from rnn_sentiment.jsonfile import parse_json
from rnn_sentiment.model import build_model
from rnn_sentiment.runfiles import (
    CONFIG_FILE,
    LABELS_FILE,
    MANIFEST_FILE,
    STATE_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
)
from rnn_sentiment.training.loop import RECORD_KEYS, build_optimizer, build_scheduler, train
from rnn_sentiment.training.state import LoopState, restore_state, resumable_config, save_state
from tests.helpers import invoke, untrained_run

SECRET = "SECRET-7f3a"  # planted in files that must never be echoed
GiB = 2**30


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small, valid run directory, written without training (milliseconds, not seconds)."""
    return untrained_run(tmp_path_factory.mktemp("base"), **{"model.cell": "gru"})


@pytest.fixture
def run(base_run: Path, tmp_path: Path) -> Path:
    """A fresh copy of :func:`base_run` to plant things in."""
    return Path(shutil.copytree(base_run, tmp_path / "model"))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def set_manifest_entry(run: Path, name: str, digest: str | None) -> None:
    """Set (None: remove) one manifest entry, as someone rebuilding the manifest would."""
    manifest = json.loads((run / MANIFEST_FILE).read_text())
    if digest is None:
        manifest["files"].pop(name)
    else:
        manifest["files"][name] = digest
    (run / MANIFEST_FILE).write_text(json.dumps(manifest))


def one_line_error(call: Callable[..., object], *args: object) -> str:
    """The message of the CheckpointError ``call(*args)`` raises; it must be one line."""
    with pytest.raises(CheckpointError) as info:
        call(*args)
    message = str(info.value)
    assert "\n" not in message and SECRET not in message, message
    return message


def safetensors_file(path: Path, tensors: dict[str, list[int]]) -> None:
    """A safetensors header for ``tensors`` (name -> shape), the data a sparse hole: gigabytes
    of apparent size cost nothing on disk."""
    table, offset = {}, 0
    for name, shape in tensors.items():
        end = offset + 4 * int(torch.Size(shape).numel())
        table[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, end]}
        offset = end
    header = json.dumps(table).encode()
    with path.open("wb") as handle:
        handle.write(len(header).to_bytes(8, "little") + header)
    os.truncate(path, 8 + len(header) + offset)


# ----------------------------------------------------------------------------------------------
# 1. Sizes are checked before anything is allocated

LOAD_UNDER_A_MEMORY_LIMIT = r"""
import json, resource, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from rnn_sentiment.checkpoint import load_run, load_weights, verify_run
from rnn_sentiment.errors import CheckpointError
from rnn_sentiment.jsonfile import parse_json
from rnn_sentiment.inference.predictor import Predictor
from rnn_sentiment.training.state import resumable_config

def vm_size():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024

calls = {
    "load": load_run,
    "resume": lambda p: resumable_config(Path(p), None, False),
    "verify": lambda p: verify_run(Path(p)),
    "weights": lambda p: load_weights(Path(p) / "model.safetensors"),
    "predict": lambda p: Predictor.from_dir(p).predict(["a wonderful film"]),
}
limit = vm_size() + int(sys.argv[1])  # headroom above what the imports mapped
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
for arg in sys.argv[2:]:
    how, path = arg.split("=", 1)
    start = time.monotonic()
    try:
        calls[how](path)
        outcome = "loaded"
    except CheckpointError as exc:
        outcome = "error: " + str(exc)
    except MemoryError:
        outcome = "MemoryError"
    print(json.dumps({"call": arg, "outcome": outcome, "seconds": time.monotonic() - start}),
          flush=True)
"""


def load_in_a_subprocess(calls: list[str], headroom: int, timeout: float = 60) -> dict[str, dict]:
    """Run ``how=path`` loads in a fresh process whose address space is capped at what its
    imports take plus ``headroom`` bytes; one result per call, keyed by the call."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2",
           "RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", LOAD_UNDER_A_MEMORY_LIMIT, str(headroom), *calls],
        capture_output=True, text=True, timeout=timeout, env=env, check=False,
    )  # fmt: skip
    results = {r["call"]: r for r in map(json.loads, done.stdout.splitlines())}
    assert done.returncode == 0 and len(results) == len(calls), done.stderr[-2000:]
    return results


needs_proc = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="reads VmSize from /proc"
)


@needs_proc
def test_absurd_sizes_are_refused_before_any_allocation(run: Path, tmp_path: Path) -> None:
    def variant(name: str) -> Path:
        return Path(shutil.copytree(run, tmp_path / name))

    # 16384 hidden units x 8 bidirectional LSTM layers: 47 billion parameters (4.4 GB was
    # reached before the process was stopped).
    huge = variant("huge-config")
    config = (huge / CONFIG_FILE).read_text()
    for old, new in (("cell: gru", "cell: lstm"), ("hidden_size: 16", "hidden_size: 16384"),
                     ("num_layers: 1", "num_layers: 8"), ("bidirectional: false",
                                                          "bidirectional: true")):  # fmt: skip
        assert old in config
        config = config.replace(old, new)
    (huge / CONFIG_FILE).write_text(config)
    write_manifest(huge)
    # The real weights' header, then a 2 GiB hole (0 bytes on disk); the manifest is untouched.
    sparse = variant("sparse-weights")
    os.truncate(sparse / WEIGHTS_FILE, 2 * GiB)
    # A header that claims to be 2**40 bytes long.
    long_header = variant("long-header")
    data = bytearray((long_header / WEIGHTS_FILE).read_bytes())
    data[:8] = (2**40).to_bytes(8, "little")
    (long_header / WEIGHTS_FILE).write_bytes(bytes(data))
    write_manifest(long_header)
    # A consistent 1 GiB file whose embedding has 2**24 rows where the vocabulary has a few dozen.
    big_tensor = variant("big-tensor")
    shapes = {k: list(v.shape) for k, v in load_run(run).model.state_dict().items()}
    shapes["embedding.weight"] = [2**24, 16]
    safetensors_file(big_tensor / WEIGHTS_FILE, shapes)
    set_manifest_entry(big_tensor, WEIGHTS_FILE, "0" * 64)
    # One vocabulary id of 2**31 - 1: scoring a review with that word allocated 4 GiB in the
    # tokenizers library and aborted the process (exit 134).
    big_id = variant("vocab-id")
    spec = json.loads((big_id / TOKENIZER_FILE).read_text())
    spec["model"]["vocab"]["film"] = 2**31 - 1
    (big_id / TOKENIZER_FILE).write_text(json.dumps(spec))
    write_manifest(big_id)
    # A tokenizer.json of 1 GiB (sparse).
    big_tokenizer = variant("big-tokenizer")
    os.truncate(big_tokenizer / TOKENIZER_FILE, GiB)
    # A billion laughs in YAML: nine aliases nine deep.
    laughs = variant("yaml-aliases")
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    (laughs / CONFIG_FILE).write_text("\n".join(lines) + "\n")
    write_manifest(laughs)

    calls = [f"load={run}", f"predict={run}", f"load={huge}", f"resume={huge}", f"load={sparse}",
             f"verify={sparse}", f"load={long_header}", f"weights={long_header}",
             f"load={big_tensor}", f"verify={big_tensor}", f"weights={big_tensor}",
             f"predict={big_id}", f"resume={big_id}", f"load={big_tokenizer}", f"load={laughs}",
             f"resume={laughs}"]  # fmt: skip
    results = load_in_a_subprocess(calls, headroom=GiB)
    assert results[calls[0]]["outcome"] == "loaded"  # a real model fits under the same limit
    assert results[calls[1]]["outcome"] == "loaded"  # and scores
    expected = {
        "huge-config": "describes a model of 47,248,900,418 parameters, over the 200,000,000",
        "sparse-weights": "bytes where its header describes",
        "long-header": "no header of at most 16,777,216 bytes",
        "big-tensor": "embedding.weight should have shape [",
        "vocab-id": "vocabulary ids are not 0, 1, 2, ... without gaps",
        "big-tokenizer": "over the 33,554,432 a run directory's tokenizer.json may hold",
        "yaml-aliases": "is not plain YAML (line 2, column",
    }
    for call in calls[2:]:
        result = results[call]
        name = Path(call.split("=", 1)[1]).name
        wanted = (
            {"big-tensor": "over the 200,000,000"} if call.startswith(("verify", "weights")) else {}
        )
        assert result["outcome"].startswith("error: "), result
        assert wanted.get(name, expected[name]) in result["outcome"], result
        assert result["seconds"] < 5, result


# ----------------------------------------------------------------------------------------------
# 2. Only the directory's own, listed, checked files are read


@pytest.mark.parametrize("name", [CONFIG_FILE, TOKENIZER_FILE, LABELS_FILE, WEIGHTS_FILE])
def test_every_file_loaded_must_be_listed_in_the_manifest(run: Path, name: str) -> None:
    set_manifest_entry(run, name, None)
    message = one_line_error(load_run, run)
    assert name in message and ("not in manifest.json" in message or "does not list" in message
                                or "no weights yet" in message)  # fmt: skip


@pytest.mark.parametrize("name", [CONFIG_FILE, TOKENIZER_FILE, LABELS_FILE])
def test_a_modified_config_tokenizer_or_labels_file_is_detected(run: Path, name: str) -> None:
    with (run / name).open("a") as handle:
        handle.write("\n")
    assert "corrupted or was modified" in one_line_error(load_run, run)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.fill_(float("nan")), "classifier.bias holds NaN or infinity"),
        (lambda t: t.fill_(float("-inf")), "classifier.bias holds NaN or infinity"),
        (lambda t: t.to(torch.uint8), "holds a tensor that is not floating point"),
        (lambda t: t.to(torch.bool), "is not a valid safetensors file"),  # a type never used
    ],
)
def test_weights_that_are_not_finite_floats_are_refused_with_a_valid_checksum(
    run: Path, change: Callable[[torch.Tensor], torch.Tensor], message: str
) -> None:
    state = load_safetensors((run / WEIGHTS_FILE).read_bytes())
    state["classifier.bias"] = change(state["classifier.bias"].clone())
    (run / WEIGHTS_FILE).write_bytes(save_safetensors(state))
    write_manifest(run)  # so that the weights themselves are what fails
    error = one_line_error(load_run, run)
    assert message in error and WEIGHTS_FILE in error, error


@pytest.mark.parametrize(
    "name",
    ["../../etc/passwd", "/etc/passwd", "sub/config.yaml", "..", ".", "", "config.yaml\x00",
     "x" * 1000, "x" * 100_000, f"{SECRET}.json"],
)  # fmt: skip
def test_manifest_names_are_run_file_names_only(run: Path, name: str) -> None:
    set_manifest_entry(run, name, sha256(b"anything"))
    message = one_line_error(load_run, run)
    if len(name) < 10_000:
        assert "lists a file that is not part of a run directory" in message
    else:  # the manifest is over its cap before any name is looked at
        assert "manifest.json is 100,5" in message and "over the 65,536" in message
    assert len(message) < 400  # the name is not repeated


def test_a_symbolic_link_is_never_followed_and_its_target_never_echoed(
    run: Path, base_run: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "shadow"
    secret.write_text(f"{SECRET}: x\nroot: y\n")
    (run / CONFIG_FILE).unlink()
    (run / CONFIG_FILE).symlink_to(secret)
    set_manifest_entry(run, CONFIG_FILE, sha256(secret.read_bytes()))  # even with its checksum
    assert "is a symbolic link" in one_line_error(load_run, run)
    code, out, err = invoke("predict", "--model", str(run), "a wonderful film")
    assert code == 2 and err.count("\n") == 1 and "symbolic link" in err
    assert SECRET not in out + err
    # a link inside the directory is refused as well: the rule is simple
    (run / LABELS_FILE).rename(run / "labels.real")
    (run / LABELS_FILE).symlink_to("labels.real")
    (run / CONFIG_FILE).unlink()
    shutil.copy(base_run / CONFIG_FILE, run / CONFIG_FILE)
    set_manifest_entry(run, CONFIG_FILE, sha256((run / CONFIG_FILE).read_bytes()))
    assert "labels.json is a symbolic link" in one_line_error(verify_run, run)


@needs_proc
def test_fifos_and_devices_are_refused_without_being_read(run: Path, tmp_path: Path) -> None:
    fifo = Path(shutil.copytree(run, tmp_path / "fifo"))
    (fifo / TOKENIZER_FILE).unlink()
    os.mkfifo(fifo / TOKENIZER_FILE)  # opening it for reading would wait for a writer forever
    zero = Path(shutil.copytree(run, tmp_path / "zero"))
    (zero / WEIGHTS_FILE).unlink()
    (zero / WEIGHTS_FILE).symlink_to("/dev/zero")  # endless
    results = load_in_a_subprocess([f"load={fifo}", f"load={zero}"], headroom=GiB, timeout=30)
    assert "tokenizer.json is not a regular file" in results[f"load={fifo}"]["outcome"]
    assert "model.safetensors is a symbolic link" in results[f"load={zero}"]["outcome"]


def test_each_file_is_opened_once_and_what_was_checked_is_what_is_used(
    run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No check-then-reopen: a file replaced right after it was opened changes nothing."""
    import rnn_sentiment.runfiles as runfiles

    opened: list[str] = []
    real_open = os.open

    def open_then_swap(name: str, *args: object, **kwargs: object) -> int:
        fd = real_open(name, *args, **kwargs)  # type: ignore[arg-type]
        if "dir_fd" not in kwargs:  # not a run file read (the swap's own writes)
            return fd
        opened.append(name)
        if name == CONFIG_FILE:  # swapped for a bigger model, manifest and all
            bigger = (run / CONFIG_FILE).read_text().replace("hidden_size: 16", "hidden_size: 32")
            write_bytes(run / CONFIG_FILE, bigger.encode())
            write_manifest(run)
        return fd

    monkeypatch.setattr(runfiles.os, "open", open_then_swap)
    loaded = load_run(run)
    monkeypatch.undo()
    assert loaded.config.model.hidden_size == 16  # the bytes checked, not the file swapped in
    assert opened == [MANIFEST_FILE, CONFIG_FILE, LABELS_FILE, TOKENIZER_FILE, WEIGHTS_FILE]
    assert "hidden_size: 32" in (run / CONFIG_FILE).read_text()  # the swap was real


def test_error_messages_never_quote_a_file_that_failed_its_check(run: Path, base_run: Path) -> None:
    config = (run / CONFIG_FILE).read_text()
    planted = {
        CONFIG_FILE: [
            config + f"{SECRET}: 1\n",  # unknown top-level key
            config.replace("model:\n", f"model:\n  {SECRET}: 1\n"),  # unknown key in a section
            config.replace("cell: gru", f"cell: {SECRET}"),  # invalid value
            config.replace("train_split: train", f"train_split: {SECRET}").replace(
                "test_split: null", f"test_split: {SECRET}"
            ),  # a cross-field problem, whose message names the split
            f"{SECRET}\n",
            f"- {SECRET}\n",
            f"model: {{{SECRET}\n",
        ],
        LABELS_FILE: [f'{{"labels": ["{SECRET}"]}}', f'{{"{SECRET}": 1}}', SECRET],
        TOKENIZER_FILE: [SECRET, f'{{"model": {{"type": "{SECRET}"}}}}'],
        MANIFEST_FILE: [SECRET, f'{{"files": {{"{SECRET}": "{SECRET}"}}, "format_version": 1}}'],
    }
    for name, contents in planted.items():
        for content in contents:
            (run / name).write_text(content)
            if name != MANIFEST_FILE:
                write_manifest(run)  # so that the content itself is what fails
            one_line_error(load_run, run)  # one line, no SECRET
            if name == CONFIG_FILE:
                one_line_error(resumable_config, run, None, False)
        shutil.copy(base_run / name, run / name)
        write_manifest(run)
    load_run(run)  # restored: loads again


def test_resume_verifies_the_run_directory_first(run: Path, base_run: Path) -> None:
    with (run / CONFIG_FILE).open("a") as handle:
        handle.write("# edited\n")
    assert "corrupted or was modified" in one_line_error(train, None, None, run)
    shutil.copy(base_run / CONFIG_FILE, run / CONFIG_FILE)
    with (run / TOKENIZER_FILE).open("a") as handle:
        handle.write(" ")
    assert "tokenizer.json is corrupted" in one_line_error(train, None, None, run)
    (run / TOKENIZER_FILE).unlink()
    (run / TOKENIZER_FILE).symlink_to(base_run / TOKENIZER_FILE)
    assert "symbolic link" in one_line_error(train, None, None, run)
    (run / MANIFEST_FILE).unlink()
    assert "not a complete run directory" in one_line_error(train, None, None, run)


def fresh_objects(run: Path) -> tuple[nn.Module, torch.optim.Optimizer, LambdaLR]:
    """Model, optimiser and schedule as a resumed run builds them before restoring its state."""
    loaded = load_run(run)
    model = build_model(loaded.config.model, loaded.tokenizer.get_vocab_size(), 2)
    optimizer = build_optimizer(model, loaded.config.training)
    return model, optimizer, build_scheduler(optimizer, loaded.config.training, 100)


def test_the_training_state_carries_its_own_checksum_and_layout(run: Path) -> None:
    model, optimizer, scheduler = fresh_objects(run)
    model.train()
    loss = model(torch.tensor([[2, 3, 4]]), torch.tensor([3])).sum()
    loss.backward()
    optimizer.step()  # so the state holds optimiser moments too
    save_state(run, model, optimizer, scheduler, second_epoch())
    good = (run / STATE_FILE).read_bytes()
    assert restore_state(run, *fresh_objects(run)).epoch == 2

    corrupted = bytearray(good)
    corrupted[-3] ^= 0x01  # one bit of one weight
    (run / STATE_FILE).write_bytes(bytes(corrupted))
    message = one_line_error(restore_state, run, *fresh_objects(run))
    assert "corrupted or was modified" in message

    tampered = good.replace(b'"epoch\\": 2', b'"epoch\\": 7')  # in the JSON metadata
    assert tampered != good
    (run / STATE_FILE).write_bytes(tampered)
    assert "corrupted" in one_line_error(restore_state, run, *fresh_objects(run))

    (run / STATE_FILE).write_bytes(  # as an older version wrote it: no checksum
        save_safetensors(load_safetensors(good), {"format": "rnn-sentiment-state", "state": "{}"})
    )
    assert "has no checksum" in one_line_error(restore_state, run, *fresh_objects(run))

    # sealed anew by someone who knows the format: every setting must still have its type
    save_state(run, model, optimizer, scheduler, LoopState(epoch="2"))  # type: ignore[arg-type]
    message = one_line_error(restore_state, run, *fresh_objects(run))
    assert "does not hold a training state this version can resume" in message

    safetensors_file(run / STATE_FILE, {"model.embedding.weight": [2**24, 16]})
    message = one_line_error(restore_state, run, *fresh_objects(run))
    assert "model.embedding.weight should have shape" in message

    (run / STATE_FILE).unlink()
    (run / STATE_FILE).symlink_to("/dev/zero")
    assert "symbolic link" in one_line_error(restore_state, run, *fresh_objects(run))
    (run / STATE_FILE).unlink()
    assert "no training state" in one_line_error(restore_state, run, *fresh_objects(run))


def epoch_record(**changes: object) -> dict[str, object]:
    """The first epoch's record in a run's history, with ``changes``."""
    record = {"epoch": 1, "train_loss": 0.6, "val_loss": 0.5, "val_accuracy": 0.75,
              "val_macro_f1": 0.74, "best": True}  # fmt: skip
    return {**record, **changes}


def second_epoch(**changes: object) -> LoopState:
    """Loop counters as a run saves them 3 steps into its second epoch, with ``changes``."""
    record = epoch_record()
    state = LoopState(epoch=2, step=3, history=[record], best=record, seen=24, correct=20,
                      loss_sum=13.5, norms=[1.0, 0.5, 0.25], elapsed=3.5)  # fmt: skip
    for key, value in changes.items():
        setattr(state, key, value)
    return state


@pytest.mark.parametrize(
    "changes",
    [
        {"best": {}},  # was a KeyError choosing the best epoch, an epoch later
        {"best": epoch_record(epoch=7)},  # an epoch not yet trained
        {"pretraining": {"seconds": "x"}},  # was a TypeError adding up the training time
        {"pretraining": {"seconds": -1.0}},
        {"step": 10**9},  # was a ZeroDivisionError at the end of the epoch
        {"norms": ["a", "b", "c"]},  # was a TypeError
        {"epoch": -5},
        {"epoch": 9},  # accepted before: 8 epochs finished, one record
        {"history": [{}]},
        {"history": [{"epoch": 1, "val_loss": "low"}]},
        {"elapsed": float("nan")},  # was written into metrics.json as NaN
        {"elapsed": float("inf")},
        {"loss_sum": float("nan")},
        {"correct": 25},  # more right than seen
        {"seen": 0},
        {"clipped": -1},
        {"stale_epochs": 2},
        {"real_tokens": -1},
        {"best": None, "done": True},  # was an AssertionError in finish()
        {"history": [epoch_record(best=False)]},  # the best epoch was not the best
    ],
    ids=lambda changes: ",".join(changes),
)
def test_a_resealed_state_with_impossible_counters_is_refused(run: Path, changes: dict) -> None:
    """Someone who knows the format can seal any values: they must still describe a point a run
    can reach, or a resumed run would crash an epoch later or write nonsense into its metrics."""
    save_state(run, *fresh_objects(run), second_epoch(**changes))
    message = one_line_error(restore_state, run, *fresh_objects(run), RECORD_KEYS, True)
    assert "holds loop counters no run could reach (it was altered)" in message


def test_json_numbers_are_refused_from_2_to_the_64_in_magnitude() -> None:
    # A file dated in the year 2300 has an st_mtime_ns past 2**63 (a scoring progress file
    # holds it): still read.
    for number in (2**64 - 1, -(2**64 - 1), 10413792000000000000, 1.5e308):
        assert parse_json(f'{{"n": {number}}}', "f.json") == {"n": number}
    for literal in (str(2**64), str(-(2**64)), "1e400", "-1e400", "1" + "0" * 400):
        with pytest.raises(CheckpointError, match="f.json holds a number too large"):
            parse_json(f'{{"n": {literal}}}', "f.json")


def test_a_state_with_a_number_past_64_bits_is_refused_by_the_cli(run: Path) -> None:
    save_state(run, *fresh_objects(run), second_epoch(real_tokens=10**30))
    code, out, err = invoke("train", "--resume", str(run))
    last = err.splitlines()[-1]  # after the data's summary line
    assert code == 2 and last.startswith("error: ") and err.count("error") == 1, err
    assert "a number too large for a file of this kind" in err and "Traceback" not in err
    save_state(run, *fresh_objects(run), second_epoch(best={}))
    code, out, err = invoke("train", "--resume", str(run))
    assert code == 2 and "loop counters no run could reach" in err, err


def test_the_manifest_records_the_bytes_written_not_what_is_on_disk_later(run: Path) -> None:
    """Writing metrics must not bless a file that was corrupted since it was written."""
    with (run / LABELS_FILE).open("a") as handle:
        handle.write(" ")
    save_metrics(run, {"status": "complete"})
    assert "labels.json is corrupted" in one_line_error(load_run, run)
    assert read_metrics(run) == {"status": "complete"}


# ----------------------------------------------------------------------------------------------
# 3. YAML problems in a run's config are one-line errors


@pytest.mark.parametrize(
    "content",
    [
        f"model: [unclosed {SECRET}\n",
        f"model:\n\t{SECRET}: 1\n",  # a tab
        f'model: !!python/object/apply:os.system ["touch {SECRET}"]\n',
        f"model: !!binary {SECRET}\n",
        f"model: !custom {SECRET}\n",
        "[" * 5000 + "]" * 5000,
        "\xff\xfe not utf-8",
    ],
    ids=["syntax", "tab", "python-tag", "binary-tag", "local-tag", "5000-deep", "latin-1"],
)
def test_yaml_errors_and_tags_in_a_run_config_are_one_line_errors(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str
) -> None:
    monkeypatch.chdir(tmp_path)  # where os.system would have touched its file
    (run / CONFIG_FILE).write_bytes(content.encode("latin-1" if "\xff" in content else "utf-8"))
    write_manifest(run)
    message = one_line_error(load_run, run)
    assert "config.yaml is not" in message
    one_line_error(resumable_config, run, None, False)
    for args in (["predict", "--model", str(run), "fine"], ["train", "--resume", str(run)]):
        code, out, err = invoke(*args)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        assert SECRET not in out + err and "Traceback" not in err
    assert not (tmp_path / SECRET).exists()


# ----------------------------------------------------------------------------------------------
# 4. Temporary files of killed writers do not pile up

WRITE_FOREVER = """
import sys, time
from pathlib import Path
from rnn_sentiment.atomic import atomic_open

with atomic_open(Path(sys.argv[1])) as handle:
    handle.write(b"half of the new content")
    handle.flush()
    print("writing", flush=True)
    while True:
        time.sleep(0.01)
"""


def start_writer(target: Path) -> subprocess.Popen[str]:
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITE_FOREVER, str(target)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None and writer.stdout.readline() == "writing\n"
    return writer


def test_the_next_write_removes_the_temp_files_of_killed_writers(tmp_path: Path) -> None:
    target = tmp_path / STATE_FILE
    target.write_bytes(b"old")
    unrelated = [".state.safetensors.tmp", ".other.bin.abcd1234.tmp", "state.safetensors.x.tmp",
                 ".state.safetensors.abcd1234.tmp.keep"]  # fmt: skip
    for name in unrelated:
        (tmp_path / name).write_bytes(b"not ours")
    strays = []
    for _ in range(2):  # two writers killed inside a state write
        writer = start_writer(target)
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
        [stray] = [p for p in tmp_path.glob(f".{STATE_FILE}.*.tmp") if p.name not in unrelated]
        strays.append(stray)  # one: the second writer removed the first one's as it started
    assert strays[0] != strays[1]
    write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([STATE_FILE, *unrelated])


def test_a_running_writers_temp_file_is_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "progress.json"
    writer = start_writer(target)
    try:
        [live] = tmp_path.glob(".progress.json.*.tmp")
        write_bytes(target, b"{}")  # another process writing the same target meanwhile
        assert live.exists() and target.read_bytes() == b"{}"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    write_bytes(target, b"{}")
    assert [p.name for p in tmp_path.iterdir()] == ["progress.json"]


def test_a_label_name_that_is_not_valid_unicode_is_refused(run: Path) -> None:
    # "\ud83d" (half an emoji) parses from JSON, but no terminal, CSV or JSON output could hold it.
    (run / "labels.json").write_text('{"labels": ["neg", "pos \\ud83d"]}', encoding="utf-8")
    write_manifest(run)
    with pytest.raises(CheckpointError, match="not valid Unicode text"):
        load_run(run)


def test_values_of_the_wrong_size_or_type_inside_valid_files_are_one_line_errors(
    run: Path, base_run: Path
) -> None:
    # Found by a red-team pass: a 5,000-digit number in the config, an unknown-word token that is
    # a list, and a config section given twice (the last one would silently win).
    config = (base_run / CONFIG_FILE).read_text()
    long_number = config.replace("seed: ", "seed: " + "1" * 5000 + "  #", 1)
    for bad, expected in ((long_number, "number too long"), (config + config, "a key twice")):
        (run / CONFIG_FILE).write_text(bad)
        write_manifest(run)
        assert expected in one_line_error(load_run, run)
    shutil.copy(base_run / CONFIG_FILE, run / CONFIG_FILE)
    spec = json.loads((base_run / TOKENIZER_FILE).read_text())
    spec["model"]["unk_token"] = []
    (run / TOKENIZER_FILE).write_text(json.dumps(spec))
    write_manifest(run)
    assert "not a tokenizer" in one_line_error(load_run, run)


def test_a_tokenizer_whose_unknown_word_is_not_unk_at_id_1_is_refused(run: Path) -> None:
    """An empty review is scored as one [UNK], id 1: with another word there, it would be
    scored as that word (found by a red-team pass)."""
    spec = json.loads((run / TOKENIZER_FILE).read_text())
    vocab = spec["model"]["vocab"]
    word = next(token for token, index in vocab.items() if index == 5)
    for swapped in ({"[UNK]": 5, word: 1}, {"[UNK]": 1, word: 5}):
        spec["model"]["vocab"] = {**vocab, **swapped}
        spec["model"]["unk_token"] = word if swapped["[UNK]"] == 1 else "[UNK]"
        spec["added_tokens"] = [
            {**token, "id": spec["model"]["vocab"][token["content"]]}
            for token in spec["added_tokens"]
        ]
        (run / TOKENIZER_FILE).write_text(json.dumps(spec))
        write_manifest(run)
        assert "unknown-word token is not [UNK] at id 1" in one_line_error(load_run, run)


def key_twice(text: str) -> str:
    """``text``, a JSON object, with its first key given once more before the rest: a reader
    that keeps the last copy of a key sees the file unchanged, one that keeps the first does not."""
    first = next(iter(json.loads(text)))
    return "{" + json.dumps(first) + ": null, " + text.lstrip()[1:]


@pytest.mark.parametrize("name", [MANIFEST_FILE, LABELS_FILE, TOKENIZER_FILE, WEIGHTS_FILE,
                                  "metrics.json"])  # fmt: skip
def test_a_key_given_twice_in_any_json_of_a_run_is_refused(run: Path, name: str) -> None:
    # Found by a red-team pass: Python's json keeps the last copy of a key, silently.
    if name == WEIGHTS_FILE:  # the safetensors header is JSON too
        blob = (run / name).read_bytes()
        length = int.from_bytes(blob[:8], "little")
        header = key_twice(blob[8 : 8 + length].decode()).encode()
        header += b" " * (-len(header) % 8)
        (run / name).write_bytes(len(header).to_bytes(8, "little") + header + blob[8 + length :])
    else:
        (run / name).write_text(key_twice((run / name).read_text()))
    if name != MANIFEST_FILE:
        write_manifest(run)  # so that the JSON itself is what fails
    call = read_metrics if name == "metrics.json" else load_run
    assert f"{name} gives a key twice in one object" in one_line_error(call, run)
