"""The engines that decode a batch for the scheduler: CTranslate2 (the default, where the model converts) and
transformers' `generate` (any causal LM).

Measured on this machine (benchmarks/README.md, "Generation engines"): CTranslate2 in float32 decodes a padded batch
faster than transformers and without torch in the serving process, and its greedy answers match transformers'. Its
int8 mode is faster again but changes a 135M model's answers, so it is never chosen here.

Both take token ids, left-padded by the backend itself, and call `on_token(row, id)` for each new token; a True answer
stops that row (CTranslate2: the callback's return value; transformers: a stopping criterion per row).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from shared.engine.local.serving.batching import left_pad

logger = logging.getLogger("shared.engine.local.serving.deployment_server")

TRANSFORMERS, CTRANSLATE2, AUTO = "transformers", "ctranslate2", "auto"
DEFAULT_TOP_K = 50  # transformers' default when sampling; CTranslate2 is told the same


class TransformersBackend:
    name = TRANSFORMERS

    def __init__(self, model_dir: Path, *, threads: int, pad_id: int | None) -> None:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        torch.set_num_threads(threads)
        self._torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        self.model.eval()
        self._pad_id = pad_id if pad_id is not None else 0  # any id pads a row when the model has none: it is masked
        self.parameters = self.model.num_parameters()

    def generate(self, prompts: list[list[int]], options: dict[str, Any], on_token: Callable[[int, int], bool]) -> None:
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        torch = self._torch
        done = [False] * len(prompts)

        class Rows(BaseStreamer):
            """Each step's new token per row (the first `put` is the prompt); rows already done get padding."""

            def __init__(self) -> None:
                self.prompt_seen = False

            def put(self, value: Any) -> None:
                if not self.prompt_seen:
                    self.prompt_seen = True
                    return
                for row, token in enumerate(value.reshape(-1).tolist()):
                    if not done[row] and on_token(row, int(token)):
                        done[row] = True

            def end(self) -> None:
                pass

        class Done(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

        if "seed" in options:
            torch.manual_seed(options.pop("seed"))
        batch = left_pad(prompts, self._pad_id)
        with torch.inference_mode():
            # the ignore: transformers types generate's self as a Protocol that mypy finds PreTrainedModel misses
            self.model.generate(  # type: ignore[misc]
                input_ids=torch.tensor(batch.input_ids, dtype=torch.long),
                attention_mask=torch.tensor(batch.attention_mask, dtype=torch.long),
                pad_token_id=self._pad_id,
                streamer=Rows(),
                stopping_criteria=StoppingCriteriaList([Done()]),
                **options,
            )


class Ctranslate2Backend:
    name = CTRANSLATE2

    def __init__(
        self, converted_dir: Path, *, threads: int, tokens: Callable[[list[int]], list[str]], end_ids: Collection[int]
    ) -> None:
        import ctranslate2

        self._ctranslate2 = ctranslate2
        self.generator = ctranslate2.Generator(
            str(converted_dir), device="cpu", compute_type="float32", intra_threads=threads, inter_threads=1
        )
        self._tokens = tokens
        self._end_ids = sorted(end_ids)
        self.parameters = None

    def generate(self, prompts: list[list[int]], options: dict[str, Any], on_token: Callable[[int, int], bool]) -> None:
        done = [False] * len(prompts)

        def step(result: Any) -> bool:
            row = result.batch_id
            if done[row]:
                return True
            done[row] = bool(on_token(row, int(result.token_id)))
            return done[row]

        arguments: dict[str, Any] = {
            "max_length": options["max_new_tokens"],
            "min_length": options.get("min_new_tokens", 0),
            "repetition_penalty": options.get("repetition_penalty", 1.0),
            "include_prompt_in_result": False,  # the prompt fills the cache at once: much faster for long prompts
            "return_end_token": True,
            "end_token": self._end_ids or None,
        }
        if options.get("do_sample"):
            if "seed" in options:
                self._ctranslate2.set_random_seed(options["seed"])
            arguments.update(
                sampling_topk=options.get("top_k", DEFAULT_TOP_K),
                sampling_topp=options.get("top_p", 1.0),
                sampling_temperature=options.get("temperature", 1.0),
            )
        else:
            arguments["sampling_topk"] = 1
        self.generator.generate_batch([self._tokens(prompt) for prompt in prompts], callback=step, **arguments)
