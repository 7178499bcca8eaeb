"""Names for pytree leaves, the one spelling every regex rule in a config matches against."""


def path_name(path) -> str:
  """'params/h_0/attn/c_attn/kernel' for a jax key path (dict keys, attribute names, sequence indices)."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)
