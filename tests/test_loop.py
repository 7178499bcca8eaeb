"""The training loop's actions: exact metrics across preemption at any point, the final evaluation after a stop
in the last call, W&B offline, the profiler, per-layer statistics, extra eval sets, schedule accounting."""
import glob
import json
import os

import jax
import numpy as np
import pytest

from pretrain import report
from pretrain.trainer import checkpoint, ledger, metrics, optim, train
from pretrain.errors import DataError, Preempted
from tests.conftest import read_metrics, run_main, tiny_config

EXACT = ("loss", "grad_norm", "lr", "bits_per_token")
# 20 steps, two per call; a train row every 4, an evaluation of 4 batches every 8 (and at 20); no checkpoint
# but the ones a stop saves.
LOOP = {"train.steps_per_call": 2, "train.log_every": 4, "train.eval_every": 8, "train.checkpoint_every": 1000,
        "eval.batch_size": 16, "optim.warmup_steps": 3}


class StopAtCheck:
  """A preemption whose signal arrives just before its n-th check (1-based): the loop checks once per jitted
  call and evaluation checks once per eval batch, so n walks every place a signal can be noticed."""
  exit_code = 143

  def __init__(self, n):
    self.n, self.calls, self.signal = n, 0, None

  def requested(self, agree=True):
    del agree
    self.calls += 1
    if self.calls >= self.n:
      self.signal = 15
    return self.signal is not None


def _rows(workdir):
  return {(r["split"], r["step"]): {k: r[k] for k in EXACT if k in r} for r in read_metrics(workdir)}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  train.train(tiny_config(**LOOP), str(workdir))
  return workdir


# Check 1: before the first call; 2, 4: mid-window; 3: at the step-4 train row; 5: at step 8, where a train row
# and an evaluation are due; 7: inside that evaluation (4 batches, checks 6-9); 13: at step 16; 23: inside the
# final evaluation.
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 13, 23])
def test_a_stop_anywhere_then_a_rerun_writes_the_uninterrupted_rows(uninterrupted, tmp_path, n):
  with pytest.raises(Preempted):
    train._train(tiny_config(**LOOP), str(tmp_path), StopAtCheck(n))
  stopped = checkpoint.Checkpointer(str(tmp_path), keep=3).latest_step()
  assert stopped is not None and stopped < 20 or n == 23
  train.train(tiny_config(**LOOP), str(tmp_path))
  assert _rows(tmp_path) == _rows(uninterrupted)
  assert ledger.read(str(tmp_path))["status"] == "finished"


def test_a_stop_in_the_last_call_ends_finished_with_the_final_evaluation(tmp_path):
  config = tiny_config(**{"train.steps_per_call": 20, "train.log_every": 20, "train.eval_every": 20,
                          "train.checkpoint_every": 20})
  with pytest.raises(Preempted):
    train._train(config, str(tmp_path), StopAtCheck(2))  # Check 2 follows the only call.
  assert metrics.read(str(tmp_path)) == [] and ledger.read(str(tmp_path))["status"] == "running"
  final = train.train(config, str(tmp_path))
  assert [(r["split"], r["step"]) for r in read_metrics(tmp_path)] == [("train", 20), ("val", 20)]
  assert read_metrics(tmp_path, "val")[0]["loss"] == final["loss"]
  assert ledger.read(str(tmp_path))["status"] == "finished"


def test_wandb_offline_resumes_into_the_same_run(tmp_path):
  pytest.importorskip("wandb")
  env = {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wandb"), "WANDB_SILENT": "true"}
  os.makedirs(env["WANDB_DIR"])
  args = ["--config", "configs/quickstart.py:tiny", "--workdir", tmp_path / "run", "--config.log.wandb_project=test",
          "--config.log.wandb_tags=(a,b)"]
  run_main(*args, env=env)
  run_main(*args, "--config.train.steps=30", "--config.train.allow_config_change=true", env=env)
  run_id = (tmp_path / "run" / "wandb_run_id").read_text().strip()
  runs = glob.glob(str(tmp_path / "wandb" / "wandb" / "offline-run-*"))
  assert len(runs) == 2 and {r.rsplit("-", 1)[1] for r in runs} == {run_id}
  assert all(glob.glob(os.path.join(r, "*.wandb")) for r in runs)


def test_wandb_without_the_package_is_one_clear_error(tmp_path, monkeypatch):
  import builtins
  real_import = builtins.__import__
  monkeypatch.setattr(builtins, "__import__",
                      lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name)) if name == "wandb"
                      else real_import(name, *a, **k))
  with pytest.raises(Exception, match=r"pip install -e '\.\[wandb\]'"):
    metrics.WandB(tiny_config(**{"log.wandb_project": "p"}), str(tmp_path))


def test_profile_steps_write_a_trace_tensorboard_reads(tmp_path):
  train.train(tiny_config(**{"train.profile_steps": (4, 8)}), str(tmp_path))
  assert glob.glob(str(tmp_path / "tensorboard" / "plugins" / "profile" / "*" / "*.xplane.pb"))
  with pytest.raises(Exception, match=r"train.profile_steps=\(8, 4\) must be \(START, END\)"):
    train.train(tiny_config(**{"train.profile_steps": (8, 4)}), str(tmp_path / "bad"))


