"""The breaker per model and its trial, measured on the real wire (fault servers in child processes):

- ``hung_trial``: 200 calls wait out an outage (60 s request timeout); the endpoint comes back but the first trial
  hangs. How many calls get a real answer within 15 s of the recovery, how late the rest, and the process's CPU in
  the 5 s after the trial went out. ``cold``: no answer yet to time the trial by (10 s), so the calls wait behind the
  hung trial through those 5 s; ``warm``: after a few answers the trial may take 3x the slowest, at least 2 s, so it
  times out within the window and the CPU figure includes answering the 200 calls.
- ``isolation``: 16 callers of a healthy model (500 ms answers) for 12 s, and 80 calls at once to a sick one, its
  requests routed to a second server that is down (``503``: the model's failure) or hangs (``hang``: 5 s timeouts,
  which count for the endpoint too). The healthy model's calls and latency and the endpoint breaker's trips, against
  a run without the sick model; ``hang-wave1`` is the same with the endpoint breaker opening on one model's streak
  (the rule this project chose against: ``layers/breaker.ENDPOINT_WAVE_MODELS``).
- ``model_wave``: the endpoint answers 503 for every model for 6 s (model-scope failures, which the endpoint's
  breaker does not count) while 24 callers ask 1 or 3 models: requests sent into the outage, and how soon after it
  calls are answered again. What counting such waves on the endpoint's breaker could save.

    python -m benchmarks.breaker_scopes [--repeats 2] [--only hung_trial,isolation,model_wave]

Results: ``benchmarks/results/breaker_scopes.json`` (every repeat, and min / median / max per figure).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from resilient_llm import Config, Engine, HTTPConfig, Outcome
from resilient_llm.layers import breaker as breaker_layer
from resilient_llm.policy.percentiles import percentiles
from resilient_llm.testing.remote import RemoteFaultServer

HEALTHY, SICK = "openai/gpt-4o-mini", "anthropic/claude-3.5-haiku"
RESULTS = Path(__file__).parent / "results"
LOG = RESULTS / "breaker_scopes.calls.jsonl"


def engine(url: str, transport: httpx.AsyncBaseTransport | None = None, **sections: Any) -> Engine:
    config = Config(http=HTTPConfig(api_key="sk-bench-local", base_url=url, timeout=sections.pop("timeout", 60.0)))
    config = config.replace(
        cache={"mode": "off"}, log={"file": str(LOG)}, fallback={"routes": ("neutral",)}, **sections
    )
    return Engine(config, transport=transport)


def load() -> float:
    return os.getloadavg()[0]


async def hung_trial(warm: bool) -> dict[str, Any]:
    calls = 200
    with RemoteFaultServer("clean", latency_s=0.05, hang_s=120.0) as server:
        with engine(server.url, breaker={"fail_max": 10, "reset_timeout": 1.0}) as eng:
            if warm:
                await asyncio.gather(*(eng.acomplete(HEALTHY, user=f"warm {i}") for i in range(5)))
            server.set_down(True)
            ended: list[float] = []

            async def one(i: int) -> str:
                result = await eng.acomplete(HEALTHY, user=f"waits {i}")
                ended.append(time.monotonic())
                return str(result.outcome)

            tasks = [asyncio.ensure_future(one(i)) for i in range(calls)]
            while eng.breaker_state != "open":  # noqa: ASYNC110  (the engine's state, on its own loop)
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)
            server.script("hang")  # the next request, the trial, hangs
            server.set_down(False)
            recovered = time.monotonic()
            await asyncio.sleep(1.5)  # a trial is due every ~1 s: it is out by now
            cpu_before = time.process_time()
            await asyncio.sleep(5.0)
            cpu = time.process_time() - cpu_before
            outcomes = await asyncio.gather(*tasks)
        stats = server.stats()
    after = sorted(t - recovered for t in ended)
    return {
        "calls": calls,
        "warm": warm,
        "real": outcomes.count(Outcome.OK),
        "real_within_15s_of_recovery": sum(1 for t in after if t <= 15.0),
        "answered_after_recovery_s": {k: round(v or 0.0, 2) for k, v in percentiles(after).items()}
        | {"max": round(after[-1], 2)},
        # cold: the trial hangs through the whole window; warm: it times out within it, and the 200 calls are answered
        "cpu_s_in_5s_after_the_trial_went_out": round(cpu, 3),
        "hung_trials": stats["faults"].get("hang", 0),
        "server_requests": stats["requests"],
        "load_1m": load(),
    }


class ByModel(httpx.AsyncBaseTransport):
    """Sends each request to the server of its model (the other fault server stands in for one model's provider)."""

    def __init__(self, ports: dict[str, int]) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._ports = ports

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        model = json.loads(request.content)["model"]
        request.url = request.url.copy_with(port=self._ports[model])
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def isolation(sick: str | None, wave_models: int = 2, duration: float = 12.0) -> dict[str, Any]:
    """``sick``: None (the healthy model only), "http_503" or "hang". 16 callers ask the healthy model, a call after
    another, for ``duration`` seconds; a second after the start, a phase of 80 calls to the sick model comes in."""
    breaker_layer.ENDPOINT_WAVE_MODELS = wave_models
    LOG.unlink(missing_ok=True)
    with RemoteFaultServer("clean-500ms") as healthy, RemoteFaultServer("clean", hang_s=30.0) as broken:
        if sick is not None:
            broken.set_down(True, sick)
        ports = {HEALTHY: httpx.URL(healthy.url).port or 0, SICK: httpx.URL(broken.url).port or 0}
        sections: dict[str, Any] = {"timeout": 5.0, "breaker": {"outage_wait": 10.0}, "retry": {"deadline": 60.0}}
        rows: list[tuple[str, str, float]] = []
        with engine(healthy.url, ByModel(ports), **sections) as eng:
            started = time.monotonic()

            async def caller(worker: int) -> None:
                n = 0
                while time.monotonic() - started < duration:
                    result = await eng.acomplete(HEALTHY, user=f"{worker} {n}")
                    rows.append((HEALTHY, str(result.outcome), result.latency_s))
                    n += 1

            async def sick_call(i: int) -> None:
                await asyncio.sleep(1.0)
                result = await eng.acomplete(SICK, user=f"sick {i}")
                rows.append((SICK, str(result.outcome), result.latency_s))

            workers = [caller(w) for w in range(16)] + ([sick_call(i) for i in range(80)] if sick else [])
            await asyncio.gather(*workers)
        broken_requests = broken.stats()["requests"]
    breaker_layer.ENDPOINT_WAVE_MODELS = 2
    events = [json.loads(line) for line in LOG.read_text().splitlines()]
    opened = [e for e in events if e["event"] == "breaker_state_change" and e["to_state"] == "open"]
    healthy_rows = [(outcome, lat) for model, outcome, lat in rows if model == HEALTHY]
    sick_rows = [(outcome, lat) for model, outcome, lat in rows if model == SICK]
    return {
        "sick_model": sick,
        "endpoint_wave_models": wave_models,
        "healthy_calls": len(healthy_rows),
        "healthy_real": sum(1 for outcome, _ in healthy_rows if outcome == Outcome.OK),
        "healthy_latency_ms": {
            k: round((v or 0.0) * 1e3) for k, v in percentiles([x for _, x in healthy_rows]).items()
        },
        "endpoint_trips": sum(1 for e in opened if e["model"] is None),
        "sick_model_trips": sum(1 for e in opened if e["model"] == SICK),
        "sick_calls": len(sick_rows),
        "sick_outcomes": {o: sum(1 for out, _ in sick_rows if out == o) for o in sorted({out for out, _ in sick_rows})},
        "sick_requests_per_call": round(broken_requests / len(sick_rows), 2) if sick_rows else None,
        "load_1m": load(),
    }


async def model_wave(models: int, duration: float = 14.0, down: tuple[float, float] = (2.0, 8.0)) -> dict[str, Any]:
    """The whole endpoint answers 503 (a model-scope failure, as OpenRouter's per-model 5xx) from ``down[0]`` to
    ``down[1]`` while 24 callers ask ``models`` models in turn: what the outage costs the endpoint and how soon calls
    are answered again, when each model's breaker stops only its own model (the endpoint's never counts a 503)."""
    names = [HEALTHY, SICK, "openai/gpt-4.1-mini"][:models]
    LOG.unlink(missing_ok=True)
    rows: list[tuple[float, str]] = []
    with RemoteFaultServer("clean", latency_s=0.05) as server:
        with engine(server.url, timeout=10.0, breaker={"outage_wait": 30.0}) as eng:
            started = time.monotonic()

            async def caller(worker: int) -> None:
                n = 0
                while time.monotonic() - started < duration:
                    result = await eng.acomplete(names[(worker + n) % models], user=f"{worker} {n}")
                    rows.append((time.monotonic() - started, str(result.outcome)))
                    n += 1

            async def outage() -> None:
                await asyncio.sleep(down[0])
                server.set_down(True)
                await asyncio.sleep(down[1] - down[0])
                server.set_down(False)

            await asyncio.gather(outage(), *(caller(w) for w in range(24)))
        stats = server.stats()
    events = [json.loads(line) for line in LOG.read_text().splitlines()]
    opened = [e for e in events if e["event"] == "breaker_state_change" and e["to_state"] == "open"]
    first_after = min((t for t, outcome in rows if outcome == Outcome.OK and t > down[1]), default=None)
    return {
        "models": models,
        "outage_s": down[1] - down[0],
        "requests_into_the_outage": stats["requests_while_down"],
        "breaker_openings": {"endpoint": sum(1 for e in opened if e["model"] is None), "models": len(opened)},
        "first_real_answer_after_recovery_s": None if first_after is None else round(first_after - down[1], 2),
        "outcomes": {o: sum(1 for _, out in rows if out == o) for o in sorted({out for _, out in rows})},
        "load_1m": load(),
    }


def summary(runs: list[dict[str, Any]], *paths: str) -> dict[str, dict[str, float]]:
    """min / median / max of each figure named by a dotted path, over the repeats."""
    out: dict[str, dict[str, float]] = {}
    for path in paths:
        values = []
        for run in runs:
            value: Any = run
            for part in path.split("."):
                value = value[part]
            values.append(float(value))
        out[path] = {"min": min(values), "median": statistics.median(values), "max": max(values)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", default="hung_trial,isolation,model_wave")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(","))
    path = RESULTS / "breaker_scopes.json"
    report: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    report |= {"benchmark": "breaker_scopes", "repeats": args.repeats}
    if "hung_trial" in only:
        section: dict[str, Any] = {}
        for name, warm in (("cold", False), ("warm", True)):
            runs = [asyncio.run(hung_trial(warm)) for _ in range(args.repeats)]
            figures = (
                "real_within_15s_of_recovery",
                "answered_after_recovery_s.max",
                "cpu_s_in_5s_after_the_trial_went_out",
            )
            section[name] = {"runs": runs, "summary": summary(runs, *figures)}
        report["hung_trial"] = section
    if "isolation" in only:
        section = {}
        for name, sick, wave in (
            ("healthy_only", None, 2),
            ("503", "http_503", 2),
            ("hang", "hang", 2),
            ("hang-wave1", "hang", 1),
        ):
            runs = [asyncio.run(isolation(sick, wave)) for _ in range(args.repeats)]
            figures = ("healthy_calls", "healthy_latency_ms.p50", "healthy_latency_ms.p99", "endpoint_trips")
            section[name] = {"runs": runs, "summary": summary(runs, *figures)}
        report["isolation"] = section
    if "model_wave" in only:
        section = {}
        for models in (1, 3):
            runs = [asyncio.run(model_wave(models)) for _ in range(args.repeats)]
            figures = ("requests_into_the_outage", "first_real_answer_after_recovery_s")
            section[f"{models}_models"] = {"runs": runs, "summary": summary(runs, *figures)}
        report["model_wave"] = section
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    main()
