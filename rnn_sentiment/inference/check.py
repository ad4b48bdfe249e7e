"""Behavioural tests of a sentiment model: CheckList's test types on templated movie reviews.

CheckList (Ribeiro, Wu, Guestrin and Singh, "Beyond Accuracy: Behavioral Testing of NLP Models
with CheckList", ACL 2020; MIT licence) tests what a model does with purpose-built sentences, by
capability (negation, contrast, robustness, ...) and by test type:

* ``mft``, minimum functionality: labelled sentences; a case fails when the predicted label is not
  the expected one ("I can't say I enjoyed the movie." -> negative);
* ``inv``, invariance: a sentence and perturbed copies of it (a typo, another actor's name, other
  numbers, punctuation, case, an added neutral sentence); a case fails when any copy's label
  differs from the sentence's own;
* ``dir``, directional: a clearly positive (negative) sentence is appended; a case fails when
  p(positive) falls (rises) by more than the suite's ``tolerance``. CheckList's sentiment suite
  allows 0.1 on p(positive) - p(negative), which for two labels is 0.05 on p(positive): our default.

A suite is data, a YAML file (see ``assets/checks/movie-reviews.yaml``): templates whose
``{slot}`` s are filled from lists, expanded deterministically (the cartesian product in template
order, capped per test by a seeded sample), and perturbations named by the suite and generated
here with a seeded generator. Every text of a suite is scored in one
:meth:`~rnn_sentiment.inference.predictor.Predictor.predict_proba` call, the model's one text path.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, TypeVar

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rnn_sentiment.config import is_whole
from rnn_sentiment.errors import ConfigError, DataError, did_you_mean
from rnn_sentiment.runfiles import plain_yaml

DEFAULT_SUITE = Path(__file__).parents[1] / "assets" / "checks" / "movie-reviews.yaml"
MAX_SUITE_BYTES = 2**20  # the shipped suite is 15 KB; a cap keeps a stray file from filling memory
MAX_TEXTS = 200_000  # per suite: about a minute of the bundled model on 2 CPU cores
MAX_TEXT_CHARS = 2000  # per filled template: behavioural tests are sentences, not essays
_ENUMERATE_LIMIT = 100_000  # with a shared list: products up to this size are listed, then sampled
# Fillings considered for one test, over all its templates (listed, drawn or kept): a few
# seconds. A 3 KB suite of 100 templates over one shared list of 46 words took 20 s before.
MAX_FILLING_WORK = 2_000_000
# ... and by the whole suite: each test under the cap, a thousand of them still took hours. The
# shipped suite considers 7,540.
MAX_SUITE_WORK = 2 * MAX_FILLING_WORK

TestType = Literal["mft", "inv", "dir"]
Perturbation = Literal[
    "typo", "names", "numbers", "punctuation", "case", "add_neutral", "add_positive", "add_negative"
]
_PERTURBATIONS: dict[str, tuple[str, ...]] = {
    "mft": (),
    "inv": ("typo", "names", "numbers", "punctuation", "case", "add_neutral"),
    "dir": ("add_positive", "add_negative"),
}
_ADDS = ("add_neutral", "add_positive", "add_negative")
POSITIVE = "positive"  # the label directional tests move

# ----------------------------------------------------------------------------------------------
# The suite file


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


FillList = Annotated[list[Annotated[str, Field(max_length=1000)]], Field(min_length=1)]


class TestEntry(_Strict):
    """One test as a suite file writes it."""

    __test__ = False  # a pytest collecting a module that imports this is not to run it

    name: str = Field(min_length=1, max_length=200, description="Unique within the suite.")
    capability: str = Field(min_length=1, max_length=100, description="Negation, contrast, ...")
    type: TestType = Field(description="mft, inv or dir.")
    description: str = Field("", max_length=2000, description="What the test checks.")
    template: list[Annotated[str, Field(min_length=1, max_length=2000)]] = Field(
        min_length=1, description="One template or a list; {slot} is filled from a list."
    )
    fill: dict[str, FillList] = Field(
        default_factory=dict, description="Fill lists of this test (over the suite's)."
    )
    expect: str | None = Field(None, description="mft: the expected label name.")
    perturb: Perturbation | None = Field(None, description="inv and dir: how copies are made.")
    swap: list[str] = Field(
        default_factory=list, description="perturb: names: the slots re-filled with other names."
    )
    sentences: str | None = Field(
        None, description="perturb: add_*: the fill list whose sentences are appended."
    )
    variants: int = Field(3, ge=1, le=20, description="inv and dir: copies per sentence.")
    max_cases: int | None = Field(None, ge=1, le=10_000, description="Default: the suite's.")

    @field_validator("template", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class SuiteFile(_Strict):
    """A suite file: shared fill lists and the tests."""

    name: str = Field(min_length=1, max_length=200, description="Shown above the results.")
    description: str = Field("", max_length=5000, description="What the suite is for.")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of sampling and perturbations.")
    max_cases: int = Field(200, ge=1, le=10_000, description="Cases per test, at most.")
    tolerance: float = Field(0.05, ge=0.0, le=1.0, description="dir: allowed p(positive) move.")
    fill: dict[str, FillList] = Field(
        default_factory=dict, description="Fill lists every test can use."
    )
    tests: list[dict[str, Any]] = Field(
        min_length=1, max_length=1000, description="The tests, each checked as a TestEntry."
    )


Lines = dict[tuple[Any, ...], int]  # a key's or item's path in the file -> its line


def _read_tree(path: Path) -> tuple[Any, Lines]:
    """The parsed file and the line of every key and list item in it."""
    if path.is_dir():
        raise ConfigError([f"{path} is a folder; --suite takes a suite YAML file"])
    if not path.exists():
        raise ConfigError([f"suite file not found: {path}"])
    if not path.is_file():
        raise ConfigError([f"{path} is not a regular file (a FIFO, device or socket); --suite "
                           "takes a suite YAML file"])  # fmt: skip
    with path.open("rb") as handle:
        data = handle.read(MAX_SUITE_BYTES + 1)
    if len(data) > MAX_SUITE_BYTES:
        raise ConfigError([f"{path} is over the {MAX_SUITE_BYTES:,}-byte limit of a suite file"])
    try:
        loader = plain_yaml()(data.decode("utf-8"))  # no tags, aliases or repeated keys
        try:
            node = loader.get_single_node()
            tree = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except UnicodeDecodeError:
        raise ConfigError([f"{path} is not UTF-8 text"]) from None
    except yaml.reader.ReaderError as exc:  # a character YAML forbids: it has no problem_mark
        line = data.decode("utf-8")[: exc.position].count("\n") + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise ConfigError([f"{path}, line {line}: not plain YAML: control character "
                           f"U+{code:04X} is not allowed; remove it"]) from None  # fmt: skip
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        at = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "nested too deeply or a number too long"
        raise ConfigError([f"{path}{at}: not plain YAML: {problem}"]) from None
    if not isinstance(tree, dict):
        raise ConfigError([f"{path} must hold a mapping with 'name' and 'tests'"])
    return tree, _lines(node, ())


def _lines(node: Any, at: tuple[Any, ...]) -> Lines:
    found = {at: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            inner = _lines(value, (*at, key.value))
            inner[(*at, key.value)] = key.start_mark.line + 1  # the key's line, not its value's
            found.update(inner)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found.update(_lines(item, (*at, index)))
    return found


class _Problem(ValueError):
    """A problem of one test, at ``at`` (a path inside the test) when known."""

    def __init__(self, message: str, *at: Any) -> None:
        super().__init__(message)
        self.at = at


class _Where:
    """Names a problem's place: the file, the line, the test."""

    def __init__(self, path: Path, tree: dict[str, Any], lines: Lines) -> None:
        self.path, self.lines = path, lines
        tests = tree.get("tests")  # the raw tree, before validation: only to name tests
        self.tests = tests if isinstance(tests, list) else []

    def __call__(self, loc: Sequence[Any], message: str) -> tuple[int, str]:
        line = next((self.lines[tuple(loc[:n])] for n in range(len(loc), -1, -1)
                     if tuple(loc[:n]) in self.lines), 0)  # fmt: skip
        at = f"{self.path}, line {line}" if line else str(self.path)
        test = ""
        if len(loc) > 1 and loc[0] == "tests" and isinstance(loc[1], int):
            entry = self.tests[loc[1]] if loc[1] < len(self.tests) else None
            name = entry.get("name") if isinstance(entry, dict) else None
            test = f"test '{name}': " if isinstance(name, str) else f"test {loc[1] + 1}: "
        return line, f"{at}: {test}{message}"


