"""A multi-layer LSTM language model (char-rnn's architecture): embedding, stacked LSTMs, softmax.

tokens [B, T] -> next-token logits [B, T, V]. Each window starts from a zero state (char-rnn instead
carries the state across consecutive batches). Dropout, as in char-rnn, follows each LSTM layer.
"""
import flax.linen as nn
import jax.numpy as jnp

from pretrain import models

OBJECTIVES = ("next_token",)
INPUTS = "tokens"


def build(config, dataset, data_axis=None):
  del data_axis
  m = config.model
  return LSTM(models.vocab_size(config, dataset), m.width, m.num_layers, m.dropout)


def generation_steps(model, params, length: int):
  """prefill(tokens_BxP, valid_BxP) and step(token_B, state) -> (next-token logits [B, V], state), the state being
  each layer's LSTM carry (a recurrence has no length limit: `length` is unused)."""
  del length

  def prefill(tokens_BxP, valid_BxP):
    P = tokens_BxP.shape[1]
    lengths_B = jnp.sum(valid_BxP, axis=1, dtype=jnp.int32)
    # A recurrence cannot skip padding in front of it: each row moves to the left, the padding behind it.
    source_BxP = (jnp.arange(P)[None] + (P - lengths_B)[:, None]) % P
    tokens_BxP = jnp.take_along_axis(tokens_BxP, source_BxP, axis=1)
    carries, logits_BxPxV = model.apply({"params": params}, tokens_BxP, seq_lengths_B=lengths_B, return_carry=True)
    return jnp.take_along_axis(logits_BxPxV, (lengths_B - 1)[:, None, None], axis=1)[:, 0], carries

  def step(token_B, carries):
    carries, logits_Bx1xV = model.apply({"params": params}, token_B[:, None], initial_carries=carries,
                                        return_carry=True)
    return logits_Bx1xV[:, 0], carries
  return prefill, step


class LSTM(nn.Module):
  vocab_size: int
  width: int
  num_layers: int
  dropout: float = 0.0
  pretraining_only = ("^lm_head/",)

  def setup(self):
    self.embed = nn.Embed(self.vocab_size, self.width, embedding_init=nn.initializers.normal(0.1))
    self.layers = [nn.RNN(nn.OptimizedLSTMCell(self.width), name=f"lstm_{i}") for i in range(self.num_layers)]
    self.drop = nn.Dropout(self.dropout)
    self.lm_head = nn.Dense(self.vocab_size)

  def features(self, tokens_BxT, train: bool = False, initial_carries=None, seq_lengths_B=None,
               return_carry: bool = False):
    """The last layer's hidden states [B, T, D]; position t has read tokens 0..t.

    Generation (pretrain/sample.py) starts from `initial_carries` (one per layer; default zeros) and, with
    return_carry, gets each layer's carry after the last token (of the first seq_lengths_B of each row) too."""
    x_BxTxD, carries = self.embed(tokens_BxT), []
    for i, layer in enumerate(self.layers):
      if return_carry:
        carry, x_BxTxD = layer(x_BxTxD, initial_carry=None if initial_carries is None else initial_carries[i],
                               seq_lengths=seq_lengths_B, return_carry=True)
        carries.append(carry)
      else:
        x_BxTxD = layer(x_BxTxD)
      x_BxTxD = self.drop(x_BxTxD, deterministic=not train)
    return (tuple(carries), x_BxTxD) if return_carry else x_BxTxD

  def __call__(self, tokens_BxT, train: bool = False, initial_carries=None, seq_lengths_B=None,
               return_carry: bool = False):
    if not return_carry:
      return self.lm_head(self.features(tokens_BxT, train)).astype(jnp.float32)
    carries, x_BxTxD = self.features(tokens_BxT, train, initial_carries, seq_lengths_B, return_carry=True)
    return carries, self.lm_head(x_BxTxD).astype(jnp.float32)
