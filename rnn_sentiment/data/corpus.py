"""Generate the small built-in movie-review corpus that ships with rnn-sentiment.

Why it exists: ``rnn-sentiment train`` with no arguments has to work offline and finish in well
under a minute on a laptop CPU, while still showing what a *recurrent* model is for. So the corpus
is built so that word order, not word choice, decides the label:

* negation: "The acting was not good." is negative, "The plot was not bad at all." positive;
* contrast: in "X, but Y" (also "Although X, Y", "X. However, Y") the second clause decides,
  so "The plot was good, but the acting was awful." is negative and the reverse is positive;
* intensifiers: "really great", "absolutely terrible", "not very good" (negative),
  "not too bad" (positive).

Every sentiment word, "not", "but" and every intensifier is used as often in positive reviews as in
negative ones, so a unigram bag-of-words model stays near chance, while an LSTM or GRU reading left
to right learns the rules. Neutral filler sentences and a few invented films and people add variety
without carrying label information.

This is a teaching and smoke-test corpus: it says nothing about how real people write reviews.
Real work should train on real data (for example IMDB, through ``data.source``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rnn_sentiment.atomic import write_text

NEGATIVE = 0
POSITIVE = 1
LABEL_NAMES = ("negative", "positive")  # written as strings on purpose: they exercise label mapping
SPLIT_SIZES = {"train": 4000, "validation": 500, "test": 500}
MAX_WORDS = 35
MAX_SENTENCES = 3
_ATTEMPTS_PER_REVIEW = 200  # the template space is far larger than any n we ask for

# --- Vocabulary -------------------------------------------------------------------------------

Pair = tuple[str, str]  # (positive word, negative word) that fit the same slot


@dataclass(frozen=True)
class Lexicon:
    """Adjective pairs for one kind of subject; "strong" ones take "absolutely" and friends."""

    mild: tuple[Pair, ...]
    strong: tuple[Pair, ...]


# Adjectives come in (positive, negative) pairs and a pair is drawn before its side, so the subject
# a review talks about never hints at the label.
LEXICONS: dict[str, Lexicon] = {
    "general": Lexicon(
        # "good"/"bad" twice: they are the commonest verdicts, and the demo sentences use them.
        mild=(
            ("good", "bad"),
            ("good", "bad"),
            ("strong", "weak"),
            ("impressive", "disappointing"),
        ),
        strong=(
            ("great", "terrible"),
            ("excellent", "awful"),
            ("wonderful", "horrible"),
            ("fantastic", "dreadful"),
        ),
    ),
    "movie": Lexicon(
        mild=(
            ("fun", "boring"),
            ("entertaining", "dull"),
            ("enjoyable", "tedious"),
            ("moving", "forgettable"),
        ),
        strong=(("amazing", "abysmal"), ("superb", "atrocious")),
    ),
    "story": Lexicon(
        mild=(
            ("gripping", "predictable"),
            ("engaging", "boring"),
            ("original", "derivative"),
            ("clever", "silly"),
            ("coherent", "confusing"),
        ),
        strong=(("brilliant", "ridiculous"),),
    ),
    "acting": Lexicon(
        mild=(("convincing", "wooden"), ("natural", "stiff"), ("charming", "bland")),
        strong=(("outstanding", "embarrassing"), ("phenomenal", "painful")),
    ),
    "music": Lexicon(
        mild=(("memorable", "forgettable"), ("catchy", "annoying"), ("beautiful", "grating")),
        strong=(("stunning", "unbearable"),),
    ),
    "dialogue": Lexicon(
        mild=(
            ("witty", "clumsy"),
            ("sharp", "stilted"),
            ("clever", "cheesy"),
            ("natural", "awkward"),
        ),
        strong=(("brilliant", "cringeworthy"),),
    ),
    "visuals": Lexicon(
        mild=(("beautiful", "ugly"), ("striking", "bland"), ("gorgeous", "murky")),
        strong=(("breathtaking", "hideous"),),
    ),
    "ending": Lexicon(
        mild=(("satisfying", "disappointing"), ("surprising", "predictable"), ("moving", "rushed")),
        strong=(("perfect", "infuriating"),),
    ),
    "pacing": Lexicon(
        mild=(("tight", "slow"), ("brisk", "sluggish"), ("steady", "uneven")),
        strong=(("perfect", "glacial"),),
    ),
    "direction": Lexicon(
        mild=(("confident", "sloppy"), ("inventive", "lazy"), ("assured", "clumsy")),
        strong=(("masterful", "incompetent"),),
    ),
    "effects": Lexicon(
        mild=(("convincing", "cheap"), ("impressive", "cheesy")),
        strong=(("spectacular", "laughable"),),
    ),
    "characters": Lexicon(
        mild=(("likable", "flat"), ("believable", "one-dimensional"), ("interesting", "dull")),
        strong=(("compelling", "insufferable"),),
    ),
}

# Intensifier tables, keyed by (strong adjective, positive adjective, negated). "" means none.
# Balance rule: a word must be as frequent in positive reviews, which use (positive, plain) and
# (negative, negated) phrases, as in negative ones, which use (positive, negated) and
# (negative, plain). "not very bad" is odd English, so "very" is missing from (negative, negated)
# and the other three tables make up for it: plain "very" is twice as likely before a positive
# word as before a negative one, and "not very" takes the remaining share.
_MILD_PLAIN = ("", "", "", "really", "really", "pretty", "quite", "incredibly", "extremely")
_MILD_NEGATED = ("", "", "", "", "", "too", "too", "that", "that", "particularly", "at all")
_STRONG_PLAIN = ("", "", "", "", "really", "really", "absolutely", "absolutely", "truly", "simply")
_STRONG_NEGATED = ("", "", "", "", "", "", "that", "that", "that", "exactly", "exactly", "exactly")
INTENSIFIERS: dict[tuple[bool, bool, bool], tuple[str, ...]] = {
    (False, True, False): _MILD_PLAIN + ("", "very", "very"),
    (False, False, False): _MILD_PLAIN + ("", "", "very"),
    (False, True, True): _MILD_NEGATED + ("very",),
    (False, False, True): _MILD_NEGATED + ("",),
    (True, True, False): _STRONG_PLAIN,
    (True, False, False): _STRONG_PLAIN,
    (True, True, True): _STRONG_NEGATED,
    (True, False, True): _STRONG_NEGATED,
}
# Collocations such as "painfully slow" only appear in contrast sentences, where each clause's
# phrase is equally likely to be the deciding one, so they stay label-neutral.
COLLOCATIONS = {
    "slow": "painfully",
    "predictable": "painfully",
    "boring": "painfully",
    "awkward": "painfully",
    "witty": "wonderfully",
    "beautiful": "stunningly",
    "convincing": "utterly",
    "gripping": "genuinely",
}


@dataclass(frozen=True)
class Subject:
    """What a clause judges: the film itself or one aspect of it ("{title}" etc. are filled in)."""

    text: str
    plural: bool
    lexicon: str
    movie: bool = False


SUBJECTS: tuple[Subject, ...] = (
    Subject("this movie", False, "movie", movie=True),
    Subject("this film", False, "movie", movie=True),
    Subject("the movie", False, "movie", movie=True),
    Subject("the film", False, "movie", movie=True),
    Subject("{title}", False, "movie", movie=True),
    Subject("the plot", False, "story"),
    Subject("the story", False, "story"),
    Subject("the script", False, "story"),
    Subject("the acting", False, "acting"),
    Subject("the cast", False, "acting"),
    Subject("the performances", True, "acting"),
    Subject("{actor}'s performance", False, "acting"),
    Subject("the lead performance", False, "acting"),
    Subject("the soundtrack", False, "music"),
    Subject("the score", False, "music"),
    Subject("the music", False, "music"),
    Subject("the dialogue", False, "dialogue"),
    Subject("the writing", False, "dialogue"),
    Subject("the cinematography", False, "visuals"),
    Subject("the camera work", False, "visuals"),
    Subject("the visuals", True, "visuals"),
    Subject("the ending", False, "ending"),
    Subject("the final act", False, "ending"),
    Subject("the pacing", False, "pacing"),
    Subject("the direction", False, "direction"),
    Subject("the director's work", False, "direction"),
    Subject("{director}'s direction", False, "direction"),
    Subject("the special effects", True, "effects"),
    Subject("the characters", True, "characters"),
    Subject("the main character", False, "characters"),
)

# The film as a whole is what most reviews judge, so it is picked more often than any one aspect.
SUBJECT_WEIGHTS = tuple(3 if subject.movie else 1 for subject in SUBJECTS)

TITLES = (
    "Midnight Harbor", "The Last Orchard", "Paper Lanterns", "Iron Meadow", "Silent Tide",
    "Glass Mountain", "Winter Station", "The Copper Key", "Blue Horizon", "Northern Road",
)  # fmt: skip
ACTORS = (
    "Maya Chen", "Daniel Ortega", "Priya Shah", "Tom Becker", "Lena Novak",
    "Omar Haddad", "Grace Kim", "Jonah Wright", "Elena Rossi", "Sam Porter",
)  # fmt: skip
DIRECTORS = ("Sofia Marin", "Ken Okada", "Ruth Abbott", "Marco Bellini", "Hannah Lee")
# Filler sentences describe, never judge: no sentiment word, no "not", no "but". A review takes at
# most one of each kind, so it never says where it was watched twice.
VIEWING_FILLERS = (
    "I watched it on {day} with my {relative}.",
    "We saw {title} at the local cinema last {day}.",
    "My {relative} picked {title} for movie night.",
    "I went in knowing almost nothing about it.",
    "I watched {title} on a long flight.",
    "We watched it at home on {day} night.",
    "I saw it at a festival screening.",
    "I rented {title} after reading about it online.",
)
ABOUT_FILLERS = (
    "{actor} plays a {role} in a small coastal town.",
    "{title} is directed by {director}.",
    "It is the second feature from {director}.",
    "The story follows a {role} who returns home after twenty years.",
    "It runs a little over two hours.",
    "{actor} stars as a {role} with a secret.",
    "It is based on a novel from the nineties.",
)
_DAYS = ("Monday", "Friday", "Saturday", "Sunday")
_RELATIVES = ("brother", "sister", "parents", "friends", "roommate", "partner")
_ROLES = ("retired detective", "young teacher", "ship captain", "night nurse", "chef")
_PREFIXES = ("Honestly, ", "To be honest, ", "In my opinion, ", "Personally, ")
_AGREE_JOINERS = (", and {b}.", ". {B}.", ". Also, {b}.", ". On top of that, {b}.", ". Plus, {b}.")
_CONTRAST_JOINERS = (
    "{A}, but {b}.",
    "{A} but {b}.",  # people often skip the comma; the demo sentence does too
    "{A}. But {b}.",
    "{A}. However, {b}.",
    "{A}, yet {b}.",
    "Although {a}, {b}.",
    "While {a}, {b}.",
)

# --- Phrases and clauses ----------------------------------------------------------------------


@dataclass(frozen=True)
class Phrase:
    """A judgement such as "not very good": the label it expresses is ``positive``."""

    adjective: str
    intensifier: str
    negated: bool
    positive: bool


def sample_phrase(
    rng: random.Random, lexicon: str, positive: bool, negated: bool, contrast: bool = False
) -> Phrase:
    """A phrase expressing ``positive``; negation flips which side of the adjective pair is used."""
    positive_word = positive != negated
    strong = rng.random() < 0.4
    general_share = 0.5 if lexicon == "movie" else 0.35  # "this movie is good" is the classic
    lex = LEXICONS["general"] if rng.random() < general_share else LEXICONS[lexicon]
    pair = rng.choice(lex.strong if strong else lex.mild)
    adjective = pair[0] if positive_word else pair[1]
    intensifier = rng.choice(INTENSIFIERS[(strong, positive_word, negated)])
    if contrast and not negated and adjective in COLLOCATIONS and rng.random() < 0.4:
        intensifier = COLLOCATIONS[adjective]
    return Phrase(adjective, intensifier, negated, positive)


def adjective_phrase(phrase: Phrase, rng: random.Random, allow_prefix_at_all: bool = True) -> str:
    """The words after the negation: "very good", "bad at all", "at all convincing"."""
    if phrase.intensifier == "at all":
        if allow_prefix_at_all and rng.random() < 0.3:
            return f"at all {phrase.adjective}"
        return f"{phrase.adjective} at all"
    return f"{phrase.intensifier} {phrase.adjective}".strip()


def copula(plural: bool, past: bool, negated: bool, rng: random.Random) -> str:
    """'is', 'were not', "wasn't", ...; contractions keep the negation varied."""
    verb = ("were" if plural else "was") if past else ("are" if plural else "is")
    if not negated:
        return verb
    return f"{verb}n't" if rng.random() < 0.3 else f"{verb} not"


def do_not(rng: random.Random, form: str = "did") -> str:
    """'did not' or "didn't" (also for 'do' and 'does')."""
    return f"{form}n't" if rng.random() < 0.3 else f"{form} not"


def feel(plural: bool, past: bool, negated: bool, rng: random.Random) -> str:
    """'felt', 'feels', 'do not feel', "didn't feel", ... in the review's tense."""
    if past:
        return f"{do_not(rng)} feel" if negated else "felt"
    if negated:
        return f"{do_not(rng, 'do' if plural else 'does')} feel"
    return "feel" if plural else "feels"


