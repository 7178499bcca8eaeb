"""pretrain.evaluate: a run's checkpoint, the model from its saved config, the data from the given one."""
import json
import os

import pytest

from pretrain import configlib, evaluate
from pretrain.errors import CheckpointError, ConfigError
from tests.conftest import ROOT, read_metrics, run_main

TINY = os.path.join(ROOT, "configs/quickstart.py:tiny")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run")
  run_main("--config", TINY, "--workdir", workdir)
  return str(workdir)


def test_cli_reproduces_the_runs_own_evaluations(trained):
  proc = run_main("--workdir", trained, "--config", TINY, module="pretrain.evaluate")
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  val = {r["step"]: r for r in read_metrics(trained, "val")}
  assert out["step"] == 20 and abs(out["loss"] - val[20]["loss"]) < 1e-6 and out["count"] == val[20]["count"]
  assert {"bits_per_token", "bits_per_token_sem", "perplexity", "perplexity_sem", "loss_sem"} <= set(out)
  assert read_metrics(trained, "evaluate")[-1]["loss"] == out["loss"]
  # An earlier checkpoint, and the same config given to the training run's data: its step-10 evaluation.
  at_10 = evaluate.evaluate(trained, configlib.load(TINY), at_step=10)
  assert at_10["step"] == 10 and abs(at_10["loss"] - val[10]["loss"]) < 1e-6
  assert [r["step"] for r in read_metrics(trained, "evaluate")] == [20, 10]


def test_whole_split_unless_batches_are_given(trained):
  # The config asks for one eval batch; evaluation covers the split anyway unless the flag is given.
  given = configlib.load(TINY, [("eval.batches", "1")])
  full = evaluate.evaluate(trained, given)
  assert full["count"] == 64 * 32  # quickstart:tiny: 64 validation sequences of 32 predicted tokens.
  one = evaluate.evaluate(trained, given, overrides=[("eval.batches", "1")])
  assert one["count"] == 8 * 32


def test_data_or_override_that_does_not_fit_is_one_error(trained):
  with pytest.raises(CheckpointError, match=r"has no checkpoint 7; pass --step with one of \[10, 20\]"):
    evaluate.evaluate(trained, configlib.load(TINY), at_step=7)
  other_vocab = configlib.load(TINY, [("data.markov.vocab_size", "20")])
  with pytest.raises(ConfigError, match=r"does not fit its model with this data \(21 token ids\): "
                                        r"params/wte/embedding: checkpoint \(17, 32\), model \(21, 32\)"):
    evaluate.evaluate(trained, other_vocab)
  proc = run_main("--workdir", trained, "--config", TINY, "--config.model.width=64", module="pretrain.evaluate",
                  check=False)
  assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
  assert "params/h_0/attn/c_attn/kernel: checkpoint (32, 96), model (64, 192)" in proc.stderr
