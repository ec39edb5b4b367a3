"""The model side of a job: the base model and tokenizer loaded (or a stable failure), the SFTTrainer built over
the job's conversations, and the trained model saved as model/ (merged, a plain Hugging Face folder).

torch, transformers, trl, peft and datasets are imported inside the functions.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.domain.finetune import FineTuneParameters
from shared.engine.local.jobfiles import JobFiles, TrainingJob
from shared.engine.local.training.configs import lora_config, sft_config
from shared.engine.local.training.data import NO_ASSISTANT_TOKENS, has_generation_markers
from shared.engine.local.training.errors import JobFailure

Log = Callable[[str], None]


def resolve_base_model_folder(job: TrainingJob) -> str:
    from shared.engine.local.base_models import BaseModelUnavailable, resolve_base_model

    try:
        return resolve_base_model(job.base_model, Path(job.state_dir) / "models")
    except BaseModelUnavailable as exc:
        raise JobFailure(BaseModelUnavailable.code, str(exc)) from exc


def load_tokenizer(folder: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise JobFailure("base_model_unavailable", f"cannot load the tokenizer from {folder}: {exc}") from exc
    if not has_generation_markers(tokenizer.chat_template):
        raise JobFailure(
            "no_generation_markers",
            "the base model's chat template has no {% generation %} markers, which assistant-only loss needs",
        )
    return tokenizer


def load_model(folder: str, dtype):
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise JobFailure("base_model_unavailable", f"cannot load the base model from {folder}: {exc}") from exc


def build_trainer(
    params: FineTuneParameters,
    model,
    tokenizer,
    train_rows: list[dict[str, Any]],
    test_rows: list[dict[str, Any]],
    *,
    device: str,
    bf16_supported: bool,
    deepspeed: dict[str, Any] | None,
    output_dir: Path,
    callback,
    log: Log,
    note: Log,
):
    """The SFTTrainer for the job, or JobFailure no_assistant_tokens. Evaluation is off without test rows (or
    when no test row keeps assistant tokens within max_seq_length); what was left out is noted."""
    from datasets import Dataset
    from trl import SFTTrainer

    peft_config = lora_config(params) if params.apply_lora else None
    evaluate = bool(test_rows)
    if not evaluate:
        note("no test rows: evaluation skipped")
    args = sft_config(
        params,
        output_dir=output_dir,
        device=device,
        evaluate=evaluate,
        deepspeed=deepspeed,
        bf16_supported=bf16_supported,
    )
    try:
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(train_rows),
            eval_dataset=Dataset.from_list(test_rows) if evaluate else None,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[callback],
        )
    except RuntimeError as exc:
        if "no assistant tokens" in str(exc):
            raise JobFailure("no_assistant_tokens", NO_ASSISTANT_TOKENS) from exc
        raise
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout; the callback logs them
    # Given datasets.Dataset objects (untyped here), SFTTrainer keeps them, prepared, as datasets.Dataset objects;
    # it declares the attributes with torch's datasets too.
    train_dataset: Dataset = trainer.train_dataset
    eval_dataset: Dataset | None = trainer.eval_dataset  # None: not evaluating
    kept = len(train_dataset)
    if kept == 0 or not any(label != -100 for row in train_dataset["labels"] for label in row):
        raise JobFailure("no_assistant_tokens", NO_ASSISTANT_TOKENS)
    if kept < len(train_rows):
        note(
            f"{len(train_rows) - kept} of {len(train_rows)} training rows have no assistant tokens within "
            f"max_seq_length={params.max_seq_length} and were left out"
        )
    if eval_dataset is not None and len(eval_dataset) == 0:
        from transformers.trainer_utils import IntervalStrategy

        note(f"no test row has assistant tokens within max_seq_length={params.max_seq_length}: evaluation skipped")
        trainer.eval_dataset = None
        trainer.args.eval_strategy = IntervalStrategy.NO
    trainable, total = parameter_counts(trainer.model)
    log(
        f"{'LoRA' if params.apply_lora else 'full fine-tuning'}: {trainable:,} of {total:,} parameters "
        f"trainable; {kept} training rows, max_length {params.max_seq_length}"
    )
    return trainer


def save_model(
    trainer, tokenizer, *, folder: str, dtype, params: FineTuneParameters, files: JobFiles, main: bool, log: Log
):
    """model/: the merged model and tokenizer (written to a staging folder, then renamed). Returns the model
    (None on ranks other than 0, which only take part in gathering the weights)."""
    from transformers import AutoModelForCausalLM

    staging = files.root / ".model-partial"
    shutil.rmtree(staging, ignore_errors=True)
    merged = None
    if params.apply_lora:
        adapter = files.root / "adapter"
        trainer.save_model(str(adapter))  # every rank: gathers ZeRO-3 shards where there are any
        if main:
            from peft import PeftModel

            base = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
            merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
            merged.save_pretrained(staging)
            (adapter / "training_args.bin").unlink(missing_ok=True)
    else:
        trainer.save_model(str(staging))
        if main:
            merged = AutoModelForCausalLM.from_pretrained(staging, dtype=dtype)
    if not main:
        return None
    (staging / "training_args.bin").unlink(missing_ok=True)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(files.model_dir, ignore_errors=True)
    os.replace(staging, files.model_dir)
    log(f"saved the {'merged ' if params.apply_lora else ''}model to {files.model_dir}")
    return merged


def describe_device(torch, device: str) -> str:
    if device == "cuda":
        count = torch.cuda.device_count()
        return f"cuda: {torch.cuda.get_device_name(0)}" + (f" x{count}" if count > 1 else "")
    return f"cpu ({torch.get_num_threads()} threads)"


def parameter_counts(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
