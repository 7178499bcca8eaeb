"""Model families. `build(config, dataset)` returns a flax module and the FLOPs it costs per token."""
import dataclasses
import math
from typing import Any

import jax.numpy as jnp

from pretrain.errors import ConfigError
from pretrain.models import classifier, gpt

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class GPTConfig:
  vocab_size: int
  context: int
  num_layers: int
  num_heads: int
  width: int
  mlp_ratio: int = 4
  dropout: float = 0.0
  bias: bool = False
  tie_embeddings: bool = True
  gelu_approximate: bool = False  # tanh GELU (GPT-2's "gelu_new"); False is the exact erf GELU (nanoGPT).
  layer_norm_eps: float = 1e-5
  dtype: Any = jnp.float32
  attention_implementation: str = "xla"


def vocab_size(config, dataset) -> int:
  v = config.model.vocab_size or dataset.vocab_size
  if v < dataset.vocab_size:
    raise ConfigError(f"model.vocab_size={v} is smaller than the dataset's {dataset.vocab_size} symbols; "
                      "set --config.model.vocab_size=0 to take it from the data")
  return v


def gpt_config(config, dataset) -> GPTConfig:
  m = config.model
  if m.dtype not in _DTYPES:
    raise ConfigError(f"model.dtype={m.dtype!r} is not one of {sorted(_DTYPES)}")
  return GPTConfig(vocab_size=vocab_size(config, dataset), context=m.context, num_layers=m.num_layers,
                   num_heads=m.num_heads, width=m.width, mlp_ratio=m.mlp_ratio, dropout=m.dropout, bias=m.bias,
                   tie_embeddings=m.tie_embeddings, dtype=_DTYPES[m.dtype],
                   attention_implementation=m.attention,
                   # .get: configs saved before these fields existed keep their (default) behaviour.
                   gelu_approximate=m.get("gelu_approximate", False), layer_norm_eps=m.get("layer_norm_eps", 1e-5))


def build(config, dataset):
  """The module the objective trains: the family's network, under a classification head for that objective."""
  backbone = build_backbone(config, dataset)
  if config.objective != "classification":
    return backbone
  if not hasattr(backbone, "features"):
    raise ConfigError(f"model.family={config.model.family!r} has no features() method, so it cannot carry a "
                      "classification head; use a family that has one")
  if config.model.head.pooling not in classifier.POOLINGS:
    raise ConfigError(f"model.head.pooling={config.model.head.pooling!r} is not one of {classifier.POOLINGS}")
  num_classes = config.model.head.num_classes or dataset.num_classes
  if num_classes < 1:
    raise ConfigError(f"objective=classification needs labels, but dataset {dataset.name} has none; "
                      "set --config.data.name to a dataset with a label feature")
  return classifier.Classifier(backbone, num_classes, config.model.head.pooling)


def build_backbone(config, dataset):
  """The family's own network, as pretraining uses it."""
  if config.model.family == "gpt":
    return gpt.GPT(gpt_config(config, dataset))
  raise ConfigError(f"unknown model.family={config.model.family!r}; known: gpt")


def flops_per_token(config, num_params: int, num_position_params: int) -> float:
  """Training FLOPs per token as nanoGPT counts them: 6N + 12 L H Q T (N without position embeddings)."""
  m = config.model
  q = m.width // max(m.num_heads, 1)
  return 6 * (num_params - num_position_params) + 12 * m.num_layers * m.num_heads * q * m.context
