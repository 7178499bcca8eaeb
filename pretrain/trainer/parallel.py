"""How the pure steps of `step.py` run on devices. One class per strategy, one interface:

  num_devices             devices over all processes that share one global batch
  data_axis               the named axis a step reduces over (pmap's), else None: the model's BatchNorm
                          synchronises its statistics over it
  place(state)            a checkpoint-form state (restored, or fresh from `init`) -> the form this
                          strategy trains on
  for_checkpoint(state)   the training form -> a topology-free pytree Orbax saves
  abstract(state)         ShapeDtypeStructs with this strategy's shardings: the restore target
  train(make_step, k)     compiled (state, batches[k, ...]) -> (state, metrics[k]), state donated
  evaluate(make_eval)     compiled (state, batch) -> sums
  batch(host_batch, steps_axis)  this process's rows -> device arrays in the layout `train` (steps_axis:
                          a leading [k] axis of steps) or `evaluate` takes
  fetch(tree)             device results -> host numpy (one copy of replicated values)

Checkpoints always hold global, unreplicated arrays, so any strategy resumes any other's checkpoint.
`init(init_fn, abstract)` builds a fresh state straight into `abstract`'s shardings.
"""

import os
import re

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from pretrain.errors import ConfigError
from pretrain.rules import Rules
from pretrain.tree import path_name
from pretrain.trainer.step import make_multi_step


