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


@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", SEEDS)
async def test_client_against_the_model(seed: int, serve: Serve) -> None:
    print(f"MODEL_SEED={seed} MODEL_STEPS={STEPS}")
    async with start_harness(serve) as harness:
        try:
            output = await node_test(harness, "model.test.mjs",
                                     env={"MODEL_SEED": str(seed), "MODEL_STEPS": STEPS})
        except AssertionError as error:
            raise AssertionError(f"MODEL_SEED={seed} MODEL_STEPS={STEPS} failed:\n{error}") from None
    assert "# pass 1\n" in output, output
    print(next(line for line in output.splitlines() if "model seed" in line))
