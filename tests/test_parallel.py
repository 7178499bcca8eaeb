"""Every strategy trains the same model as `single`, and checkpoints move between topologies.

Tolerance: the strategies add the same sums in a different order (per-device partial sums, psum), so
float32 results agree to rounding, not bitwise: losses to 1e-5 relative, parameters to 2e-5 absolute
after 20 AdamW steps (Adam's normalisation amplifies the rounding of tiny gradients a little).
"""
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from pretrain import tree
from pretrain.trainer import parallel, run_dir, train
from tests.conftest import ROOT, read_metrics, run_main, tiny_config

STRATEGIES = {
    "pmap": {"parallel.strategy": "pmap"},
    "mesh_data": {"parallel.strategy": "mesh", "parallel.mesh_shape": "(8,1)"},
    "mesh_fsdp": {"parallel.strategy": "mesh", "parallel.mesh_shape": "(1,8)"},
    "mesh_2x4": {"parallel.strategy": "mesh", "parallel.mesh_shape": "(2,4)"},
    "tensor_2x2x2": {"parallel.strategy": "mesh", "parallel.mesh_shape": "(2,2,2)"},
    "tensor_1x1x8": {"parallel.strategy": "mesh", "parallel.mesh_shape": "(1,1,8)"},
    "tensor_4x1x2": {"parallel.strategy": "mesh", "parallel.mesh_shape": "(4,1,2)"},
}


def _params(workdir):
  return jax.tree_util.tree_leaves(run_dir.load(str(workdir)).params)


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("single")
  train.train(tiny_config(**{"model.width": 64}), str(workdir))
  return workdir


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_strategy_matches_single(single_run, tmp_path, name):
  assert jax.device_count() == 8
  train.train(tiny_config(**{"model.width": 64, **STRATEGIES[name]}), str(tmp_path))
  for split in ("train", "val"):
    a, b = read_metrics(single_run, split), read_metrics(tmp_path, split)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=1e-5)
  for x, y in zip(_params(single_run), _params(tmp_path)):
    np.testing.assert_allclose(y, x, atol=2e-5)


def test_fsdp_shards_parameters_and_optimizer_state():
  config = tiny_config(**{"model.width": 64, "parallel.strategy": "mesh", "parallel.mesh_shape": "(2,4)",
                          "parallel.fsdp_rules": "('wpe/embedding=1',)"})
  run = train.Run(config, "/tmp/unused-fsdp")
  state = run.strategy.place(run.init_state())
  specs = {tree.path_name(path): x.sharding.spec
           for path, x in jax.tree_util.tree_leaves_with_path(state)}
  kernel = [k for k in specs if k.endswith("mlp/c_fc/kernel")]
  assert kernel and all("fsdp" in tuple(specs[k]) for k in kernel)  # params and both Adam moments
  assert tuple(specs["params/wpe/embedding"]) == (None, "fsdp")  # a regex rule picks the dim
  assert tuple(specs["step"]) == ()
  shard = next(x for p, x in jax.tree_util.tree_leaves_with_path(state) if "c_fc" in str(p) and x.ndim == 2)
  assert shard.addressable_shards[0].data.shape[1] == shard.shape[1] // 4


def test_the_tensor_axis_splits_heads_hidden_units_and_vocabulary():
  config = tiny_config(**{"model.width": 64, "model.vocab_size": 64, "parallel.strategy": "mesh",
                          "parallel.mesh_shape": "(2,2,2)"})
  run = train.Run(config, "/tmp/unused-tensor")
  state = run.strategy.place(run.init_state())
  specs = {tree.path_name(path): tuple(x.sharding.spec) for path, x in jax.tree_util.tree_leaves_with_path(state)}
  assert specs["params/h_0/attn/c_attn/kernel"] == ("fsdp", "tensor")  # Heads' q/k/v columns over tensor.
  assert specs["params/h_0/attn/c_proj/kernel"] == ("tensor", "fsdp")  # Back by the heads' rows.
  assert specs["params/h_0/mlp/c_fc/kernel"] == ("fsdp", "tensor")
  assert specs["params/h_0/mlp/c_proj/kernel"][0] == "tensor"
  assert specs["params/wte/embedding"][0] == "tensor"  # Over the vocabulary.
  moments = [k for k in specs if k.endswith("h_0/mlp/c_fc/kernel") and k.startswith("opt_state")]
  assert moments and all(specs[k] == ("fsdp", "tensor") for k in moments)
  kernel = state.params["h_0"]["mlp"]["c_fc"]["kernel"]
  assert kernel.addressable_shards[0].data.shape == (64 // 2, 256 // 2)


def test_a_checkpoint_moves_from_data_parallel_8_to_tensor_parallel_to_4_devices(tmp_path):
  common = {"model.width": 64, "model.vocab_size": 64, "train.steps": 30, "optim.decay_steps": 30,
            "train.log_every": 5, "train.eval_every": 10, "train.checkpoint_every": 10,
            "train.async_checkpoints": False, "parallel.strategy": "mesh"}
  reference = tmp_path / "reference"
  train.train(tiny_config(**{**common, "parallel.mesh_shape": "(8,1,1)"}), str(reference))
  moved = str(tmp_path / "moved")
  train.train(tiny_config(**{**common, "train.steps": 10, "parallel.mesh_shape": "(8,1,1)"}), moved)
  train.train(tiny_config(**{**common, "train.steps": 20, "parallel.mesh_shape": "(2,2,2)"}), moved)
  train.train(tiny_config(**{**common, "parallel.mesh_shape": "(1,2,2)"}), moved)  # 4 of the 8 devices.
  a, b = read_metrics(reference), read_metrics(moved)
  assert [(r["step"], r["split"]) for r in a] == [(r["step"], r["split"]) for r in b]
  np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=2e-5)


