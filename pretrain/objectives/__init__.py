"""Objectives: each is one module, named by `objective` (a built-in here, or your own by dotted path). Each returns
*sums* and their denominators, never means: the step adds them over micro-batches and devices, the host divides.

An objective module exports:
  loss(model, variables, batch, *, train, rng) -> (sums, model_state)
      sums has loss_sum (negative log-likelihood in nats over the counted targets) and count (the number of
      counted targets: tokens, pixels or examples), plus any other sums worth logging (e.g. `correct`);
      model_state holds the updated non-parameter collections (BatchNorm statistics) when training, else {}.
      `apply` below runs the model that way.
  model_inputs(batch)
      What the model reads from a batch, for shape-only uses such as initialisation.
and, where they apply:
  wrap(backbone, config, dataset) -> flax module
      The model this objective trains around the family's network (classification: a head on its features).
      Default: the family's network itself.
  accepts(family) -> bool
      Whether it can train that family module. Default: the family lists the objective's name in OBJECTIVES.
  summarize(metrics, dataset, whole_split) -> dict
      Evaluation metrics with fields of its own added (next_token: the distance from the data's known
      entropy, where the source knows it).
"""
import jax.numpy as jnp

from pretrain import plugins


def load(config):
  """The module `objective` names."""
  return plugins.load(plugins.OBJECTIVE, config.objective)


def accepts(objective, name: str, family) -> bool:
  check = getattr(objective, "accepts", None)
  return check(family) if check else name in getattr(family, "OBJECTIVES", ())


def token_weights(batch, tokens_BxT):
  """1 for every counted token: rows past the end of a split (mask 0) and padding (token_mask 0) are not."""
  w = batch["mask"][:, None] * jnp.ones(tokens_BxT.shape, jnp.float32)
  if "token_mask" in batch:
    w = w * batch["token_mask"]
  return w


def apply(model, variables, inputs, *, train, rng, **kwargs):
  """Runs the model; in training, also returns its updated non-parameter collections (e.g. batch_stats)."""
  mutable = [k for k in variables if k != "params"] if train else []
  rngs = {"dropout": rng} if rng is not None else {}
  if mutable:
    return model.apply(variables, inputs, train=train, rngs=rngs, mutable=mutable, **kwargs)
  return model.apply(variables, inputs, train=train, rngs=rngs, **kwargs), {}
