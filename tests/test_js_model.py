"""The npm client against a reference model of the change log, with random sequences of steps
(clients/js/test/model.test.mjs): deliveries, rollbacks and re-applies, disconnects, resyncs, overlapping
subscriptions, stalled handlers, batch and plain clients over websocket and polling, clean reloads. Each
seed runs in a fresh harness. By default a few fixed seeds and one random one (printed, and named in a
failure); ``JS_MODEL_RUNS=50`` runs that many random seeds instead, ``JS_MODEL_STEPS`` sets the steps."""

from __future__ import annotations

import os
import random

import pytest

from .client_harness import start_harness
from .conftest import Serve
from .test_js_package import node_test, pytestmark  # noqa: F401 (the same skip when node is missing)

FIXED_SEEDS = [1, 7, 2026]
RUNS = int(os.environ.get("JS_MODEL_RUNS", "0"))
STEPS = os.environ.get("JS_MODEL_STEPS", "80")
SEEDS = [random.randrange(2**31) for _ in range(RUNS)] if RUNS else [*FIXED_SEEDS, random.randrange(2**31)]
# Small limits: replays of many batches, replay groups taking turns, live runs split in several frames.
# The count of real slow-consumer resyncs is printed: with these small deliveries the socket buffers
# absorb a stalled client, so the resyncs the test sees are the control plane's forced ones.
TIGHT = {"replay_batch_size": 3, "tailer_batch_size": 4, "slow_consumer_backlog": 6}
RUNS_OF = [(seed, "default") for seed in SEEDS] + [(seed, "tight") for seed in SEEDS[::2]]


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("seed", "limits"), RUNS_OF)
async def test_client_against_the_model(seed: int, limits: str, serve: Serve,
                                        caplog: pytest.LogCaptureFixture) -> None:
    print(f"MODEL_SEED={seed} MODEL_STEPS={STEPS} limits={limits}")
    async with start_harness(serve, **(TIGHT if limits == "tight" else {})) as harness:
        try:
            output = await node_test(harness, "model.test.mjs",
                                     env={"MODEL_SEED": str(seed), "MODEL_STEPS": STEPS})
        except AssertionError as error:
            raise AssertionError(f"MODEL_SEED={seed} MODEL_STEPS={STEPS} limits={limits} failed:\n{error}") from None
    assert "# pass 1\n" in output, output
    slow = [record for record in caplog.records
            if "slow consumer" in record.getMessage() and "forced by the test" not in record.getMessage()]
    print(next(line for line in output.splitlines() if "model seed" in line), f"({len(slow)} slow-consumer resyncs)")