def test_bad_mesh_shapes_are_config_errors():
  from pretrain.errors import ConfigError
  for shape in ("(3,-1)", "(16,1)", "(-1,-1)", "(2,2,2,1)", "(2,-1,-1)"):
    with pytest.raises(ConfigError, match="mesh_shape"):
      parallel.make(tiny_config(**{"parallel.strategy": "mesh", "parallel.mesh_shape": shape}))
  with pytest.raises(ConfigError, match="not divisible by the 8 devices"):
    train.Run(tiny_config(**{"parallel.strategy": "pmap", "train.batch_size": 12}), "/tmp/unused")


def test_checkpoint_moves_pmap8_to_single_to_fsdp4(tmp_path):
  """Save under pmap on 8 devices, resume on 1 device, then on a 4-device FSDP mesh."""
  common = {"model.width": 64, "train.steps": 30, "optim.decay_steps": 30, "train.log_every": 5,
            "train.eval_every": 10, "train.checkpoint_every": 10, "train.async_checkpoints": False}
  reference = tmp_path / "reference"
  train.train(tiny_config(**common), str(reference))
  moved = str(tmp_path / "moved")
  train.train(tiny_config(**{**common, "train.steps": 10, "parallel.strategy": "pmap"}), moved)
  train.train(tiny_config(**{**common, "train.steps": 20}), moved)
  train.train(tiny_config(**{**common, "parallel.strategy": "mesh", "parallel.mesh_shape": "(1,4)"}), moved)
  a, b = read_metrics(reference), read_metrics(moved)
  assert [(r["step"], r["split"]) for r in a] == [(r["step"], r["split"]) for r in b]
  np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=2e-5)


def _launch(workdir, *extra, processes=2, devices=2):
  return subprocess.Popen([sys.executable, "-m", "launch.multiprocess", "--processes", str(processes),
                           "--devices-per-process", str(devices), "--", "--config", "configs/quickstart.py:tiny",
                           "--workdir", str(workdir), "--config.train.steps=30", *extra],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True)


def test_two_processes_match_one_process_and_resume_after_kill(tmp_path):
  one = tmp_path / "one"
  run_main("--config", "configs/quickstart.py:tiny", "--workdir", one, "--config.train.steps=30",
           "--config.parallel.strategy=mesh", env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
  two = tmp_path / "two"
  proc = _launch(two)
  deadline = time.time() + 240
  while time.time() < deadline and not (two / "checkpoints" / "10").exists():
    time.sleep(0.1)
  os.killpg(proc.pid, signal.SIGKILL)  # every process of the job, as a preemption would
  proc.wait()
  assert proc.returncode == -9 and (two / "checkpoints" / "10").exists()
  assert not (two / "checkpoints" / "30").exists(), "the kill landed after the last step"
  proc = _launch(two)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out[-3000:]
  assert "resumed from" in out
  a, b = read_metrics(one), read_metrics(two)
  assert [(r["step"], r["split"]) for r in a] == [(r["step"], r["split"]) for r in b]
  np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=1e-5)


def _process_pid(workdir, process_id: int) -> int | None:
  """The pid of the job's pretrain.main process `process_id`, from /proc."""
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
      environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    except OSError:
      continue
    if b"pretrain.main" in cmdline and str(workdir).encode() in cmdline and \
        f"PRETRAIN_PROCESS_ID={process_id}".encode() in environ:
      return int(pid)
  return None


def test_one_signalled_process_stops_the_job_at_one_step(tmp_path):
  """SIGTERM to process 1 only: both processes agree at the next log step, save one checkpoint of it
  together and exit 143; the rerun ends with the uninterrupted run's losses."""
  full, part = tmp_path / "full", tmp_path / "part"
  steps = ["--config.train.steps=60", "--config.train.checkpoint_every=60", "--config.train.eval_every=30"]
  proc = _launch(full, *steps)
  assert proc.wait(timeout=400) == 0, proc.stdout.read()[-3000:]
  proc = _launch(part, *steps)
  deadline = time.time() + 240
  while time.time() < deadline and not ((part / "metrics.jsonl").exists() and
                                        '"split": "train"' in (part / "metrics.jsonl").read_text()):
    time.sleep(0.05)
  os.kill(_process_pid(part, 1), signal.SIGTERM)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 143, out[-3000:]
  saved = [int(p.name) for p in (part / "checkpoints").iterdir() if p.name.isdigit()]
  assert len(saved) == 1 and saved[0] % 5 == 0 and saved[0] < 60  # One checkpoint, at a log step.
  assert "stopped by signal 15" in (part / "logs" / "process_1.log").read_text()
  proc = _launch(part, *steps)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out[-3000:]
  a, b = read_metrics(full), read_metrics(part)
  assert [(r["step"], r["split"]) for r in a] == [(r["step"], r["split"]) for r in b]
  assert [r["loss"] for r in a if r["split"] == "val"] == [r["loss"] for r in b if r["split"] == "val"]


