"""Llama, Mistral and Qwen2 <-> our GPT in its Llama shape (models/gpt.py): RMSNorm, SwiGLU, grouped-query
attention, rotary positions with their base and scaling, untied or tied head, Qwen2's q/k/v biases.

Names (their `model.` prefix dropped): embed_tokens -> wte; layers.N.input_layernorm -> h_N/ln_1/scale;
self_attn.{q,k,v}_proj -> h_N/attn/c_attn, transposed and concatenated (queries, keys, values); o_proj ->
attn/c_proj; post_attention_layernorm -> ln_2; mlp.{gate,up}_proj -> mlp/c_fc (gate, then up); down_proj ->
mlp/c_proj; norm -> ln_f; lm_head -> lm_head (untied only). Export writes model_type qwen2 when the q/k/v
projections have biases, llama otherwise (Mistral without a sliding window computes as Llama does).
"""
from pretrain.hf import Link, fail
from pretrain.models import gpt

MODEL_TYPES = ("llama", "mistral", "qwen2")
FAMILY = "gpt"
OBJECTIVE = "next_token"
PREFIXES = ("model.",)
IGNORED = (r"rotary_emb\.inv_freq$",)
ROPE_TYPES = {"default": "", "linear": "linear", "llama3": "llama3"}


def _rope(hf: dict, problems: list) -> tuple[float, dict]:
  """(theta, our model.rope_scaling fields) from rope_parameters (Transformers 5) or rope_theta + rope_scaling."""
  params = dict(hf.get("rope_parameters") or {})
  if not params:
    params = {**(hf.get("rope_scaling") or {}), "rope_theta": hf.get("rope_theta", 10000.0)}
  kind = params.get("rope_type", params.get("type", "default"))
  if kind not in ROPE_TYPES:
    problems.append(f"rope_scaling.rope_type={kind!r} (supported: {', '.join(ROPE_TYPES)})")
    return params.get("rope_theta", 10000.0), {}
  scaling = {"type": ROPE_TYPES[kind]}
  if kind != "default":
    scaling["factor"] = float(params["factor"])
  if kind == "llama3":
    scaling.update(low_freq_factor=float(params["low_freq_factor"]), high_freq_factor=float(params["high_freq_factor"]),
                   original_context=int(params["original_max_position_embeddings"]))
  return float(params.get("rope_theta", 10000.0)), scaling