def _host(x):
  """One host copy of a value that is replicated (or fully addressable) on this process."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return np.asarray(x.addressable_data(0))
  return np.asarray(x)


class Single:
  """One device, jax.jit."""
  name = "single"
  data_axis = None

  def __init__(self, config):
    self.donate = (0,) if config.train.donate else ()
    if jax.process_count() > 1:
      raise ConfigError("parallel.strategy=single cannot span processes; use --config.parallel.strategy=mesh")
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
    return jax.jit(make_multi_step(make_train_step(axis_name=None), steps_per_call), donate_argnums=self.donate)

  def evaluate(self, make_eval_step):
    return jax.jit(make_eval_step(axis_name=None))

  def batch(self, host_batch, steps_axis=False):
    return jax.device_put(host_batch, self.device)

  def fetch(self, tree):
    return jax.tree_util.tree_map(_host, tree)


class _GlobalReplicated:
  """Checkpoint form shared by pmap and mesh data parallelism: replicated arrays over all devices."""

  def _replicated(self):
    return NamedSharding(self.global_mesh, P())

  def _to_global(self, host_tree, shardings):
    return jax.tree_util.tree_map(
        lambda x, s: jax.make_array_from_process_local_data(s, np.asarray(x), np.shape(x)), host_tree, shardings)


class Pmap(_GlobalReplicated):
  """jax.pmap over this process's devices: state replicated, gradients and sums psum'd over `batch`."""
  name = "pmap"
  data_axis = "batch"

  def __init__(self, config):
    self.donate = (0,) if config.train.donate else ()
    self.local = jax.local_devices()
    self.num_devices = len(self.local) * jax.process_count()
    self.global_mesh = Mesh(np.array(jax.devices()), ("batch",))
    self.stacked = NamedSharding(Mesh(np.array(self.local), ("batch",)), P("batch"))
    # Saves take one replica per process, from its first device, and move nothing else.
    firsts = [next(d for d in jax.devices() if d.process_index == i) for i in range(jax.process_count())]
    self.saved = NamedSharding(Mesh(np.array(firsts), ("process",)), P())
    self.save_device = firsts[jax.process_index()]
    self._unstack = jax.jit(lambda leaves: [x[0] for x in leaves])

  def place(self, state):
    n = len(self.local)
    return jax.tree_util.tree_map(
        lambda x: jax.device_put(np.broadcast_to(_host(x), (n, *np.shape(x))), self.stacked), state)

  def for_checkpoint(self, state):
    """One replica, unstacked on the device that holds it (one compiled copy there, no host transfer);
    global over the processes so that Orbax writes it once."""
    leaves, treedef = jax.tree_util.tree_flatten(state)
    replica = [next(s.data for s in x.addressable_shards if s.device == self.save_device) for x in leaves]
    unstacked = self._unstack(replica)
    return jax.tree_util.tree_unflatten(treedef, [
        jax.make_array_from_single_device_arrays(x.shape, self.saved, [x]) for x in unstacked])

  def abstract(self, state):
    rep = self._replicated()
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=rep), state)

  def train(self, make_train_step, steps_per_call):
    multi = make_multi_step(make_train_step(axis_name=self.data_axis), steps_per_call)
    return jax.pmap(multi, axis_name=self.data_axis, donate_argnums=self.donate)

  def evaluate(self, make_eval_step):
    return jax.pmap(make_eval_step(axis_name=self.data_axis), axis_name=self.data_axis)

  def batch(self, host_batch, steps_axis=False):
    """[k, B, ...] or [B, ...] local rows -> [devices, k, B/devices, ...] (or [devices, B/devices, ...])."""
    n = len(self.local)

    def split(x):
      if steps_axis:
        k, b = x.shape[:2]
        return np.moveaxis(x.reshape(k, n, b // n, *x.shape[2:]), 1, 0)
      return x.reshape(n, x.shape[0] // n, *x.shape[1:])
    return jax.device_put(jax.tree_util.tree_map(split, host_batch), self.stacked)

  def fetch(self, tree):
    return jax.tree_util.tree_map(lambda x: _host(x)[0], tree)


# Megatron's layout over the tensor axis, as (regex on the parameter's name, dimension from the end): attention
# heads and the MLP's hidden units are split (the q/k/v and fc kernels by output column, the projections back by
# input row), so each device computes its heads and hidden units and one reduction joins them per block; the
# embedding and the untied head are split over the vocabulary (the largest matrices of small models, and the
# logits' softmax reduces over it once). Norms and the rest are replicated. Counting from the end, the same
# entries fit stacked (model.scan_layers) parameters and the optimizer's moments, whose names end alike.
TENSOR_RULES = ((r"attn/c_attn/(kernel|bias)$", -1), (r"mlp/c_fc/(kernel|bias)$", -1), (r"attn/c_proj/kernel$", -2),
                (r"mlp/c_proj/kernel$", -2), (r"wte/embedding$", -2), (r"lm_head/kernel$", -1))


class MeshStrategy(_GlobalReplicated):
  """jax.jit over a (data, fsdp, tensor) Mesh: the batch is split over data x fsdp; parameters and optimizer
  state are split over `tensor` (TENSOR_RULES), sharded over `fsdp` (FSDP / ZeRO-3) on another dimension, and
  replicated over `data`. XLA inserts the collectives each layout needs."""
  name = "mesh"
  data_axis = None  # jit sees the global batch.

  def __init__(self, config):
    p = config.parallel
    self.donate = (0,) if config.train.donate else ()
    devices = jax.devices()
    shape = list(p.mesh_shape) + [1] * (len(p.mesh_shape) == 2)  # (data, fsdp) means no tensor axis.
    if len(shape) != 3 or shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
      raise ConfigError(f"parallel.mesh_shape={tuple(p.mesh_shape)} must be (data, fsdp) or (data, fsdp, tensor) "
                        "sizes with at most one -1")
    known = int(np.prod([s for s in shape if s != -1]))
    if -1 in shape:
      if len(devices) % known:
        raise ConfigError(f"parallel.mesh_shape={tuple(p.mesh_shape)} does not divide the {len(devices)} devices")
      shape[shape.index(-1)] = len(devices) // known
    needed = int(np.prod(shape))
    if needed > len(devices) or (needed < len(devices) and jax.process_count() > 1):
      raise ConfigError(f"parallel.mesh_shape={tuple(p.mesh_shape)} needs {needed} devices; there are "
                        f"{len(devices)} (use -1 to fill)")
    devices = devices[:needed]  # A smaller mesh than the host has uses its first devices.
    # Built by hand, not jax.make_mesh: devices stay in process order, so each process's rows of the
    # global batch land on its own devices.
    self.global_mesh = Mesh(np.array(devices).reshape(shape), ("data", "fsdp", "tensor"),
                            axis_types=(AxisType.Auto,) * 3)
    self.num_devices = len(devices)
    self.fsdp_size, self.tensor_size = shape[1], shape[2]
    self.tensor_rules = [(re.compile(pattern), dim) for pattern, dim in TENSOR_RULES]
    self.rules = Rules("parallel.fsdp_rules", p.fsdp_rules, int, form="REGEX=DIM", example="wte/embedding=0")
    self._state_shardings = None

  def _leaf_sharding(self, path, x):
    shape = np.shape(x)
    name = path_name(path)
    spec = [None] * len(shape)
    if self.tensor_size > 1 and shape:
      dim = next((d % len(shape) for pattern, d in self.tensor_rules if pattern.search(name) and -d <= len(shape)),
                 None)
      if dim is not None and shape[dim] % self.tensor_size == 0:  # Else replicated (e.g. an unpadded vocabulary).
        spec[dim] = "tensor"
    if self.fsdp_size > 1 and shape:
      dim = self.rules.value(name)
      if dim is None:  # The largest dimension the fsdp axis divides, of those the tensor axis leaves.
        candidates = [d for d in np.argsort(shape)[::-1] if shape[d] % self.fsdp_size == 0 and spec[d] is None]
        dim = int(candidates[0]) if candidates else None
      elif dim >= len(shape) or shape[dim] % self.fsdp_size or spec[dim] is not None:
        dim = None
      if dim is not None:
        spec[dim] = "fsdp"
    return NamedSharding(self.global_mesh, P(*spec))

  def shardings(self, state):
    return jax.tree_util.tree_map_with_path(self._leaf_sharding, state)

  def place(self, state):
    shardings = self.shardings(state)
    self._state_shardings = shardings
    if all(isinstance(x, jax.Array) and x.sharding.is_equivalent_to(s, x.ndim) for x, s in
           zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(shardings))):
      return state
    return self._to_global(jax.tree_util.tree_map(_host, state), shardings)

  def for_checkpoint(self, state):
    return state

  def abstract(self, state):
    return jax.tree_util.tree_map(lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s),
                                  state, self.shardings(state))

  def _batch_sharding(self, x, leading_k):
    spec = (None, ("data", "fsdp")) if leading_k else (("data", "fsdp"),)
    return NamedSharding(self.global_mesh, P(*spec[:x.ndim]))

  def train(self, make_train_step, steps_per_call):
    if self._state_shardings is None:
      raise RuntimeError("MeshStrategy.place(state) must run before train(): it fixes the state's shardings")
    multi = make_multi_step(make_train_step(axis_name=None), steps_per_call)
    rep = self._replicated()
    return jax.jit(multi, out_shardings=(self._state_shardings, rep), donate_argnums=self.donate)

  def evaluate(self, make_eval_step):
    return jax.jit(make_eval_step(axis_name=None), out_shardings=self._replicated())

  def batch(self, host_batch, steps_axis=False):
    """Local rows -> global arrays sharded over every device along the batch axis."""
    def put(x):
      sharding = self._batch_sharding(x, steps_axis)
      batch_axis = 1 if steps_axis else 0
      global_shape = list(x.shape)
      global_shape[batch_axis] *= jax.process_count()
      return jax.make_array_from_process_local_data(sharding, x, tuple(global_shape))
    return jax.tree_util.tree_map(put, host_batch)

  def fetch(self, tree):
    return jax.tree_util.tree_map(_host, tree)


def init(init_fn, abstract):
  """A fresh state, computed by one jitted `init_fn` whose outputs have the shardings of `abstract` (a
  strategy's `abstract(...)`): under FSDP each device computes only its shards, so no device ever holds a
  whole parameter or moment."""
  return jax.jit(init_fn, out_shardings=jax.tree_util.tree_map(lambda a: a.sharding, abstract))()


STRATEGIES = {"single": Single, "pmap": Pmap, "mesh": MeshStrategy}


def set_cpu_devices(count: int) -> None:
  """parallel.cpu_devices: split this machine's CPU into `count` XLA devices, so pmap or a mesh runs one
  replica per core instead of one device threading every small op over all cores. Must come before JAX
  first touches a device."""
  if count <= 0:
    return
  jax.config.update("jax_num_cpu_devices", count)
  if jax.default_backend() == "cpu" and jax.local_device_count() != count:
    raise ConfigError(f"parallel.cpu_devices={count}, but JAX already runs {jax.local_device_count()} CPU devices "
                      "(set before this run started, e.g. by XLA_FLAGS); leave parallel.cpu_devices=0")


def add_xla_flags(flags: str) -> None:
  """parallel.xla_flags: appended to XLA_FLAGS, which XLA reads as JAX starts its backend, so this too must come
  before JAX first touches a device."""
  if not flags.strip():
    return
  from jax._src import xla_bridge
  if xla_bridge.backends_are_initialized():
    raise ConfigError(f"parallel.xla_flags={flags!r} came after JAX started its backend; set XLA_FLAGS "
                      "before the process starts instead")
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()


def make(config):
  add_xla_flags(config.parallel.xla_flags)
  set_cpu_devices(config.parallel.cpu_devices)
  try:
    cls = STRATEGIES[config.parallel.strategy]
  except KeyError:
    raise ConfigError(f"unknown parallel.strategy={config.parallel.strategy!r}; "
                      f"use one of {', '.join(STRATEGIES)}") from None
  return cls(config)
