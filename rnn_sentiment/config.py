"""The typed configuration tree: YAML file, then ``key.sub=value`` overrides, validated once.

Every section forbids unknown keys, so a misspelled key is an error with a suggestion instead of a
silently ignored setting.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from rnn_sentiment.errors import ConfigError, cut, did_you_mean

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11

MAX_SEED = 2**32 - 1  # the largest training.seed
# More threads than any machine has cores only costs: 100,000 crashed PyTorch's thread pool (a
# segfault, no message) and exhausted the machine's processes on onnxruntime.
MAX_THREADS = 256
# Ray workers of one scoring run; each holds the model and reads its share of the input.
MAX_WORKERS = 4096


def check_threads(threads: int | None) -> None:
    """Refuse (ConfigError) a thread count outside 1 to :data:`MAX_THREADS`; None is the
    library's default."""
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise ConfigError([f"threads must be 1 to {MAX_THREADS}, not {threads}"])


def is_whole(value: object, least: int, most: int | None = None) -> bool:
    """Whether ``value`` is an int (not a bool) from ``least`` to ``most``: the check of every
    count a library caller passes (chunk_size, max_words, workers, examples, batch_size)."""
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    return value >= least and (most is None or value <= most)


def check_engine(
    batch_size: object = None,
    quantize: object = None,
    dtype: object = "fp32",
    threads: object = None,
) -> None:
    """How a library caller asks a model to score: refused (ConfigError) rather than ignored or
    misread (batch_size=-1 gave an exported model's zero-filled scores as 0.5; quantize="int4"
    scored in fp32)."""
    problems = []
    for name, value in (("batch_size", batch_size), ("threads", threads)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            problems.append(f"{name} must be a whole number, not {value!r}")
    if isinstance(batch_size, int) and batch_size < 1:
        problems.append(f"batch_size must be 1 or more, not {batch_size}")
    if quantize not in (None, "int8"):
        problems.append(f"quantize must be 'int8' or None, not {quantize!r}")
    if dtype not in ("fp32", "bf16"):
        problems.append(f"dtype must be 'fp32' or 'bf16', not {dtype!r}")
    if problems:
        raise ConfigError(problems)
    check_threads(threads)  # type: ignore[arg-type]  # an int or None, checked above


class CheckedModel(BaseModel):
    """A settings model whose assignments raise ConfigError, one line per problem as
    ``load_config`` reports them, not pydantic's ValidationError
    (``config.model.hidden_size = -1``); :meth:`checked` builds one the same way."""

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise ConfigError(validation_problems(exc, type(self))) from None

    @classmethod
    def checked(cls, values: Mapping[str, Any] | None = None, /, **fields: Any) -> Self:
        """One built from ``values`` and ``fields`` (which win), raising ConfigError with
        load_config's one-line problems where the constructor raises pydantic's
        ValidationError (``ScoringOptions.checked(chunk_size=0)``). The constructor itself is
        left alone: pydantic reads files through it too, and words their errors without
        quoting them (``parse_config``)."""
        if values is not None and not isinstance(values, Mapping):
            raise ConfigError([f"values must be a dict of settings, not {type(values).__name__}"])
        try:
            return cls.model_validate({**(values or {}), **fields})
        except ValidationError as exc:
            raise ConfigError(validation_problems(exc, cls)) from None


def validation_problems(exc: ValidationError, root: type[BaseModel] | None = None) -> list[str]:
    """pydantic's errors as the one-line problems a ConfigError lists; ``root`` is the model
    the errors' locations start from (default: :class:`Config`)."""
    return [line for err in exc.errors() for line in _describe(err, root).split("\n")]


class _Section(CheckedModel):
    # allow_inf_nan: training.lr=.inf was accepted and ended in a NaN loss at step 2
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, defer_build=True, allow_inf_nan=False
    )


def _a_path(value: str | None) -> str | None:
    """A path setting: not empty (pathlib reads "" as the current folder) and without NUL,
    which the OS cannot take (a run failed halfway with ValueError)."""
    if value is not None and (not value.strip() or "\0" in value):
        raise ValueError("must be a path: not empty, and without NUL characters")
    return value