Found = list[tuple[int, str]]  # (line, one-line problem), sorted before they are reported
_Model = TypeVar("_Model", bound=BaseModel)


def _validated(
    model: type[_Model], data: Any, at: tuple[Any, ...], where: _Where, found: Found
) -> _Model | None:
    """``data`` as a ``model``, or None with its problems added to ``found``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            found.append(where((*at, *error["loc"]), _describe(model, error)))
        return None


def _describe(model: type[BaseModel], error: Any) -> str:
    """What a pydantic error says, naming the field as the file writes it (``fill.b[0]``)."""
    loc = tuple(error["loc"])
    field = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)[1:]
    if error["type"] == "extra_forbidden":
        hint = did_you_mean(field, model.model_fields, shown="'{}'").rstrip()
        return f"unknown field '{field}'" + (f"; {hint}" if hint else "")
    message = str(error["msg"]).removeprefix("Value error, ")
    given = error.get("input")
    if isinstance(given, bool):  # YAML reads yes/no/on/off unquoted as booleans
        message += f" (got {given}; quote yes, no, on and off in YAML)"
    elif isinstance(given, (str, int, float)) and len(str(given)) <= 60:
        message += f" (got {given!r})"
    return f"{field}: {message}" if field else message


# ----------------------------------------------------------------------------------------------
# Templates

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Template:
    """A parsed template: ``literals[0] slot[0] literals[1] ... literals[-1]``."""

    literals: tuple[str, ...]
    slots: tuple[str, ...]

    def render(self, values: dict[str, str]) -> str:
        """The text with every slot filled (a value is inserted as is, never parsed)."""
        parts = [self.literals[0]]
        for slot, literal in zip(self.slots, self.literals[1:], strict=True):
            parts += [values[slot], literal]
        return "".join(parts)


def parse_template(text: str) -> Template:
    """Split ``text`` into literals and ``{slot}`` names; ``{{`` and ``}}`` are literal braces.

    Raises:
        ValueError: an unbalanced brace or a slot that is not a name, with its column.
    """
    literals, slots, current, start = [], [], [], 0
    for match in _TOKEN.finditer(text):
        current.append(text[start : match.start()])
        start = match.end()
        token = match[0]
        if token in ("{{", "}}"):
            current.append(token[0])
        elif token in ("{", "}"):
            raise ValueError(f"unbalanced '{token}' at column {match.start() + 1} (a literal "
                             f"brace is written '{token * 2}')")  # fmt: skip
        elif not _NAME.fullmatch(match[1]):
            raise ValueError(f"slot '{token}' at column {match.start() + 1} is not a name "
                             "(letters, digits and _)")  # fmt: skip
        else:
            literals.append("".join(current))
            slots.append(match[1])
            current = []
    current.append(text[start:])
    literals.append("".join(current))
    return Template(tuple(literals), tuple(slots))


def _fill_list(slot: str, lists: dict[str, list[str]]) -> str:
    """The fill list a slot draws from: its own name, else without trailing digits, so that
    ``{pos_adj}`` and ``{pos_adj2}`` take two different words of ``pos_adj`` (as in CheckList)."""
    for name in (slot, slot.rstrip("0123456789")):
        if name in lists:
            return name
    raise ValueError(f"template slot '{{{slot}}}' has no fill list (add '{slot}' to fill)")


def _slots(template: Template, lists: dict[str, list[str]]) -> tuple[list[str], list[str], int]:
    """(each distinct slot, the fill list it draws from, how many fillings there are in all)."""
    slots = list(dict.fromkeys(template.slots))
    sources = [_fill_list(slot, lists) for slot in slots]
    return slots, sources, math.prod(len(lists[source]) for source in sources)


def _filling_work(template: Template, lists: dict[str, list[str]], cap: int) -> int:
    """How many fillings :func:`_assignments` considers for ``template``: checked before any
    is made, so a small suite cannot ask for hours of work."""
    _, sources, total = _slots(template, lists)
    if len(set(sources)) == len(sources):
        return min(total, cap)
    return total if total <= _ENUMERATE_LIMIT else cap * 20


def _assignments(
    template: Template, lists: dict[str, list[str]], cap: int, rng: random.Random
) -> list[dict[str, str]]:
    """Up to ``cap`` fillings of ``template``, in product order: all of them when there are no
    more than ``cap``, else a seeded sample. Slots that share a list take different values."""
    slots, sources, total = _slots(template, lists)
    values = [lists[source] for source in sources]

    def filling(index: int) -> dict[str, str] | None:
        chosen = []
        for options in reversed(values):  # mixed radix: the last slot varies fastest
            index, digit = divmod(index, len(options))
            chosen.append(options[digit])
        chosen.reverse()
        pairs = set(zip(sources, chosen, strict=True))
        return dict(zip(slots, chosen, strict=True)) if len(pairs) == len(slots) else None

    if len(set(sources)) == len(sources):  # no shared list: every filling counts
        indices: Sequence[int] = range(total)
        if total > cap:
            indices = sorted(rng.sample(indices, cap))
    elif total <= _ENUMERATE_LIMIT:
        indices = [i for i in range(total) if filling(i) is not None]
        if len(indices) > cap:
            indices = sorted(rng.sample(indices, cap))
    else:
        picked: set[int] = set()
        for _ in range(cap * 20):  # distinct-value rejections are rare: a few draws suffice
            if len(picked) == cap:
                break
            index = rng.randrange(total)
            if filling(index) is not None:
                picked.add(index)
        indices = sorted(picked)
    return [found for i in indices if (found := filling(i)) is not None]


# ----------------------------------------------------------------------------------------------
# Perturbations: each returns up to ``n`` changed copies of a text, the same ones for one seed

_LETTERS_PAIR = re.compile(r"(?=([^\W\d_]{2}))")
_NUMBER = re.compile(r"\b\d{1,9}\b")  # longer digit runs are ids, not quantities: left alone
_END = re.compile(r"[.!?]+$")


def swap_characters(text: str, rng: random.Random, n: int) -> list[str]:
    """One typo per copy: two neighbouring letters swapped (CheckList's ``add_typos``)."""
    spots = [m.start() for m in _LETTERS_PAIR.finditer(text) if m[1][0] != m[1][1]]
    return [text[:i] + text[i + 1] + text[i] + text[i + 2 :]
            for i in rng.sample(spots, min(n, len(spots)))]  # fmt: skip


def change_numbers(text: str, rng: random.Random, n: int) -> list[str]:
    """Every number of 2 or more replaced by another within 20% of it (CheckList's radius);
    0 and 1 are kept, so "1 star" and singulars stay as they are."""

    def other(match: re.Match[str]) -> str:
        value = int(match[0])
        if value < 2:
            return match[0]
        low, high = max(2, math.floor(value * 0.8)), max(3, math.ceil(value * 1.2))
        choice = rng.randint(low, high - 1)
        return str(choice if choice < value else choice + 1)  # never the number itself

    if not any(int(m[0]) >= 2 for m in _NUMBER.finditer(text)):
        return []
    copies = {_NUMBER.sub(other, text) for _ in range(4 * n)}
    return sorted(copies - {text})[:n]


def change_punctuation(text: str, rng: random.Random, n: int) -> list[str]:
    """The final mark taken off (or a full stop added), an exclamation mark, no commas."""
    body = _END.sub("", text.rstrip())
    copies = [body if body != text.rstrip() else f"{body}.", f"{body}!", text.replace(",", "")]
    return _distinct(copies, text)[:n]


def change_case(text: str, rng: random.Random, n: int) -> list[str]:
    """All lower case, all upper case, only the first letter capital."""
    copies = [text.lower(), text.upper(), text[:1].upper() + text[1:].lower()]
    return _distinct(copies, text)[:n]


def add_sentences(text: str, sentences: Sequence[str], rng: random.Random, n: int) -> list[str]:
    """``text`` followed by each of up to ``n`` sentences drawn from ``sentences``."""
    body = text.rstrip()
    body = body if _END.search(body) else f"{body}."
    return [f"{body} {s}" for s in rng.sample(list(sentences), min(n, len(sentences)))]


def _distinct(copies: Sequence[str], text: str) -> list[str]:
    return [c for c in dict.fromkeys(copies) if c != text]


_TEXT_PERTURBATIONS: dict[str, Callable[[str, random.Random, int], list[str]]] = {
    "typo": swap_characters,
    "numbers": change_numbers,
    "punctuation": change_punctuation,
    "case": change_case,
}


def _swap_names(
    template: Template,
    values: dict[str, str],
    swap: Sequence[str],
    lists: dict[str, list[str]],
    rng: random.Random,
    n: int,
) -> list[str]:
    """The text again with each ``swap`` slot of the template re-filled by another value of its
    list (not one the text already holds)."""
    slots = [slot for slot in swap if slot in values]
    if not slots:
        return []
    taken = set(values.values())
    options = [[v for v in lists[_fill_list(s, lists)] if v not in taken] for s in slots]
    picks = [rng.sample(o, min(n, len(o))) for o in options]
    copies = []
    for chosen in zip(*picks, strict=False):
        if len(set(chosen)) == len(chosen):
            copies.append(template.render({**values, **dict(zip(slots, chosen, strict=True))}))
    return copies


# ----------------------------------------------------------------------------------------------
# An expanded suite


@dataclass(frozen=True)
class Case:
    """One test case: a text, and for inv and dir tests its perturbed copies."""

    text: str
    variants: tuple[str, ...] = ()


@dataclass(frozen=True)
class SuiteTest:
    """One test with its cases generated."""

    name: str
    capability: str
    type: TestType
    description: str
    cases: tuple[Case, ...]
    expect: str | None = None
    perturb: str | None = None


@dataclass(frozen=True)
class Suite:
    """A loaded suite: every test expanded, ready to score."""

    name: str
    description: str
    path: Path
    tolerance: float
    tests: tuple[SuiteTest, ...]

    def texts(self) -> list[str]:
        """Every text to score, each once, in suite order."""
        found = (
            t for test in self.tests for case in test.cases for t in (case.text, *case.variants)
        )
        return list(dict.fromkeys(found))


def load_suite(path: str | Path | None = None) -> Suite:
    """Read, check and expand a suite file (default: the shipped movie-review suite).

    Raises:
        ConfigError: every problem of the file, each one line naming the line and the test.
    """
    path = Path(path) if path is not None else DEFAULT_SUITE
    tree, lines = _read_tree(path)
    where = _Where(path, tree, lines)
    found: Found = []
    spec = _validated(SuiteFile, tree, (), where, found)
    tests, names, total, room = [], set(), 0, [MAX_SUITE_WORK]
    for index, data in enumerate(spec.tests if spec is not None else where.tests):
        if not isinstance(data, dict):
            continue  # reported by the suite's own check
        entry = _validated(TestEntry, data, ("tests", index), where, found)
        if entry is None or spec is None:  # the suite's own problems: its tests are only checked
            continue
        try:
            if entry.name in names:
                raise _Problem("a second test with this name; names must be unique", "name")
            names.add(entry.name)
            tests.append(_expand(entry, spec, room))
        except _Problem as exc:
            found.append(where(("tests", index, *exc.at), str(exc)))
            continue
        total += sum(1 + len(case.variants) for case in tests[-1].cases)
        if total > MAX_TEXTS:  # checked as tests expand, so a huge suite stops early
            raise ConfigError([f"{path}: over {MAX_TEXTS:,} texts to score by test "
                               f"'{entry.name}'; lower max_cases or variants"])  # fmt: skip
    if found or spec is None:
        raise ConfigError([message for _, message in sorted(set(found))])
    return Suite(spec.name, spec.description, path, spec.tolerance, tuple(tests))


def _expand(entry: TestEntry, spec: SuiteFile, room: list[int]) -> SuiteTest:
    """The test's cases: templates filled, capped, and perturbed for inv and dir. The fillings
    it considers must fit in the test's cap and in what is left of the suite's, ``room[0]``,
    which they are taken from before any is made (a test that then fails still spent them)."""
    _check_fields(entry, spec)
    lists = {**spec.fill, **entry.fill}
    rng = random.Random(f"{spec.seed}/{entry.name}")  # a str seed hashes the same in every run
    cap = entry.max_cases or spec.max_cases
    templates, work = [], 0
    for number, text in enumerate(entry.template):  # all checked before any is filled
        try:
            templates.append(parse_template(text))
            work += _filling_work(templates[-1], lists, cap)
        except ValueError as exc:
            raise _Problem(str(exc), "template", number) from None
        if work > MAX_FILLING_WORK:
            raise _Problem(f"its templates have over {MAX_FILLING_WORK:,} fillings to consider; "
                           "use fewer templates, shorter fill lists or a lower max_cases",
                           "template", number)  # fmt: skip
        if work > room[0]:
            raise _Problem(f"with the tests before it, the suite has over {MAX_SUITE_WORK:,} "
                           "fillings to consider; split it into several suites, or use shorter "
                           "fill lists or a lower max_cases", "template", number)  # fmt: skip
    room[0] -= work
    filled = [(template, values) for template in templates
              for values in _assignments(template, lists, cap, rng)]  # fmt: skip
    if len(filled) > cap:
        filled = [filled[i] for i in sorted(rng.sample(range(len(filled)), cap))]
    if not filled:
        raise _Problem(
            "its templates give no texts: slots that share a fill list take different words, "
            "and the list has too few; add words",
            "template",
        )
    cases = _cases(entry, filled, lists, rng)
    if not cases:
        raise _Problem(f"perturbation '{entry.perturb}' changes none of its {len(filled)} "
                       "texts", "perturb")  # fmt: skip
    return SuiteTest(entry.name, entry.capability, entry.type, entry.description, cases,
                     entry.expect, entry.perturb)  # fmt: skip


def _cases(
    entry: TestEntry,
    filled: list[tuple[Template, dict[str, str]]],
    lists: dict[str, list[str]],
    rng: random.Random,
) -> tuple[Case, ...]:
    cases: dict[str, Case] = {}
    for template, values in filled:
        text = template.render(values)
        if not text.strip():  # predict refuses an empty review: a test of one is no test
            raise _Problem("a filled template is empty or only spaces; give it words", "template")
        if len(text) > MAX_TEXT_CHARS:
            raise _Problem(f"a filled template has {len(text):,} characters, over the "
                           f"{MAX_TEXT_CHARS:,} of a test sentence", "template")  # fmt: skip
        if text in cases:
            continue
        if entry.type == "mft":
            cases[text] = Case(text)
            continue
        if entry.perturb == "names":
            copies = _swap_names(template, values, entry.swap, lists, rng, entry.variants)
        elif entry.perturb in _ADDS:
            copies = add_sentences(text, lists[entry.sentences or ""], rng, entry.variants)
        else:
            copies = _TEXT_PERTURBATIONS[entry.perturb or ""](text, rng, entry.variants)
        variants = tuple(c for c in dict.fromkeys(copies) if c != text)
        if variants:  # a text the perturbation cannot change is no test (CheckList drops it)
            cases[text] = Case(text, variants)
    return tuple(cases.values())


def _check_fields(entry: TestEntry, spec: SuiteFile) -> None:
    """Which fields go with which test type and perturbation; fill lists that nothing uses."""
    allowed = _PERTURBATIONS[entry.type]
    if entry.type == "mft" and entry.expect is None:
        raise _Problem("an mft test needs 'expect', the label its sentences should get")
    if entry.type != "mft" and entry.expect is not None:
        raise _Problem(f"'expect' is for mft tests; an {entry.type} test has none", "expect")
    if entry.type == "mft" and entry.perturb is not None:
        raise _Problem("'perturb' is for inv and dir tests", "perturb")
    if entry.type != "mft" and entry.perturb not in allowed:
        raise _Problem(f"an {entry.type} test needs perturb: {' | '.join(allowed)}", "perturb")
    if (entry.perturb == "names") != bool(entry.swap):
        raise _Problem("'swap' (the slots to re-fill) goes with perturb: names, and only there",
                       "swap" if entry.swap else "perturb")  # fmt: skip
    if (entry.perturb in _ADDS) != (entry.sentences is not None):
        raise _Problem("'sentences' (a fill list) goes with perturb: add_*, and only there",
                       "sentences" if entry.sentences else "perturb")  # fmt: skip
    lists = {**spec.fill, **entry.fill}
    if entry.sentences is not None and entry.sentences not in lists:
        raise _Problem(f"sentences: no fill list '{entry.sentences}'", "sentences")
    used = {slot for t in entry.template for slot in _slots_of(t)}
    for slot in entry.swap:
        if slot not in used:
            raise _Problem(f"swap: slot '{slot}' is in none of the templates", "swap")
    named = {_fill_list(s, lists) for s in used if _has_list(s, lists)}
    for name in entry.fill:
        if name not in named and name != entry.sentences:
            raise _Problem(f"fill list '{name}' is used by no template", "fill", name)


def _slots_of(template: str) -> list[str]:
    try:
        return list(parse_template(template).slots)
    except ValueError:
        return []  # reported with its template number when the test expands


def _has_list(slot: str, lists: dict[str, list[str]]) -> bool:
    try:
        _fill_list(slot, lists)
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------------------------
# Running a suite


class Scorer(Protocol):
    """What a suite runs on: a :class:`~rnn_sentiment.inference.predictor.Predictor`, or any
    object with label names and a batch ``predict_proba``."""

    @property
    def label_names(self) -> Sequence[str]: ...

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class Failure:
    """One failing case, as shown. ``p``: the probability of ``predicted`` (mft, inv) or of
    positive (dir) for ``text``; ``base`` and ``base_p``: the unperturbed text and its
    probability of the same label (inv: its own label; dir: positive)."""

    text: str
    expected: str
    predicted: str
    p: float
    base: str | None = None
    base_p: float | None = None


@dataclass(frozen=True)
class TestResult:
    """The outcome of one test: cases, failures, and the worst few failing examples."""

    __test__ = False  # not a pytest test class

    name: str
    capability: str
    type: TestType
    description: str
    cases: int
    failed: int
    examples: tuple[Failure, ...]
    expect: str | None = None
    perturb: str | None = None

    @property
    def failure_rate(self) -> float:
        """Failed cases / cases."""
        return self.failed / self.cases if self.cases else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Every field and the failure rate, as plain JSON-able data."""
        return {**asdict(self), "failure_rate": self.failure_rate,
                "examples": [asdict(e) for e in self.examples]}  # fmt: skip


@dataclass(frozen=True)
class SuiteResult:
    """The outcome of a suite on one model."""

    suite: str
    path: str
    labels: tuple[str, ...]
    tolerance: float
    texts: int
    seconds: float
    tests: tuple[TestResult, ...]

    def failing(self, rate: float) -> list[TestResult]:
        """The tests whose failure rate is above ``rate`` (``--fail-above``; 0: any failure)."""
        return [test for test in self.tests if test.failure_rate > rate]

    def worst(self) -> TestResult:
        """The test with the highest failure rate (the first of equals)."""
        return max(self.tests, key=lambda test: test.failure_rate)

    def by_capability(self) -> dict[str, list[TestResult]]:
        """The tests grouped by capability, in suite order."""
        groups: dict[str, list[TestResult]] = {}
        for test in self.tests:
            groups.setdefault(test.capability, []).append(test)
        return groups

    def to_dict(self) -> dict[str, Any]:
        """Every number, as plain JSON-able data."""
        return {
            "suite": self.suite,
            "path": self.path,
            "labels": list(self.labels),
            "tolerance": self.tolerance,
            "texts": self.texts,
            "seconds": self.seconds,
            "tests": [test.to_dict() for test in self.tests],
        }


def _check_arguments(scorer: object, suite: object, examples: object) -> None:
    """run_suite's arguments as a library caller may pass them: each a DataError that says
    what to pass, not an AttributeError from deep inside (or a silent slice of examples)."""
    if isinstance(suite, (str, Path)):
        raise DataError(
            f"suite is a path; load it first: run_suite(model, load_suite({str(suite)!r}))"
        )
    if not isinstance(suite, Suite):
        raise DataError(f"suite must come from load_suite(), not {type(suite).__name__}")
    if not (hasattr(scorer, "label_names") and hasattr(scorer, "predict_proba")):
        raise DataError(f"the model must come from load_model(), not {type(scorer).__name__}")
    if not is_whole(examples, 0):
        raise DataError(f"examples must be a whole number of 0 or more, not {examples!r}")


def run_suite(scorer: Scorer, suite: Suite, examples: int = 3) -> SuiteResult:
    """Score every text of ``suite`` in one batch and judge each test's cases.

    Args:
        scorer: the model, e.g. ``Predictor.from_dir(run_dir)``.
        suite: from :func:`load_suite`.
        examples: failing examples kept per test, the most confidently wrong first.

    Raises:
        DataError: the suite expects a label the model does not have, or the model's
            probabilities do not have one row per text and one column per label.
    """
    _check_arguments(scorer, suite, examples)
    labels = tuple(scorer.label_names)
    _check_labels(suite, labels)
    texts = suite.texts()
    started = time.perf_counter()
    probs = np.asarray(scorer.predict_proba(texts), dtype=np.float64)
    seconds = time.perf_counter() - started
    if probs.shape != (len(texts), len(labels)):
        raise DataError(f"the model returned probabilities of shape {probs.shape} for "
                        f"{len(texts)} texts and {len(labels)} labels")  # fmt: skip
    rows = dict(zip(texts, probs, strict=True))
    judged = tuple(_judge(test, rows, labels, suite.tolerance, examples) for test in suite.tests)
    return SuiteResult(suite.name, str(suite.path), labels, suite.tolerance, len(texts), seconds,
                       judged)  # fmt: skip


def _check_labels(suite: Suite, labels: tuple[str, ...]) -> None:
    for test in suite.tests:
        if test.expect is not None and test.expect not in labels:
            raise DataError(f"test '{test.name}' expects label '{test.expect}', which the model "
                            f"does not have (its labels: {', '.join(labels)})")  # fmt: skip
        if test.type == "dir" and POSITIVE not in labels:
            raise DataError(f"test '{test.name}' is directional: it needs a '{POSITIVE}' label, "
                            f"and the model's labels are {', '.join(labels)}")  # fmt: skip


def _judge(
    test: SuiteTest,
    rows: dict[str, np.ndarray],
    labels: tuple[str, ...],
    tolerance: float,
    examples: int,
) -> TestResult:
    judge = {"mft": _judge_mft, "inv": _judge_inv, "dir": _judge_dir}[test.type]
    failures = [
        (severity, failure)
        for case in test.cases
        for severity, failure in judge(test, case, rows, labels, tolerance)
    ]
    worst = sorted(failures, key=lambda pair: -pair[0])[:examples]  # stable: suite order on ties
    kept = tuple(failure for _, failure in worst)
    return TestResult(test.name, test.capability, test.type, test.description, len(test.cases),
                      len(failures), kept, test.expect, test.perturb)  # fmt: skip


Verdict = Iterator[tuple[float, Failure]]  # at most one (severity, worst failure) per case


def _judge_mft(
    test: SuiteTest, case: Case, rows: dict[str, np.ndarray], labels: tuple[str, ...], _: float
) -> Verdict:
    row = rows[case.text]
    predicted = labels[int(row.argmax())]
    if predicted != test.expect:
        severity = 1.0 - float(row[labels.index(test.expect or "")])
        yield severity, Failure(case.text, test.expect or "", predicted, float(row.max()))


def _judge_inv(
    test: SuiteTest, case: Case, rows: dict[str, np.ndarray], labels: tuple[str, ...], _: float
) -> Verdict:
    base = rows[case.text]
    label = int(base.argmax())
    flipped = [v for v in case.variants if int(rows[v].argmax()) != label]
    if flipped:
        text = max(flipped, key=lambda v: float(base[label] - rows[v][label]))
        row = rows[text]
        failure = Failure(text, labels[label], labels[int(row.argmax())], float(row.max()),
                          case.text, float(base[label]))  # fmt: skip
        yield float(base[label] - row[label]), failure


def _judge_dir(
    test: SuiteTest,
    case: Case,
    rows: dict[str, np.ndarray],
    labels: tuple[str, ...],
    tolerance: float,
) -> Verdict:
    positive = labels.index(POSITIVE)
    sign = 1.0 if test.perturb == "add_positive" else -1.0  # the way p(positive) must not move
    base = float(rows[case.text][positive])
    drops = {v: sign * (base - float(rows[v][positive])) for v in case.variants}
    text = max(drops, key=lambda v: drops[v])
    if drops[text] > tolerance:
        row = rows[text]
        expected = f"p({POSITIVE}) {'not lower' if sign > 0 else 'not higher'}"
        failure = Failure(text, expected, labels[int(row.argmax())], float(row[positive]),
                          case.text, base)  # fmt: skip
        yield drops[text], failure
