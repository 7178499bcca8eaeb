"""GPT decoder (GPT-2 layout, nanoGPT defaults) in flax.linen.

Parameter names follow GPT-2's (wte, wpe, h_i/{ln_1, attn/c_attn, attn/c_proj, ln_2, mlp/c_fc, mlp/c_proj},
ln_f) so weights map one to one. Tensor names carry their shapes: B batch, T time, D width, H heads,
Q head width, V vocabulary.
"""
import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from pretrain import models, tree
from pretrain.errors import ConfigError

OBJECTIVES = ("next_token",)
INPUTS = "tokens"
POSITIONS = ("learned", "rope")
ACTIVATIONS = ("gelu", "relu2")
HEAD_INITS = ("normal", "zeros")
REMAT = ("none", "full", "dots")


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


def gpt_config(config, dataset) -> GPTConfig:
  """The block settings of config.model (GPT's and BERT's)."""
  m = config.model
  if m.position == "rope" and (m.width // m.num_heads) % 2:
    raise ConfigError(f"model.position=rope rotates pairs of a head's {m.width // m.num_heads} dimensions; "
                      "choose model.width / model.num_heads even")
  return GPTConfig(vocab_size=models.vocab_size(config, dataset), context=m.context, num_layers=m.num_layers,
                   num_heads=m.num_heads, width=m.width, mlp_ratio=m.mlp_ratio, dropout=m.dropout, bias=m.bias,
                   tie_embeddings=m.tie_embeddings, dtype=models.dtype("model.dtype", m.dtype),
                   attention_implementation=_attention(m.attention),
                   param_dtype=models.dtype("model.param_dtype", m.param_dtype),
                   remat=models.choice("model.remat", m.remat, REMAT),
                   position=models.choice("model.position", m.position, POSITIONS),
                   gelu_approximate=m.gelu_approximate, layer_norm_eps=m.layer_norm_eps, qk_norm=bool(m.qk_norm),
                   activation=models.choice("model.activation", m.activation, ACTIVATIONS),
                   head_init=models.choice("model.head_init", m.head_init, HEAD_INITS))


def _attention(name: str) -> str:
  models.choice("model.attention", name, ("xla", "cudnn"))
  if name == "cudnn" and jax.default_backend() != "gpu":
    print(f"note: model.attention=cudnn needs a GPU; using xla attention on {jax.default_backend()}", flush=True)
    return "xla"
  return name


def build(config, dataset, data_axis=None):
  del data_axis
  return GPT(gpt_config(config, dataset))


def flops_per_token(config, params, forward_flops) -> float:
  """nanoGPT's count, 6N + 12 L H Q T, N without the position embeddings (a lookup, no multiply)."""
  del forward_flops
  m = config.model
  n = sum(math.prod(shape) for name, shape in tree.shapes(params).items() if "wpe" not in name.split("/"))
  return 6 * n + 12 * m.num_layers * m.num_heads * (m.width // m.num_heads) * m.context


def max_length(config) -> int:
  return config.model.context


def _dense(features, config, std, name):
  return nn.Dense(features, use_bias=config.bias, dtype=config.dtype, param_dtype=config.param_dtype, name=name,
                  kernel_init=nn.initializers.normal(std), bias_init=nn.initializers.zeros)


def _layer_norm(config, name):
  return nn.LayerNorm(epsilon=config.layer_norm_eps, use_bias=config.bias, dtype=config.dtype, param_dtype=config.param_dtype,
                      name=name)


def rotary(x_BxTxHxQ, positions_BxT=None, base: float = 10000.0):
  """Rotary position embedding (RoFormer): each pair (x_i, x_{i+Q/2}) of a head turns by the angle
  t * base^(-2i/Q) at position t, so a query-key product depends on the offset between their positions only.
  positions_BxT: each token's position t; default 0..T-1 (a cache's later tokens and left-padded rows differ)."""
  T, Q = x_BxTxHxQ.shape[1], x_BxTxHxQ.shape[3]
  inv_freq_F = base ** (-jnp.arange(0, Q, 2, dtype=jnp.float32) / Q)
  if positions_BxT is None:
    angle_BxTxF = (jnp.arange(T, dtype=jnp.float32)[:, None] * inv_freq_F[None])[None]
  else:
    angle_BxTxF = positions_BxT.astype(jnp.float32)[:, :, None] * inv_freq_F[None, None]
  cos_BxTx1xF, sin_BxTx1xF = jnp.cos(angle_BxTxF)[:, :, None], jnp.sin(angle_BxTxF)[:, :, None]
  a_BxTxHxF, b_BxTxHxF = jnp.split(x_BxTxHxQ.astype(jnp.float32), 2, axis=-1)
  rotated = jnp.concatenate([a_BxTxHxF * cos_BxTx1xF - b_BxTxHxF * sin_BxTx1xF,
                             b_BxTxHxF * cos_BxTx1xF + a_BxTxHxF * sin_BxTx1xF], axis=-1)
  return rotated.astype(x_BxTxHxQ.dtype)


def _rms_norm(x, eps: float = 1e-6):
  """Each head's vector scaled to unit root-mean-square, without a learned gain (QK-norm)."""
  x32 = x.astype(jnp.float32)
  return (x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)).astype(x.dtype)


class CausalSelfAttention(nn.Module):
  """decode=True: keys and values go into a fixed-size "cache" collection (its length is that of the first
  call, see init_cache) and the queries attend to every cached position up to their own."""
  config: "GPTConfig"

  @nn.compact
  def __call__(self, x_BxTxD, train: bool, positions_BxT=None, valid_BxT=None, decode: bool = False):
    c = self.config
    B, T, D = x_BxTxD.shape
    H, Q = c.num_heads, D // c.num_heads
    qkv_BxTx3xHxQ = _dense(3 * D, c, 0.02, "c_attn")(x_BxTxD).reshape(B, T, 3, H, Q)
    q_BxTxHxQ, k_BxTxHxQ, v_BxTxHxQ = (qkv_BxTx3xHxQ[:, :, i] for i in range(3))
    if c.qk_norm:  # Bounds the attention logits, so a high learning rate cannot blow them up.
      q_BxTxHxQ, k_BxTxHxQ = _rms_norm(q_BxTxHxQ), _rms_norm(k_BxTxHxQ)
    if c.position == "rope":
      q_BxTxHxQ, k_BxTxHxQ = rotary(q_BxTxHxQ, positions_BxT), rotary(k_BxTxHxQ, positions_BxT)
    valid_BxT = jnp.ones((B, T), bool) if valid_BxT is None and decode else valid_BxT
    if decode:
      # Heads before positions, so that both products below are batched matmuls over the cache as it lies:
      # in [B, S, H, Q], XLA transposes the whole cache at every step.
      cached_k = self.variable("cache", "key", jnp.zeros, (B, H, T, Q), k_BxTxHxQ.dtype)
      cached_v = self.variable("cache", "value", jnp.zeros, (B, H, T, Q), v_BxTxHxQ.dtype)
      cached_valid = self.variable("cache", "valid", jnp.zeros, (B, T), bool)
      index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
      i, S = index.value, cached_k.value.shape[2]
      cached_k.value = jax.lax.dynamic_update_slice(cached_k.value, k_BxTxHxQ.transpose(0, 2, 1, 3), (0, 0, i, 0))
      cached_v.value = jax.lax.dynamic_update_slice(cached_v.value, v_BxTxHxQ.transpose(0, 2, 1, 3), (0, 0, i, 0))
      cached_valid.value = jax.lax.dynamic_update_slice(cached_valid.value, valid_BxT, (0, i))
      index.value = i + T
      causal_TxS = jnp.arange(S)[None] <= (i + jnp.arange(T))[:, None]
      # Padding keys are masked out, so a left-padded row attends to what it would attend to alone.
      mask_Bx1xTxS = causal_TxS[None, None] & cached_valid.value[:, None, None]
      scores_BxHxTxS = jnp.einsum("bthq,bhsq->bhts", q_BxTxHxQ, cached_k.value) / math.sqrt(Q)
      scores_BxHxTxS = jnp.where(mask_Bx1xTxS, scores_BxHxTxS.astype(jnp.float32), jnp.finfo(jnp.float32).min)
      weights_BxHxTxS = jax.nn.softmax(scores_BxHxTxS, axis=-1).astype(c.dtype)
      y_BxTxHxQ = jnp.einsum("bhts,bhsq->bthq", weights_BxHxTxS, cached_v.value)
    elif train and c.dropout > 0:
      # dot_product_attention has no dropout on the weights; write it out when it is needed.
      scores_BxHxTxT = jnp.einsum("bthq,bshq->bhts", q_BxTxHxQ, k_BxTxHxQ) / math.sqrt(Q)
      if c.causal:
        causal_TxT = jnp.tril(jnp.ones((T, T), bool))
        scores_BxHxTxT = jnp.where(causal_TxT, scores_BxHxTxT, jnp.finfo(scores_BxHxTxT.dtype).min)
      weights_BxHxTxT = jax.nn.softmax(scores_BxHxTxT.astype(jnp.float32), axis=-1).astype(c.dtype)
      weights_BxHxTxT = nn.Dropout(c.dropout)(weights_BxHxTxT, deterministic=False)
      y_BxTxHxQ = jnp.einsum("bhts,bshq->bthq", weights_BxHxTxT, v_BxTxHxQ)
    else:
      mask_Bx1x1xT = None if valid_BxT is None else valid_BxT[:, None, None]
      y_BxTxHxQ = jax.nn.dot_product_attention(q_BxTxHxQ, k_BxTxHxQ, v_BxTxHxQ, mask=mask_Bx1x1xT, is_causal=c.causal,
                                               implementation=c.attention_implementation)
    std = 0.02 / math.sqrt(2 * c.num_layers)  # GPT-2: scale residual projections by depth.
    y_BxTxD = _dense(D, c, std, "c_proj")(y_BxTxHxQ.reshape(B, T, D))
    return nn.Dropout(c.dropout)(y_BxTxD, deterministic=not train)


class MLP(nn.Module):
  config: "GPTConfig"

  @nn.compact
  def __call__(self, x_BxTxD, train: bool):
    c = self.config
    h = _dense(c.mlp_ratio * c.width, c, 0.02, "c_fc")(x_BxTxD)
    # relu2 (squared ReLU, Primer): cheaper than GELU and trains faster in small GPTs.
    h = jnp.square(nn.relu(h)) if c.activation == "relu2" else nn.gelu(h, approximate=c.gelu_approximate)
    h = _dense(c.width, c, 0.02 / math.sqrt(2 * c.num_layers), "c_proj")(h)
    return nn.Dropout(c.dropout)(h, deterministic=not train)


class Block(nn.Module):
  config: "GPTConfig"

  @nn.compact
  def __call__(self, x_BxTxD, train: bool, positions_BxT=None, valid_BxT=None, decode: bool = False):
    attn = CausalSelfAttention(self.config, name="attn")
    x_BxTxD = x_BxTxD + attn(_layer_norm(self.config, "ln_1")(x_BxTxD), train, positions_BxT, valid_BxT, decode)
    return x_BxTxD + MLP(self.config, name="mlp")(_layer_norm(self.config, "ln_2")(x_BxTxD), train)


_REMAT_POLICIES = {"full": None, "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


class GPT(nn.Module):
  """tokens [B, T] -> next-token logits [B, T, V] (float32)."""
  config: "GPTConfig"
  pretraining_only = ("^lm_head/",)  # Used by next-token prediction only; not part of a classifier's backbone.

  def setup(self):
    c = self.config
    self.wte = nn.Embed(c.vocab_size, c.width, embedding_init=nn.initializers.normal(0.02), dtype=c.dtype,
                        param_dtype=c.param_dtype)
    if c.position == "learned":
      self.wpe = nn.Embed(c.context, c.width, embedding_init=nn.initializers.normal(0.02), dtype=c.dtype,
                          param_dtype=c.param_dtype)
    self.drop = nn.Dropout(c.dropout)
    block = Block if c.remat == "none" else nn.remat(Block, static_argnums=(2,), policy=_REMAT_POLICIES[c.remat])
    self.h = [block(c, name=f"h_{i}") for i in range(c.num_layers)]
    self.ln_f = _layer_norm(c, "ln_f")
    if not c.tie_embeddings:
      # A zero head starts at the uniform prediction, and its first updates come from the features alone.
      head_init = nn.initializers.zeros if c.head_init == "zeros" else nn.initializers.normal(0.02)
      self.lm_head = nn.Dense(c.vocab_size, use_bias=False, dtype=c.dtype, param_dtype=c.param_dtype,
                              kernel_init=head_init)

  def features(self, tokens_BxT, train: bool = False, positions_BxT=None, valid_BxT=None, decode: bool = False):
    """The final hidden states [B, T, D], after ln_f: what heads for other tasks read.

    Generation (pretrain/sample.py) passes positions_BxT (default 0..T-1), valid_BxT (False at padding, which
    no position attends to) and decode=True (attention reads and extends the "cache" collection)."""
    T = tokens_BxT.shape[1]
    x_BxTxD = self.wte(tokens_BxT)
    if self.config.position == "learned":
      x_BxTxD = x_BxTxD + (self.wpe(jnp.arange(T))[None] if positions_BxT is None else self.wpe(positions_BxT))
    x_BxTxD = self.drop(x_BxTxD, deterministic=not train)
    generating = decode or positions_BxT is not None or valid_BxT is not None
    for block in self.h:
      # Training passes two arguments only: nn.remat holds `train` static and takes no static `decode`.
      x_BxTxD = block(x_BxTxD, train, positions_BxT, valid_BxT, decode) if generating else block(x_BxTxD, train)
    return self.ln_f(x_BxTxD)

  def __call__(self, tokens_BxT, train: bool = False, positions_BxT=None, valid_BxT=None, decode: bool = False):
    x_BxTxD = self.features(tokens_BxT, train, positions_BxT, valid_BxT, decode)
    logits_BxTxV = self.wte.attend(x_BxTxD) if self.config.tie_embeddings else self.lm_head(x_BxTxD)
    return logits_BxTxV.astype(jnp.float32)


def generation_steps(model, params, length: int):
  """prefill(tokens_BxP, valid_BxP) and step(token_B, state) -> (next-token logits [B, V], state), the state
  being the key-value cache of `length` positions and each row's last position."""
  def prefill(tokens_BxP, valid_BxP):
    positions_BxP = jnp.maximum(jnp.cumsum(valid_BxP, axis=1) - 1, 0)
    cache = init_cache(model, params, tokens_BxP.shape[0], length)
    logits_BxPxV, variables = model.apply({"params": params, "cache": cache}, tokens_BxP, positions_BxT=positions_BxP,
                                          valid_BxT=valid_BxP, decode=True, mutable=["cache"])
    return logits_BxPxV[:, -1], (variables["cache"], positions_BxP[:, -1])

  def step(token_B, state):
    cache, position_B = state
    logits_Bx1xV, variables = model.apply({"params": params, "cache": cache}, token_B[:, None],
                                          positions_BxT=position_B[:, None] + 1, decode=True, mutable=["cache"])
    return logits_Bx1xV[:, 0], (variables["cache"], position_B + 1)
  return prefill, step


def init_cache(model: GPT, params, batch: int, length: int):
  """The zeroed "cache" collection of `model` for `batch` rows of up to `length` tokens (prompt and new)."""
  tokens_BxS = jnp.zeros((batch, length), jnp.int32)
  shapes = jax.eval_shape(lambda: model.apply({"params": params}, tokens_BxS, decode=True, mutable=["cache"])[1])
  return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["cache"])
