"""From a config, or a saved run, to what runs it: the dataset, the model (family network under the objective's
wrapper), an example batch, the optimizer and the abstract train state. Training, evaluation, sampling, Hugging
Face conversion and fine-tuning all go through here; where a run keeps its files is pretrain/trainer/layout.py.

Order (one way, always): data -> family module builds the network -> the objective wraps it -> the optimizer ->
the state's abstract shape from an example batch (nothing is allocated until a strategy places it).
"""
import dataclasses
import functools
import json
import os
import types
from typing import Callable

import jax
import numpy as np

from pretrain import configlib, data, models, objectives, plugins, storage
from pretrain.models import lora
from pretrain.trainer import checkpoint, layout, ledger, metrics, optim, step
from pretrain.errors import CheckpointError, ConfigError


@dataclasses.dataclass
class Parts:
  config: object
  dataset: data.Dataset
  family: object  # The family module.
  objective: object  # The objective module.
  model: object  # The flax module the objective trains.
  tx: object  # The optax transformation.
  seq_len: int  # Tokens the model reads per example (1 for an image).
  example_inputs: object  # One example's model inputs, for shapes.
  init_state: Callable  # () -> a fresh TrainState from the config's seed.
  shapes: step.TrainState  # Its abstract shape.

  @property
  def forward_flops(self) -> float:
    """XLA's FLOP count of one example's forward pass."""
    shapes = self.shapes
    variables = step.variables(shapes.params, shapes.model_state)
    cost = jax.jit(lambda v, x: self.model.apply(v, x)).lower(variables, self.example_inputs).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", 0.0))

  def flops_per_token(self) -> float:
    return models.flops_per_token(self.config, self.shapes.params, lambda: self.forward_flops)


def build_model(config, dataset, data_axis=None, family=None, objective=None):
  """The family's network, wrapped as the objective trains it; refuses a family the objective cannot train."""
  family = family or models.family(config)
  objective = objective or objectives.load(config)
  models.check_reads(config, dataset)
  if not objectives.accepts(objective, config.objective, family):
    fits = [name for name in plugins.builtins(plugins.FAMILY)
            if objectives.accepts(objective, config.objective, plugins.builtin(plugins.FAMILY, name))]
    if fits:
      raise ConfigError(f"objective={config.objective} trains model.family {' or '.join(fits)}, not "
                        f"{config.model.family}; set --config.model.family={fits[0]} or another objective")
    raise ConfigError(f"objective={config.objective}: model.family={config.model.family} does not list it in its "
                      f"OBJECTIVES {tuple(getattr(family, 'OBJECTIVES', ()))} and no built-in family does; add it to "
                      "the family module's OBJECTIVES, or give the objective module an accepts(family)")
  backbone = family.build(config, dataset, data_axis)
  wrap = getattr(objective, "wrap", None)
  return lora.wrap(wrap(backbone, config, dataset) if wrap else backbone, config)


def family_model(config, vocab_size: int):
  """The family's network for a vocabulary of `vocab_size`, without data, an objective's wrapper or LoRA
  adapters: what converters and benchmark harnesses apply to a checkpoint's parameters (adapters merged in
  first, lora.merge)."""
  return models.family(config).build(config, types.SimpleNamespace(vocab_size=vocab_size, padded=False))


def build(config, dataset=None, data_axis=None, batch_size: int = 1) -> Parts:
  """Everything a config implies, from its data (loaded unless given) to the abstract train state."""
  dataset = dataset or data.load(config)
  family, objective = models.family(config), objectives.load(config)
  model = build_model(config, dataset, data_axis, family, objective)
  tx = optim.make(config)
  seq_len = data.seq_len(dataset, config.model.context)
  sample = data.train_batch(dataset.train, 0, seed=config.seed, batch_size=batch_size, seq_len=seq_len)
  example_inputs = objective.model_inputs(sample)[:1]
  init_state = functools.partial(step.init_state, model, tx, example_inputs, config.seed)
  return Parts(config, dataset, family, objective, model, tx, seq_len, example_inputs, init_state,
               jax.eval_shape(init_state))


# ------------------------------------------------------------------------------------------- saved runs


def saved_config(workdir: str):
  """The run's config.json, upgraded onto today's fields (configlib.upgrade)."""
  path = layout.config(workdir)
  if not storage.exists(path):
    raise CheckpointError(f"{workdir} has no config.json; is it a run directory of pretrain.main?")
  try:
    return configlib.from_json(storage.read_text(path))
  except ValueError:
    raise CheckpointError(f"{path} is not valid JSON; restore it or start a new --workdir") from None


def write_config(workdir: str, config) -> None:
  storage.write_text(layout.config(workdir), configlib.to_json(config))


def write_dataset(workdir: str, dataset: data.Dataset) -> None:
  storage.write_text(layout.dataset(workdir), json.dumps(dataset.describe(), indent=2, sort_keys=True))


