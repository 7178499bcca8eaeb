"""Regression guard: 20 steps of configs/quickstart.py:tiny must give the stored losses.

The run is deterministic on CPU (batches and dropout keys are functions of seed and step), so the losses
move only when the numerics move: model, init, data, objective, optimizer or the training loop. The
tolerance (1e-4 relative) allows for float32 reductions ordered differently by another CPU or XLA build,
and is far below what any real change to those does (the loss moves in the second or third digit).
"""
import numpy as np

from tests.conftest import read_metrics, tiny_config

# Measured with `pytest tests/test_golden.py` (2-core CPU, jax 0.10.2, XLA CPU), 2026-12-02: warmup's first update
# uses lr / (warmup_steps + 1), as nanoGPT's, no longer 0 (before: train 2.7044239, val 2.7004161).
GOLDEN = {"train_loss": 2.693859004974365, "val_loss": 2.691432476043701}
RTOL = 1e-4


def test_tiny_run_matches_the_stored_losses(tmp_path):
  from pretrain.trainer import train
  final = train.train(tiny_config(), str(tmp_path))
  measured = {"train_loss": read_metrics(tmp_path, "train")[-1]["loss"], "val_loss": final["loss"]}
  for key, expected in GOLDEN.items():
    assert np.isclose(measured[key], expected, rtol=RTOL, atol=0), (
        f"{key} after 20 steps of configs/quickstart.py:tiny is {measured[key]!r}, the stored value is "
        f"{expected!r} (relative tolerance {RTOL}); measured: {measured}. Updating GOLDEN in tests/test_golden.py "
        "is legitimate only for an intended change of the numerics (model, init, data, objective, optimizer or "
        "loop), named in the same commit; never to silence a drift nobody can explain: find the change that "
        "moved it first.")