def test_layer_stats_are_the_norms_of_each_group(tmp_path):
  config = tiny_config(**{"log.layer_stats": True, "log.layer_groups": (r"^h_\d+/(attn|mlp)", r"^[^/]+"),
                          "train.checkpoint_every": 1, "train.keep_checkpoints": 2})
  train.train(config, str(tmp_path))
  row = read_metrics(tmp_path, "train")[-1]
  assert row["step"] == 20
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=2)
  abstract = jax.eval_shape(train.Run(config, str(tmp_path)).init_state)
  after, before = (ckpt.restore(s, abstract).params for s in (20, 19))
  names = optim.param_names(after)
  leaves = [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(after)]
  deltas = [a - np.asarray(b, np.float64) for a, b in zip(leaves, jax.tree_util.tree_leaves(before))]
  groups = {"h_0/attn", "h_0/mlp", "wte"} & {k.split("/", 1)[1] for k in row if k.startswith("param_norm/")}
  assert len(groups) == 3
  for group in groups:
    members = [i for i, n in enumerate(names) if n.startswith(group)]
    np.testing.assert_allclose(row[f"param_norm/{group}"], np.sqrt(sum(np.sum(leaves[i] ** 2) for i in members)),
                               rtol=1e-5)
    np.testing.assert_allclose(row[f"update_norm/{group}"], np.sqrt(sum(np.sum(deltas[i] ** 2) for i in members)),
                               rtol=1e-3)
    assert row[f"grad_norm/{group}"] > 0
  plain = tmp_path / "plain"
  train.train(tiny_config(), str(plain))
  assert not any("/" in k for r in read_metrics(plain, "train") for k in r)  # Off: no statistics computed.


def test_extra_eval_sets_get_their_own_rows_and_report_column(tmp_path):
  config = tiny_config(**{"eval.extra": ("shifted:markov.seed=99",)})
  train.train(config, str(tmp_path))
  extra, val = read_metrics(tmp_path, "shifted"), read_metrics(tmp_path, "val")
  assert [r["step"] for r in extra] == [r["step"] for r in val] == [10, 20]
  assert extra[-1]["loss"] != val[-1]["loss"]  # Other sequences: another score.
  report.write(str(tmp_path / "report"), [str(tmp_path)])
  assert "shifted loss (eval.extra)" in open(tmp_path / "report" / "report.md").read()
  events = glob.glob(str(tmp_path / "tensorboard" / "events*"))
  assert events and b"shifted/loss" in open(events[0], "rb").read()


def test_an_extra_eval_set_with_other_token_ids_is_refused(tmp_path):
  (tmp_path / "a.txt").write_text("abcabcabd " * 400)
  (tmp_path / "b.txt").write_text("xyz xyzzy " * 400)
  config = tiny_config(**{"data.name": "text", "data.path": str(tmp_path / "a.txt"),
                          "eval.extra": (f"other:path={tmp_path / 'b.txt'}",)})
  with pytest.raises(DataError, match="eval.extra 'other': its token ids mean other symbols"):
    train.Run(config, str(tmp_path / "run"))


def test_warmup_starts_above_zero_as_nanogpt():
  lr = optim.learning_rate(tiny_config(**{"optim.lr": 1.0, "optim.warmup_steps": 4, "train.steps": 20}))
  np.testing.assert_allclose([float(lr(i)) for i in range(5)], [0.2, 0.4, 0.6, 0.8, 1.0], rtol=1e-6)


def test_logged_lr_is_the_applied_updates_after_skipped_steps(tmp_path):
  # lr=1e30: the first update blows the parameters up, every later step is skipped (three allowed).
  run_main("--config", "configs/quickstart.py:tiny", "--workdir", tmp_path, "--config.optim.lr=1e30",
           "--config.optim.warmup_steps=1", "--config.optim.skip_nonfinite=3", "--config.train.log_every=1",
           check=False)
  rows = read_metrics(tmp_path, "train")
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  first = float(optim.learning_rate(tiny_config(**{"optim.lr": 1e30, "optim.warmup_steps": 1}))(0))
  assert [r["lr"] for r in rows] == [pytest.approx(first, rel=1e-6)] * 4  # Only update 0 was applied.
  assert all(r["model_flops_per_s_per_device"] == r["model_flops_per_s"] for r in rows)  # One device.


def test_model_flops_per_device_divide_by_the_devices(tmp_path):
  run_main("--config", "configs/quickstart.py:tiny", "--workdir", tmp_path, "--config.parallel.strategy=pmap")
  row = read_metrics(tmp_path, "train")[-1]
  assert row["model_flops_per_s_per_device"] == pytest.approx(row["model_flops_per_s"] / 8)
  assert json.load(open(tmp_path / "run.json"))["hardware"]["devices_used"] == 8
