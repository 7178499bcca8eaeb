"""GPT decoder (GPT-2 layout, nanoGPT defaults) in flax.linen, with the options that make it Llama-shaped.

Parameter names follow GPT-2's (wte, wpe, h_i/{ln_1, attn/c_attn, attn/c_proj, ln_2, mlp/c_fc, mlp/c_proj},
ln_f) so weights map one to one. The Llama shape (Llama, Mistral, Qwen2; pretrain/hf/llama.py maps them) is
norm=rmsnorm, activation=swiglu with its own mlp_width, num_kv_heads < num_heads (grouped-query attention),
position=rope with rope_theta and rope_scaling, tie_embeddings=False, bias=False (qkv_bias for Qwen2).
Fused layouts: c_attn's kernel is [D, (H + 2K) Q], the queries' H heads, then the keys' and values' K heads
each; under swiglu c_fc's kernel is [D, 2F], the gate's F units, then the up projection's.
Tensor names carry their shapes: B batch, T time, D width, H heads, K key/value heads, G = H / K query heads
per key/value head, Q head width, F MLP width, V vocabulary.
"""
import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from pretrain import models, tree
from pretrain.models import matmul, positions
from pretrain.errors import ConfigError

OBJECTIVES = ("next_token",)
INPUTS = "tokens"
POSITIONS = ("learned", "rope")
ACTIVATIONS = ("gelu", "relu2", "swiglu")
NORMS = ("layernorm", "rmsnorm")
NORM_POSITIONS = ("pre", "post")
ROPE_SCALINGS = ("", "linear", "llama3")
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
  num_kv_heads: int = 0  # Key/value heads, dividing num_heads (grouped-query attention); 0: num_heads.
  mlp_width: int = 0  # MLP hidden units; 0: mlp_ratio * width.
  norm: str = "layernorm"  # "layernorm" (GPT-2) or "rmsnorm" (Llama: a gain, no mean, no bias).
  norm_position: str = "pre"  # "pre": x + f(norm(x)), then ln_f (GPT-2); "post": norm(x + f(x)) (BERT).
  qkv_bias: bool = False  # Biases on the query, key and value projections even when bias=False (Qwen2).
  rope_theta: float = 10000.0  # Rotary base.
  rope_scaling: tuple = ()  # () or ("linear", factor) or ("llama3", factor, low_freq_factor, high_freq_factor,
  # original context): rescaled rotary frequencies for contexts past the one pretrained on.
  scan_layers: bool = False  # Blocks under nn.scan (parameters stacked [num_layers, ...] under h/block): one block
  # compiled, not num_layers of them. Its initial parameters are its own draw (each layer its own key) from the
  # unscanned model's distributions; stack_layers / unstack_layers convert parameters between the two.
  embed_lookup: str = "gather"  # "gather" rows of wte, or "one_hot": a one-hot matmul, whose gradient needs no
  # scatter-add (XLA:GPU's, under many repeats of few tokens, is a slow compare-and-swap loop). Same outputs;
  # in bf16 the table's gradient sums in another order.
  loss_chunk: int = 0  # Positions of every row whose head logits and softmax are computed at a time when the
  # model is given targets (training and evaluation losses); the backward pass recomputes each chunk's logits,
  # so the [B, T, V] logits never exist at once. 0: all at once.
  bf16_matmul: bool = False  # Matmuls through models/matmul.py (bf16 operands into an f32 result, rounded), the
  # form XLA:CPU's fast kernels take; config.model.bf16_matmul ("auto": on CPU, for a bfloat16 model) decides.

  @property
  def kv_heads(self) -> int:
    return kv_heads(self)

  @property
  def hidden(self) -> int:
    return mlp_width(self)


def kv_heads(m) -> int:
  """Key/value heads of a GPTConfig or a config's model section."""
  return m.num_kv_heads or m.num_heads


def mlp_width(m) -> int:
  """MLP hidden units of a GPTConfig or a config's model section."""
  return m.mlp_width or m.mlp_ratio * m.width


