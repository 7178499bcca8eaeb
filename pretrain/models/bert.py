"""A BERT-style bidirectional encoder for masked-token prediction (pre-LayerNorm blocks).

The blocks are GPT's (models/gpt.py) with causal=False: every position attends to every other. The
vocabulary is the data's symbols plus one [MASK] symbol (id `mask_id`, the first id past the data's).
The masked-LM head is BERT's: Dense + GELU + LayerNorm, then the tied token embedding plus a bias.
Parameter names: wte, wpe, h_i/..., ln_f (the encoder, which a classifier keeps), mlm_* (the head).
"""
import flax.linen as nn
import jax.numpy as jnp

from pretrain.models import gpt


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
