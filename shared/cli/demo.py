"""`autopilot demo [--tiny]`: the whole lifecycle on this machine, driven by the app's own triggers, for two lines.

1. start the dev host (function_app without Core Tools) with the local engine and a private Azurite;
2. give two model lines a line.json (`support` accumulates its uploads; `legal` does not) and upload a part of the
   bundled ultrachat-format sample to each at once; the blob trigger validates and submits both;
3. the training processes report through the Event Grid webhook; on completion the app reviews the metrics,
   gates, registers, deploys at 0%, smoke-tests and shifts traffic, each line on its own endpoint;
4. send the seed's sample request to both endpoints, and stream `support`'s answer over its OpenAI-compatible route;
5. upload more to `support`: it retrains on the union of its uploads, competes with its own champion only, and
   shifts its own traffic; `legal`'s endpoint stays as it was; both lines' state is printed;
   every deployment is evaluated at 0% first (held-out conversations and probes, against the champion or the base
   model) and its evidence printed;
6. upload a degenerate dataset (one phrase repeated) to `legal`: its evaluation refuses it, and the champion keeps
   the traffic and answers;
7. `legal`'s line.json drops its idle time, so the timer tears its endpoint down; then restore it through the API;
8. stop every process it started.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from shared.adapters.azurite import REPO_ROOT, free_port
from shared.adapters.http import HttpFailure, get_json, post_json
from shared.cli.demo_dashboard import end_on_dashboard, serve_until_interrupted
from shared.context import get_context
from shared.domain.jobs import JobStatus
from shared.domain.runs import RunState
from shared.domain.scoring import answer_text, scoring_request
from shared.settings import Settings

SAMPLE = REPO_ROOT / "samples" / "ultrachat_sample.jsonl"
SAMPLE_LINES = SAMPLE.read_bytes().splitlines(keepends=True)
DEMO_STATE = REPO_ROOT / ".state" / "demo"
SAMPLE_QUESTION = [{"role": "user", "content": "My Acme printer won't charge. What should I do?"}]
TERMINAL = {
    RunState.REJECTED,
    RunState.FAILED,
    RunState.CANCELED,
    RunState.GATED_OUT,
    RunState.ROLLED_BACK,
    RunState.SUPERSEDED,
}


def run_demo(*, tiny: bool = False, base_model: str | None = None) -> int:
    from shared.devhost import DevHost

    started = time.monotonic()
    model = "tiny" if tiny else (base_model or "smollm2-135m-instruct")
    settings = Settings(
        engine="local",
        local_base_model=model,
        local_state_dir=_fresh_state(),
        idle_minutes=0.15 if tiny else 0.5,  # a short idle window, to show the teardown
        idle_grace_minutes=0,
        idle_sweep_schedule="*/3 * * * * *",
        reconcile_after_minutes=5,
        # SmolLM2 learns at about 100 tokens/s on two cores: ten steps of eight conversations show the effect in
        # about two minutes; the tiny model trains the full preset in seconds.
        finetune_overrides={} if tiny else {"max_steps": 10},
        # SmolLM2 generates slowly on two cores: its evaluations ask fewer held-out conversations (the probes are
        # always all asked)
        eval_max_examples=32 if tiny else 8,
        eval_max_new_tokens=128 if tiny else 96,
    )
    _say(f"ft-autopilot demo: base model {model}, state in {settings.local_state_dir}")
    host = DevHost(settings, port=free_port(), announce=lambda text: None).start()
    try:
        _say(f"dev host on {host.base_url} (function_app: blob, Event Grid, timer and HTTP triggers; Azurite)")
        api = _Api(host.base_url, host.function_key)
        blobs = _Blobs(host, settings)
        blobs.put("support/line.json", b'{"accumulate": true, "idle_minutes": 30}')
        blobs.put("legal/line.json", b'{"idle_minutes": 30}')
        _step("two lines: support (accumulates its uploads) and legal, each with its line.json")
        blobs.put("support/first.jsonl", b"".join(SAMPLE_LINES))
        blobs.put("legal/all.jsonl", b"".join(SAMPLE_LINES[60:] + SAMPLE_LINES[:60]))
        runs = [_follow(api, "support/first.jsonl"), _follow(api, "legal/all.jsonl")]
        for run in runs:
            if run["state"] != RunState.DEPLOYED:
                _say(f"run ended {run['state']}: {run.get('error')}")
                return 1
            _ask(run, f"the seed's sample request to line {run['line']}")
        _ask_streaming(runs[0])
        legal = runs[1]
        legal_before = _serving(api, legal)
        blobs.put("support/second.jsonl", b"".join(SAMPLE_LINES[180:]) + asked_again(SAMPLE_LINES[:60]))
        retrain = _follow(api, "support/second.jsonl")
        used = ", ".join(f"{upload['blob']} ({upload['rows']} rows)" for upload in retrain["uploads"])
        print(f"    trained on the union of: {used}")
        if retrain["state"] == RunState.DEPLOYED:
            _ask(retrain, "the same request to the retrained support line")
        unchanged = _serving(api, legal) == legal_before
        _step(f"line legal: {'unchanged' if unchanged else 'CHANGED'} by support's retrain: {legal_before}")
        _print_lines(api)
        if not _refuses_a_degenerate_challenger(api, blobs, legal):
            return 1
        blobs.put("legal/line.json", b"{}")  # the settings' short IDLE_MINUTES now apply to legal
        _teardown_and_restore(api, api.get(f"/api/runs/{legal['run_id']}"))
        if not unchanged:
            return 1
        end_on_dashboard(host, [run["run_id"] for run in api.get("/api/runs")["runs"]], DEMO_STATE / "dashboard")
        serve_until_interrupted()
    finally:
        _cleanup(host)
    _say(f"demo finished in {time.monotonic() - started:.0f} s")
    return 0


def degenerate(lines: list[bytes]) -> bytes:
    """A schema-valid upload whose every answer is one phrase repeated: what a bad export or a looping labeller
    produces, and what the evaluation must refuse."""
    rows = []
    for line in lines:
        example = json.loads(line)
        for message in example["messages"]:
            if message["role"] == "assistant":
                message["content"] = "Enjoy. " * 24
        rows.append(json.dumps(example).encode() + b"\n")
    return b"".join(rows)


def _refuses_a_degenerate_challenger(api: _Api, blobs: _Blobs, champion: dict[str, Any]) -> bool:
    """Upload a degenerate dataset to the champion's line: it trains, deploys at 0%, and its evaluation refuses it;
    the champion keeps the traffic and answers."""
    line = champion["line"]
    before = _serving(api, champion)
    blobs.put(f"{line}/enjoy.jsonl", degenerate(SAMPLE_LINES))
    blocked = _follow(api, f"{line}/enjoy.jsonl")
    after = _serving(api, champion)
    if blocked["state"] != RunState.ROLLED_BACK or after != before:
        _say(f"the degenerate challenger ended {blocked['state']} ({blocked.get('error')}); traffic {after}")
        return False
    _step(
        f"line {line}: the challenger was refused ({blocked['error']['code']}); traffic unchanged: {after['traffic']}"
    )
    _ask(champion, f"the same request to line {line}'s champion")
    return True


def _fresh_state() -> Path:
    """A clean demo state that keeps the converted base models (the first SmolLM2 conversion takes ~20 s)."""
    DEMO_STATE.mkdir(parents=True, exist_ok=True)
    for entry in DEMO_STATE.iterdir():
        if entry.name == "models":
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return DEMO_STATE


def asked_again(lines: list[bytes]) -> bytes:
    """New conversations for the second upload: the sample's, asked in other words (new prompt ids)."""
    rows = []
    for line in lines:
        example = json.loads(line)
        example["messages"][0]["content"] = "Once more, please: " + example["messages"][0]["content"]
        example["prompt"] = example["messages"][0]["content"]
        example["prompt_id"] = hashlib.sha256(example["prompt"].encode()).hexdigest()
        rows.append(json.dumps(example).encode() + b"\n")
    return b"".join(rows)


