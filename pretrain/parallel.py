"""How the pure steps of `step.py` run on devices. One class per strategy, one interface:

  place(state)            put a host/initial state where the strategy keeps it
  for_checkpoint(state)   the state as a global pytree Orbax can save (unreplicated)
  abstract(state)         ShapeDtypeStructs carrying this strategy's shardings, the restore target
  train(step_factory, k)  compiled (state, batches[k]) -> (state, metrics[k]) with the state donated
  evaluate(eval_factory)  compiled (state, batch) -> sums
  batch(host_batch, k)    this process's rows as device arrays, with a leading [k] axis when k > 0
"""
import jax

from pretrain.errors import ConfigError
from pretrain.step import make_multi_step


class Single:
  """One device, jax.jit."""
  name = "single"

  def __init__(self, config):
    del config
    self.device = jax.local_devices()[0]
    self.num_devices = 1

  def place(self, state):
    return jax.device_put(state, self.device)

  def for_checkpoint(self, state):
    return state

  def abstract(self, state):
    sharding = jax.sharding.SingleDeviceSharding(self.device)
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)

  def train(self, make_train_step, steps_per_call):
    return jax.jit(make_multi_step(make_train_step(axis_name=None), steps_per_call), donate_argnums=0)

  def evaluate(self, make_eval_step):
    return jax.jit(make_eval_step(axis_name=None))

  def batch(self, host_batch):
    return jax.device_put(host_batch, self.device)

  def fetch(self, tree):
    return jax.device_get(tree)


STRATEGIES = {"single": Single}


def make(config):
  try:
    return STRATEGIES[config.parallel.strategy](config)
  except KeyError:
    raise ConfigError(f"unknown parallel.strategy={config.parallel.strategy!r}; "
                      f"use one of {', '.join(STRATEGIES)}") from None