def gpt_config(config, dataset) -> GPTConfig:
  """The block settings of config.model (GPT's and BERT's)."""
  m = config.model
  if m.position == "rope" and (m.width // m.num_heads) % 2:
    raise ConfigError(f"model.position=rope rotates pairs of a head's {m.width // m.num_heads} dimensions; "
                      "choose model.width / model.num_heads even")
  if m.num_kv_heads < 0 or (m.num_kv_heads and m.num_heads % m.num_kv_heads):
    raise ConfigError(f"model.num_kv_heads={m.num_kv_heads} must divide model.num_heads={m.num_heads} (0: as many)")
  return GPTConfig(vocab_size=models.vocab_size(config, dataset), context=m.context, num_layers=m.num_layers,
                   num_heads=m.num_heads, width=m.width, mlp_ratio=m.mlp_ratio, dropout=m.dropout, bias=m.bias,
                   tie_embeddings=m.tie_embeddings, dtype=models.dtype("model.dtype", m.dtype),
                   attention_implementation=_attention(m.attention),
                   param_dtype=models.dtype("model.param_dtype", m.param_dtype),
                   remat=models.choice("model.remat", m.remat, REMAT),
                   position=models.choice("model.position", m.position, POSITIONS),
                   gelu_approximate=m.gelu_approximate, layer_norm_eps=m.layer_norm_eps, qk_norm=bool(m.qk_norm),
                   activation=models.choice("model.activation", m.activation, ACTIVATIONS),
                   head_init=models.choice("model.head_init", m.head_init, HEAD_INITS),
                   num_kv_heads=m.num_kv_heads, mlp_width=m.mlp_width, norm=models.choice("model.norm", m.norm, NORMS),
                   norm_position=models.choice("model.norm_position", m.norm_position, NORM_POSITIONS),
                   qkv_bias=bool(m.qkv_bias), rope_theta=float(m.rope_theta), rope_scaling=_rope_scaling(m.rope_scaling),
                   embed_lookup=models.choice("model.embed_lookup", m.embed_lookup, ("gather", "one_hot")),
                   scan_layers=bool(m.scan_layers), loss_chunk=_loss_chunk(m.loss_chunk),
                   bf16_matmul=matmul.resolve(models.choice("model.bf16_matmul", m.bf16_matmul, matmul.MODES),
                                              models.dtype("model.dtype", m.dtype)))


def _rope_scaling(r) -> tuple:
  kind = models.choice("model.rope_scaling.type", r.type, ROPE_SCALINGS)
  if kind and r.factor <= 0:
    raise ConfigError(f"model.rope_scaling.factor={r.factor} must be > 0")
  if kind == "llama3" and not r.high_freq_factor > r.low_freq_factor > 0:
    raise ConfigError(f"model.rope_scaling: high_freq_factor={r.high_freq_factor} must exceed low_freq_factor="
                      f"{r.low_freq_factor} > 0")
  return {"": (), "linear": ("linear", float(r.factor))}.get(kind) or (
      "llama3", float(r.factor), float(r.low_freq_factor), float(r.high_freq_factor), int(r.original_context))


def _loss_chunk(chunk: int) -> int:
  if chunk < 0:
    raise ConfigError(f"model.loss_chunk={chunk} must be >= 0 (positions per chunk of the loss; 0: all at once)")
  return int(chunk)


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


def _dense(features, config, std, name, bias=None):
  return nn.Dense(features, use_bias=config.bias if bias is None else bias, dtype=config.dtype,
                  param_dtype=config.param_dtype, name=name, kernel_init=nn.initializers.normal(std),
                  bias_init=nn.initializers.zeros, dot_general=_dot_general(config))


def _dot_general(config):
  return matmul.dense_dot_general if config.bf16_matmul else None


def _layer_norm(config, name):
  if config.norm == "rmsnorm":
    return nn.RMSNorm(epsilon=config.layer_norm_eps, dtype=config.dtype, param_dtype=config.param_dtype, name=name)
  return nn.LayerNorm(epsilon=config.layer_norm_eps, use_bias=config.bias, dtype=config.dtype, param_dtype=config.param_dtype,
                      name=name)


def gelu(x, approximate: bool):
  """GELU computed in float32 whatever x's dtype, the exact form as x * Phi(x) through erf (PyTorch's
  formula). jax.nn.gelu goes through erfc, which XLA expands into two polynomial branches, and in bfloat16
  rounds after every operation: on a CPU the MLP's backward pass spent more time there than in its matmuls."""
  x32 = x.astype(jnp.float32)
  if approximate:
    return nn.gelu(x32, approximate=True).astype(x.dtype)
  return (0.5 * x32 * (1.0 + jax.lax.erf(x32 * (1 / math.sqrt(2))))).astype(x.dtype)


def _rms_norm(x, eps: float = 1e-6):
  """Each head's vector scaled to unit root-mean-square, without a learned gain (QK-norm)."""
  x32 = x.astype(jnp.float32)
  return (x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)).astype(x.dtype)


