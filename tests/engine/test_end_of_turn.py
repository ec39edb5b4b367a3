"""Does a fine-tune learn to stop? The end-of-turn token must be trained on (SmolLM2's pad = eos = <|im_end|>: a
collator that masked labels by the pad id would hide every end of turn), and after a short fine-tune greedy answers
to held-out prompts end with it before max_new_tokens. Also: the job evaluates the line's champion on the same test
split, so the gate compares losses like for like. The real worker, the tiny model and SmolLM2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.domain.finetune import FineTuneParameters
from shared.engine.local.base_models import SMOLLM2, resolve_base_model
from shared.engine.local.jobfiles import JobFiles, TrainingJob
from shared.engine.local.training.data import read_conversations
from shared.engine.local.training.model import build_trainer, load_tokenizer
from tests.engine.test_local_training import FAST, REPO, TEST_LINES, make_job, metrics_of, run_worker

SAMPLE = REPO / "samples" / "ultrachat_sample.jsonl"
MAX_NEW_TOKENS = 96
END_OF_TURN = {"tiny": "<|end|>", SMOLLM2: "<|im_end|>"}


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An engine state folder: its models/ holds the base models the jobs resolve."""
    return tmp_path_factory.mktemp("end-of-turn")


@pytest.mark.parametrize("base_model", ["tiny", SMOLLM2])
def test_every_assistant_turn_trains_its_end_of_turn_token(base_model: str, state: Path, tmp_path: Path):
    # given the base model's tokenizer (SmolLM2's pads with its end-of-turn token) and the sample's conversations
    folder = resolve_base_model(base_model, state / "models")
    tokenizer = load_tokenizer(folder)
    rows = read_conversations(SAMPLE)
    end_id = tokenizer.convert_tokens_to_ids(END_OF_TURN[base_model])
    if base_model == SMOLLM2:
        assert tokenizer.pad_token_id == end_id  # the trap this test is about

    # when the job's trainer prepares them and its collator pads batches of 8
    from transformers import AutoModelForCausalLM, TrainerCallback

    trainer = build_trainer(
        FineTuneParameters(**FAST),
        AutoModelForCausalLM.from_pretrained(folder),
        tokenizer,
        rows,
        [],
        device="cpu",
        bf16_supported=False,
        deepspeed=None,
        output_dir=tmp_path / "trainer",
        callback=TrainerCallback(),
        log=lambda _: None,
        note=lambda _: None,
    )
    trained = 0
    dataset = trainer.train_dataset
    for start in range(0, len(dataset), 8):
        batch = trainer.data_collator([dataset[i] for i in range(start, min(start + 8, len(dataset)))])
        ids, labels = batch["input_ids"], batch["labels"]
        trained += int(((ids == end_id) & (labels == end_id)).sum())

    # then every assistant turn's end-of-turn token is a label (and padding is not)
    turns = sum(1 for row in rows for message in row["messages"] if message["role"] == "assistant")
    assert (len(dataset), turns) == (240, 286)
    assert trained == turns


def greedy_endings(model_dir: Path | str, prompts: list[list[dict[str, str]]]) -> list[bool]:
    """Per prompt: did the greedy answer end with an end-of-turn token before MAX_NEW_TOKENS?"""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    ended = []
    with torch.inference_mode():
        for prompt in prompts:
            encoded = tokenizer.apply_chat_template(
                prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            output = model.generate(**encoded, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
            generated = output[0, encoded["input_ids"].shape[1] :].tolist()
            ended.append(len(generated) < MAX_NEW_TOKENS or generated[-1] in eos_ids)
    return ended


@pytest.fixture(scope="module")
def trained(state: Path) -> JobFiles:
    """A short fine-tune of the tiny model on the sample (2 epochs, as the engine's other tests)."""
    files = make_job(state / "jobs" / "ft-stops", state, **FAST)
    exit_code, output = run_worker(files)
    assert exit_code == 0, output
    return files


def test_a_short_fine_tune_answers_held_out_prompts_and_stops(trained: JobFiles, state: Path):
    # given a short fine-tune (the fixture)
    files = trained

    # when it and its base model answer the held-out prompts greedily
    prompts = [json.loads(line)["messages"][:1] for line in TEST_LINES]
    tuned = greedy_endings(files.model_dir, prompts)
    base = greedy_endings(resolve_base_model("tiny", state / "models"), prompts)

    # then the fine-tuned answers end by themselves, where the (random) base model's run on
    assert sum(tuned) >= 0.9 * len(prompts), f"{sum(tuned)}/{len(prompts)} stopped"
    assert sum(tuned) > sum(base)


def test_the_job_evaluates_the_champion_on_the_same_split(trained: JobFiles, tmp_path: Path, state: Path):
    # given a finished job, and a second job on the same data whose line's champion is the first one's model
    first = trained
    second = make_job(tmp_path / "ft-second", state, **{**FAST, "max_steps": 4})
    job = second.read_job()
    second.write_job(TrainingJob(**{**job.model_dump(), "champion": "m:1", "champion_model_dir": str(first.model_dir)}))

    # when the second job runs
    exit_code, output = run_worker(second)

    # then it reports the champion's loss on its test split: the same model on the same split as the first job's
    # final evaluation gives the same loss
    assert exit_code == 0, output
    ours, theirs = metrics_of(second), metrics_of(first)
    assert ours.champion_model == "m:1"
    assert ours.champion is not None and theirs.final is not None
    assert ours.champion.eval_loss == pytest.approx(theirs.final.eval_loss, rel=1e-4)
    assert "evaluating the champion m:1 on the test split" in second.log_path.read_text(encoding="utf-8")


def test_a_champion_that_does_not_load_is_noted_and_the_job_completes(tmp_path: Path, state: Path):
    # given a job whose champion folder is gone
    files = make_job(tmp_path / "ft-gone", state, **{**FAST, "max_steps": 2})
    job = files.read_job()
    files.write_job(TrainingJob(**{**job.model_dump(), "champion": "m:9", "champion_model_dir": str(tmp_path / "no")}))

    # when it runs
    exit_code, output = run_worker(files)

    # then it completes without a champion loss, and says why
    assert exit_code == 0, output
    metrics = metrics_of(files)
    assert metrics.champion is None
    assert any(note.startswith("the champion m:9 could not be loaded") for note in metrics.notes)
