"""The local engine's training worker: `python -m shared.engine.local.training JOB_DIR`.

The engine prepares JOB_DIR (jobfiles.py: job.json, data/train.jsonl, data/test.jsonl, status.json "queued")
and starts this process detached (`launch.launch_command`). The worker then owns the job folder:

    running    status.json (pid, started_at), events, job.log lines
    checks     too_few_examples, base_model_unavailable, no_generation_markers, no_assistant_tokens
    base eval  the base model on the test split (loss, perplexity, token accuracy) -> metrics.json
    training   TRL SFTTrainer, assistant-only loss, LoRA (peft) or full fine-tuning; progress.json per step
    final eval the trained model on the same split
    output     model/ (merged, a plain Hugging Face folder), adapter/ (LoRA), loss_curve.png, report.md,
               one MLflow run with params, metrics, artifacts and the logged merged model
    completed  status.json and events; failed / canceled likewise, with a stable error code

SIGTERM cancels: between steps a callback stops the trainer; anywhere else (model loading, evaluation) the
signal handler raises JobCanceled. Either way the job ends `canceled`, with events, exit code 143.

The worker speaks the parameter names of Azure ML's chat_completion_pipeline (shared.domain.finetune) with the same
meanings; what does not apply on this machine (fp16 on a CPU, DeepSpeed without CUDA, checkpoints) is written to
job.log and metrics.json notes. With several CUDA devices the engine launches it through `accelerate launch`;
then only rank 0 writes the job folder, events and MLflow.

    launch.py        the command line that starts a worker (the engine imports only this)
    __main__.py      the process: environment, arguments, exit
    worker.py        TrainingWorker (the job from status to status) and its SIGTERM handling
    errors.py        JobCanceled, JobFailure: how a job ends other than by completing
    data.py          the job's conversations and the checks on them and on the chat template
    configs.py       parameters -> SFTConfig, LoraConfig, DeepSpeed config (functions of values)
    model.py         loading the base model, building the trainer, saving the merged model
    callback.py      the TrainerCallback: progress, per-step logs, cancellation between steps
    mlflow_run.py    the job's MLflow run
    report.py        evaluation summaries, the loss curve and report.md
    event_sender.py  status events delivered on a background thread

Heavy imports (torch, transformers, trl, peft, mlflow, matplotlib) happen inside functions: the engine imports
`launch` at start-up.
"""