class CausalSelfAttention(nn.Module):
  """decode=True: keys and values go into a fixed-size "cache" collection (its length is that of the first
  call, see init_cache) and the queries attend to every cached position up to their own."""
  config: "GPTConfig"

  @nn.compact
  def __call__(self, x_BxTxD, train: bool, positions_BxT=None, valid_BxT=None, decode: bool = False,
               segment_ids_BxT=None):
    c = self.config
    B, T, D = x_BxTxD.shape
    H, K, Q = c.num_heads, c.kv_heads, D // c.num_heads
    G = H // K
    qkv_BxTxN = _dense((H + 2 * K) * Q, c, 0.02, "c_attn", bias=c.bias or c.qkv_bias)(x_BxTxD)
    q_BxTxN, k_BxTxN, v_BxTxN = jnp.split(qkv_BxTxN, [H * Q, (H + K) * Q], axis=-1)
    q_BxTxHxQ, k_BxTxKxQ, v_BxTxKxQ = (q_BxTxN.reshape(B, T, H, Q), k_BxTxN.reshape(B, T, K, Q),
                                       v_BxTxN.reshape(B, T, K, Q))
    if c.qk_norm:  # Bounds the attention logits, so a high learning rate cannot blow them up.
      q_BxTxHxQ, k_BxTxKxQ = _rms_norm(q_BxTxHxQ), _rms_norm(k_BxTxKxQ)
    if c.position == "rope":
      q_BxTxHxQ = positions.rotary(q_BxTxHxQ, positions_BxT, c.rope_theta, c.rope_scaling)
      k_BxTxKxQ = positions.rotary(k_BxTxKxQ, positions_BxT, c.rope_theta, c.rope_scaling)
    valid_BxT = jnp.ones((B, T), bool) if valid_BxT is None and decode else valid_BxT
    if c.bf16_matmul and not decode:
      # XLA:CPU widens attention's bf16 dots to float32 anyway; in float32 it rounds nothing between them.
      q_BxTxHxQ, k_BxTxKxQ, v_BxTxKxQ = (a.astype(jnp.float32) for a in (q_BxTxHxQ, k_BxTxKxQ, v_BxTxKxQ))
    if segment_ids_BxT is not None:  # Documents packed in one row attend within themselves only.
      same_segment_Bx1xTxT = segment_ids_BxT[:, None, :, None] == segment_ids_BxT[:, None, None, :]
    if decode:
      # Heads before positions, so that both products below are batched matmuls over the cache as it lies:
      # in [B, S, K, Q], XLA transposes the whole cache at every step. Only the K key/value heads are stored.
      cached_k = self.variable("cache", "key", jnp.zeros, (B, K, T, Q), k_BxTxKxQ.dtype)
      cached_v = self.variable("cache", "value", jnp.zeros, (B, K, T, Q), v_BxTxKxQ.dtype)
      cached_valid = self.variable("cache", "valid", jnp.zeros, (B, T), bool)
      index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
      i, S = index.value, cached_k.value.shape[2]
      cached_k.value = jax.lax.dynamic_update_slice(cached_k.value, k_BxTxKxQ.transpose(0, 2, 1, 3), (0, 0, i, 0))
      cached_v.value = jax.lax.dynamic_update_slice(cached_v.value, v_BxTxKxQ.transpose(0, 2, 1, 3), (0, 0, i, 0))
      cached_valid.value = jax.lax.dynamic_update_slice(cached_valid.value, valid_BxT, (0, i))
      index.value = i + T
      causal_TxS = jnp.arange(S)[None] <= (i + jnp.arange(T))[:, None]
      # Padding keys are masked out, so a left-padded row attends to what it would attend to alone.
      mask_Bx1x1xTxS = causal_TxS[None, None, None] & cached_valid.value[:, None, None, None]
      q_BxTxKxGxQ = q_BxTxHxQ.reshape(B, T, K, G, Q)  # Query head h reads key/value head h // G.
      scores_BxKxGxTxS = jnp.einsum("btkgq,bksq->bkgts", q_BxTxKxGxQ, cached_k.value) / math.sqrt(Q)
      scores_BxKxGxTxS = jnp.where(mask_Bx1x1xTxS, scores_BxKxGxTxS.astype(jnp.float32), jnp.finfo(jnp.float32).min)
      weights_BxKxGxTxS = jax.nn.softmax(scores_BxKxGxTxS, axis=-1).astype(c.dtype)
      y_BxTxHxQ = jnp.einsum("bkgts,bksq->btkgq", weights_BxKxGxTxS, cached_v.value).reshape(B, T, H, Q)
    elif train and c.dropout > 0:
      # dot_product_attention has no dropout on the weights; write it out when it is needed.
      k_BxTxHxQ, v_BxTxHxQ = jnp.repeat(k_BxTxKxQ, G, axis=2), jnp.repeat(v_BxTxKxQ, G, axis=2)
      scores_BxHxTxT = jnp.einsum("bthq,bshq->bhts", q_BxTxHxQ, k_BxTxHxQ) / math.sqrt(Q)
      allowed_Bx1xTxT = jnp.ones((1, 1, T, T), bool) if segment_ids_BxT is None else same_segment_Bx1xTxT
      if c.causal:
        allowed_Bx1xTxT = allowed_Bx1xTxT & jnp.tril(jnp.ones((T, T), bool))
      scores_BxHxTxT = jnp.where(allowed_Bx1xTxT, scores_BxHxTxT, jnp.finfo(scores_BxHxTxT.dtype).min)
      weights_BxHxTxT = jax.nn.softmax(scores_BxHxTxT.astype(jnp.float32), axis=-1).astype(q_BxTxHxQ.dtype)
      weights_BxHxTxT = nn.Dropout(c.dropout)(weights_BxHxTxT, deterministic=not train)
      y_BxTxHxQ = jnp.einsum("bhts,bshq->bthq", weights_BxHxTxT, v_BxTxHxQ)
    else:
      mask = None if valid_BxT is None else valid_BxT[:, None, None]  # [B, 1, 1, T]: padded keys.
      implementation = c.attention_implementation
      if segment_ids_BxT is not None:  # [B, 1, T, T], an arbitrary pattern per row: XLA's kernel takes it.
        mask = same_segment_Bx1xTxT if mask is None else mask & same_segment_Bx1xTxT
        implementation = "xla"
      y_BxTxHxQ = jax.nn.dot_product_attention(q_BxTxHxQ, k_BxTxKxQ, v_BxTxKxQ, mask=mask, is_causal=c.causal,
                                               implementation=implementation)
    std = 0.02 / math.sqrt(2 * c.num_layers)  # GPT-2: scale residual projections by depth.
    y_BxTxD = _dense(D, c, std, "c_proj")(y_BxTxHxQ.reshape(B, T, D).astype(c.dtype))
    return nn.Dropout(c.dropout)(y_BxTxD, deterministic=not train)