def render_clause(
    rng: random.Random,
    subject: str,
    plural: bool,
    phrase: Phrase,
    past: bool,
    sentence_start: bool = False,
) -> str:
    """One judgement clause in one of several frames; no final punctuation."""
    frame = rng.choice(("copula", "copula", "copula", "think", "find", "feel"))
    if frame == "think":
        verb_negated = phrase.negated and rng.random() < 0.6
        adj = adjective_phrase(phrase, rng, allow_prefix_at_all=not verb_negated)
        cop = copula(plural, past, phrase.negated and not verb_negated, rng)
        if verb_negated:
            head = f"I {do_not(rng)} think" if past else f"I {do_not(rng, 'do')} think"
        else:
            head = "I thought" if past else "I think"
        return f"{head} {subject} {cop} {adj}"
    if frame == "find":
        adj = adjective_phrase(phrase, rng, allow_prefix_at_all=False)
        head = f"I {do_not(rng)} find" if phrase.negated else "I found"
        return f"{head} {subject} {adj}"
    if frame == "feel" and phrase.intensifier != "exactly":  # "did not feel exactly X" is clumsy
        adj = adjective_phrase(phrase, rng, allow_prefix_at_all=False)
        return f"{subject} {feel(plural, past, phrase.negated, rng)} {adj}"
    clause = (
        f"{subject} {copula(plural, past, phrase.negated, rng)} {adjective_phrase(phrase, rng)}"
    )
    if sentence_start and rng.random() < 0.25:
        return rng.choice(_PREFIXES) + clause
    return clause


