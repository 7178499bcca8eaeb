"""A multi-layer LSTM language model (char-rnn's architecture): embedding, stacked LSTMs, softmax.

tokens [B, T] -> next-token logits [B, T, V]. Each window starts from a zero state (char-rnn instead
carries the state across consecutive batches). Dropout, as in char-rnn, follows each LSTM layer.
"""
import flax.linen as nn
import jax.numpy as jnp


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