class MLP(nn.Module):
  config: "GPTConfig"

  @nn.compact
  def __call__(self, x_BxTxD, train: bool):
    c = self.config
    F = c.hidden
    if c.activation == "swiglu":  # Llama: silu(x W_gate) * (x W_up), one matmul for both.
      gate_BxTxF, up_BxTxF = jnp.split(_dense(2 * F, c, 0.02, "c_fc")(x_BxTxD), 2, axis=-1)
      h_BxTxF = nn.silu(gate_BxTxF) * up_BxTxF
    else:
      h_BxTxF = _dense(F, c, 0.02, "c_fc")(x_BxTxD)
      # relu2 (squared ReLU, Primer): cheaper than GELU and trains faster in small GPTs.
      h_BxTxF = (jnp.square(nn.relu(h_BxTxF)) if c.activation == "relu2" else
                 gelu(h_BxTxF, approximate=c.gelu_approximate))
    h_BxTxD = _dense(c.width, c, 0.02 / math.sqrt(2 * c.num_layers), "c_proj")(h_BxTxF)
    return nn.Dropout(c.dropout)(h_BxTxD, deterministic=not train)


class Block(nn.Module):
  config: "GPTConfig"

  @nn.compact
  def __call__(self, x_BxTxD, train: bool, positions_BxT=None, valid_BxT=None, segment_ids_BxT=None,
               decode: bool = False):  # decode last: nn.remat holds `train` static, and decoding never remats.
    c = self.config
    attn, mlp = CausalSelfAttention(c, name="attn"), MLP(c, name="mlp")
    ln_1, ln_2 = _layer_norm(c, "ln_1"), _layer_norm(c, "ln_2")
    if c.norm_position == "post":  # BERT: each residual sum is normalised.
      x_BxTxD = ln_1(x_BxTxD + attn(x_BxTxD, train, positions_BxT, valid_BxT, decode, segment_ids_BxT))
      return ln_2(x_BxTxD + mlp(x_BxTxD, train))
    x_BxTxD = x_BxTxD + attn(ln_1(x_BxTxD), train, positions_BxT, valid_BxT, decode, segment_ids_BxT)
    return x_BxTxD + mlp(ln_2(x_BxTxD), train)


