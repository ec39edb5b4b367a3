"""chat_completion_pipeline's parameters as the trainer's configuration: functions of values, same meanings.

What the machine has (a CUDA device, bf16 support) comes in as arguments; trl and peft are imported inside the
functions that build their config objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared.domain.finetune import FineTuneParameters

EVAL_STRATEGIES = {"epoch": "epoch", "steps": "steps", "disable": "no"}


def mixed_precision(params: FineTuneParameters, *, device: str, bf16_supported: bool) -> str | None:
    """ "bf16" or "fp16" where precision 16 applies (a CUDA device; fp16 where it has no bf16), else None (fp32)."""
    if params.precision != "16" or device != "cuda":
        return None
    return "bf16" if bf16_supported else "fp16"


def sft_config(
    params: FineTuneParameters,
    *,
    output_dir: Path,
    device: str,
    evaluate: bool = True,
    deepspeed: dict[str, Any] | None = None,
    bf16_supported: bool = False,
):
    """chat_completion_pipeline's parameters as TRL's SFTConfig, with the same meanings."""
    from trl import SFTConfig

    cuda = device == "cuda"
    precision = mixed_precision(params, device=device, bf16_supported=bf16_supported)
    eval_strategy = EVAL_STRATEGIES[params.evaluation_strategy] if evaluate else "no"
    return SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=params.num_train_epochs,
        max_steps=params.max_steps,
        per_device_train_batch_size=params.per_device_train_batch_size,
        per_device_eval_batch_size=params.per_device_eval_batch_size,
        gradient_accumulation_steps=params.gradient_accumulation_steps,
        learning_rate=params.learning_rate,
        lr_scheduler_type=params.lr_scheduler_type,
        warmup_steps=params.warmup_steps,
        weight_decay=params.weight_decay,
        max_length=params.max_seq_length,
        assistant_only_loss=True,
        seed=params.seed,
        data_seed=params.seed,
        eval_strategy=eval_strategy,
        eval_steps=params.logging_steps if eval_strategy == "steps" else None,
        logging_strategy="steps",
        logging_steps=params.logging_steps,
        save_strategy="no",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not cuda,
        activation_checkpointing=False,  # TRL turns it on by default; on a CPU it only costs time
        deepspeed=deepspeed,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=cuda,
    )


def lora_config(params: FineTuneParameters):
    from peft import LoraConfig

    return LoraConfig(
        r=params.lora_r,
        lora_alpha=params.lora_alpha,
        lora_dropout=params.lora_dropout,
        target_modules="all-linear",
        bias="none",
        task_type="CAUSAL_LM",
    )


def deepspeed_config(stage: str) -> dict[str, Any]:
    """A ZeRO config that leaves batch sizes, precision and clipping to the trainer's arguments ("auto")."""
    zero: dict[str, Any] = {"stage": int(stage), "overlap_comm": True, "contiguous_gradients": True}
    if stage == "3":
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "zero_optimization": zero,
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
    }