class LongRangeConfig(_Section):
    """The generated long-range task (``data.source: long-range``), see ``longrange.py``."""

    distances: list[int] = Field(
        [0, 10, 20, 40, 80, 120, 160, 200],
        min_length=1,
        description="Tokens of filler after the verdict sentence; reviews cycle through these.",
    )
    train_size: int = Field(6000, ge=2, description="Generated training reviews.")
    validation_size: int = Field(600, ge=2, description="Generated validation reviews.")
    test_size: int = Field(1600, ge=2, description="Generated test reviews.")
    seed: int = Field(7, description="Seed of the generator (independent of training.seed).")

    @model_validator(mode="after")
    def _check_distances(self) -> LongRangeConfig:
        if any(d < 0 or d > 100_000 for d in self.distances):
            raise ValueError("data.long_range.distances must lie between 0 and 100000")
        return self


class DataConfig(_Section):
    """Where reviews come from and how to read them."""

    source: str = Field(
        "builtin",
        description="'builtin', a local file or folder, or a Hugging Face hub dataset id.",
    )
    train_split: str = Field("train", description="Split (or file stem) used for training.")
    validation_split: str | None = Field(
        None, description="Validation split; when absent it is carved from train."
    )
    test_split: str | None = Field(None, description="Split evaluated after training, if any.")
    text_column: str | None = Field(
        None,
        description="Column with the review text; None: text, review, sentence, content, body.",
    )
    label_column: str = Field("label", description="Column with the label.")
    validation_fraction: float = Field(
        0.1, gt=0.0, lt=1.0, description="Share of train held out for validation."
    )
    extra_train_sources: list[str] = Field(
        default_factory=list,
        description="More sources whose train_split is added to the training reviews "
        "(their text column is found automatically); a carved validation split is drawn "
        "from all of them.",
    )
    unlabelled_split: str | None = Field(
        None,
        description="A split of data.source whose texts (labels ignored) join the unlabelled "
        "texts that pretraining learns from, e.g. 'unsupervised' for IMDB's 50,000 unlabelled "
        "reviews ('unsup' in a local folder is found too).",
    )
    max_train_samples: int | None = Field(
        None, gt=0, description="Use at most this many training rows (quick experiments)."
    )
    clean_html: bool = Field(True, description="Replace HTML line breaks such as '<br />'.")
    cache_dir: str | None = Field(
        "~/.cache/rnn-sentiment",
        description="Where token ids are cached, so a second run on the same data and "
        "tokenizer does not tokenize again; null disables the cache.",
    )
    long_range: LongRangeConfig = Field(
        default_factory=LongRangeConfig,  # type: ignore[arg-type]
        description="Sizes and distances of the generated task when source is 'long-range'.",
    )

    @field_validator("source", "cache_dir")
    @classmethod
    def _paths(cls, value: str | None) -> str | None:
        return _a_path(value)

    @field_validator("extra_train_sources")
    @classmethod
    def _sources(cls, values: list[str]) -> list[str]:
        for value in values:
            _a_path(value)
        return values


class TokenizerConfig(_Section):
    """The tokenizer trained on the training split and saved with the model."""

    kind: Literal["word", "bpe"] = Field("word", description="Word-level or BPE subwords.")
    vocab_size: int = Field(
        30000, ge=10, le=10_000_000, description="Largest vocabulary, specials included."
    )
    min_frequency: int = Field(
        2, ge=1, le=2**31 - 1, description="Drop tokens seen fewer times in training."
    )
    lowercase: bool = Field(True, description="Lower-case text before tokenizing.")
    max_length: int = Field(
        400, ge=1, le=1_000_000, description="Truncate reviews to this many tokens."
    )
    truncation_side: Literal["right", "left"] = Field(
        "right", description="'right' keeps the beginning of a long review, 'left' its end."
    )
    learn_from_unlabelled: bool = Field(
        False,
        description="Learn the vocabulary from the unlabelled texts too (see "
        "data.unlabelled_split): with pretraining, words seen only there still get vectors.",
    )


class ModelConfig(_Section):
    """The recurrent classifier."""

    cell: Literal["rnn", "lstm", "gru"] = Field("lstm", description="Recurrent cell type.")
    nonlinearity: Literal["tanh", "relu"] = Field(
        "tanh", description="Non-linearity of the vanilla RNN cell (ignored by lstm/gru)."
    )
    embedding_dim: int = Field(64, ge=1, le=65_536, description="Size of the word embeddings.")
    hidden_size: int = Field(
        128, ge=1, le=65_536, description="Hidden units per direction and layer."
    )
    num_layers: int = Field(1, ge=1, le=8, description="Stacked recurrent layers.")
    bidirectional: bool = Field(False, description="Also read each review right to left.")
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="Dropout before the classifier.")
    embedding_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the embeddings.")
    pooling: Literal["last", "mean", "max", "maxmean"] = Field(
        "max",
        description="How the hidden states over time become one vector; maxmean "
        "concatenates the max and the mean.",
    )


