"""BLEU-4 and ROUGE-1/2/L of generated replies against their labels, computed as LLaMA-Factory's ComputeSimilarity.

For: `similarity_scores(pred, label)` (one pair) and `mean_scores(pairs)` (the `predict_*` numbers of
predict_results.json). As LF (train/sft/metric.py): ROUGE F-scores from `rouge_chinese` over jieba words joined by
spaces (0 when either side has no words), BLEU-4 from nltk's `sentence_bleu` over *characters* with smoothing
method3; each x100 and rounded to 4 places per sample, then averaged.

Not for: generating the replies (predict.py). jieba, nltk and rouge_chinese are imported lazily.
"""

from __future__ import annotations

SCORE_KEYS = ("bleu-4", "rouge-1", "rouge-2", "rouge-l")


def similarity_scores(pred: str, label: str) -> dict[str, float]:
    """{bleu-4, rouge-1, rouge-2, rouge-l} of one prediction against its label, each in 0..100."""
    import jieba
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_chinese import Rouge

    hypothesis, reference = list(jieba.cut(pred)), list(jieba.cut(label))
    if not " ".join(hypothesis).split() or not " ".join(reference).split():
        rouge = {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}
    else:
        result = Rouge().get_scores(" ".join(hypothesis), " ".join(reference))[0]
        rouge = {k: result[k]["f"] for k in ("rouge-1", "rouge-2", "rouge-l")}
    bleu = sentence_bleu([list(label)], list(pred), smoothing_function=SmoothingFunction().method3)
    scores = {"bleu-4": bleu, **rouge}
    return {k: round(scores[k] * 100, 4) for k in SCORE_KEYS}


def mean_scores(pairs: list[tuple[str, str]]) -> dict[str, float]:
    """The mean of each score over (prediction, label) pairs."""
    per_pair = [similarity_scores(pred, label) for pred, label in pairs]
    return {k: sum(s[k] for s in per_pair) / len(per_pair) for k in SCORE_KEYS} if per_pair else {}


def quiet_jieba() -> None:
    """jieba logs its dictionary loading on stderr at first use; athanor's lines are enough."""
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
