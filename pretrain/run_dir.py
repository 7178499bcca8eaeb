"""Reading a finished or running workdir: its saved config, dataset, model and parameters."""
import dataclasses

import jax

from pretrain import checkpoint, configlib, data, models, objectives, optim, step, storage
from pretrain.errors import CheckpointError


@dataclasses.dataclass
class LoadedRun:
  config: object
  dataset: object
  model: object
  params: object
  step: int
  model_state: dict = dataclasses.field(default_factory=dict)  # Non-parameter collections (BatchNorm statistics).


def saved_config(workdir: str):
  path = storage.join(workdir, "config.json")
  if not storage.exists(path):
    raise CheckpointError(f"{workdir} has no config.json; is it a run directory of pretrain.main?")
  return configlib.from_json(storage.read_text(path))


def load(workdir: str, at_step: int | None = None, config=None) -> LoadedRun:
  """Restores parameters of `at_step` (default latest) into the model of the run's saved config."""
  config = config or saved_config(workdir)
  dataset = data.load(config)
  model = models.build(config, dataset)
  tx = optim.make(config)
  sample = data.train_batch(dataset.train, 0, seed=config.seed, batch_size=1, seq_len=data.seq_len(dataset, config.model.context))
  fresh = step.init_state(model, tx, objectives.MODEL_INPUTS[config.objective](sample), config.seed)
  ckpt = checkpoint.Checkpointer(workdir, keep=10**6, async_save=False)
  chosen = ckpt.latest_step() if at_step is None else at_step
  if chosen is None:
    raise CheckpointError(f"{workdir} has no checkpoint yet; train it first with pretrain.main")
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), fresh)
  state = ckpt.restore(chosen, abstract)
  ckpt.close()
  return LoadedRun(config, dataset, model, state.params, chosen, state.model_state)

