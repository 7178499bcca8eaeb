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


class BERT(nn.Module):
  """tokens [B, T] -> logits [B, T, V] over the vocabulary at every position (float32)."""
  config: "GPTConfig"  # causal=False; vocab_size counts the [MASK] symbol.
  mask_id: int
  pretraining_only = ("^mlm_",)

  def setup(self):
    c = self.config
    self.wte = nn.Embed(c.vocab_size, c.width, embedding_init=nn.initializers.normal(0.02), dtype=c.dtype)
    self.wpe = nn.Embed(c.context, c.width, embedding_init=nn.initializers.normal(0.02), dtype=c.dtype)
    self.drop = nn.Dropout(c.dropout)
    self.h = [gpt.Block(c, name=f"h_{i}") for i in range(c.num_layers)]
    self.ln_f = gpt._layer_norm(c, "ln_f")
    self.mlm_dense = nn.Dense(c.width, dtype=c.dtype, kernel_init=nn.initializers.normal(0.02))
    self.mlm_ln = nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=c.dtype)
    self.mlm_bias = Bias(c.vocab_size)

  def features(self, tokens_BxT, train: bool = False):
    """The encoder's final hidden states [B, T, D]: position t has read the whole window."""
    T = tokens_BxT.shape[1]
    x_BxTxD = self.wte(tokens_BxT) + self.wpe(jnp.arange(T))[None]
    x_BxTxD = self.drop(x_BxTxD, deterministic=not train)
    for block in self.h:
      x_BxTxD = block(x_BxTxD, train)
    return self.ln_f(x_BxTxD)

  def __call__(self, tokens_BxT, train: bool = False):
    h_BxTxD = self.mlm_ln(nn.gelu(self.mlm_dense(self.features(tokens_BxT, train)),
                                  approximate=self.config.gelu_approximate))
    return self.mlm_bias(self.wte.attend(h_BxTxD)).astype(jnp.float32)