class LanguageModelConfig(_Section):
    """Language-model pretraining of the embeddings and recurrent layers (``rnn-sentiment
    pretrain``): left to right, and right to left for a bidirectional model, each layer
    direction predicting the next (previous) token of the training and unlabelled texts."""

    epochs: int = Field(1, ge=1, le=1000, description="Passes over the texts.")
    seq_length: int = Field(
        256, ge=2, le=100_000, description="Tokens per training piece; longer reviews are cut "
        "into pieces, each read from a zero state as the classifier reads a review."
    )  # fmt: skip
    batch_size: int = Field(64, ge=1, le=1_000_000, description="Pieces per batch.")
    lr: float = Field(2e-3, gt=0.0, description="Peak learning rate (cosine decay, warm-up).")
    warmup_steps: int = Field(200, ge=0, description="Linear warm-up steps.")
    softmax: Literal["sampled", "adaptive", "full"] = Field(
        "sampled",
        description="Output layer: 'sampled' scores the true word against shared negative "
        "samples (cheapest on a CPU), 'adaptive' is PyTorch's adaptive softmax (exact, frequent "
        "words in a small head), 'full' scores every word.",
    )
    samples: int = Field(
        1024, ge=1, le=1_000_000, description="Negative samples per batch for 'sampled'."
    )
    validation_fraction: float = Field(
        0.01, gt=0.0, lt=0.5, description="Pretraining texts held out to measure perplexity."
    )
    validation_tokens: int = Field(
        100_000, ge=100, description="At most this many held-out tokens scored per epoch."
    )
    max_minutes: float | None = Field(
        None, gt=0.0, description="Wall-clock budget: stop after the checkpoint that passes it."
    )
    checkpoint_every: int = Field(
        200, ge=1, description="Steps between resumable checkpoints (a kill loses at most this)."
    )


class PretrainingConfig(_Section):
    """Word vectors learned from review texts, labelled or not, before supervised training;
    or a pretrained encoder (``rnn-sentiment pretrain``) to start from."""

    method: Literal["none", "word2vec"] = Field(
        "none",
        description="'word2vec' learns the embedding layer's starting vectors from the training "
        "texts plus data.unlabelled_split (gensim); 'none' starts from random vectors.",
    )
    epochs: int = Field(5, ge=1, le=1000, description="Passes over the texts.")
    window: int = Field(5, ge=1, le=100, description="Context words on each side.")
    negative: int = Field(5, ge=1, le=100, description="Negative samples per context word.")
    skipgram: bool = Field(
        True, description="Skip-gram (better vectors for rare words); false is CBOW (faster)."
    )
    sample: float = Field(
        1e-4, ge=0.0, lt=1.0, description="Down-sampling threshold for frequent words."
    )
    threads: int = Field(
        1,
        ge=1,
        le=MAX_THREADS,
        description="Worker threads; 1 gives the same vectors on every run, more are faster "
        "but vary slightly from run to run.",
    )
    lm: LanguageModelConfig = Field(
        default_factory=LanguageModelConfig,  # type: ignore[arg-type]
        description="How `rnn-sentiment pretrain` trains the encoder's language model.",
    )
    from_: str | None = Field(
        None,
        alias="from",
        description="An encoder directory written by `rnn-sentiment pretrain`: training starts "
        "from its recurrent layers and, for every word it knows, its vectors (new words start "
        "random); `method` and `lm` are not run again. `rnn-sentiment pretrain` continues "
        "its language model on this config's texts instead (every shape key must equal its own).",
    )
    vocabulary: Literal["encoder", "own"] = Field(
        "encoder",
        description="With `from`: 'encoder' keeps every word the encoder knows (its ids and "
        "vectors) and adds this run's new words; 'own' keeps this run's vocabulary alone "
        "(tokenizer.vocab_size), each of its words the encoder knows taking its vector: a "
        "smaller model, blind to the encoder's words the training data never shows. Ignored "
        "without `from`.",
    )

    @field_validator("from_")
    @classmethod
    def _named(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or "\0" in value):
            raise ValueError("must name an encoder directory, or 'bundled'; null starts from none")
        return value


