"""Model families: each is one module, named by `model.family` (a built-in here, or your own by dotted path).

A family module exports:
  build(config, dataset, data_axis=None) -> flax module
      The family's network as its pretraining objectives train it. `data_axis` names the pmap axis over which
      layers with batch statistics synchronise them. Raise ConfigError (one line) for settings it cannot take.
      To carry a classification head (objective=classification) the module needs a method
      `features(inputs, train)` returning [B, ..., D] or [B, D], and a class attribute `pretraining_only`:
      regexes of the parameters only its pretraining output layer uses (a classifier leaves them out).
  OBJECTIVES: tuple of str
      The pretraining objectives it trains, e.g. ("next_token",). (classification takes any family with
      features().)
  INPUTS: "tokens" or "image"
      What it reads.
and, where they apply:
  flops_per_token(config, params, forward_flops) -> float
      Training FLOPs per token (per image for image models). `params` is the abstract parameter tree (a
      classifier's backbone under "backbone"); `forward_flops()` is XLA's count of one example's forward pass.
      Default: 6 x the number of parameters.
  generation_steps(model, params, length) -> (prefill, step)
      Autoregressive families: prefill(tokens_BxP, valid_BxP) and step(token_B, state), each returning (the
      next-token logits [B, V], state), with room for `length` tokens in all. pretrain.sample and its
      KV-cached loop need it.
  max_length(config) -> int
      The longest sequence (prompt and new tokens) it can read; none when unlimited.

Shared helpers for families live here; a family imports them absolutely (`from pretrain import models`), so
a copy of a built-in module works from any package.
"""
import math

import jax
import jax.numpy as jnp

from pretrain import plugins
from pretrain.errors import ConfigError

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def family(config):
  """The module `model.family` names."""
  return plugins.load(plugins.FAMILY, config.model.family)


def vocab_size(config, dataset) -> int:
  v = config.model.vocab_size or dataset.vocab_size
  if v < dataset.vocab_size:
    raise ConfigError(f"model.vocab_size={v} is smaller than the dataset's {dataset.vocab_size} symbols; "
                      "set --config.model.vocab_size=0 to take it from the data")
  return v


def choice(key: str, value, allowed):
  if value not in allowed:
    raise ConfigError(f"{key}={value!r} must be one of {tuple(allowed)}")
  return value


def dtype(key: str, name: str):
  return DTYPES[choice(key, name, tuple(DTYPES))]


def count_params(params) -> int:
  return int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


def flops_per_token(config, params, forward_flops) -> float:
  """The family's count, or 6N: every weight does one multiply-add per token forward and two backward."""
  count = getattr(family(config), "flops_per_token", None)
  return count(config, params, forward_flops) if count else 6.0 * count_params(params)


def check_reads(config, dataset) -> None:
  """The family reads what the dataset holds: tokens or images."""
  reads, holds = family(config).INPUTS, "image" if dataset.holds_images else "tokens"
  if reads != holds:
    fix = ("set --config.data.name=idx, npz or an image TFDS dataset" if reads == "image" else
           "use an image family (seed_cnn, resnet, pixelcnn)")
    plural = {"image": "images", "tokens": "tokens"}
    raise ConfigError(f"model.family={config.model.family} reads {plural[reads]} but dataset {dataset.name} holds "
                      f"{plural[holds]}; {fix}")