def _follow(api: _Api, name: str) -> dict[str, Any]:
    """Narrate the run an upload became, step by step, until it ends (or serves)."""
    seen: list[dict[str, Any]] = []
    last_bar, last_step = 0.0, -1
    while True:
        runs = api.get("/api/runs?limit=1000")["runs"]
        run = next((r for r in runs if any(s.endswith("/" + name) for s in r["sources"])), None)
        if run is not None:
            for step in run["history"][len(seen) :]:
                seen.append(step)
                _narrate(run, step)
            if run["state"] in (RunState.DEPLOYED, *TERMINAL):
                return run
            if run["state"] in (RunState.SUBMITTED, RunState.RUNNING) and time.monotonic() - last_bar > 1:
                last_bar = time.monotonic()
                last_step = _progress(run["job_name"], last_step)
            if run["state"] == RunState.DEPLOYING and time.monotonic() - last_bar > 15:
                last_bar = time.monotonic()
                since = seen[-1]["at"][11:19]
                print(
                    f"    smoke test and evaluation at 0% traffic under way (deploying since {since} UTC)", flush=True
                )
        time.sleep(0.5)


class _Blobs:
    def __init__(self, host, settings: Settings) -> None:
        from azure.storage.blob import BlobServiceClient

        self._service = BlobServiceClient.from_connection_string(host.connection_string)
        self._container = settings.datasets_container

    def put(self, name: str, data: bytes) -> None:
        if name.endswith(".jsonl"):
            rows = len(data.splitlines())
            _step(f"upload {len(data) / 1024:.0f} KiB ({rows} conversations) to {self._container}/{name}")
        self._service.get_blob_client(self._container, name).upload_blob(data, overwrite=True)


