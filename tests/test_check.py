"""Behavioural test suites (``rnn_sentiment.inference.check``): loading, expansion, judging."""

from __future__ import annotations

import json
import os
import random
import re
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import yaml

from rnn_sentiment.errors import ConfigError, DataError
from rnn_sentiment.inference import check
from rnn_sentiment.inference.check import (
    DEFAULT_SUITE,
    Case,
    Suite,
    SuiteTest,
    change_case,
    change_numbers,
    change_punctuation,
    load_suite,
    parse_template,
    run_suite,
    swap_characters,
)


def write_suite(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_suite(path)
    assert all("\n" not in p for p in info.value.problems)
    return info.value.problems


def texts_of(suite: Suite, name: str) -> list[str]:
    test = next(t for t in suite.tests if t.name == name)
    return [case.text for case in test.cases]


class Lexicon:
    """A deliberately bad model: p(positive) from counting positive and negative words, so it
    reads "not good" as good and ignores word order entirely."""

    label_names = ("negative", "positive")

    def __init__(self, positive: Sequence[str], negative: Sequence[str]) -> None:
        self.positive, self.negative = set(positive), set(negative)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        rows = []
        for text in texts:
            words = re.findall(r"[a-z']+", text.lower())
            score = sum(w in self.positive for w in words) - sum(w in self.negative for w in words)
            p = 1 / (1 + np.exp(-2.0 * score))
            rows.append([1 - p, p])
        return np.array(rows)


class Table:
    """A model that looks its probabilities up in a table: p(positive) per text."""

    def __init__(
        self, p_positive: dict[str, float], labels: Sequence[str] = ("negative", "positive")
    ):
        self.p_positive = p_positive
        self.label_names = tuple(labels)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([[1 - self.p_positive[t], self.p_positive[t]] for t in texts])


def toy_lexicon() -> Lexicon:
    fill = yaml.safe_load(DEFAULT_SUITE.read_text())["fill"]
    positive = fill["pos_adj"] + fill["pos_verb"] + fill["pos_verb_present"]
    negative = fill["neg_adj"] + fill["neg_verb"] + fill["neg_verb_present"]
    plural = [f"{verb}s" for verb in fill["pos_verb_present"]]  # "No one likes this film."
    return Lexicon(positive + plural, negative)


# --- the shipped suite ------------------------------------------------------------------------


def test_the_shipped_suite_loads_with_every_capability_of_the_issue() -> None:
    suite = load_suite()
    assert 15 <= len(suite.tests) <= 30
    assert 2000 <= len(suite.texts()) <= 20_000  # a few seconds on the bundled model
    capabilities = {test.capability for test in suite.tests}
    assert {"negation", "contrast", "intensity", "last sentence", "questions"} <= capabilities
    assert {"reviewer's opinion", "robustness", "directional"} <= capabilities
    perturbations = {test.perturb for test in suite.tests if test.perturb}
    assert perturbations == set(check._PERTURBATIONS["inv"]) | set(check._PERTURBATIONS["dir"])
    negation = texts_of(suite, "negated negative") + texts_of(suite, "negated positive")
    assert "The movie was not bad at all." in negation
    assert "Nothing about the film was boring." in negation
    assert "I can't say I enjoyed the movie." in negation


def test_expansion_is_deterministic_and_capped() -> None:
    first, second = load_suite(), load_suite()
    assert first.texts() == second.texts()
    assert all(len(test.cases) <= 200 for test in first.tests)
    # 12 adjectives x 10 aspects x 2 contrast orders ... is far above 200: sampled, in order
    contrast = texts_of(first, "positive, but negative")
    assert len(contrast) == 200


def test_cases_follow_the_product_order_and_a_cap_samples_by_seed(tmp_path: Path) -> None:
    path = write_suite(
        tmp_path,
        """
        name: order
        fill: {a: [x, y], b: ["1", "2"]}
        tests:
          - {name: all, capability: c, type: mft, template: "{a} {b}", expect: positive}
          - {name: capped, capability: c, type: mft, template: "{w}{v}", expect: positive,
             max_cases: 5, fill: {w: [a, b, c, d, e, f], v: [g, h, i, j, k, l]}}
        """,
    )
    suite = load_suite(path)
    assert texts_of(suite, "all") == ["x 1", "x 2", "y 1", "y 2"]
    capped = texts_of(suite, "capped")
    assert len(capped) == 5 and capped == sorted(capped)  # product order kept
    assert capped == texts_of(load_suite(path), "capped")
    path.write_text(path.read_text().replace("name: order", "name: order\nseed: 1"))
    assert texts_of(load_suite(path), "capped") != capped


def test_a_numbered_slot_takes_another_word_of_the_same_list(tmp_path: Path) -> None:
    path = write_suite(
        tmp_path,
        """
        name: numbered
        fill: {adj: [good, fine, great]}
        tests:
          - {name: two, capability: c, type: mft, template: "{adj} and {adj2}", expect: positive}
        """,
    )
    texts = texts_of(load_suite(path), "two")
    assert len(texts) == 6
    assert all(a != b for a, b in (t.split(" and ") for t in texts))


def test_a_template_fills_slots_without_reading_braces_in_values() -> None:
    template = parse_template("{{literal}} {x}, {x} and {y}")
    assert template.slots == ("x", "x", "y")
    assert template.render({"x": "{y}", "y": "b"}) == "{literal} {y}, {y} and b"


# --- one-line errors that name the file, the line and the test --------------------------------

GOOD_TEST = '  - {name: fine, capability: c, type: mft, template: "A {adj}.", expect: positive}\n'
T = "  - {name: t, capability: c, "


@pytest.mark.parametrize(
    ("entry", "line", "message"),
    [
        (
            T + 'type: mft, templat: "x", template: "y", expect: positive}',
            5,
            "test 't': unknown field 'templat'; did you mean 'template'?",
        ),
        (
            T + 'type: mft, template: "The {film}.", expect: positive}',
            5,
            "test 't': template slot '{film}' has no fill list (add 'film' to fill)",
        ),
        (
            T + 'type: mft, template: "A {adj film.", expect: positive}',
            5,
            "test 't': unbalanced '{' at column 3",
        ),
        (
            T + 'type: mft, template: "A {a b}.", expect: positive}',
            5,
            "test 't': slot '{a b}' at column 3 is not a name",
        ),
        (
            T + 'type: mtf, template: "x", expect: positive}',
            5,
            "test 't': type: Input should be 'mft', 'inv' or 'dir' (got 'mtf')",
        ),
        (
            T + 'type: inv, template: "A film.", perturb: numbers}',
            5,
            "test 't': perturbation 'numbers' changes none of its 1 texts",
        ),
        (
            T + 'type: mft, template: "x"}',
            5,
            "test 't': an mft test needs 'expect'",
        ),
        (
            T + 'type: inv, template: "x", perturb: add_positive}',
            5,
            "test 't': an inv test needs perturb: typo | names | numbers",
        ),
        (
            T + 'type: inv, template: "x", perturb: typo, swap: [a]}',
            5,
            "test 't': 'swap' (the slots to re-fill) goes with perturb: names",
        ),
        (
            T + 'type: mft, template: "x", expect: positive, fill: {z: []}}',
            5,
            "test 't': fill.z: List should have at least 1 item",
        ),
        (
            T + 'type: mft, template: "x", expect: positive, fill: {z: [a]}}',
            5,
            "test 't': fill list 'z' is used by no template",
        ),
        (
            T + 'type: mft, template: "{b}", expect: positive,\n     fill: {b: [yes, no]}}',
            6,
            "quote yes, no, on and off in YAML",
        ),
        (
            '  - {name: fine, capability: c, type: mft, template: "A {adj}.", expect: positive}',
            5,
            "test 'fine': a second test with this name",
        ),
        (
            T + 'type: mft, template: !!python/name:os.system "", expect: p}',
            5,
            "not plain YAML: a tag or an alias",
        ),
        (
            T + "type: mft, template: *x, expect: positive}",
            5,
            "not plain YAML: a tag or an alias",
        ),
        (
            T + 'type: mft, type: inv, template: "x", expect: positive}',
            5,
            "not plain YAML: a key twice",
        ),
    ],
)
def test_a_broken_suite_is_one_line_naming_the_line_and_the_test(
    tmp_path: Path, entry: str, line: int, message: str
) -> None:
    path = write_suite(tmp_path, "")
    path.write_text(f"name: broken\nfill: {{adj: [good]}}\ntests:\n{GOOD_TEST}{entry}\n")
    problem = problems(path)[0]
    assert problem.startswith(f"{path}, line {line}: ")
    assert message in problem


def test_every_problem_is_reported_at_once_in_line_order(tmp_path: Path) -> None:
    path = write_suite(
        tmp_path,
        """
        name: broken
        tests:
          - name: first
            capability: c
            type: mft
            template: ["fine", "The {missing}."]
            expect: positive
          - name: second
            capabilty: c
            type: mft
            template: "x"
            expect: positive
        """,
    )
    assert problems(path) == [
        f"{path}, line 6: test 'first': template slot '{{missing}}' has no fill list "
        "(add 'missing' to fill)",
        f"{path}, line 8: test 'second': capability: Field required",
        f"{path}, line 9: test 'second': unknown field 'capabilty'; did you mean 'capability'?",
    ]


def test_the_file_itself_is_checked_before_it_is_parsed(tmp_path: Path) -> None:
    assert problems(tmp_path / "missing.yaml") == [f"suite file not found: {tmp_path}/missing.yaml"]
    assert "is a folder" in problems(tmp_path)[0]
    big = tmp_path / "big.yaml"
    big.write_text("name: big\n" + "#" * check.MAX_SUITE_BYTES)
    assert "byte limit" in problems(big)[0]
    listed = write_suite(tmp_path, "- just a list\n")
    assert problems(listed) == [f"{listed} must hold a mapping with 'name' and 'tests'"]
    # found by a red-team pass: a FIFO was "not found", and a NUL byte "nested too deeply"
    os.mkfifo(tmp_path / "fifo.yaml")
    assert "is not a regular file (a FIFO" in problems(tmp_path / "fifo.yaml")[0]
    nul = write_suite(tmp_path, "name: x\ntests:\n  - name: 'a\0b'\n")
    assert problems(nul) == [f"{nul}, line 3: not plain YAML: control character U+0000 is not "
                             "allowed; remove it"]  # fmt: skip
    lonely = write_suite(tmp_path, "name: x\nfill:\n  a: [good]\ntests:\n  - name: t\n"
                         "    capability: c\n    type: mft\n    expect: positive\n"
                         "    template: ['{a} {a1}']\n")  # fmt: skip
    assert "its templates give no texts: slots that share a fill list" in problems(lonely)[0]
    blank = write_suite(tmp_path, "name: x\nfill:\n  a: ['', '  ']\ntests:\n  - name: t\n"
                        "    capability: c\n    type: mft\n    expect: positive\n"
                        "    template: ['{a}']\n")  # fmt: skip
    assert "a filled template is empty or only spaces" in problems(blank)[0]  # predict refuses it


def test_limits_stop_a_suite_too_big_to_score(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    long = write_suite(
        tmp_path,
        f"""
        name: long
        fill: {{w: [{"x" * 800}, {"y" * 800}, {"z" * 800}]}}
        tests:
          - {{name: t, capability: c, type: mft, template: "{{w}}{{w2}}{{w3}}", expect: positive}}
        """,
    )
    assert "a filled template has 2,400 characters, over the 2,000" in problems(long)[0]
    monkeypatch.setattr(check, "MAX_TEXTS", 300)
    assert problems(DEFAULT_SUITE) == [
        f"{DEFAULT_SUITE}: over 300 texts to score by test 'negative words'; "
        "lower max_cases or variants"
    ]


# --- judging: a deliberately bad model, hand-made probabilities -------------------------------


def test_a_model_that_ignores_negation_fails_the_negation_tests_only() -> None:
    result = run_suite(toy_lexicon(), load_suite())
    rates = {test.name: test.failure_rate for test in result.tests}
    assert rates["positive words"] == rates["negative words"] == 0.0
    assert rates["intensified positive"] == rates["diminished negative"] == 0.0
    assert rates["negated positive"] == rates["negated negative"] == 1.0
    assert rates["negation across a neutral clause"] == 1.0
    assert rates["case"] == rates["punctuation"] == rates["changed names"] == 0.0
    assert 0.0 < rates["typos"] < 1.0  # a typo in the one sentiment word: that word is gone
    assert result.worst().capability == "negation"
    example = next(t for t in result.tests if t.name == "negated positive").examples[0]
    assert (example.expected, example.predicted) == ("negative", "positive")


def _suite(*tests: SuiteTest, tolerance: float = 0.05) -> Suite:
    return Suite("hand-made", "", Path("hand-made.yaml"), tolerance, tests)


def test_invariance_fails_a_case_when_any_copy_changes_the_label() -> None:
    cases = (Case("kept", ("kept 1", "kept 2")), Case("flipped", ("flipped 1", "flipped 2")))
    table = Table({"kept": 0.9, "kept 1": 0.6, "kept 2": 0.51,  # weaker, same label
                   "flipped": 0.9, "flipped 1": 0.7, "flipped 2": 0.2})  # fmt: skip
    result = run_suite(table, _suite(SuiteTest("inv", "c", "inv", "", cases, perturb="typo")))
    [test] = result.tests
    assert (test.cases, test.failed, test.failure_rate) == (2, 1, 0.5)
    [failure] = test.examples
    assert (failure.text, failure.base) == ("flipped 2", "flipped")
    assert (failure.expected, failure.predicted) == ("positive", "negative")
    assert failure.p == pytest.approx(0.8) and failure.base_p == pytest.approx(0.9)


@pytest.mark.parametrize(
    ("perturb", "base", "copies", "fails"),
    [
        ("add_positive", 0.80, [0.90, 0.77], False),  # down 0.03: within the tolerance
        ("add_positive", 0.80, [0.90, 0.70], True),  # down 0.10
        ("add_positive", 0.10, [0.02, 0.30], True),  # a negative review made more negative
        ("add_negative", 0.20, [0.10, 0.24], False),
        ("add_negative", 0.20, [0.10, 0.35], True),
        ("add_negative", 0.95, [0.97, 0.99], False),  # within the tolerance, label unchanged
    ],
)
def test_directional_tests_allow_the_tolerance_the_wrong_way(
    perturb: str, base: float, copies: list[float], fails: bool
) -> None:
    variants = tuple(f"copy {i}" for i in range(len(copies)))
    table = Table({"base": base, **dict(zip(variants, copies, strict=True))})
    test = SuiteTest("dir", "c", "dir", "", (Case("base", variants),), perturb=perturb)
    [outcome] = run_suite(table, _suite(test)).tests
    assert outcome.failed == int(fails)
    if fails:
        assert outcome.examples[0].base_p == pytest.approx(base)


def test_examples_are_the_most_confidently_wrong_and_capped() -> None:
    p = {"a": 0.6, "b": 0.99, "c": 0.2, "d": 0.8, "e": 0.7}
    cases = tuple(Case(text) for text in p)
    suite = _suite(SuiteTest("mft", "c", "mft", "", cases, expect="negative"))
    [test] = run_suite(Table(p), suite, examples=2).tests
    assert test.failed == 4
    assert [e.text for e in test.examples] == ["b", "d"]


def _result(*rates: float) -> check.SuiteResult:
    tests = tuple(
        check.TestResult(f"t{i}", "c", "mft", "", 10, round(rate * 10), ())
        for i, rate in enumerate(rates)
    )
    return check.SuiteResult("s", "s.yaml", ("negative", "positive"), 0.05, 30, 0.1, tests)


def test_fail_above_counts_tests_strictly_above_the_rate() -> None:
    result = _result(0.0, 0.1, 0.5)
    assert [t.name for t in result.failing(0.1)] == ["t2"]
    assert [t.name for t in result.failing(0.0)] == ["t1", "t2"]
    assert result.failing(0.5) == [] and result.failing(1.0) == []
    assert result.worst().name == "t2"
    assert _result(0.0, 0.0).failing(0.0) == []


def test_the_result_is_plain_json_with_every_number() -> None:
    result = run_suite(toy_lexicon(), load_suite())
    data = json.loads(json.dumps(result.to_dict()))
    assert data["texts"] == len(load_suite().texts()) and data["seconds"] >= 0
    first = data["tests"][0]
    assert set(first) >= {"name", "capability", "type", "cases", "failed", "failure_rate"}
    failing = next(t for t in data["tests"] if t["examples"])
    assert set(failing["examples"][0]) == {"text", "expected", "predicted", "p", "base", "base_p"}


def test_a_suite_the_model_cannot_answer_is_one_line() -> None:
    suite = load_suite()
    with pytest.raises(DataError, match=r"expects label 'positive', which the model does not"):
        run_suite(Table({}, labels=("bad", "good")), suite)
    dir_only = _suite(*(t for t in suite.tests if t.type == "dir"))
    with pytest.raises(DataError, match="is directional: it needs a 'positive' label"):
        run_suite(Table({}, labels=("bad", "good")), dir_only)

    class Wrong(Table):
        def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
            return np.zeros((len(texts), 3))

    with pytest.raises(DataError, match="probabilities of shape"):
        run_suite(Wrong({}), dir_only)


# --- perturbations -----------------------------------------------------------------------------


def test_a_typo_swaps_two_neighbouring_letters() -> None:
    text = "The acting was wonderful."
    copies = swap_characters(text, random.Random(0), 3)
    assert len(set(copies)) == 3
    for copy in copies:
        diff = [i for i, (a, b) in enumerate(zip(text, copy, strict=True)) if a != b]
        assert len(diff) == 2 and diff[1] == diff[0] + 1
        assert sorted(copy) == sorted(text)
    assert swap_characters(text, random.Random(0), 3) == copies


def test_numbers_move_within_20_percent_and_keep_0_and_1() -> None:
    copies = change_numbers("It runs 100 minutes, 1 star.", random.Random(0), 3)
    assert len(copies) == 3
    for copy in copies:
        minutes = int(copy.split()[2])
        assert 80 <= minutes <= 120 and minutes != 100
        assert copy.endswith(" minutes, 1 star.")
    assert change_numbers("1 star, 0 stars.", random.Random(0), 3) == []
    assert change_numbers("ticket 12345678901234", random.Random(0), 3) == []  # an id


def test_punctuation_and_case_copies() -> None:
    rng = random.Random(0)
    assert change_punctuation("Good, not great.", rng, 3) == [
        "Good, not great",
        "Good, not great!",
        "Good not great.",
    ]
    assert change_punctuation("Good", rng, 3) == ["Good.", "Good!"]
    assert change_case("The Movie was good.", rng, 3) == [
        "the movie was good.",
        "THE MOVIE WAS GOOD.",
        "The movie was good.",
    ]


# --- the bundled model ------------------------------------------------------------------------


def test_the_bundled_model_passes_the_plain_tests_of_the_shipped_suite(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rnn_sentiment import load_model

    monkeypatch.delenv("RNN_SENTIMENT_MODEL", raising=False)  # the bundled model, not another
    result = run_suite(load_model(), load_suite())
    rates = {test.name: test.failure_rate for test in result.tests}
    print("\n".join(f"{rate:6.1%}  {name}" for name, rate in rates.items()))  # pytest -s: the table
    assert rates["positive words"] <= 0.05 and rates["negative words"] <= 0.05
    assert rates["positive, but negative"] <= 0.05 and rates["negative, but positive"] <= 0.05
    assert rates["case"] == 0.0  # its tokenizer lower-cases
    assert rates["added neutral sentence"] <= 0.05
    assert rates["added positive sentence"] <= 0.05 and rates["added negative sentence"] <= 0.05
    assert sum(rate <= 0.1 for rate in rates.values()) >= len(rates) // 2


def test_a_small_suite_cannot_ask_for_hours_of_filling(tmp_path: Path) -> None:
    # 100 copies of one template over a shared list of 46 words: 97,336 fillings each to list,
    # which took 20 s for this 3 KB file (and would take hours for 1 MiB of such lines)
    words = ", ".join(f"w{i}" for i in range(46))
    lines = "\n".join(["      - '{a} {a1} {a2}'"] * 100)
    path = write_suite(
        tmp_path,
        f"""name: slow
fill:
  a: [{words}]
tests:
  - name: t
    capability: c
    type: mft
    expect: positive
    max_cases: 1
    template:
{lines}
""",
    )
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="over 2,000,000 fillings to consider"):
        load_suite(path)
    assert time.perf_counter() - started < 5
    path.write_text(path.read_text().replace(lines, "\n".join(lines.splitlines()[:10])))
    assert len(load_suite(path).tests[0].cases) == 1  # ten such templates are fine


def test_the_whole_suite_has_a_filling_budget_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by a red-team pass: every test under its own cap, a 514 KB suite of 1,000 such tests
    # would have filled templates for about 95 minutes, printing nothing.
    from rnn_sentiment.inference import check

    words = ", ".join(f"w{i}" for i in range(46))  # 97,336 fillings per template
    tests = "".join(
        f"""  - name: t{n}
    capability: c
    type: mft
    expect: positive
    max_cases: 1
    template: ['{{a}} {{a1}} {{a2}}']
"""
        for n in range(3)
    )
    path = write_suite(tmp_path, f"name: many\nfill:\n  a: [{words}]\ntests:\n{tests}")
    monkeypatch.setattr(check, "MAX_SUITE_WORK", 200_000)  # room for two of the three
    with pytest.raises(ConfigError, match="t2.*the tests before it, the suite has over 200,000"):
        load_suite(path)
    # tests that fail once filled (a perturbation that changes none of the texts) spend it too
    inv = path.read_text().replace(
        "type: mft\n    expect: positive", "type: inv\n    perturb: numbers"
    )
    with pytest.raises(ConfigError, match="t2.*the tests before it, the suite has over 200,000"):
        load_suite(write_suite(tmp_path, inv))
    monkeypatch.setattr(check, "MAX_SUITE_WORK", 300_000)
    path = write_suite(tmp_path, f"name: many\nfill:\n  a: [{words}]\ntests:\n{tests}")
    assert len(load_suite(path).tests) == 3
