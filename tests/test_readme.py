"""The README's code runs as written: every ``python`` and ``bash`` block, in a fresh process.

Convention (also described in the README's Development section): a block runs unless the line
right before its opening fence is ``<!-- readme-test: skip: REASON -->``; it is then reported as
skipped with that reason. A block runs in a temporary folder holding ``configs/``, two tiny runs
named as in the examples and the example input files. In a Python block, a top-level expression
followed by a comment that is a Python literal (``label  # 'negative'``) must give that value.
``console`` and ``text`` blocks are transcripts and are not run, unless the line before a
``console`` block is ``<!-- readme-test: output -->``: then each ``$ command`` in it is run and
must print exactly the lines that follow it (stdout and stderr together, trailing spaces
ignored), so quoted output is what the command prints today. Any other language is an error, so
that no new block escapes both.
"""

from __future__ import annotations

import ast
import csv
import gzip
import importlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path

import pytest
from huggingface_hub.constants import HF_HOME

from tests.helpers import CONFIGS, NEGATIVE, POSITIVE, tiny_config

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
RUN_LANGUAGES = {"python", "bash"}
TRANSCRIPT_LANGUAGES = {"console", "text", ""}
MARKER = re.compile(r"<!--\s*readme-test:\s*(.*?)\s*-->")
FENCE = re.compile(r"```(\S*)")
# The run directories the README's examples name; the workspace provides tiny ones.
EXAMPLE_RUNS = {"lstm-20261123-011500": "lstm", "gru-20261123-013000": "gru"}


@dataclass(frozen=True)
class Block:
    language: str
    line: int  # README line of the block's first line of code
    code: str
    skip: str | None  # the reason its marker gives, None when it runs
    output: bool = False  # a console transcript whose commands are run and output compared


def parse_readme(text: str) -> tuple[list[Block], list[str]]:
    """Every fenced block of ``text``, and what is wrong with its markers and languages."""
    lines = text.splitlines()
    blocks: list[Block] = []
    problems: list[str] = []
    i = 0
    while i < len(lines):
        marker = MARKER.fullmatch(lines[i].strip())
        if marker and not (i + 1 < len(lines) and FENCE.match(lines[i + 1])):
            problems.append(f"line {i + 1}: a marker must be right before a code block")
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
        if end is None:
            problems.append(f"line {i + 1}: code block never closed")
            break
        block = Block(fence.group(1), i + 2, "\n".join(lines[i + 1 : end]), None)
        previous = MARKER.fullmatch(lines[i - 1].strip()) if i else None
        if previous:
            directive, _, reason = previous.group(1).partition(":")
            if directive.strip() == "output" and block.language == "console":
                blocks.append(Block(block.language, block.line, block.code, None, output=True))
                i = end + 1
                continue
            if directive.strip() != "skip" or not reason.strip():
                problems.append(
                    f"line {i}: write '<!-- readme-test: skip: REASON -->', or "
                    "'<!-- readme-test: output -->' before a console block"
                )
            elif block.language not in RUN_LANGUAGES:
                problems.append(f"line {i}: a skip marker on a '{block.language}' block, never run")
            block = Block(block.language, block.line, block.code, reason.strip())
        if block.language not in RUN_LANGUAGES | TRANSCRIPT_LANGUAGES:
            problems.append(f"line {i + 1}: language '{block.language}' is neither run nor known")
        blocks.append(block)
        i = end + 1
    return blocks, problems


BLOCKS, PROBLEMS = parse_readme(README.read_text(encoding="utf-8"))


def _param(block: Block) -> object:
    reason = f"README line {block.line - 1}: {block.skip}"
    marks = [pytest.mark.skip(reason=reason)] if block.skip else []
    return pytest.param(block, id=f"{block.language}-line{block.line}", marks=marks)


def test_every_marker_is_well_formed() -> None:
    assert PROBLEMS == []


def test_python_and_bash_blocks_do_run() -> None:
    # Guards the parser: an empty or all-skipped README test would pass whatever the README says.
    running = {b.language for b in BLOCKS if b.language in RUN_LANGUAGES and b.skip is None}
    assert running == RUN_LANGUAGES


