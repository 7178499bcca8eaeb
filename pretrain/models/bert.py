"""A BERT-style bidirectional encoder for masked-token prediction (pre-LayerNorm blocks).

The blocks are GPT's (models/gpt.py) with causal=False: every position attends to every other. The
vocabulary is the data's symbols plus one [MASK] symbol (id `mask_id`, the first id past the data's).
The masked-LM head is BERT's: Dense + GELU + LayerNorm, then the tied token embedding plus a bias.
Parameter names: wte, wpe, h_i/..., ln_f (the encoder, which a classifier keeps), mlm_* (the head).
"""
import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from pretrain.errors import ConfigError
from pretrain.models import gpt

OBJECTIVES = ("masked_lm",)
INPUTS = "tokens"
flops_per_token = gpt.flops_per_token


def build(config, dataset, data_axis=None):
  """The encoder with one more symbol than the data has: [MASK]."""
  del data_axis
  if config.objective == "classification" and dataset.padded:
    # Pooling skips padding, but a bidirectional encoder would still attend to it.
    raise ConfigError(f"{dataset.name} holds padded texts and model.family={config.model.family} attends in both "
                      "directions, so padding would change its features; use model.family=gpt or lstm")
  c = gpt.gpt_config(config, dataset)
  return BERT(dataclasses.replace(c, causal=False, vocab_size=max(c.vocab_size, dataset.vocab_size + 1)),
              mask_id=dataset.vocab_size)


class Bias(nn.Module):
  """x + b, as its own module so the bias exists only where it is used (not under a classifier)."""
  size: int

  @nn.compact
  def __call__(self, x):
    return x + self.param("bias", nn.initializers.zeros, (self.size,))


class BERT(gpt.GPT):
  """tokens [B, T] -> logits [B, T, V] over the vocabulary at every position (float32). The encoder
  (embeddings, blocks, ln_f and `features`) is GPT's; only the head differs."""
  config: "GPTConfig"  # causal=False; vocab_size counts the [MASK] symbol.
  mask_id: int
  pretraining_only = ("^mlm_",)

  def setup(self):
    super().setup()
    c = self.config
    self.mlm_dense = nn.Dense(c.width, dtype=c.dtype, kernel_init=nn.initializers.normal(0.02))
    self.mlm_ln = nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=c.dtype)
    self.mlm_bias = Bias(c.vocab_size)

  def __call__(self, tokens_BxT, train: bool = False):
    h_BxTxD = self.mlm_ln(nn.gelu(self.mlm_dense(self.features(tokens_BxT, train)),
                                  approximate=self.config.gelu_approximate))
    return self.mlm_bias(self.wte.attend(h_BxTxD)).astype(jnp.float32)