def _serving(api: _Api, run: dict[str, Any]) -> dict[str, Any]:
    name = run["endpoint"]["name"]
    (endpoint,) = [e for e in api.get("/api/endpoints")["endpoints"] if e["name"] == name]
    return {"endpoint": name, "scoring_uri": endpoint["scoring_uri"], "traffic": endpoint["traffic"]}


def _print_lines(api: _Api) -> None:
    _step("GET /api/lines")
    for line in api.get("/api/lines")["lines"]:
        champion = line["champion"] or {}
        print(
            f"    {line['line']}: champion {champion.get('name')}:{champion.get('version')}, endpoint "
            f"{line['endpoint']} ({line['endpoint_state']}), {line['scoring_uri']}, runs {line['runs_by_state']}"
        )


def _narrate(run: dict[str, Any], step: dict[str, Any]) -> None:
    state = step["to"]
    _step(f"run {run['run_id']}: {state} - {step['reason']}")
    artifacts = run["artifacts"]
    if state == RunState.VALIDATING and run.get("validation"):
        v = run["validation"]
        print(
            f"    {v['rows']} rows, train {v['train_rows']}, test {v['test_rows']}, "
            f"warnings {v['warning_counts'] or 'none'}; report: {artifacts['report_md']}"
        )
    elif state == RunState.REGISTERED and run.get("metrics"):
        m = run["metrics"]
        print(
            f"    eval loss {m['base_eval_loss']:.3f} (base) -> {m['eval_loss']:.3f}; perplexity "
            f"{m['perplexity']:.2f}; token accuracy {m['mean_token_accuracy'] or 0:.2f}"
        )
        print(f"    review: {artifacts['training_report']}, loss curve {artifacts['loss_curve']}")
        print(f"    gate: {'; '.join(run['gate']['reasons'])}")
        from shared.engine.local.engine import LocalEngine

        engine = get_context().engine
        assert isinstance(engine, LocalEngine)  # the demo configures engine="local"
        print(f"    training log and PNG curve: {engine.job_folder(run['job_name'])}")
    if state in (RunState.DEPLOYED, RunState.ROLLED_BACK) and run.get("evaluation"):
        _print_evaluation(run["evaluation"], artifacts.get("evaluation_md"))
    if state == RunState.DEPLOYED and run.get("smoke_test"):
        print(f"    smoke test: {run['smoke_test']['seconds']:.1f} s, answer {run['smoke_test']['answer'][:80]!r}")
        print(f"    scoring URI {run['endpoint']['scoring_uri']} (deployment {run['endpoint']['deployment']})")


def _print_evaluation(evaluation: dict[str, Any], page: str | None) -> None:
    ours, theirs = evaluation["challenger"], evaluation["reference"]
    kind = "base model" if evaluation["baseline"] == "base" else evaluation["baseline"]
    against = f"the {kind} {theirs['model']}" if theirs else "nothing (degeneration checks only)"
    print(
        f"    evaluation ({evaluation['seconds']:.1f} s): {evaluation['examples']} held-out conversations and "
        f"{ours['probes']} probes, greedy, against {against}"
    )
    figures = [
        (f"{name}", f"{value:.3f}", f"{theirs['scores'].get(name, 0):.3f}" if theirs else "-")
        for name, value in ours["scores"].items()
    ]
    figures.append(
        (
            "degenerate",
            f"{ours['degenerate']}/{ours['answers']}",
            f"{theirs['degenerate']}/{theirs['answers']}" if theirs else "-",
        )
    )
    figures.append(
        (
            "probes passed",
            f"{ours['probes_passed']}/{ours['probes']}",
            f"{theirs['probes_passed']}/{theirs['probes']}" if theirs else "-",
        )
    )
    print("      " + "; ".join(f"{name} {mine} vs {other}" for name, mine, other in figures))
    for check in evaluation["checks"]:
        print(f"      {'pass' if check['passed'] else 'FAIL'} {check['code']}: {check['reason']}")
    if page:
        print(f"    evidence: {page} (and evaluation.json)")


