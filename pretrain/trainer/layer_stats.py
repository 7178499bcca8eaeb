"""Per-layer statistics (log.layer_stats): the L2 norms of the parameters, gradients and applied updates of
each parameter group, computed inside the train step on log steps only (a lax.cond skips them elsewhere)."""
import jax
import jax.numpy as jnp

from pretrain.trainer import optim
from pretrain.rules import Rules

KINDS = ("param_norm", "grad_norm", "update_norm")


def groups(names: list[str], patterns) -> list[str]:
  """The group of each parameter name: the text matched by the first pattern that matches it, else "other"."""
  rules = Rules("log.layer_groups", patterns)
  out = []
  for name in names:
    match = next((m for m in (r.search(name) for r in rules.rules) if m and m.group(0)), None)
    out.append(match.group(0) if match else "other")
  return out


class LayerStats:
  """The group of every parameter leaf (in tree order) and the function the train step calls on log steps."""

  def __init__(self, params, patterns):
    self.leaf_groups = groups(optim.param_names(params), patterns)
    self.names = sorted(set(self.leaf_groups))
    self._ids = jnp.array([self.names.index(g) for g in self.leaf_groups], jnp.int32)

  def zeros(self) -> dict:
    return {kind: jnp.zeros(len(self.names), jnp.float32) for kind in KINDS}

  def __call__(self, params, grads, new_params) -> dict:
    def norms(tree):
      squares = jnp.stack([jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree_util.tree_leaves(tree)])
      return jnp.sqrt(jnp.zeros(len(self.names), jnp.float32).at[self._ids].add(squares))
    updates = jax.tree_util.tree_map(jnp.subtract, new_params, params)
    return {"param_norm": norms(new_params), "grad_norm": norms(grads), "update_norm": norms(updates)}

  def row(self, values: dict) -> dict:
    """{kind: [G]} of one step -> {"param_norm/h_0": ..., ...} for a log row."""
    return {f"{kind}/{name}": float(values[kind][i]) for kind in KINDS for i, name in enumerate(self.names)}
