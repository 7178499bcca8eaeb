"""Model families. `build(config, dataset)` returns a flax module and the FLOPs it costs per token."""
import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from pretrain.errors import ConfigError
from pretrain.models import bert, classifier, cnn, gpt, lstm, pixelcnn, resnet

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
  param_dtype: Any = jnp.float32
  remat: str = "none"  # Rematerialise each block in the backward pass: "none", "full" or "dots" (keep matmul outputs).
  position: str = "learned"  # "learned" (wpe, GPT-2) or "rope" (rotary embeddings on queries and keys).
  qk_norm: bool = False  # Queries and keys scaled to unit RMS per head before the dot product.
  activation: str = "gelu"  # MLP nonlinearity: "gelu" or "relu2" (squared ReLU).
  head_init: str = "normal"  # Untied lm_head's init: "normal" (std 0.02) or "zeros".
  causal: bool = True  # False: every position attends to all others (the BERT encoder reuses these blocks).


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
                   attention_implementation=_attention(m.attention), param_dtype=_DTYPES[m.get("param_dtype", "float32")],
                   remat=m.get("remat", "none"), position=_position(m.get("position", "learned"), m),
                   # .get: configs saved before these fields existed keep their (default) behaviour.
                   gelu_approximate=m.get("gelu_approximate", False), layer_norm_eps=m.get("layer_norm_eps", 1e-5),
                   qk_norm=bool(m.get("qk_norm", False)), activation=_choice("model.activation", m.get("activation", "gelu"), ACTIVATIONS),
                   head_init=_choice("model.head_init", m.get("head_init", "normal"), HEAD_INITS))


POSITIONS = ("learned", "rope")
ACTIVATIONS = ("gelu", "relu2")
HEAD_INITS = ("normal", "zeros")


def _choice(key: str, value: str, allowed) -> str:
  if value not in allowed:
    raise ConfigError(f"{key}={value!r} must be one of {allowed}")
  return value


def _position(name: str, m) -> str:
  _choice("model.position", name, POSITIONS)
  if name == "rope" and (m.width // m.num_heads) % 2:
    raise ConfigError(f"model.position=rope rotates pairs of a head's {m.width // m.num_heads} dimensions; "
                      "choose model.width / model.num_heads even")
  return name


def _attention(name: str) -> str:
  if name not in ("xla", "cudnn"):
    raise ConfigError(f"model.attention={name!r} must be 'xla' or 'cudnn'")
  if name == "cudnn" and jax.default_backend() != "gpu":
    print(f"note: model.attention=cudnn needs a GPU; using xla attention on {jax.default_backend()}", flush=True)
    return "xla"
  return name


def build(config, dataset, data_axis=None):
  """The module the objective trains: the family's network, under a classification head for that objective.
  data_axis: the named axis (pmap's) over which layers with batch statistics synchronise them."""
  backbone = build_backbone(config, dataset, data_axis)
  if config.objective != "classification":
    return backbone
  if not hasattr(backbone, "features"):
    raise ConfigError(f"model.family={config.model.family!r} has no features() method, so it cannot carry a "
                      "classification head; use a family that has one")
  if config.model.family == "bert" and "token_mask" in getattr(dataset.train, "spec", {}):
    # Pooling skips padding, but a bidirectional encoder would still attend to it.
    raise ConfigError(f"{dataset.name} holds padded texts and model.family=bert attends in both directions, so "
                      "padding would change its features; use model.family=gpt or lstm")
  if config.model.head.pooling not in classifier.POOLINGS:
    raise ConfigError(f"model.head.pooling={config.model.head.pooling!r} is not one of {classifier.POOLINGS}")
  num_classes = config.model.head.num_classes or dataset.num_classes
  if num_classes < 1:
    raise ConfigError(f"objective=classification needs labels, but dataset {dataset.name} has none; "
                      "set --config.data.name to a dataset with a label feature")
  return classifier.Classifier(backbone, num_classes, config.model.head.pooling)


FAMILIES = ("gpt", "bert", "lstm", "seed_cnn", "resnet", "pixelcnn")
_IMAGE_FAMILIES = ("seed_cnn", "resnet", "pixelcnn")


# The families each pretraining objective can train (classification takes any family with features()).
OBJECTIVE_FAMILIES = {"next_token": ("gpt", "lstm"), "masked_lm": ("bert",), "pixels": ("pixelcnn",)}


def build_backbone(config, dataset, data_axis=None):
  """The family's own network, as pretraining uses it."""
  m, family = config.model, config.model.family
  is_image = "image" in getattr(dataset.train, "spec", {})
  if family in _IMAGE_FAMILIES and not is_image:
    raise ConfigError(f"model.family={family} reads images but dataset {dataset.name} has none; "
                      "set --config.data.name=idx, npz or an image TFDS dataset")
  if family not in _IMAGE_FAMILIES and is_image:
    raise ConfigError(f"model.family={family} reads tokens but dataset {dataset.name} holds images; "
                      f"use one of {', '.join(_IMAGE_FAMILIES)}")
  fits = OBJECTIVE_FAMILIES.get(config.objective)
  if fits is not None and family in FAMILIES and family not in fits:
    raise ConfigError(f"objective={config.objective} trains model.family {' or '.join(fits)}, not {family}; "
                      f"set --config.model.family={fits[0]} or another objective")
  if family == "gpt":
    return gpt.GPT(gpt_config(config, dataset))
  if family == "bert":  # One more symbol than the data has: [MASK].
    c = gpt_config(config, dataset)
    return bert.BERT(dataclasses.replace(c, causal=False, vocab_size=max(c.vocab_size, dataset.vocab_size + 1)),
                     mask_id=dataset.vocab_size)
  if family == "lstm":
    return lstm.LSTM(vocab_size(config, dataset), m.width, m.num_layers, m.dropout)
  if family == "seed_cnn":
    return cnn.SeedCNN()
  if family == "resnet":
    if len(m.stage_sizes) != len(m.stage_widths) or not m.stage_sizes:
      raise ConfigError(f"model.stage_sizes={tuple(m.stage_sizes)} and model.stage_widths={tuple(m.stage_widths)} "
                        "need one entry per stage each")
    return resnet.ResNet(tuple(m.stage_sizes), tuple(m.stage_widths), data_axis=data_axis)
  if family == "pixelcnn":
    return pixelcnn.PixelCNN(levels=dataset.vocab_size, width=m.width, num_layers=m.num_layers,
                             channels=int(dataset.train.spec["image"][0][-1]))
  raise ConfigError(f"unknown model.family={family!r}; known: {', '.join(FAMILIES)}")


def flops_per_token(config, num_params: int, num_position_params: int, model=None, variables=None,
                    example_inputs=None) -> float:
  """Training FLOPs per token, or per image for image models.

  Transformers: nanoGPT's count, 6N + 12 L H Q T (N without position embeddings). LSTM: 6N (every weight
  does one multiply-add per token forward and two backward). Convolutional families reuse each weight at
  every pixel, so theirs is 3x the forward pass's FLOPs on one example as XLA counts them.
  """
  m = config.model
  if m.family in ("gpt", "bert"):
    q = m.width // max(m.num_heads, 1)
    return 6 * (num_params - num_position_params) + 12 * m.num_layers * m.num_heads * q * m.context
  if m.family not in _IMAGE_FAMILIES:
    return 6 * num_params
  cost = jax.jit(lambda v, x: model.apply(v, x)).lower(variables, example_inputs[:1]).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return 3 * float(cost.get("flops", 0.0))
