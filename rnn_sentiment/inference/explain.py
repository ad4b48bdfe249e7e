"""Why a model labelled a review so: running sentiment and per-word attributions.

* Running sentiment: the model's prediction after reading each prefix of the review, so one can
  watch "not" turn "good" negative. A many-to-one recurrent model reads left to right, so the
  prefix prediction is exactly what it would say if the review stopped there.
* Attribution by occlusion (leave one word out): how much the probability of the final label
  drops when the word is removed and the rest is read again. It needs no gradients or linearity,
  so it is correct for recurrent models, where a word's effect depends on what came before it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rnn_sentiment.checkpoint import LoadedRun
from rnn_sentiment.data.batching import predict_proba_ids
from rnn_sentiment.inference.results import METHOD, Explanation, explain_with
from rnn_sentiment.metrics import with_temperature

__all__ = ["METHOD", "Explanation", "explain"]


def explain(run: LoadedRun, text: str, max_words: int | None = None) -> Explanation:
    """Running sentiment and occlusion attribution for each word of ``text`` (see
    :func:`~rnn_sentiment.inference.results.explain_with`).

    Raises:
        DataError: the text has no tokens, or more than ``max_words`` words.
    """
    device = next(run.model.parameters()).device

    def score_ids(ids: Sequence[Sequence[int]]) -> np.ndarray:
        return with_temperature(predict_proba_ids(run.model, ids, device=device), run.temperature)

    return explain_with(run.pipeline, run.label_names, score_ids, text, max_words)