@pytest.fixture(scope="session")
def example_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny models trained on the built-in corpus, named like the README's example runs."""
    from rnn_sentiment import train

    tmp_path = tmp_path_factory.mktemp("readme-runs")
    for name, cell in EXAMPLE_RUNS.items():
        train(tiny_config(tmp_path, **{"output.name": name, "model.cell": cell}))
    return tmp_path / "runs"


def _write_examples(folder: Path) -> None:
    """The input files the README's examples read, with a few short reviews each."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": f"r{n}", "text": text} for n, text in enumerate([*POSITIVE, *NEGATIVE])]
    (folder / "reviews.txt").write_text("".join(row["text"] + "\n" for row in rows))
    with (folder / "reviews.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, ["id", "text"])
        writer.writeheader()
        writer.writerows(rows)
    with gzip.open(folder / "reviews.tsv.gz", "wt") as file:
        file.write("id\ttext\n" + "".join(f"{row['id']}\t{row['text']}\n" for row in rows))
    pq.write_table(pa.Table.from_pylist(rows), folder / "reviews.parquet")
    jsonl = "".join(json.dumps(row) + "\n" for row in rows)
    (folder / "export.data").write_text(jsonl)
    (folder / "dump.jsonl").write_text(jsonl.replace('"text":', '"body":'))
    for label, texts in (("pos", POSITIVE), ("neg", NEGATIVE), ("unsup", POSITIVE[:1])):
        (folder / "aclImdb" / "test" / label).mkdir(parents=True)
        for n, text in enumerate(texts):
            (folder / "aclImdb" / "test" / label / f"{n}_5.txt").write_text(text)


@pytest.fixture
def workspace(tmp_path: Path, example_runs: Path) -> Path:
    """A fresh working folder as the README assumes it: configs/, runs/ and example inputs."""
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "configs").symlink_to(CONFIGS, target_is_directory=True)
    shutil.copytree(example_runs, folder / "runs")  # copies: a block may train or resume here
    _write_examples(folder)
    return folder


def _is_literal(text: str) -> bool:
    try:
        ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return False
    return True


def checked_python(block: Block) -> str:
    """The block as a script whose line numbers are the README's, with every one-line top-level
    ``expression  # literal`` turned into a check that the expression gives that literal."""
    tokens = tokenize.generate_tokens(io.StringIO(block.code).readline)
    comments = {t.start[0]: t.string[1:].strip() for t in tokens if t.type == tokenize.COMMENT}
    lines = block.code.splitlines()
    for node in ast.parse(block.code).body:
        expected = comments.get(node.lineno, "")
        if isinstance(node, ast.Expr) and node.lineno == node.end_lineno and _is_literal(expected):
            value = ast.get_source_segment(block.code, node.value)
            where = f"README line {block.line + node.lineno - 1}: expected {expected}, got "
            lines[node.lineno - 1] = (
                f"_value = ({value}); assert _value == {expected}, {where!r} + repr(_value)"
            )
    return "\n" * (block.line - 1) + "\n".join(lines) + "\n"