class AdversarialConfig(_Section):
    """Losses that smooth the classifier around each review (Miyato et al. 2017; Sachan et al.
    2019): adversarial and virtual adversarial perturbations of the word embeddings, and entropy
    minimisation. All off (0) by default; each costs extra forward and backward passes."""

    epsilon: float = Field(
        0.0,
        ge=0.0,
        description="Adversarial training: add the loss of each labelled review with its "
        "embeddings moved this far (L2 norm per review, in units of the embedding table's "
        "root-mean-square value) in the direction that raises its loss most; 0 is off.",
    )
    vat_epsilon: float = Field(
        0.0,
        ge=0.0,
        description="Virtual adversarial training: add the KL divergence between the "
        "predictions for each review (labelled and unlabelled) and for its embeddings moved "
        "this far (same units) in the direction that changes them most; 0 is off.",
    )
    radius_per: Literal["review", "token"] = Field(
        "review",
        description="What epsilon and vat_epsilon measure: 'review', each review's whole move "
        "(L2 over all its tokens, as Miyato et al.), so a short review's few words move much "
        "further than a long review's many; 'token', the root-mean-square move per token, so "
        "a review's radius grows with the square root of its length and every word moves "
        "alike, short reviews or long.",
    )
    max_per_token: float | None = Field(
        None,
        gt=0.0,
        description="With radius_per 'review': no review's words move further than this "
        "root mean square per token (its radius at most this times the square root of its "
        "length), so a short review is not moved as far as a long one's many words; null, "
        "no cap.",
    )
    vat_xi: float = Field(
        1e-3, gt=0.0, description="Finite-difference step of VAT's power iteration (same units)."
    )
    entropy_weight: float = Field(
        0.0,
        ge=0.0,
        description="Entropy minimisation: add this times the mean entropy of the predicted "
        "label distribution (labelled and unlabelled reviews); 0 is off.",
    )
    unlabelled_batch_size: int | None = Field(
        None,
        ge=1,
        description="Unlabelled reviews (data.unlabelled_split) per step for virtual "
        "adversarial training and entropy minimisation; None uses training.batch_size.",
    )

    @model_validator(mode="after")
    def _cap_per_review(self) -> AdversarialConfig:
        if self.max_per_token is not None and self.radius_per == "token":
            raise ValueError(
                "max_per_token caps a per-review radius; with radius_per 'token' epsilon "
                "already is the move per token: drop one of them"
            )
        return self

    @property
    def uses_unlabelled(self) -> bool:
        return self.vat_epsilon > 0 or self.entropy_weight > 0

    @property
    def active(self) -> bool:
        return self.epsilon > 0 or self.uses_unlabelled


