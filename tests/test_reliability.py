"""Faults injected into real training subprocesses: signals, kill -9, corrupt checkpoints, non-finite
steps, changed configs, unwritable or full workdirs. RELIABILITY.md summarises what each test shows."""
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from pretrain.trainer import run_dir
from tests.conftest import ROOT, read_metrics, run_main

TINY = ["--config", "configs/quickstart.py:tiny"]
LONG = ["--config.train.steps=40", "--config.optim.decay_steps=40", "--config.train.checkpoint_every=5"]


def _start(workdir, *args, **popen):
  return subprocess.Popen([sys.executable, "-m", "pretrain.main", *TINY, "--workdir", str(workdir), *map(str, args)],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _committed(workdir):
  d = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(d):
    return []
  return sorted(int(n) for n in os.listdir(d) if n.isdigit() and os.path.exists(os.path.join(d, n, "commit_success.txt")))


def _wait_for(cond, timeout=300, interval=0.02):
  deadline = time.time() + timeout
  while time.time() < deadline and not cond():
    time.sleep(interval)
  assert cond(), "timed out"


def _params(workdir):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(run_dir.load(str(workdir)).params)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted 40-step run for each strategy, to compare the interrupted ones with."""
  out = {}
  for strategy in ("single", "pmap"):
    workdir = tmp_path_factory.mktemp(f"reference_{strategy}")
    run_main(*TINY, "--workdir", workdir, *LONG, f"--config.parallel.strategy={strategy}")
    out[strategy] = workdir
  return out


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_current_step_and_rerun_matches(reference, tmp_path, sig, code):
  proc = _start(tmp_path, *LONG, "--config.train.checkpoint_every=20")
  _wait_for(lambda: os.path.exists(tmp_path / "metrics.jsonl") and read_metrics(tmp_path, "train"))
  proc.send_signal(sig)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == code, err[-2000:]
  assert "preempted: stopped by signal" in err
  stopped_at = int(err.split(" at step ")[1].split(";")[0])
  assert stopped_at in _committed(tmp_path)  # a checkpoint at the step it stopped, whatever the interval
  run_main(*TINY, "--workdir", tmp_path, *LONG, "--config.train.checkpoint_every=20")
  assert read_metrics(tmp_path, "val")[-1]["loss"] == read_metrics(reference["single"], "val")[-1]["loss"]


def test_preemption_is_checked_inside_evaluation():
  from pretrain.trainer import train
  from tests.conftest import tiny_config
  run = train.Run(tiny_config(), "/tmp/unused-eval-stop")
  calls = []
  assert run.evaluate(lambda state, batch: calls.append(1), None, stop=lambda agree: len(calls) >= 2) is None
  assert len(calls) == 2  # stopped between batches, long before the end of the split


def test_several_processes_agree_on_a_signal_only_where_asked(monkeypatch):
  """Between log/eval/checkpoint steps no allgather runs (steps stay pipelined); where asked, one
  signalled process stops them all."""
  from pretrain.trainer import guards
  gathered = []
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(guards.multihost_utils, "process_allgather",
                      lambda x: gathered.append(x) or np.array([[0], [15]]))
  preemption = guards.Preemption()
  assert not preemption.requested(agree=False) and not gathered
  assert preemption.requested(agree=True) and len(gathered) == 1 and preemption.signal == 15


@pytest.mark.parametrize("strategy, trials", [("single", 3), ("pmap", 2)])
def test_sigkill_at_random_steps_resumes_bitwise(reference, tmp_path, strategy, trials):
  rng = random.Random(0)
  for trial in range(trials):
    workdir = tmp_path / str(trial)
    for _ in range(1 + trial % 2):  # one or two kills per trial, at a random step after a checkpoint exists
      # The run takes well under a second past its first checkpoint: the kill follows a random checkpoint at
      # once (within a few ms) so that it lands mid-run, which the asserts below make sure of.
      target = rng.choice([5, 10, 15, 20, 25])
      proc = _start(workdir, *LONG, f"--config.parallel.strategy={strategy}")
      _wait_for(lambda: max(_committed(workdir), default=0) >= target or proc.poll() is not None, interval=0.001)
      time.sleep(rng.uniform(0.0, 0.005))
      proc.kill()
      proc.wait()
      assert proc.returncode == -9, "the run ended before the kill"
      assert max(_committed(workdir)) < 40, "the kill landed after the last checkpoint"
    run_main(*TINY, "--workdir", workdir, *LONG, f"--config.parallel.strategy={strategy}")
    for x, y in zip(_params(reference[strategy]), _params(workdir)):
      np.testing.assert_array_equal(x, y)


def _train_to_20(workdir):
  run_main(*TINY, "--workdir", workdir, *LONG, "--config.train.steps=20", "--config.train.checkpoint_every=10")
  assert _committed(workdir) == [10, 20]


def _corrupt_missing_marker(folder):
  os.remove(os.path.join(folder, "commit_success.txt"))


def _corrupt_truncated_array(folder):
  files = [os.path.join(d, f) for d, _, names in os.walk(folder) for f in names if os.sep + "d" + os.sep in os.path.join(d, f)]
  assert files
  for f in files:
    with open(f, "r+b") as fh:
      fh.truncate(max(os.path.getsize(f) // 3, 1))


@pytest.mark.parametrize("corrupt", [_corrupt_missing_marker, _corrupt_truncated_array])
def test_corrupt_latest_checkpoint_is_skipped_and_kept(reference, tmp_path, corrupt):
  _train_to_20(tmp_path)
  corrupt(tmp_path / "checkpoints" / "20")
  proc = run_main(*TINY, "--workdir", tmp_path, *LONG, "--config.train.checkpoint_every=10")
  assert f"warning: skipping checkpoint {tmp_path / 'checkpoints' / '20'}" in proc.stdout
  assert "resumed from" in proc.stdout and proc.stdout.split("resumed from ")[1].split()[0].endswith("/10")
  assert any(n.startswith("20.corrupt-") for n in os.listdir(tmp_path / "checkpoints"))  # moved aside, not deleted
  assert read_metrics(tmp_path, "val")[-1]["loss"] == read_metrics(reference["single"], "val")[-1]["loss"]


def test_unfinished_orbax_temporary_save_is_ignored(reference, tmp_path):
  _train_to_20(tmp_path)
  tmp = tmp_path / "checkpoints" / "30.orbax-checkpoint-tmp-1234567"
  shutil.copytree(tmp_path / "checkpoints" / "20", tmp)
  run_main(*TINY, "--workdir", tmp_path, *LONG, "--config.train.checkpoint_every=10")
  assert read_metrics(tmp_path, "val")[-1]["loss"] == read_metrics(reference["single"], "val")[-1]["loss"]


def test_last_good_checkpoint_exists_at_every_moment(tmp_path):
  seen, stop = [], threading.Event()

  def watch():
    while not stop.is_set():
      seen.append(len(_committed(tmp_path)))
      time.sleep(0.002)

  thread = threading.Thread(target=watch)
  thread.start()
  try:
    run_main(*TINY, "--workdir", tmp_path, *LONG, "--config.train.checkpoint_every=1", "--config.train.keep_checkpoints=1")
  finally:
    stop.set()
    thread.join()
  first = seen.index(1)
  assert min(seen[first:]) >= 1, "a moment with no committed checkpoint after the first one"
  assert _committed(tmp_path) == [40]


def _limit_file_size():
  signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of killing
  resource.setrlimit(resource.RLIMIT_FSIZE, (48 * 1024, 48 * 1024))


def test_full_disk_at_save_is_a_clear_error_and_keeps_the_last_checkpoint(reference, tmp_path):
  _train_to_20(tmp_path)
  proc = _start(tmp_path, *LONG, "--config.train.checkpoint_every=10", preexec_fn=_limit_file_size)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 2, err[-2000:]
  line = [l for l in err.splitlines() if l.startswith("error:")]
  assert line and "checkpoint" in line[0] and "free space" in line[0], err[-2000:]
  assert 20 in _committed(tmp_path)
  run_main(*TINY, "--workdir", tmp_path, *LONG, "--config.train.checkpoint_every=10")  # space is back
  assert read_metrics(tmp_path, "val")[-1]["loss"] == read_metrics(reference["single"], "val")[-1]["loss"]


def test_unwritable_workdir_fails_at_start(tmp_path):
  (tmp_path / "file").write_text("not a directory")
  proc = run_main(*TINY, "--workdir", tmp_path / "file" / "run", check=False)
  assert proc.returncode == 2 and "error: cannot write to --workdir" in proc.stderr


def test_nonfinite_step_stops_with_step_and_group(tmp_path):
  proc = run_main(*TINY, "--workdir", tmp_path, "--config.optim.lr=1e30", "--config.optim.warmup_steps=1", check=False)
  assert proc.returncode == 2, proc.stderr[-2000:]
  line = [l for l in proc.stderr.splitlines() if l.startswith("error:")][0]
  # lr=1e30 blows up the parameters at the first update, so step 2's gradients (not only its loss) are non-finite:
  # the message names the first parameter group, by its '/'-joined name, and the last checkpoint (none).
  assert re.search(r"non-finite loss or gradient at step 2, first in \w+(/\w+)+; nothing was saved after step 0",
                   line), line
  assert _committed(tmp_path) == []  # nothing saved after the fault


def test_bounded_skip_mode_logs_each_skip_then_stops(tmp_path):
  proc = run_main(*TINY, "--workdir", tmp_path, "--config.optim.lr=1e30", "--config.optim.warmup_steps=1",
                  "--config.optim.skip_nonfinite=3", check=False)
  assert proc.returncode == 2
  events = read_metrics(tmp_path, "events")
  assert [e["skipped_nonfinite"] for e in events] == [1, 2, 3]
  assert all("group" in e for e in events) and proc.stdout.count("skipped: non-finite") == 3


def test_resuming_with_a_different_model_is_refused_before_writing(tmp_path):
  run_main(*TINY, "--workdir", tmp_path)
  before = {f: open(tmp_path / f).read() for f in ("metrics.jsonl", "config.json")}
  proc = run_main(*TINY, "--workdir", tmp_path, "--config.model.width=64", "--config.train.steps=30", check=False)
  assert proc.returncode == 2 and "model.width: 32 -> 64" in proc.stderr and "new --workdir" in proc.stderr
  assert before == {f: open(tmp_path / f).read() for f in before}
  proc = run_main(*TINY, "--workdir", tmp_path, "--config.data.markov.num_val=32", "--config.train.steps=30",
                  "--config.train.allow_config_change=true")
  assert read_metrics(tmp_path, "train")[-1]["step"] == 30


def test_nothing_is_unpickled():
  offenders = []
  for folder in ("pretrain", "launch"):
    for d, _, names in os.walk(os.path.join(ROOT, folder)):
      for name in names:
        if name.endswith(".py"):
          text = open(os.path.join(d, name)).read()
          if "import pickle" in text or "allow_pickle=True" in text or "torch.load(" in text:
            offenders.append(name)
  assert not offenders