def _progress(job_name: str, last_step: int) -> int:
    """Print the training bar when the step moved; return the step shown."""
    job = get_context().engine.get_job(job_name)
    p = job.progress
    if job.status != JobStatus.RUNNING or p is None or not p.total_steps or p.step == last_step:
        return last_step
    filled = int(30 * p.step / p.total_steps)
    loss = f" loss {p.loss:.3f}" if p.loss is not None else ""
    print(f"    training [{'#' * filled:<30}] step {p.step}/{p.total_steps}{loss}", flush=True)
    return p.step


def _ask(run: dict[str, Any], what: str) -> None:
    endpoint = run["endpoint"]
    key = get_context().engine.get_keys(endpoint["name"]).primary
    began = time.monotonic()
    headers = {"Authorization": f"Bearer {key}"}
    answer = answer_text(
        post_json(endpoint["scoring_uri"], scoring_request(SAMPLE_QUESTION), headers=headers, timeout_s=120)
    )
    _step(f"{what}: POST {endpoint['scoring_uri']} ({time.monotonic() - began:.1f} s)")
    print(f"    user: {SAMPLE_QUESTION[0]['content']}\n    assistant: {answer}")


def _ask_streaming(run: dict[str, Any]) -> None:
    """The same question over the endpoint's OpenAI-compatible route, printed as its server-sent events arrive."""
    import httpx  # the local engine's serving stack (requirements-local.txt)

    endpoint = run["endpoint"]
    url = endpoint["scoring_uri"].rsplit("/", 1)[0] + "/v1/chat/completions"
    key = get_context().engine.get_keys(endpoint["name"]).primary
    body = {"messages": SAMPLE_QUESTION, "temperature": 0, "max_tokens": 96, "stream": True}
    _step(f"the same request, streamed: POST {url} with stream=true (OpenAI's chunk format)")
    print("    assistant: ", end="", flush=True)
    began, first = time.monotonic(), None
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.stream("POST", url, json=body, headers=headers, timeout=120, trust_env=False) as response:
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line.removeprefix("data: ")).get("choices") or [{}]
            text = choices[0].get("delta", {}).get("content") or ""
            if text and first is None:
                first = time.monotonic() - began
            print(text.replace("\n", "\n               "), end="", flush=True)
    total = time.monotonic() - began
    print(f"\n    first text after {first or total:.2f} s, the whole answer after {total:.2f} s")


def _teardown_and_restore(api: _Api, run: dict[str, Any]) -> None:
    endpoint = run["endpoint"]["name"]
    _step(f"waiting for the idle sweep to tear {endpoint} down (IDLE_MINUTES is short in the demo)")
    while (current := api.get(f"/api/runs/{run['run_id']}"))["state"] != RunState.TORN_DOWN:
        time.sleep(1)
    print(f"    {current['history'][-1]['reason']}")
    print(f"    endpoints now: {[e['name'] for e in api.get('/api/endpoints')['endpoints']] or 'none'}")
    _step(f"POST /api/endpoints/{endpoint}/restore")
    restored = api.post(f"/api/endpoints/{endpoint}/restore")
    print(f"    run {restored['run_id']}: {restored['state']} - {restored['history'][-1]['reason']}")
    _ask(restored, "the same request to the restored endpoint")


def _cleanup(host) -> None:
    _step("stopping: endpoints, dev host, Azurite")
    engine = get_context().engine
    for endpoint in engine.list_endpoints():
        engine.delete_endpoint(endpoint.name)
    host.stop()


class _Api:
    def __init__(self, base_url: str, key: str) -> None:
        self._base_url = base_url
        self._key = key

    def get(self, path: str) -> Any:
        return self._call("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        return self._call("POST", path, body)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"x-functions-key": self._key}
        try:
            if method == "POST":
                return post_json(self._base_url + path, body or {}, headers=headers, timeout_s=600)
            return get_json(self._base_url + path, headers=headers, timeout_s=600)
        except HttpFailure as exc:
            raise RuntimeError(f"{method} {path}: {exc.message}") from exc


def _step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def _say(text: str) -> None:
    print(text, flush=True)