class TrainingConfig(_Section):
    """Optimisation, stopping and hardware."""

    epochs: int = Field(8, ge=1, le=100_000, description="Maximum number of epochs.")
    batch_size: int = Field(32, ge=1, le=1_000_000, description="Reviews per batch.")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="Optimiser.")
    lr: float = Field(3e-3, gt=0.0, description="Peak learning rate.")
    weight_decay: float = Field(0.01, ge=0.0, description="Decoupled weight decay.")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum.")
    schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="Learning-rate schedule after warm-up."
    )
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps.")
    grad_clip: float | None = Field(
        1.0, gt=0.0, description="Clip the gradient norm to this value; null disables."
    )
    patience: int = Field(3, ge=1, description="Epochs without improvement before stopping.")
    metric: Literal["accuracy", "macro_f1", "loss"] = Field(
        "accuracy", description="Validation metric for early stopping and the best checkpoint."
    )
    seed: int = Field(
        42,
        ge=0,
        le=MAX_SEED,  # NumPy's range; torch.manual_seed overflows past 2**64 - 1
        description="Seed for data order, initialisation and dropout (0 to 4294967295).",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where to train.")
    precision: Literal["fp32", "bf16", "auto"] = Field(
        "fp32",
        description="bf16 runs the matrix multiplies in bfloat16 under autocast, weights and "
        "optimiser state staying fp32: faster on CPUs with AVX-512 BF16 or AMX and on GPUs, "
        "several times slower where it is emulated. auto: bf16 where it is native, else fp32.",
    )
    num_threads: int | None = Field(
        None,
        ge=1,
        le=MAX_THREADS,
        description="CPU threads for PyTorch; None uses every core this process may run on.",
    )
    max_minutes: float | None = Field(
        None,
        gt=0.0,
        description="Wall-clock budget for pretraining and the training epochs together: "
        "pretraining stops after the word2vec epoch that passes it, training after the epoch "
        "that passes it (at least one runs). Reading the data, learning the tokenizer and the "
        "final test pass come on top, each with its own progress line.",
    )
    keep_freed_memory: bool | None = Field(
        None,
        description="Reuse freed memory between training steps instead of faulting it back in "
        "(glibc, CPU): LSTM training 1.4-1.6x faster, GRU/RNN 1.0-1.2x, about 3x the "
        "memory in one measured run. None: on for LSTMs with 16 GiB of memory or more.",
    )
    layer_lr_decay: float = Field(
        1.0,
        ge=1.0,
        le=100.0,
        description="Discriminative learning rates: the classifier trains at lr, each layer "
        "below it at the rate of the one above divided by this (the embeddings lowest).",
    )
    unfreeze_steps: int = Field(
        0,
        ge=0,
        description="Gradual unfreezing: only the classifier trains at first, and every this "
        "many steps the next layer down joins (the embeddings last); 0 trains all from step 1.",
    )
    adversarial: AdversarialConfig = Field(
        default_factory=AdversarialConfig,  # type: ignore[arg-type]
        description="Adversarial, virtual adversarial and entropy-minimisation losses.",
    )
    log_every: int = Field(50, ge=1, description="Steps between plain-text log lines.")
    checkpoint_every: int = Field(
        200, ge=1, description="Steps between resumable training-state checkpoints."
    )


class DiagnosticsConfig(_Section):
    """Optional measurements of how the gradient flows through time; off costs nothing."""

    gradient_flow: bool = Field(
        False,
        description="Measure ||d loss / d h_t|| by distance from the end, at init and trained.",
    )
    reviews: int = Field(
        32, ge=1, le=100_000, description="The longest validation reviews used for gradient flow."
    )
    explode_ratio: float = Field(
        20.0,
        gt=1.0,
        description="Warn when an epoch's largest gradient norm is this many times its median "
        "(and over 10x training.grad_clip).",
    )


class OutputConfig(_Section):
    """Where the run directory goes."""

    dir: str = Field("runs", description="Parent folder of run directories.")
    name: str | None = Field(
        None,
        description="Run directory name, a plain folder name inside output.dir; default is "
        "'<cell>-<date>-<time>'.",
    )

    @field_validator("dir")
    @classmethod
    def _path(cls, value: str) -> str:
        return _a_path(value) or value

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str | None) -> str | None:
        # A separator or '..' would put the run, and everything it writes, outside output.dir.
        if name is None:
            return name
        if name.strip() in ("", ".", "..") or any(c in name for c in "/\\\0"):
            raise ValueError(
                "must be a plain folder name inside output.dir (no '/', '\\', '..' or empty name)"
            )
        return name