def _environment(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # rnn-sentiment
    # The default token cache (~/.cache/rnn-sentiment) goes to tmp; datasets' cache stays warm
    # (a cold one costs 4 s of the Quickstart's 8).
    env["HF_HOME"] = HF_HOME
    env["HOME"] = str(home)
    # A stale compiled scorer (csrc changed) would be rebuilt for ~35 s; the PyTorch steps give the
    # same results, and tests/test_stepwise.py holds the compiled ones to them.
    env["RNN_SENTIMENT_NATIVE"] = "0"
    env["COLUMNS"] = "120"
    return env


def _outputs(code: str) -> list[str]:
    """Files a bash block says it writes (``--output FILE``, ``-o FILE``, ``> FILE``)."""
    commands = re.sub(r"(^|\s)#.*", "", code)  # comments say "CSV -> CSV"
    names = re.findall(r"(?:--output|-o|>)\s+([^\s|;&]+)", commands)
    return [name for name in names if name != "-" and not name.startswith("$")]


@pytest.mark.parametrize("block", [_param(b) for b in BLOCKS if b.language in RUN_LANGUAGES])
def test_readme_block_runs(block: Block, workspace: Path, tmp_path: Path) -> None:
    if block.language == "python":
        script = tmp_path / "readme_block.py"
        script.write_text(checked_python(block))
        command = [sys.executable, str(script)]
    else:
        command = ["bash", "-euo", "pipefail", "-c", block.code]
    result = subprocess.run(
        command,
        cwd=workspace,
        env=_environment(tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        f"README block at line {block.line} exited with {result.returncode}:\n{result.stderr}"
    )
    if block.language == "bash":
        missing = [name for name in _outputs(block.code) if not (workspace / name).exists()]
        assert missing == [], f"README block at line {block.line} did not write {missing}"


def transcript(block: Block) -> list[tuple[str, list[str]]]:
    """The ``$ command`` lines of a console block, each with the output lines that follow it."""
    steps: list[tuple[str, list[str]]] = []
    for line in block.code.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line.rstrip())
    return steps


OUTPUT_BLOCKS = [b for b in BLOCKS if b.output]


def test_the_readme_quotes_checked_output() -> None:
    assert len(OUTPUT_BLOCKS) >= 2


@pytest.mark.parametrize("block", [_param(b) for b in OUTPUT_BLOCKS])
def test_readme_transcript_prints_what_it_quotes(
    block: Block, workspace: Path, tmp_path: Path
) -> None:
    env = _environment(tmp_path / "home")
    env["COLUMNS"] = "100"
    env.pop("RNN_SENTIMENT_NATIVE")  # its note is not part of what a user sees; no big batches here
    env.pop("RNN_SENTIMENT_MODEL", None)
    for command, expected in transcript(block):
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command.split("  #")[0]],
            cwd=workspace,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
        )
        printed = [line.rstrip() for line in result.stdout.splitlines()]
        assert printed == expected, f"README line {block.line}: $ {command}"


# Imports every module first, so that a submodule bound as a package attribute by its import
# (the trap `from rnn_sentiment import train` once fell into) would shadow the public name.
PUBLIC_NAMES_SCRIPT = """
import importlib, inspect, json, pkgutil
import rnn_sentiment

modules = [m.name for m in pkgutil.walk_packages(rnn_sentiment.__path__, "rnn_sentiment.")]
for name in modules:
    if name != "rnn_sentiment.__main__":  # importing it runs the command line
        importlib.import_module(name)
from rnn_sentiment import Config, classify, evaluate, load_config, load_model, train

namespace = {}
exec(f"from rnn_sentiment import {', '.join(rnn_sentiment.__all__)}", namespace)
named = {n: namespace[n] for n in rnn_sentiment.__all__}
named.update(Config=Config, classify=classify, evaluate=evaluate, load_config=load_config,
             load_model=load_model, train=train)
print(json.dumps({
    "modules": modules,
    "wrong": {n: repr(o) for n, o in named.items()
              if not (inspect.isfunction(o) or inspect.isclass(o))},
    "top_level": sorted(m.name for m in pkgutil.iter_modules(rnn_sentiment.__path__)),
    "all": rnn_sentiment.__all__,
}))
"""


def test_public_names_are_functions_and_classes_never_modules(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PUBLIC_NAMES_SCRIPT],
        cwd=tmp_path,
        env=_environment(tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert "rnn_sentiment.training.loop" in found["modules"]  # the walk reached the subpackages
    assert found["wrong"] == {}
    assert set(found["top_level"]).isdisjoint(found["all"])


def _resolves(dotted: str) -> bool:
    """Whether ``a.b.c`` is a module or an attribute reachable from the longest importable one."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:end]))
        except ImportError:
            continue
        try:
            for attribute in parts[end:]:
                found = getattr(found, attribute)
        except AttributeError:
            return False
        return True
    return False


def test_readme_names_only_what_exists() -> None:
    text = README.read_text(encoding="utf-8")
    paths = set(re.findall(r"\b(?:rnn_sentiment|scripts|configs|tests)/[\w./-]*\w", text))
    dotted = set(re.findall(r"\brnn_sentiment(?:\.\w+)+", text))
    py_files = {p.name for folder in ("rnn_sentiment", "scripts", "tests")
                for p in (ROOT / folder).rglob("*.py")}  # fmt: skip
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    missing += sorted(name for name in dotted if not _resolves(name))
    missing += sorted(set(re.findall(r"`(\w+\.py)`", text)) - py_files)
    assert missing == []