def expectation_clause(rng: random.Random, subject: str, phrase: Phrase) -> str:
    """'I expected the ending to be X' or 'I did not expect it to be X' (opens a contrast)."""
    adj = adjective_phrase(phrase, rng, allow_prefix_at_all=False)
    head = f"I {do_not(rng)} expect" if phrase.negated else "I expected"
    return f"{head} {subject} to be {adj}"


def capitalize(text: str) -> str:
    """Upper-case the first letter only ("this movie" -> "This movie", "I" stays)."""
    return text[:1].upper() + text[1:]


# --- Reviews ----------------------------------------------------------------------------------


def pick_subject(rng: random.Random) -> Subject:
    """A subject, the film itself more often than any single aspect."""
    return rng.choices(SUBJECTS, weights=SUBJECT_WEIGHTS)[0]


def pick_two_subjects(rng: random.Random) -> tuple[Subject, Subject]:
    """Two different kinds of thing to judge: never "the plot" and "the story", and never the
    film twice under two names ("this movie" and "Iron Meadow")."""
    first = pick_subject(rng)
    while True:
        second = pick_subject(rng)
        if second.lexicon != first.lexicon:
            return first, second


def single_review(rng: random.Random, positive: bool, past: bool) -> list[str]:
    """One judgement ("This movie is not good."): only negation tells the label."""
    subject = pick_subject(rng)
    phrase = sample_phrase(rng, subject.lexicon, positive, negated=rng.random() < 0.5)
    clause = render_clause(rng, subject.text, subject.plural, phrase, past, sentence_start=True)
    return [capitalize(clause) + "."]