_REMAT_POLICIES = {"full": None, "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


class _ScanLayer(nn.Module):
  """One block as nn.scan's body: (x, None) -> (x, None), the other arguments broadcast to every layer."""
  config: "GPTConfig"

  @nn.compact
  def __call__(self, x_BxTxD, carry, train, positions_BxT, valid_BxT, decode, segment_ids_BxT):
    c = self.config
    if c.remat == "none" or decode:
      return Block(c, name="block")(x_BxTxD, train, positions_BxT, valid_BxT, segment_ids_BxT, decode), carry
    block = nn.remat(Block, static_argnums=(2,), policy=_REMAT_POLICIES[c.remat])
    return block(c, name="block")(x_BxTxD, train, positions_BxT, valid_BxT, segment_ids_BxT), carry


def stack_layers(tree: dict, num_layers: int) -> dict:
  """An unscanned model's variables (h_0 ... h_{L-1}) in model.scan_layers' layout (h/block, stacked on axis 0),
  in every collection (params, cache); trees without h_0 come back as they are."""
  tree = dict(tree)
  if "h_0" in tree:
    layers = [tree.pop(f"h_{i}") for i in range(num_layers)]
    return {**tree, "h": {"block": jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *layers)}}
  return {k: stack_layers(v, num_layers) if isinstance(v, dict) and k not in ("h",) else v for k, v in tree.items()}


def unstack_layers(tree: dict) -> dict:
  """model.scan_layers' variables (h/block stacked) as the unscanned model holds them (h_0 ... h_{L-1})."""
  tree = dict(tree)
  if "h" in tree and isinstance(tree["h"], dict) and "block" in tree["h"]:
    stacked = tree.pop("h")["block"]
    num_layers = jax.tree_util.tree_leaves(stacked)[0].shape[0]
    return {**tree, **{f"h_{i}": jax.tree_util.tree_map(lambda x, i=i: x[i], stacked) for i in range(num_layers)}}
  return {k: unstack_layers(v) if isinstance(v, dict) else v for k, v in tree.items()}


