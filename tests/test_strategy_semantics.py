"""The same global batch means the same update under every strategy, also where a step has per-example
state or randomness: BatchNorm statistics, gradient accumulation's micro-batches, dropout.

Meaning (documented in models/resnet.py, step.micro_batches and README's parallel section):
- BatchNorm normalizes with the statistics of the whole global (micro-)batch; pmap synchronises them.
- Micro-batch i holds rows i, i + A, ...: the same rows under single, pmap and mesh, spread over every device.
- Dropout: single and mesh draw the same masks (one key for the global batch); pmap draws each device's
  masks from its own key, so its masks differ from single's while having the same distribution.
"""
import jax
import numpy as np
import pytest

from pretrain.trainer import run_dir, step, train
from tests.conftest import read_metrics, tiny_config
from tests.test_zoo_e2e import digits  # noqa: F401  (80 fake digits, 20 x 20)

STRATEGIES = {"single": {}, "pmap": {"parallel.strategy": "pmap"},
              "mesh": {"parallel.strategy": "mesh", "parallel.mesh_shape": "(4,2)"}}
SHORT = {"train.steps": 6, "train.log_every": 1, "train.eval_every": 6, "train.checkpoint_every": 6,
         "optim.warmup_steps": 1, "train.steps_per_call": 1}


def _resnet(digits, **overrides):
  return tiny_config(**{"objective": "classification", "model.family": "resnet", "model.stage_sizes": "(1, 1)",
                        "model.stage_widths": "(4, 8)", "data.name": "idx", "data.path": digits,
                        "data.splits": "('train:64', 'test:*')", "data.val_split": "test", "data.preprocess": "('scale',)",
                        "train.batch_size": 32, "eval.batch_size": 8, **SHORT, **overrides})


def _losses(workdir):
  return [r["loss"] for r in read_metrics(workdir) if r["split"] in ("train", "val")]