def agreeing_review(rng: random.Random, positive: bool, past: bool) -> list[str]:
    """Two clauses with the same label, exactly one negated ("good ... not bad").

    Positive reviews then hold one positive word and one negated negative word, negative reviews
    one negated positive word and one negative word: the same bag of words for both labels.
    """
    first, second = pick_two_subjects(rng)
    first_negated = rng.random() < 0.5
    a = sample_phrase(rng, first.lexicon, positive, negated=first_negated)
    b = sample_phrase(rng, second.lexicon, positive, negated=not first_negated)
    clause_a = capitalize(
        render_clause(rng, first.text, first.plural, a, past, sentence_start=True)
    )
    joiner = rng.choice(_AGREE_JOINERS)
    clause_b = render_clause(rng, second.text, second.plural, b, past)
    return _split_sentences(clause_a + joiner.format(b=clause_b, B=capitalize(clause_b)))


def contrast_review(rng: random.Random, positive: bool, past: bool) -> list[str]:
    """'X, but Y': the second clause decides, and swapping the clauses flips the label.

    Both orders are equally likely, so every word is as common in either class.
    """
    first, second = pick_two_subjects(rng)
    a = sample_phrase(rng, first.lexicon, not positive, rng.random() < 0.5, contrast=True)
    b_subject, b_plural, b_lexicon = second.text, second.plural, second.lexicon
    if rng.random() < 0.2:
        # "I expected the ending to be moving, but it was rushed": the same subject twice.
        clause_a = expectation_clause(rng, first.text, a)
        b_subject, b_plural, b_lexicon = (
            ("they" if first.plural else "it"),
            first.plural,
            first.lexicon,
        )
        past = True  # "I expected ... it was", never "it is"
    else:
        clause_a = render_clause(rng, first.text, first.plural, a, past)
    b = sample_phrase(rng, b_lexicon, positive, rng.random() < 0.5, contrast=True)
    clause_b = render_clause(rng, b_subject, b_plural, b, past)
    joiner = rng.choice(_CONTRAST_JOINERS)
    text = joiner.format(A=capitalize(clause_a), a=clause_a, b=clause_b)
    return _split_sentences(text)


