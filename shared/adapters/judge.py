"""The optional AI-assisted judge: azure-ai-evaluation's SimilarityEvaluator, CoherenceEvaluator and FluencyEvaluator
asking an Azure OpenAI deployment to score a (query, response, ground truth) from 1 to 5.

azure.ai.evaluation is imported when an AiJudge is made, never when this module is (it takes seconds and pulls in
pandas, nltk and scipy). Each evaluator sends one chat completion (temperature 0, max_tokens 800, a JSON-object
answer of reason, score and status) and reads the score from the answer. A failed evaluator leaves its metric None
and the first failure is kept, short and without the key, in JudgeScores.error; score never raises for a failed call.

Time: the package retries 429s, 5xx answers and timeouts itself (up to 10 times, waiting up to 60 s between tries)
with a 600 s read timeout, and offers no setting for either on these evaluators. Each evaluator call is therefore
run under one deadline, JudgeConfig.timeout_s, that covers its tries and waits; a refused connection or a 4xx answer
fails at once. The three evaluators of an item run at the same time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from shared.domain.redaction import REDACTED, redact_secrets

logger = logging.getLogger(__name__)

JUDGE_METRICS = ("similarity", "coherence", "fluency")
DEFAULT_TIMEOUT_S = 60.0
ERROR_CHARS = 300
_INPUTS = {  # what each evaluator is given
    "similarity": ("query", "response", "ground_truth"),
    "coherence": ("query", "response"),
    "fluency": ("response",),
}
T = TypeVar("T")


@dataclass(frozen=True)
class JudgeConfig:
    endpoint: str  # https://<resource>.openai.azure.com
    deployment: str  # the Azure OpenAI deployment name
    api_version: str  # e.g. "2024-10-21"
    api_key: str | None = field(default=None, repr=False)  # None: Entra ID (DefaultAzureCredential)
    timeout_s: float = DEFAULT_TIMEOUT_S  # one evaluator call, the package's own retries and waits included

    def __post_init__(self) -> None:
        if not (self.endpoint and self.deployment and self.api_version):
            raise ValueError("the judge needs an endpoint, a deployment and an api_version")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, not {self.timeout_s!r}")


@dataclass(frozen=True)
class JudgeScores:
    similarity: float | None  # 1-5 as the evaluators report them; None when that evaluator failed
    coherence: float | None
    fluency: float | None
    error: str | None = None  # the first failure, short, never containing the key


class AiJudge:
    JUDGE_METRICS = JUDGE_METRICS

    def __init__(self, config: JudgeConfig) -> None:
        from azure.ai.evaluation import (
            AzureOpenAIModelConfiguration,
            CoherenceEvaluator,
            FluencyEvaluator,
            SimilarityEvaluator,
        )

        self._config = config
        model_config = AzureOpenAIModelConfiguration(
            azure_endpoint=config.endpoint, azure_deployment=config.deployment, api_version=config.api_version
        )
        credential = None
        if config.api_key is not None:
            model_config["api_key"] = config.api_key
        else:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()  # asks for a token on the first call, not here
        self._evaluators: dict[str, Any] = {
            "similarity": SimilarityEvaluator(model_config, credential=credential),
            "coherence": CoherenceEvaluator(model_config, credential=credential),
            "fluency": FluencyEvaluator(model_config, credential=credential),
        }

    def score(self, *, query: str, response: str, ground_truth: str) -> JudgeScores:
        inputs = {"query": query, "response": response, "ground_truth": ground_truth}
        results = _run(self._score_all(inputs))
        (similarity, _), (coherence, _), (fluency, _) = results
        errors = [error for _, error in results if error]
        if errors:
            scored = len(results) - len(errors)
            logger.warning("the AI judge scored %d of 3 metrics; the first failure: %s", scored, errors[0])
        return JudgeScores(similarity, coherence, fluency, error=errors[0] if errors else None)

    def score_many(self, items: Sequence[tuple[str, str, str]], *, workers: int = 4) -> list[JudgeScores]:
        """Each (query, response, ground_truth) scored, in their order, `workers` items at a time."""
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        if not items:
            return []
        with ThreadPoolExecutor(min(workers, len(items)), thread_name_prefix="ai-judge") as pool:
            return list(pool.map(lambda item: self.score(query=item[0], response=item[1], ground_truth=item[2]), items))

    async def _score_all(self, inputs: dict[str, str]) -> list[tuple[float | None, str | None]]:
        return await asyncio.gather(*(self._score_one(metric, inputs) for metric in JUDGE_METRICS))

    async def _score_one(self, metric: str, inputs: dict[str, str]) -> tuple[float | None, str | None]:
        call = self._evaluators[metric]._to_async()  # the evaluator's own coroutine, so that a deadline can end it
        kwargs = {name: inputs[name] for name in _INPUTS[metric]}
        try:
            result = await asyncio.wait_for(call(**kwargs), timeout=self._config.timeout_s)
        except TimeoutError:
            return None, self._short(metric, f"no answer within {self._config.timeout_s:g} s (retries included)")
        except Exception as exc:  # the package's errors and the OpenAI client's, wrapped
            return None, self._short(metric, _describe(exc))
        value = result.get(metric) if isinstance(result, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool) and 1 <= value <= 5:  # NaN is not
            return float(value), None
        if isinstance(result, dict) and result.get(f"{metric}_status") == "skipped":
            return None, self._short(metric, str(result.get(f"{metric}_reason") or "skipped"))
        return None, self._short(metric, f"the judge's answer held no score from 1 to 5 ({value!r})")

    def _short(self, metric: str, text: str) -> str:
        if self._config.api_key:
            text = text.replace(self._config.api_key, REDACTED)
        text = redact_secrets(" ".join(text.split()))
        text = f"{metric}: {text}"
        return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 3] + "..."


def _describe(exc: BaseException) -> str:
    """What went wrong, from the OpenAI error the package wraps (its own message adds boilerplate)."""
    cause = exc.__cause__
    status = getattr(cause, "status_code", None)
    if isinstance(status, int):  # openai.APIStatusError: Azure's {"error": {"code", "message"}}
        body = getattr(cause, "body", None)
        detail = body if isinstance(body, dict) else {}
        code = str(detail.get("code") or "")
        message = str(detail.get("message") or getattr(cause, "message", "") or cause)
        return f"HTTP {status}{f' {code}' if code and code != str(status) else ''}: {message}"
    if cause is not None:  # openai.APIConnectionError and the like: name the transport's reason too
        reason = f" ({cause.__cause__})" if cause.__cause__ else ""
        return f"{type(cause).__name__}: {cause}{reason}"
    return f"{type(exc).__name__}: {exc}"


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """The coroutine run to its end on a loop of its own (a thread of its own where this one runs a loop already)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(1, thread_name_prefix="ai-judge-loop") as pool:
        return pool.submit(asyncio.run, coroutine).result()