def test_multiprocess_dry_run_prints_each_process():
  out = subprocess.run([sys.executable, "-m", "launch.multiprocess", "--processes", "3", "--devices-per-process",
                        "2", "--port", "1234", "--dry-run", "--", "--config", "c.py", "--workdir", "w"],
                       cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines()
  assert len(out) == 3
  for i, line in enumerate(out):
    assert f"PRETRAIN_PROCESS_ID={i}" in line and "PRETRAIN_COORDINATOR=127.0.0.1:1234" in line
    assert "--xla_force_host_platform_device_count=2" in line
    assert line.endswith("-m pretrain.main --config c.py --workdir w --config.parallel.strategy=mesh "
                         "--config.parallel.cpu_devices=2")


def test_pmap_saves_one_replica_without_a_host_copy():
  """for_checkpoint takes device 0's replica where it lies: no device-to-host or host-to-device copy."""
  config = tiny_config(**{"parallel.strategy": "pmap"})
  run = train.Run(config, "/tmp/unused-pmap-save")
  fresh = run.init_state()
  state = run.strategy.place(fresh)
  with jax.transfer_guard("disallow_explicit"):  # Host-to-device copies raise (CPU reads are not guarded).
    saved = run.strategy.for_checkpoint(state)
  for x, want in zip(jax.tree_util.tree_leaves(saved), jax.tree_util.tree_leaves(fresh)):
    assert x.sharding.device_set == {jax.local_devices()[0]} and x.shape == want.shape
    np.testing.assert_array_equal(np.asarray(x), np.asarray(want))


def test_fsdp_state_is_never_whole_on_one_device(tmp_path):
  """Init and resume under FSDP on 8 devices, watched by a thread that lists jax.live_arrays() every
  millisecond: no single device ever holds an array of a sharded leaf's full shape (leaves larger than
  the largest shard of any leaf, so that no shard can have such a shape)."""
  import threading
  config = tiny_config(**{"model.width": 64, "parallel.strategy": "mesh", "parallel.mesh_shape": "(1,8)",
                          "train.steps": 10, "train.checkpoint_every": 5, "train.eval_every": 10})
  run = train.Run(config, str(tmp_path / "probe"))
  shapes = jax.eval_shape(run.init_state)
  abstract = run.strategy.abstract(shapes)
  leaves = jax.tree_util.tree_leaves(abstract)
  largest_shard = max(np.prod(x.sharding.shard_shape(x.shape)) for x in leaves)
  sharded = {x.shape for x in leaves if not x.sharding.is_fully_replicated and np.prod(x.shape) > largest_shard}
  assert (64, 256) in sharded and (256, 64) in sharded  # the MLP kernels and their moments, among others
  whole, stop = [], threading.Event()

  def watch():
    while not stop.is_set():
      for x in jax.live_arrays():
        try:
          if x.shape in sharded and len(x.sharding.device_set) == 1:
            whole.append(x.shape)
        except Exception:  # deleted (donated) while being looked at
          pass
      time.sleep(0.001)

  watcher = threading.Thread(target=watch, daemon=True)
  watcher.start()
  try:
    state = parallel.init(run.init_state, abstract)
    assert all(x.sharding.is_equivalent_to(a.sharding, x.ndim) for x, a in
               zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(abstract)))
    del state
    train.train(config, str(tmp_path / "run"))  # init, 10 steps, checkpoints 5 and 10
    config.train.steps = 15
    train.train(config, str(tmp_path / "run"))  # restored into the sharded abstract state
  finally:
    stop.set()
    watcher.join()
  assert not whole, sorted(set(whole))[:5]


def test_sampling_on_a_tensor_parallel_mesh_continues_as_one_device_does(tmp_path):
  text = tmp_path / "text.txt"
  text.write_text("the cat sat on the mat. the dog sat on the log. " * 200)
  run_main("--config", "configs/quickstart.py:tiny", "--config.data.name=text", "--config.data.tokenizer=byte",
           f"--config.data.path={text}", "--config.train.steps=40", "--workdir", tmp_path / "run")
  sample = ["--workdir", tmp_path / "run", "--prompt", "the dog", "--max_new_tokens", "16", "--temperature", "0"]
  one = run_main(*sample, module="pretrain.sample").stdout
  for shape in ("1,1,8", "2,2,2"):
    assert run_main(*sample, "--mesh_shape", shape, module="pretrain.sample").stdout == one