def _split_sentences(text: str) -> list[str]:
    """Sentences of a generated text (ours only ever end with '. ')."""
    parts = text.split(". ")
    return [part if part.endswith(".") else part + "." for part in parts]


def filler_sentences(rng: random.Random, count: int) -> list[str]:
    """Up to two neutral sentences of different kinds, drawn without regard to the label."""
    kinds = [VIEWING_FILLERS, ABOUT_FILLERS]
    rng.shuffle(kinds)
    return [rng.choice(kind) for kind in kinds[:count]]


def fill_names(text: str, rng: random.Random) -> str:
    """Fill a review's placeholders; one film and one cast per review keeps it coherent."""
    return text.format(
        title=rng.choice(TITLES),
        actor=rng.choice(ACTORS),
        director=rng.choice(DIRECTORS),
        day=rng.choice(_DAYS),
        relative=rng.choice(_RELATIVES),
        role=rng.choice(_ROLES),
    )


def make_review(rng: random.Random, positive: bool) -> str:
    """One review: a judgement core (1-2 sentences) with 0-2 neutral sentences around it."""
    kind = rng.choices((single_review, agreeing_review, contrast_review), weights=(3, 3, 4))[0]
    past = rng.random() < 0.6  # one tense per review reads more naturally
    core = kind(rng, positive, past)
    room = MAX_SENTENCES - len(core)
    n_fillers = min(room, rng.choices((0, 1, 2), weights=(5, 4, 1))[0])
    fillers = filler_sentences(rng, n_fillers)
    cut = rng.randint(0, n_fillers) if rng.random() < 0.3 else n_fillers  # mostly before the core
    sentences = fillers[:cut] + core + fillers[cut:]
    # Some reviews end without a full stop (or with "!"), so a model does not rely on one being
    # the last token it reads, e.g. for "This movie is not good" typed at the command line.
    ending = rng.choices((".", "!", ""), weights=(17, 1, 2))[0]
    return fill_names(" ".join(sentences)[:-1] + ending, rng)


