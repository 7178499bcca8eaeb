"""Pure train and eval steps. They know nothing of devices: `parallel.py` wraps them, passing
`axis_name` where a named axis (pmap) has to reduce sums across devices.
"""
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # Updates applied so far; also selects the dropout key.
  params: Any
  opt_state: Any
  model_state: Any  # Non-parameter collections such as BatchNorm's batch_stats; {} for most models.


def init_state(model, tx, example_inputs, seed: int) -> TrainState:
  """A fresh state; `example_inputs` only give the model its input shape."""
  # Jitted: run op by op, initialising a conv net on a CPU takes seconds more than compiling it whole.
  variables = dict(jax.jit(lambda key, x: model.init(key, x, train=False))(jax.random.key(seed), example_inputs))
  params = variables.pop("params")
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), model_state=variables)


def variables(params, model_state) -> dict:
  return {"params": params, **model_state}


def make_train_step(model, objective, tx, *, seed: int, accum_steps: int = 1, axis_name=None, layer_stats=None,
                    is_log_step=None, dropout_rng: str = "threefry2x32"):
  """(state, batch) -> (state, metrics): one update on the mean NLL of the whole (global) batch.

  Gradients of loss *sums* are added over micro-batches and devices, then divided once by the global
  target count, so accumulation and data parallelism give the gradient of the same global mean.
  With `layer_stats` (pretrain/trainer/layer_stats.py), metrics["layer_stats"] holds its per-group norms on the steps
  where `is_log_step(updates done)` holds, and zeros elsewhere (not computed).
  """
  def grads_of_sum(params, model_state, batch, rng):
    def loss(p):
      sums, new_model_state = objective(model, variables(p, model_state), batch, train=True, rng=rng)
      return sums["loss_sum"], (sums, new_model_state)
    return jax.grad(loss, has_aux=True)(params)

  def train_step(state, batch):
    rng = jax.random.fold_in(jax.random.key(seed, impl=dropout_rng), state.step)
    if axis_name is not None:
      rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
    if accum_steps == 1:
      grads, (sums, model_state) = grads_of_sum(state.params, state.model_state, batch, rng)
    else:
      micro = micro_batches(batch, accum_steps)

      def add(carry, i):
        grads, sums, model_state = carry
        g, (s, model_state) = grads_of_sum(state.params, model_state, jax.tree_util.tree_map(lambda x: x[i], micro),
                                           jax.random.fold_in(rng, i))
        return (jax.tree_util.tree_map(jnp.add, grads, g), jax.tree_util.tree_map(jnp.add, sums, s), model_state), None

      shapes = jax.eval_shape(grads_of_sum, state.params, state.model_state,
                              jax.tree_util.tree_map(lambda x: x[0], micro), rng)
      zeros = jax.tree_util.tree_map(jnp.zeros_like, (shapes[0], shapes[1][0]))
      (grads, sums, model_state), _ = jax.lax.scan(add, (*zeros, state.model_state), jnp.arange(accum_steps))
    model_state = model_state or state.model_state  # BatchNorm synchronises its statistics itself (models/resnet.py).
    if axis_name is not None:
      grads, sums = jax.lax.psum((grads, sums), axis_name)
    grads = jax.tree_util.tree_map(lambda g: g / jnp.maximum(sums["count"], 1.0), grads)
    grad_norm = optax.tree.norm(grads)
    # A non-finite loss or gradient never reaches the state: the update is computed only when both are
    # finite (one scalar chooses the branch), and the host decides (optim.skip_nonfinite) whether to go on.
    finite = jnp.isfinite(sums["loss_sum"]) & jnp.isfinite(grad_norm)

    def apply(s):
      updates, opt_state = tx.update(grads, s.opt_state, s.params)
      return s.replace(params=optax.apply_updates(s.params, updates), opt_state=opt_state, model_state=model_state)

    new_state = jax.lax.cond(finite, apply, lambda s: s, state).replace(step=state.step + 1)
    # Which parameter groups went non-finite: the host names the first one; computed only for a bad step.
    leaves = jax.tree_util.tree_leaves(grads)
    nonfinite_grads = jax.lax.cond(finite, lambda g: jnp.zeros(len(leaves), bool),
                                   lambda g: jnp.stack([~jnp.all(jnp.isfinite(x)) for x in g]), leaves)
    metrics = dict(sums, grad_norm=grad_norm, finite=finite, nonfinite_grads=nonfinite_grads)
    if layer_stats is not None:
      metrics["layer_stats"] = jax.lax.cond(is_log_step(new_state.step),
                                            lambda: layer_stats(state.params, grads, new_state.params),
                                            layer_stats.zeros)
    return new_state, metrics

  return train_step


def micro_batches(batch, accum_steps: int):
  """[B, ...] -> [accum_steps, B / accum_steps, ...], micro-batch i holding rows i, i + A, i + 2A, ...

  Strided, not contiguous: when the batch axis is split over devices (each holding a multiple of A
  contiguous rows), every micro-batch keeps rows on every device, so no device idles and nothing moves;
  and pmap's per-device micro-batch i holds the same global rows as single's micro-batch i.
  """
  return jax.tree_util.tree_map(lambda x: jnp.swapaxes(x.reshape(-1, accum_steps, *x.shape[1:]), 0, 1), batch)


def make_multi_step(train_step, steps_per_call: int):
  """(state, batches with a leading [k] axis) -> (state, metrics [k]): k updates in one call."""
  if steps_per_call == 1:
    def one(state, batches):
      state, metrics = train_step(state, jax.tree_util.tree_map(lambda x: x[0], batches))
      return state, jax.tree_util.tree_map(lambda x: x[None], metrics)
    return one
  return lambda state, batches: jax.lax.scan(train_step, state, batches)


def make_eval_step(model, objective, *, accum_steps: int = 1, axis_name=None):
  """(state, batch) -> sums over the batch, computed `accum_steps` micro-batches at a time (strided, as in
  training), so an eval batch of any size costs the memory of one micro-batch."""
  def sums_of(state, batch):
    sums, _ = objective(model, variables(state.params, state.model_state), batch, train=False, rng=None)
    return sums

  def eval_step(state, batch):
    if accum_steps == 1:
      sums = sums_of(state, batch)
    else:
      micro = micro_batches(batch, accum_steps)
      shapes = jax.eval_shape(sums_of, state, jax.tree_util.tree_map(lambda x: x[0], micro))
      add = lambda total, b: (jax.tree_util.tree_map(jnp.add, total, sums_of(state, b)), None)
      sums, _ = jax.lax.scan(add, jax.tree_util.tree_map(jnp.zeros_like, shapes), micro)
    return jax.lax.psum(sums, axis_name) if axis_name is not None else sums
  return eval_step