def saved_dataset(workdir: str) -> dict:
  """What the run's data was (dataset.json); runs saved before that file have the vocabulary in run.json."""
  path = layout.dataset(workdir)
  if storage.exists(path):
    return json.loads(storage.read_text(path))
  vocabulary = (ledger.read(workdir) or {}).get("vocabulary")
  return {"vocabulary": vocabulary, "vocab_size": (vocabulary or {}).get("vocab_size")} if vocabulary else {}


def checkpoint_step(workdir: str, at_step: int | None = None) -> int:
  """`at_step`, or the newest step, after checking that the run holds that checkpoint."""
  directory = layout.checkpoints(workdir)
  steps = sorted(int(d) for d in storage.listdir(directory) if d.isdigit()) if storage.exists(directory) else []
  if not steps:
    raise CheckpointError(f"{workdir} has no checkpoint; train it with pretrain.main or import one with pretrain.hf")
  if at_step is not None and at_step not in steps:
    raise CheckpointError(f"{workdir} has no checkpoint {at_step}; pass --step with one of {steps}")
  return steps[-1] if at_step is None else at_step


@dataclasses.dataclass
class LoadedRun:
  parts: Parts
  params: object
  step: int
  model_state: dict = dataclasses.field(default_factory=dict)  # Non-parameter collections (BatchNorm statistics).

  @property
  def config(self):
    return self.parts.config

  @property
  def dataset(self):
    return self.parts.dataset

  @property
  def model(self):
    return self.parts.model

  def state(self) -> step.TrainState:
    return step.TrainState(step=self.step, params=self.params, opt_state=None, model_state=self.model_state)


def load(workdir: str, at_step: int | None = None, config=None, parts: Parts | None = None,
         strategy=None) -> LoadedRun:
  """The parameters of checkpoint `at_step` (default the newest) on one device, or restored straight into the
  shards a mesh `strategy` gives them, in the model of the run's saved config (or of `config`, which must keep
  every parameter shape)."""
  parts = parts or build(config or saved_config(workdir))
  chosen = checkpoint_step(workdir, at_step)
  if strategy is not None:
    abstract = strategy.abstract(parts.shapes)
  else:
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), parts.shapes)
  ckpt = checkpoint.Checkpointer(workdir, keep=10**6, async_save=False)
  state = ckpt.restore(chosen, abstract)
  ckpt.close()
  return LoadedRun(parts, state.params, chosen, state.model_state)


def restore_params(workdir: str, at_step: int | None = None) -> tuple[object, dict, int]:
  """(saved config, parameters as numpy arrays, step) of a run directory, reading neither its dataset nor
  its optimizer state."""
  config = saved_config(workdir)
  directory = layout.checkpoints(os.path.abspath(workdir))
  chosen, saved = checkpoint.saved_tree(directory, checkpoint_step(workdir, at_step))
  target = {"params": jax.tree_util.tree_map(lambda x: np.zeros(x.shape, x.dtype), saved["params"])}
  return config, checkpoint.restore_subtree(directory, chosen, target)["params"], chosen


# ------------------------------------------------------------------------------------------- evaluation


def evaluate(parts: Parts, eval_fn, state, *, batch_size: int, max_batches: int, dataset=None, put=lambda b: b,
             fetch=jax.device_get, process_index: int = 0, process_count: int = 1, prefetch: int = 0,
             stop=lambda agree: False, agree_every: int = 1) -> dict | None:
  """Metrics over the validation split of `dataset` (default the run's): the loop's evaluations and
  pretrain.evaluate both come through here, so their rows carry the same fields. `put` places a host batch for
  `eval_fn`, `fetch` brings its sums back; None when `stop(agree)` turns true between batches (agree: whether
  processes may synchronise on it at this batch, every `agree_every` batches)."""
  dataset = dataset or parts.dataset
  kw = dict(batch_size=batch_size, seq_len=parts.seq_len, max_batches=max_batches)
  table = data.token_bytes(dataset)

  def batch(b):
    out = data.eval_batch(dataset.val, b, process_index=process_index, process_count=process_count, **kw)
    if table is not None and "tokens" in out:  # The UTF-8 bytes each token covers, for bits per byte.
      out["token_bytes"] = table[out["tokens"]]
    return out
  batches = data.prefetched(batch, range(data.num_eval_batches(dataset.val, **kw)), prefetch)
  sums = []
  for i, batch in enumerate(batches):
    if stop(i % agree_every == 0):
      return None
    sums.append(eval_fn(state, put(batch)))
  out = metrics.summarize_eval(fetch(sums))
  summarize = getattr(parts.objective, "summarize", None)
  if summarize is not None:
    whole = len(sums) == data.num_eval_batches(dataset.val, batch_size=batch_size, seq_len=parts.seq_len)
    out = summarize(out, dataset, whole)
  return out
