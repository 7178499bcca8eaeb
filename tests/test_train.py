"""End to end: a tiny run trains, checkpoints, is killed, resumes and matches the uninterrupted run."""
import os
import signal
import subprocess
import sys
import time

import numpy as np

from tests.conftest import ROOT, read_metrics, run_main

TINY = ["--config", "configs/quickstart.py:tiny"]


def test_train_kill_resume_matches_uninterrupted(tmp_path):
  full, killed = tmp_path / "full", tmp_path / "killed"
  run_main(*TINY, "--workdir", full, "--config.train.steps=40")
  proc = subprocess.Popen([sys.executable, "-m", "pretrain.main", *TINY, "--workdir", str(killed),
                           "--config.train.steps=40"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  ckpts = killed / "checkpoints"
  while time.time() < deadline and not (ckpts.exists() and any(p.name.isdigit() for p in ckpts.iterdir())):
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert ckpts.exists() and any(p.name.isdigit() for p in ckpts.iterdir()), "no checkpoint before the kill"
  run_main(*TINY, "--workdir", killed, "--config.train.steps=40")
  a, b = read_metrics(full), read_metrics(killed)
  assert [(r["step"], r["split"]) for r in a] == [(r["step"], r["split"]) for r in b]
  for x, y in zip(a, b):
    assert x["loss"] == y["loss"], (x, y)  # CPU: bitwise the same run


def test_metrics_lines_and_outputs(tmp_path):
  run_main(*TINY, "--workdir", tmp_path)
  train, val = read_metrics(tmp_path, "train"), read_metrics(tmp_path, "val")
  assert [r["step"] for r in train] == [5, 10, 15, 20] and [r["step"] for r in val] == [10, 20]
  assert all(r["tokens_per_s"] > 0 and np.isfinite(r["loss"]) for r in train)
  assert {"loss", "loss_sem", "bits_per_token", "perplexity", "entropy_bits_per_token"} <= set(val[-1])
  assert os.path.exists(tmp_path / "config.json")
  assert any(f.startswith("events") for f in os.listdir(tmp_path / "tensorboard"))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10", "20"]
  # Rerunning a finished run changes nothing.
  run_main(*TINY, "--workdir", tmp_path)
  assert read_metrics(tmp_path, "train") == train


def test_grad_accumulation_and_steps_per_call_match_plain_steps(tmp_path):
  from tests.conftest import tiny_config
  from pretrain.trainer import train
  plain = train.train(tiny_config(**{"train.log_every": 10}), str(tmp_path / "a"))
  accum = train.train(tiny_config(**{"optim.accum_steps": 2, "train.log_every": 10}), str(tmp_path / "b"))
  multi = train.train(tiny_config(**{"train.steps_per_call": 5, "train.log_every": 10}), str(tmp_path / "c"))
  np.testing.assert_allclose(accum["loss"], plain["loss"], rtol=2e-5)
  np.testing.assert_allclose(multi["loss"], plain["loss"], rtol=2e-5)


def test_sample_prints_a_continuation(tmp_path):
  text = tmp_path / "t.txt"
  text.write_text("to be or not to be, that is the question.\n" * 40)
  run_main("--config", "configs/shakespeare_char.py:cpu", "--workdir", tmp_path / "w", "--config.data.path", text,
           "--config.train.steps=20", "--config.train.log_every=10", "--config.train.eval_every=20",
           "--config.train.checkpoint_every=20", "--config.model.num_layers=1", "--config.eval.batches=2")
  out = run_main("--workdir", tmp_path / "w", "--prompt", "to be", "--max_new_tokens", "30", "--top_k", "5",
                 module="pretrain.sample")
  assert out.stdout.startswith("to be") and len(out.stdout.rstrip("\n")) >= 30
  assert set(out.stdout) <= set("to be or not to be, that is the question.\n")