def match_layers(params: dict, scan_layers: bool, num_layers: int) -> dict:
  """Parameters of either layout in the one `scan_layers` asks for (a checkpoint moves between the two)."""
  return stack_layers(params, num_layers) if scan_layers else unstack_layers(params)


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
    if c.scan_layers:
      self.h = nn.scan(_ScanLayer, variable_axes={"params": 0, "cache": 0}, split_rngs={"params": True, "dropout": True},
                       in_axes=(nn.broadcast,) * 6, length=c.num_layers)(c, name="h")
    else:
      block = Block if c.remat == "none" else nn.remat(Block, static_argnums=(2,), policy=_REMAT_POLICIES[c.remat])
      self.h = [block(c, name=f"h_{i}") for i in range(c.num_layers)]
    if c.norm_position == "pre":  # Post-norm blocks end normalised already.
      self.ln_f = _layer_norm(c, "ln_f")
    if not c.tie_embeddings:
      # A zero head starts at the uniform prediction, and its first updates come from the features alone.
      head_init = nn.initializers.zeros if c.head_init == "zeros" else nn.initializers.normal(0.02)
      self.lm_head = nn.Dense(c.vocab_size, use_bias=False, dtype=c.dtype, param_dtype=c.param_dtype,
                              kernel_init=head_init, dot_general=_dot_general(c))

  def embed(self, tokens_BxT, positions_BxT=None, token_types_BxT=None):
    """Token (and learned position) embeddings [B, T, D]; token types are BERT's (models/bert.py)."""
    if token_types_BxT is not None:
      raise ValueError("a GPT has no token type embeddings")
    if self.config.embed_lookup == "one_hot":
      c = self.config
      one_hot_BxTxV = jax.nn.one_hot(tokens_BxT, c.vocab_size, dtype=c.dtype)
      x_BxTxD = jnp.einsum("btv,vd->btd", one_hot_BxTxV, self.wte.embedding.astype(c.dtype))
    else:
      x_BxTxD = self.wte(tokens_BxT)
    if self.config.position == "learned":
      T = tokens_BxT.shape[1]
      x_BxTxD = x_BxTxD + (self.wpe(jnp.arange(T))[None] if positions_BxT is None else self.wpe(positions_BxT))
    return x_BxTxD

  def features(self, tokens_BxT, train: bool = False, positions_BxT=None, valid_BxT=None, decode: bool = False,
               token_types_BxT=None, segment_ids_BxT=None):
    """The final hidden states [B, T, D], after ln_f: what heads for other tasks read.

    Generation (pretrain/sample.py) passes positions_BxT (default 0..T-1), valid_BxT (False at padding, which
    no position attends to) and decode=True (attention reads and extends the "cache" collection)."""
    if segment_ids_BxT is not None:  # data.document_mask: positions restart at each document.
      positions_BxT = positions.segment_positions(segment_ids_BxT)
    x_BxTxD = self.drop(self.embed(tokens_BxT, positions_BxT, token_types_BxT), deterministic=not train)
    generating = decode or positions_BxT is not None or valid_BxT is not None
    if self.config.scan_layers:
      x_BxTxD, _ = self.h(x_BxTxD, None, train, positions_BxT, valid_BxT, decode, segment_ids_BxT)
    else:
      for block in self.h:
        # nn.remat holds `train` static and takes no static `decode`: it is passed only when decoding (never remat).
        x_BxTxD = (block(x_BxTxD, train, positions_BxT, valid_BxT, segment_ids_BxT, decode) if decode
                   else block(x_BxTxD, train, positions_BxT, valid_BxT, segment_ids_BxT) if generating
                   else block(x_BxTxD, train))
    return self.ln_f(x_BxTxD) if self.config.norm_position == "pre" else x_BxTxD

  def __call__(self, tokens_BxT, train: bool = False, positions_BxT=None, valid_BxT=None, decode: bool = False,
               segment_ids_BxT=None, targets_BxT=None):
    """Next-token logits [B, T, V]; given targets_BxT, each position's negative log-likelihood of its target
    [B, T] instead (float32), the head and softmax taken config.loss_chunk positions at a time."""
    x_BxTxD = self.features(tokens_BxT, train, positions_BxT, valid_BxT, decode, segment_ids_BxT=segment_ids_BxT)
    if targets_BxT is None:
      return self.logits(x_BxTxD)
    if not self.config.loss_chunk:
      return optax.softmax_cross_entropy_with_integer_labels(self.logits(x_BxTxD), targets_BxT)
    return self.chunked_nll(x_BxTxD, targets_BxT)

  def chunked_nll(self, x_BxTxD, targets_BxT):
    """Chunks of loss_chunk positions of every row (the batch axis keeps its sharding), in a loop whose
    backward pass recomputes each chunk's logits rather than keeping them."""
    c = self.config
    B, T, D = x_BxTxD.shape
    C = min(c.loss_chunk, T)
    N = -(-T // C)
    x_NxBxCxD = jnp.pad(x_BxTxD, ((0, 0), (0, N * C - T), (0, 0))).reshape(B, N, C, D).transpose(1, 0, 2, 3)
    t_NxBxC = jnp.pad(targets_BxT, ((0, 0), (0, N * C - T))).reshape(B, N, C).transpose(1, 0, 2)
    # Cast once here, not in every chunk.
    head_DxV = (self.wte.embedding.T if c.tie_embeddings else self.lm_head.variables["params"]["kernel"]).astype(c.dtype)

    @jax.checkpoint
    def chunk_nll(head_DxV, x_BxCxD, t_BxC):
      return optax.softmax_cross_entropy_with_integer_labels(_head_logits(c, x_BxCxD, head_DxV), t_BxC)

    nll_NxBxC = jax.lax.map(lambda xt: chunk_nll(head_DxV, *xt), (x_NxBxCxD, t_NxBxC))
    return nll_NxBxC.transpose(1, 0, 2).reshape(B, N * C)[:, :T]

  def logits(self, x_BxTxD):
    if not self.config.tie_embeddings:
      return self.lm_head(x_BxTxD).astype(jnp.float32)
    return _head_logits(self.config, x_BxTxD, self.wte.embedding.T)


def _head_logits(config, x_BxTxD, head_DxV):
  """Float32 logits of features against a [D, V] head, computed in the model's dtype (as nn.Embed.attend does),
  through matmul.py where config.bf16_matmul says."""
  x_BxTxD, head_DxV = x_BxTxD.astype(config.dtype), head_DxV.astype(config.dtype)
  return (matmul.matmul(x_BxTxD, head_DxV) if config.bf16_matmul else jnp.dot(x_BxTxD, head_DxV)).astype(jnp.float32)


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