@pytest.mark.parametrize("accum", [1, 2])
def test_batchnorm_is_the_same_under_every_strategy(digits, tmp_path, accum):
  runs = {}
  for name, overrides in STRATEGIES.items():
    train.train(_resnet(digits, **{"optim.accum_steps": accum, **overrides}), str(tmp_path / name))
    runs[name] = tmp_path / name
  reference = run_dir.load(str(runs["single"])).model_state
  for name in ("pmap", "mesh"):
    np.testing.assert_allclose(_losses(runs[name]), _losses(runs["single"]), rtol=2e-5, err_msg=name)
    stats = run_dir.load(str(runs[name])).model_state
    for a, b in zip(jax.tree_util.tree_leaves(stats), jax.tree_util.tree_leaves(reference)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("name", ["pmap", "mesh", "fsdp"])
def test_accumulation_matches_single_under_each_strategy(tmp_path, name):
  strategy = {"fsdp": {"parallel.strategy": "mesh", "parallel.mesh_shape": "(2,4)"}}.get(name, STRATEGIES.get(name))
  common = {**SHORT, "model.width": 64, "optim.accum_steps": 2, "train.batch_size": 16}
  train.train(tiny_config(**common), str(tmp_path / "single"))
  train.train(tiny_config(**common, **strategy), str(tmp_path / name))
  np.testing.assert_allclose(_losses(tmp_path / name), _losses(tmp_path / "single"), rtol=2e-5)


def test_micro_batches_stay_on_every_device():
  """Strided micro-batches of a batch sharded over 8 devices: each device holds rows of every micro-batch,
  so each micro-batch is computed by all 8 devices with no data moved."""
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  mesh = Mesh(np.array(jax.devices()), ("data",))
  batch = jax.device_put(np.arange(64 * 3).reshape(64, 3), NamedSharding(mesh, P("data")))
  micro = jax.jit(lambda b: step.micro_batches(b, 4))(batch)
  assert micro.shape == (4, 16, 3)
  for shard in micro.addressable_shards:
    assert shard.data.shape == (4, 2, 3)  # every micro-batch, 2 rows of it, on each device
  np.testing.assert_array_equal(np.asarray(micro)[1, :, 0], np.arange(1, 64, 4) * 3)  # rows 1, 5, 9, ...


def test_dropout_under_mesh_equals_single_and_under_pmap_differs_only_in_its_masks(tmp_path):
  common = {**SHORT, "model.width": 64, "model.dropout": 0.2, "optim.accum_steps": 2, "train.batch_size": 16}
  for name in STRATEGIES:
    train.train(tiny_config(**common, **STRATEGIES[name]), str(tmp_path / name))
  single, mesh, pmap = (np.array(_losses(tmp_path / n)) for n in ("single", "mesh", "pmap"))
  np.testing.assert_allclose(mesh, single, rtol=2e-5)
  assert not np.allclose(pmap, single, rtol=1e-4)  # per-device keys: other masks ...
  np.testing.assert_allclose(pmap, single, rtol=0.05)  # ... of the same rate: the losses stay close


@pytest.mark.parametrize("overrides", [
    {"parallel.strategy": "pmap", "eval.batch_size": 13},  # padded to 16 on 8 devices
    {"parallel.strategy": "mesh", "parallel.mesh_shape": "(4,2)", "eval.batch_size": 20, "eval.micro_batch_size": 4},
    {"eval.batch_size": 24, "eval.micro_batch_size": 5}])  # 5 rows at a time, 5 micro-batches: 25 rows a call
def test_any_eval_batch_size_gives_the_whole_split_loss(tmp_path, overrides):
  from pretrain import configlib
  common = {**SHORT, "train.eval_every": 3}
  train.train(tiny_config(**common), str(tmp_path / "reference"))
  config = tiny_config(**common, **overrides)
  rows_per_call, micro = configlib.eval_batching(config, 8 if "parallel.strategy" in overrides else 1)
  assert rows_per_call >= overrides["eval.batch_size"] and rows_per_call % micro == 0
  train.train(config, str(tmp_path / "other"))
  a, b = read_metrics(tmp_path / "reference", "val"), read_metrics(tmp_path / "other", "val")
  assert [r["count"] for r in a] == [r["count"] for r in b]  # every token once, none of the padding
  np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=1e-5)


def test_gpt2_124m_eval_needs_no_more_memory_than_its_training():
  """configs/gpt2_124m.py's shapes (batch 480 = 40 micro-batches of 12, context 1024, vocabulary 50304),
  one narrow layer: XLA's compiled temporary memory of the eval step is at most the train step's. Without
  micro-batching the eval step would hold 480 x 1024 x 50304 logits (~99 GB)."""
  from pretrain import configlib, data
  config = configlib.load("configs/gpt2_124m.py:smoke", [
      ("model.context", "1024"), ("model.num_layers", "1"), ("model.width", "64"), ("data.random_tokens", str(1 << 20)),
      ("model.vocab_size", "50304"), ("train.batch_size", "480"), ("optim.accum_steps", "40")])
  run = train.Run(config, "/tmp/unused-gpt2-eval-memory")
  abstract = jax.eval_shape(run.init_state)
  shape = lambda tree: jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
  train_step = jax.jit(step.make_multi_step(step.make_train_step(run.model, run.parts.objective.loss, run.tx, seed=0,
                                                                 accum_steps=40), 1))
  eval_step = jax.jit(step.make_eval_step(run.model, run.parts.objective.loss, accum_steps=run.eval_accum_steps))
  assert (run.eval_batch_size, run.eval_accum_steps) == (480, 40)
  eval_batch = data.eval_batch(run.dataset.val, 0, batch_size=480, seq_len=run.seq_len)
  memory = lambda f, *args: f.lower(*args).compile().memory_analysis().temp_size_in_bytes
  train_bytes = memory(train_step, abstract, shape(run.batches(0, 1)))
  eval_bytes = memory(eval_step, abstract, shape(eval_batch))
  assert eval_bytes <= train_bytes, (eval_bytes, train_bytes)
