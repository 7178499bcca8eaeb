"""Names for pytree leaves, the one spelling every regex rule in a config matches against."""


import jax


def shapes(tree) -> dict[str, tuple]:
  """{path_name: shape} of every leaf; a leaf without a shape (a scalar's metadata) counts as ()."""
  return {path_name(p): tuple(getattr(x, "shape", ()) or ()) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def path_name(path) -> str:
  """'params/h_0/attn/c_attn/kernel' for a jax key path (dict keys, attribute names, sequence indices)."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def flat(tree) -> dict:
  """{path_name: leaf} of every leaf."""
  return {path_name(p): x for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def nested(flat_tree: dict) -> dict:
  """The nested dict whose leaves `flat` names: the inverse of flat() for trees of dicts."""
  out = {}
  for name, value in flat_tree.items():
    *parents, leaf = name.split("/")
    node = out
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return out
