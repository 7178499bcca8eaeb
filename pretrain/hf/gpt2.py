"""GPT-2 <-> our GPT (learned positions, LayerNorm, GELU, biases).

Names: wte/wpe.weight -> wte/wpe/embedding; h.N.{ln_1,ln_2} and ln_f weight/bias -> h_N/.../scale/bias;
h.N.attn.{c_attn,c_proj} and h.N.mlp.{c_fc,c_proj} weight/bias -> kernel/bias. GPT-2's Conv1D stores its weight
as [in, out], which is already a Dense kernel; only an untied lm_head (an nn.Linear, [out, in]) is transposed.
"""
from pretrain.hf import Link, fail
from pretrain.models import gpt

MODEL_TYPES = ("gpt2",)
FAMILY = "gpt"
OBJECTIVE = "next_token"
PREFIXES = ("transformer.",)
IGNORED = (r"\.attn\.(masked_)?bias$",)  # Causal-mask buffers that old GPT-2 files carry; not weights.
# Transformers' activation names: the tanh approximation has three, the exact (erf) GELU one.
GELU_APPROXIMATE = {"gelu_new": True, "gelu_pytorch_tanh": True, "gelu_fast": True, "gelu": False}


def model_section(hf: dict) -> dict:
  """Our model.* settings for a GPT-2 config.json; one error lists everything that does not fit."""
  problems = []
  act = hf.get("activation_function", "gelu_new")
  if act not in GELU_APPROXIMATE:
    problems.append(f"activation_function={act!r} (supported: {', '.join(GELU_APPROXIMATE)})")
  for key, supported in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                         ("add_cross_attention", False)):
    if hf.get(key, supported) != supported:
      problems.append(f"{key}={hf[key]} (only {supported})")
  width, heads = hf.get("n_embd", 768), hf.get("n_head", 12)
  inner = hf.get("n_inner") or 4 * width
  if width % heads:
    problems.append(f"n_head={heads} does not divide n_embd={width}")
  fail("cannot import this GPT-2", problems)
  # Our GPT has one dropout rate; where GPT-2's three differ, the residual one (resid_pdrop) is kept.
  dropouts = {hf.get(k, 0.1) for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop")}
  return dict(family="gpt", vocab_size=hf.get("vocab_size", 50257), context=hf.get("n_positions", 1024),
              num_layers=hf.get("n_layer", 12), num_heads=heads, width=width,
              **({"mlp_ratio": inner // width} if inner % width == 0 else {"mlp_width": inner}),
              bias=True, position="learned", tie_embeddings=hf.get("tie_word_embeddings", True),
              gelu_approximate=GELU_APPROXIMATE[act], layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
              dropout=hf.get("resid_pdrop", 0.1) if len(dropouts) > 1 else dropouts.pop())


def unsupported(m) -> list[str]:
  wants = {"position": "learned", "norm": "layernorm", "norm_position": "pre", "activation": "gelu", "qk_norm": False,
           "num_kv_heads": (0, m.num_heads)}
  return [f"model.{k}={' or '.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in wants.items()
          if m[k] not in (v if isinstance(v, tuple) else (v,))]


def hf_config(m, specials: dict) -> dict:
  """GPT-2's config.json for our model section `m` (one dropout rate serves GPT-2's three)."""
  end = specials.get("eos")
  return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": m.vocab_size,
          "n_positions": m.context, "n_embd": m.width, "n_layer": m.num_layers, "n_head": m.num_heads,
          "n_inner": gpt.mlp_width(m), "activation_function": "gelu_new" if m.gelu_approximate else "gelu",
          "layer_norm_epsilon": m.layer_norm_eps, "resid_pdrop": m.dropout, "embd_pdrop": m.dropout,
          "attn_pdrop": m.dropout, "tie_word_embeddings": m.tie_embeddings, "scale_attn_weights": True,
          "initializer_range": 0.02, "dtype": "float32", "bos_token_id": end, "eos_token_id": end}


def links(m) -> list[Link]:
  """Every weight of a GPT-2 (a GPT without biases exports zero ones, which compute the same)."""
  out = [Link("wte/embedding", ("wte.weight",)), Link("wpe/embedding", ("wpe.weight",))]
  for i in range(m.num_layers):
    for module in ("ln_1", "attn/c_attn", "attn/c_proj", "ln_2", "mlp/c_fc", "mlp/c_proj"):
      theirs = f"h.{i}.{module.replace('/', '.')}"
      out.append(Link(f"h_{i}/{module}/{'scale' if module.startswith('ln') else 'kernel'}", (f"{theirs}.weight",)))
      out.append(Link(f"h_{i}/{module}/bias", (f"{theirs}.bias",)))
  out += [Link("ln_f/scale", ("ln_f.weight",)), Link("ln_f/bias", ("ln_f.bias",))]
  if not m.tie_embeddings:
    out.append(Link("lm_head/kernel", ("lm_head.weight",), transpose=True))
  return out


def stored_name(name: str) -> str:
  return name if name.startswith("lm_head") else "transformer." + name
