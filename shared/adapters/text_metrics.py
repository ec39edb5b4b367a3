"""Answers scored against their references with azure-ai-evaluation's offline NLP evaluators: token F1 and ROUGE-L.

Why these: they are the evaluators Azure AI Foundry's evaluations use, so a line's figures read the same here and
there, and the same package carries the AI-assisted judge (shared/adapters/judge.py). Its BLEU, GLEU and METEOR
evaluators are left out: on first use they download NLTK data from GitHub, which a Function App (and this machine)
should not do at run time. The package costs about 6 s to import, so it is imported on first use, never at start-up.
"""

from __future__ import annotations

import threading
from typing import Any

METRICS = ("f1", "rouge_l")

_lock = threading.Lock()
_evaluators: dict[str, Any] = {}


def _loaded() -> dict[str, Any]:
    with _lock:
        if not _evaluators:
            from azure.ai.evaluation import F1ScoreEvaluator, RougeScoreEvaluator, RougeType

            _evaluators["f1"] = F1ScoreEvaluator()
            _evaluators["rouge_l"] = RougeScoreEvaluator(rouge_type=RougeType.ROUGE_L)
        return _evaluators


def text_scores(answer: str, reference: str) -> dict[str, float]:
    """{"f1": token F1, "rouge_l": ROUGE-L F-measure}, each in 0..1; an empty answer scores 0."""
    if not answer.strip():
        return dict.fromkeys(METRICS, 0.0)
    evaluators = _loaded()
    f1 = evaluators["f1"](response=answer, ground_truth=reference)
    rouge = evaluators["rouge_l"](response=answer, ground_truth=reference)
    return {
        "f1": round(float(f1["f1_score"]), 4),
        "rouge_l": round(float(rouge["rouge_properties"]["rouge_f1_score"]), 4),
    }