def model_section(hf: dict) -> dict:
  """Our model.* settings for a Llama/Mistral/Qwen2 config.json; one error lists everything that does not fit."""
  problems = []
  kind = hf["model_type"]
  width, heads = hf.get("hidden_size", 4096), hf.get("num_attention_heads", 32)
  kv_heads = hf.get("num_key_value_heads") or heads
  context = hf.get("max_position_embeddings", 2048)
  if hf.get("hidden_act", "silu") != "silu":
    problems.append(f"hidden_act={hf['hidden_act']!r} (only 'silu')")
  if width % heads:
    problems.append(f"num_attention_heads={heads} does not divide hidden_size={width}")
  elif hf.get("head_dim") not in (None, width // heads):
    problems.append(f"head_dim={hf['head_dim']} (only hidden_size / num_attention_heads = {width // heads})")
  if heads % kv_heads:
    problems.append(f"num_key_value_heads={kv_heads} does not divide num_attention_heads={heads}")
  for key in ("attention_bias", "mlp_bias"):
    if hf.get(key):
      problems.append(f"{key}=true (only false)")
  window = hf.get("sliding_window")
  sliding = kind == "mistral" or hf.get("use_sliding_window") or "sliding_attention" in (hf.get("layer_types") or ())
  if sliding and window is not None and window < context:
    problems.append(f"sliding_window={window} is shorter than max_position_embeddings={context} (only full attention; "
                    f"set sliding_window to null or >= {context} if the model was trained without it)")
  theta, scaling = _rope(hf, problems)
  fail(f"cannot import this {kind}", problems)
  return dict(family="gpt", vocab_size=hf.get("vocab_size", 32000), context=context,
              num_layers=hf.get("num_hidden_layers", 32), num_heads=heads, num_kv_heads=kv_heads, width=width,
              mlp_width=hf.get("intermediate_size", 11008), norm="rmsnorm", activation="swiglu", bias=False,
              qkv_bias=kind == "qwen2", position="rope", rope_theta=theta, rope_scaling=scaling,
              tie_embeddings=hf.get("tie_word_embeddings", False), layer_norm_eps=hf.get("rms_norm_eps", 1e-6),
              dropout=hf.get("attention_dropout", 0.0))


def unsupported(m) -> list[str]:
  wants = {"position": "rope", "norm": "rmsnorm", "norm_position": "pre", "activation": "swiglu", "bias": False,
           "qk_norm": False}
  return [f"model.{k}={v}" for k, v in wants.items() if m[k] != v]


def hf_config(m, specials: dict) -> dict:
  kind = "qwen2" if m.qkv_bias else "llama"
  r = m.rope_scaling
  scaling = None if not r.type else {"rope_type": r.type, "factor": r.factor, **(
      {"low_freq_factor": r.low_freq_factor, "high_freq_factor": r.high_freq_factor,
       "original_max_position_embeddings": r.original_context} if r.type == "llama3" else {})}
  return {"architectures": ["Qwen2ForCausalLM" if kind == "qwen2" else "LlamaForCausalLM"], "model_type": kind,
          "vocab_size": m.vocab_size, "hidden_size": m.width, "intermediate_size": gpt.mlp_width(m),
          "num_hidden_layers": m.num_layers, "num_attention_heads": m.num_heads,
          "num_key_value_heads": gpt.kv_heads(m), "head_dim": m.width // m.num_heads,
          "max_position_embeddings": m.context, "hidden_act": "silu", "rms_norm_eps": m.layer_norm_eps,
          "rope_theta": m.rope_theta, "rope_scaling": scaling,
          "rope_parameters": {"rope_type": r.type or "default", "rope_theta": m.rope_theta, **(scaling or {})},
          "attention_bias": False, "mlp_bias": False, "attention_dropout": m.dropout,
          "tie_word_embeddings": m.tie_embeddings, "use_sliding_window": False, "sliding_window": None,
          "initializer_range": 0.02, "dtype": "float32", "bos_token_id": specials.get("bos", specials.get("eos")),
          "eos_token_id": specials.get("eos"), "pad_token_id": specials.get("pad")}


def links(m) -> list[Link]:
  H, K, Q = m.num_heads, gpt.kv_heads(m), m.width // m.num_heads
  F = gpt.mlp_width(m)
  out = [Link("wte/embedding", ("embed_tokens.weight",))]
  for i in range(m.num_layers):
    at = f"layers.{i}."
    qkv = tuple(f"{at}self_attn.{p}_proj" for p in "qkv")
    out += [Link(f"h_{i}/ln_1/scale", (f"{at}input_layernorm.weight",)),
            Link(f"h_{i}/attn/c_attn/kernel", tuple(f"{n}.weight" for n in qkv), (H * Q, K * Q, K * Q), True),
            Link(f"h_{i}/attn/c_proj/kernel", (f"{at}self_attn.o_proj.weight",), transpose=True),
            Link(f"h_{i}/ln_2/scale", (f"{at}post_attention_layernorm.weight",)),
            Link(f"h_{i}/mlp/c_fc/kernel", (f"{at}mlp.gate_proj.weight", f"{at}mlp.up_proj.weight"), (F, F), True),
            Link(f"h_{i}/mlp/c_proj/kernel", (f"{at}mlp.down_proj.weight",), transpose=True)]
    if m.qkv_bias:
      out.append(Link(f"h_{i}/attn/c_attn/bias", tuple(f"{n}.bias" for n in qkv), (H * Q, K * Q, K * Q)))
  out.append(Link("ln_f/scale", ("norm.weight",)))
  if not m.tie_embeddings:
    out.append(Link("lm_head/kernel", ("lm_head.weight",), transpose=True))
  return out


def stored_name(name: str) -> str:
  return name if name.startswith("lm_head") else "model." + name
