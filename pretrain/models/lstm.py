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

  def features(self, tokens_BxT, train: bool = False):
    """The last layer's hidden states [B, T, D]; position t has read tokens 0..t."""
    x_BxTxD = self.embed(tokens_BxT)
    for layer in self.layers:
      x_BxTxD = self.drop(layer(x_BxTxD), deterministic=not train)
    return x_BxTxD

  def __call__(self, tokens_BxT, train: bool = False):
    return self.lm_head(self.features(tokens_BxT, train)).astype(jnp.float32)
