"""A BERT-style bidirectional encoder for masked-token prediction.

The blocks are GPT's (models/gpt.py) with causal=False: every position attends to every other. By default
they are pre-LayerNorm and the vocabulary is the data's symbols plus one [MASK] symbol (the first id past
the data's). BERT itself (model.norm_position=post, as pretrain.hf imports it) normalises each residual sum
and the embeddings (ln_e) instead of the blocks' inputs, adds token type embeddings (wtt, model.type_vocab_size)
and takes [MASK] from its tokenizer (model.mask_id). The masked-LM head is BERT's: Dense + GELU + LayerNorm,
then the tied token embedding plus a bias.
Parameter names: wte, wpe, wtt, ln_e, h_i/..., ln_f, pooler_dense (the encoder, which a classifier keeps),
mlm_* (the head).
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
  m = config.model
  if m.mask_id >= 0:  # The tokenizer's own [MASK] (an imported BERT): random replacements come from every id.
    if m.mask_id >= c.vocab_size:
      raise ConfigError(f"model.mask_id={m.mask_id} is past the vocabulary ({c.vocab_size} ids); set it to the "
                        "tokenizer's [MASK] id, or -1 to add one")
    return BERT(dataclasses.replace(c, causal=False), mask_id=m.mask_id, random_ids=c.vocab_size,
                type_vocab_size=m.type_vocab_size, pooler=bool(m.pooler))
  return BERT(dataclasses.replace(c, causal=False, vocab_size=max(c.vocab_size, dataset.vocab_size + 1)),
              mask_id=dataset.vocab_size, random_ids=dataset.vocab_size, type_vocab_size=m.type_vocab_size,
              pooler=bool(m.pooler))


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
  random_ids: int = 0  # Masked-LM's random replacements are drawn from [0, random_ids); 0: [0, mask_id).
  type_vocab_size: int = 0  # Token type (segment) embeddings; 0: none.
  pooler: bool = False  # BERT's pooler, dense + tanh on the [CLS] features, for classification (pool()).
  pretraining_only = ("^mlm_",)

  def setup(self):
    super().setup()
    c = self.config
    if self.type_vocab_size:
      self.wtt = nn.Embed(self.type_vocab_size, c.width, embedding_init=nn.initializers.normal(0.02), dtype=c.dtype,
                          param_dtype=c.param_dtype)
    if c.norm_position == "post":
      self.ln_e = nn.LayerNorm(epsilon=c.layer_norm_eps, use_bias=c.bias, dtype=c.dtype, param_dtype=c.param_dtype)
    if self.pooler:
      self.pooler_dense = nn.Dense(c.width, dtype=c.dtype, kernel_init=nn.initializers.normal(0.02))
    self.mlm_dense = nn.Dense(c.width, dtype=c.dtype, kernel_init=nn.initializers.normal(0.02))
    self.mlm_ln = nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=c.dtype)
    self.mlm_bias = Bias(c.vocab_size)

  def embed(self, tokens_BxT, positions_BxT=None, token_types_BxT=None):
    """Token, position and (type 0 unless given) token type embeddings; normalised under post-norm blocks."""
    x_BxTxD = super().embed(tokens_BxT, positions_BxT)
    if self.type_vocab_size:
      x_BxTxD = x_BxTxD + self.wtt(jnp.zeros_like(tokens_BxT) if token_types_BxT is None else token_types_BxT)
    elif token_types_BxT is not None:
      raise ValueError("this BERT has no token type embeddings (model.type_vocab_size=0)")
    return self.ln_e(x_BxTxD) if self.config.norm_position == "post" else x_BxTxD

  def features(self, tokens_BxT, train: bool = False, token_types_BxT=None, **kwargs):
    x_BxTxD = super().features(tokens_BxT, train, token_types_BxT=token_types_BxT, **kwargs)
    if self.pooler and self.is_initializing():  # The pooler's parameters exist whichever head reads the features.
      self.pool(x_BxTxD[:, 0])
    return x_BxTxD

  def pool(self, x_BxD):
    """BERT's pooler on the [CLS] features, where it has one; the features as they are otherwise."""
    return jnp.tanh(self.pooler_dense(x_BxD)) if self.pooler else x_BxD

  def __call__(self, tokens_BxT, train: bool = False, token_types_BxT=None):
    x_BxTxD = self.features(tokens_BxT, train, token_types_BxT=token_types_BxT)
    h_BxTxD = self.mlm_ln(gpt.gelu(self.mlm_dense(x_BxTxD), self.config.gelu_approximate))
    return self.mlm_bias(self.wte.attend(h_BxTxD)).astype(jnp.float32)