class Config(_Section):
    """A whole run: one section per concern."""

    data: DataConfig = Field(default_factory=DataConfig)  # type: ignore[arg-type]
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)  # type: ignore[arg-type]
    model: ModelConfig = Field(default_factory=ModelConfig)  # type: ignore[arg-type]
    pretraining: PretrainingConfig = Field(default_factory=PretrainingConfig)  # type: ignore[arg-type]
    training: TrainingConfig = Field(default_factory=TrainingConfig)  # type: ignore[arg-type]
    diagnostics: DiagnosticsConfig = Field(default_factory=DiagnosticsConfig)  # type: ignore[arg-type]
    output: OutputConfig = Field(default_factory=OutputConfig)  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _check_cross_fields(self) -> Config:
        problems = []
        splits = {
            "data.validation_split": self.data.validation_split,
            "data.test_split": self.data.test_split,
            "data.unlabelled_split": self.data.unlabelled_split,
        }
        for key, split in splits.items():
            if split is not None and split == self.data.train_split:
                problems.append(f"{key} must differ from data.train_split ('{split}')")
        unlabelled = self.data.unlabelled_split
        if unlabelled is not None and unlabelled in (self.data.validation_split,
                                                     self.data.test_split):  # fmt: skip
            problems.append(
                f"data.unlabelled_split ('{unlabelled}') must not be a split the model is "
                "scored on: pretraining would read the reviews it is later tested on"
            )
        if problems:
            raise ValueError("\n".join(problems))
        return self


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config, apply ``key.sub=value`` overrides and validate everything once.

    Args:
        path: YAML file; None starts from the defaults.
        overrides: strings like ``model.cell=gru``; values are parsed as YAML scalars.

    Raises:
        ConfigError: listing every problem found, each naming its key.
    """
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise ConfigError([f"path must be a YAML file's path (str or Path), not {path!r}"])
    if overrides is not None and (
        isinstance(overrides, (str, bytes))
        or not isinstance(overrides, (list, tuple))
        or not all(isinstance(item, str) for item in overrides)
    ):
        raise ConfigError(
            [f"overrides must be a list of 'key.sub=value' strings, not {overrides!r}"]
        )
    tree = _read_yaml(Path(path)) if path is not None else {}
    problems: list[str] = []
    for item in overrides or []:
        try:
            _apply_override(tree, item)
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError(problems)
    return config_from_dict(tree)


def config_from_dict(tree: dict[str, Any]) -> Config:
    """Validate a plain nested dict into a :class:`Config`, reporting every problem at once."""
    return Config.checked(tree)


def checked_config(config: object) -> Config | None:
    """A config handed to ``train`` or ``pretrain``, validated again as a whole: a field set
    after it was built (``config.data.test_split = "train"``) skipped the checks across
    sections, and the run it trained wrote a config.yaml it could not load back."""
    if config is None:
        return None
    if not isinstance(config, Config):
        raise ConfigError(
            [f"config must be a Config (load_config(path)), not {type(config).__name__}"]
        )
    return config_from_dict(config_to_dict(config))


def config_to_dict(config: Config) -> dict[str, Any]:
    """The resolved config as plain YAML-able data."""
    return config.model_dump(mode="json", by_alias=True)


def dump_config(config: Config) -> str:
    """The resolved config as YAML text, sections in declaration order."""
    import yaml  # here: a model's predict reads no YAML and starts without it

    return yaml.safe_dump(config_to_dict(config), sort_keys=False)


def config_keys() -> list[str]:
    """Every setting as its dotted key (``training.epochs``), in declaration order."""

    def walk(section: type[BaseModel], prefix: str) -> list[str]:
        keys: list[str] = []
        for name, field in section.model_fields.items():
            annotation, name = field.annotation, field.alias or name
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                keys.extend(walk(annotation, f"{prefix}{name}."))
            else:
                keys.append(f"{prefix}{name}")
        return keys

    return walk(Config, "")


MAX_CONFIG_BYTES = 2**20  # the largest shipped config is 3 KB: a cap keeps a stray file out


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    if path.is_dir():
        example = path / "default.yaml"
        raise ConfigError([f"{path} is a folder; give one of its YAML files (e.g. {example})"])
    if path.exists() and not path.is_file():
        raise ConfigError([f"{path} is not a regular file (a FIFO, device or socket); give a "
                           "YAML config file"])  # fmt: skip
    if not path.is_file():
        hint = "" if path.suffix in {".yaml", ".yml"} else " (configs are YAML files)"
        raise ConfigError([f"config file not found: {path}{hint}"])
    with path.open("rb") as handle:
        data = handle.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{path} is over the {MAX_CONFIG_BYTES:,}-byte limit of a config file"])
    try:
        tree = yaml.safe_load(data.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise ConfigError([f"{path} is not valid YAML: {first_line}"]) from None
    except RecursionError:  # the YAML parser recurses once per level: [[[[...]]]]
        raise ConfigError([f"{path} is not valid YAML: nested too deeply"]) from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError([f"{path} must hold a mapping of sections, not {type(tree).__name__}"])
    return tree


def _apply_override(tree: dict[str, Any], item: str) -> None:
    import yaml

    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"override '{item}' must look like key.sub=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    except RecursionError:  # the YAML parser recurses once per level: [[[[...]]]]
        raise ValueError(f"override '{key}': the value is nested too deeply") from None
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ValueError(f"override '{item}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def _describe(err: Any, root: type[BaseModel] | None = None) -> str:
    location = ".".join(str(part) for part in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"unknown key '{location}'{_suggest(err['loc'], root or Config)}"
    message = str(err["msg"]).removeprefix("Value error, ")
    if not location:
        return message
    given = err.get("input")
    if isinstance(given, (str, int, float, bool)) or given is None:
        message += f" (got {cut(repr(given), 80)})"  # a 5,000-character value made such a line
    return f"{location}: {message}"


def _suggest(loc: tuple[Any, ...], root: type[BaseModel]) -> str:
    section = root
    for part in loc[:-1]:
        field = section.model_fields.get(str(part))
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        section = annotation
    names = [field.alias or name for name, field in section.model_fields.items()]
    prefix = "".join(f"{part}." for part in loc[:-1])
    hint = did_you_mean(str(loc[-1]), names, shown=f"'{prefix}{{}}'")
    return f"; {hint.rstrip()}" if hint else f"; valid keys here: {', '.join(names)}"