def generate_reviews(n: int, seed: int) -> list[tuple[str, int]]:
    """``n`` distinct reviews, half positive (label 1) and half negative (label 0), shuffled."""
    if n < 0 or n % 2:
        raise ValueError(f"n must be a non-negative even number, got {n}")
    rng = random.Random(seed)  # never the global random state: the corpus must be reproducible
    seen: set[str] = set()
    reviews: list[tuple[str, int]] = []
    for i in range(n):
        label = i % 2
        text = _new_text(rng, label == POSITIVE, seen)
        seen.add(text)
        reviews.append((text, label))
    rng.shuffle(reviews)
    return reviews


def _new_text(rng: random.Random, positive: bool, seen: set[str]) -> str:
    """A review not generated before and within the length limit."""
    for _ in range(_ATTEMPTS_PER_REVIEW):
        text = make_review(rng, positive)
        if text not in seen and len(text.split()) <= MAX_WORDS:
            return text
    raise ValueError("could not generate enough distinct reviews; ask for fewer")


# --- Files ------------------------------------------------------------------------------------


def split_reviews(
    reviews: Sequence[tuple[str, int]], sizes: dict[str, int], seed: int
) -> dict[str, list[tuple[str, int]]]:
    """Cut distinct reviews into splits with the same class balance, each shuffled."""
    rng = random.Random(seed)
    by_label = {label: [r for r in reviews if r[1] == label] for label in (NEGATIVE, POSITIVE)}
    splits: dict[str, list[tuple[str, int]]] = {}
    start = 0
    for name, size in sizes.items():
        half = size // 2
        rows = [r for label in by_label for r in by_label[label][start : start + half]]
        rng.shuffle(rows)
        splits[name] = rows
        start += half
    return splits


def write_jsonl_atomic(path: Path, rows: Sequence[tuple[str, int]]) -> None:
    """Write rows as JSON lines via a temporary file, so readers never see half a file."""
    lines = [json.dumps({"text": text, "label": LABEL_NAMES[label]}) + "\n" for text, label in rows]
    write_text(path, "".join(lines), mode=0o644)  # shipped data: world-readable whatever the umask


def write_builtin_corpus(directory: Path, seed: int = 13) -> dict[str, int]:
    """Write train/validation/test JSONL files (4000/500/500 rows) and return the row counts.

    Texts are distinct across all splits, so test accuracy is never a lookup of training rows.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    reviews = generate_reviews(sum(SPLIT_SIZES.values()), seed)
    splits = split_reviews(reviews, SPLIT_SIZES, seed)
    for name, rows in splits.items():
        write_jsonl_atomic(directory / f"{name}.jsonl", rows)
    return {name: len(rows) for name, rows in splits.items()}
