"""BERT (BertForMaskedLM, or BertModel without the MLM head) <-> our BERT family with post-LayerNorm blocks,
token type embeddings and the tokenizer's [MASK] (models/bert.py).

Names (their `bert.` prefix dropped): embeddings.{word,position,token_type}_embeddings -> wte/wpe/wtt;
embeddings.LayerNorm -> ln_e; encoder.layer.N.attention.self.{query,key,value} -> h_N/attn/c_attn (transposed,
concatenated); attention.output.dense -> attn/c_proj; attention.output.LayerNorm -> ln_1; intermediate.dense ->
mlp/c_fc; output.dense -> mlp/c_proj; output.LayerNorm -> ln_2; cls.predictions.transform.{dense,LayerNorm} ->
mlm_dense/mlm_ln; cls.predictions.bias -> mlm_bias (the decoder is the tied word embedding). The pooler
(BertModel's dense + tanh on [CLS], model.pooler) -> pooler_dense, which a classifier with
model.head.pooling=cls applies to the [CLS] features under a new head.
"""
from pretrain.errors import ConfigError
from pretrain.hf import Link, fail
from pretrain.models import gpt
from pretrain.hf.gpt2 import GELU_APPROXIMATE

MODEL_TYPES = ("bert",)
FAMILY = "bert"
OBJECTIVE = "masked_lm"
PREFIXES = ("bert.",)
IGNORED = (r"position_ids$", r"cls\.predictions\.decoder\.(weight|bias)$", r"cls\.seq_relationship\.",
           r"^classifier\.")  # BertForSequenceClassification's task head: a fine-tuning run makes its own.
MAY_BE_FRESH = ("^mlm_",)  # BertModel has no MLM head: it imports to be fine-tuned as a classifier.
FRESH_NOTE = "no masked-LM head: fine-tune it as a classifier, or pretrain the head first"


def model_section(hf: dict) -> dict:
  problems = []
  width, heads = hf.get("hidden_size", 768), hf.get("num_attention_heads", 12)
  act = hf.get("hidden_act", "gelu")
  if act not in GELU_APPROXIMATE:
    problems.append(f"hidden_act={act!r} (supported: {', '.join(GELU_APPROXIMATE)})")
  if width % heads:
    problems.append(f"num_attention_heads={heads} does not divide hidden_size={width}")
  if hf.get("position_embedding_type", "absolute") != "absolute":
    problems.append(f"position_embedding_type={hf['position_embedding_type']!r} (only 'absolute')")
  for key in ("is_decoder", "add_cross_attention"):
    if hf.get(key):
      problems.append(f"{key}=true (only an encoder)")
  fail("cannot import this BERT", problems)
  return dict(family="bert", vocab_size=hf.get("vocab_size", 30522), context=hf.get("max_position_embeddings", 512),
              num_layers=hf.get("num_hidden_layers", 12), num_heads=heads, width=width,
              mlp_width=hf.get("intermediate_size", 3072), bias=True, position="learned", norm="layernorm",
              norm_position="post", activation="gelu", gelu_approximate=GELU_APPROXIMATE[act],
              type_vocab_size=hf.get("type_vocab_size", 2), layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
              tie_embeddings=True, dropout=hf.get("hidden_dropout_prob", 0.1))


def fit(m, names: list[str], specials: dict) -> None:
  """What config.json does not say: [MASK] and [CLS] are the tokenizer's own tokens (without [MASK] the
  vocabulary would grow by one and fit no weight), and the pooler is there when its weights are."""
  if "mask" not in specials:
    raise ConfigError("BERT import needs its tokenizer's [MASK] id: put its tokenizer.json (with [MASK]) beside "
                      "config.json in --hf-dir")
  m.mask_id = specials["mask"]
  m.cls_id = specials.get("cls", -1)
  m.pooler = any(n.endswith("pooler.dense.weight") for n in names)


def unsupported(m) -> list[str]:
  wants = {"position": "learned", "norm": "layernorm", "norm_position": "post", "activation": "gelu", "bias": True,
           "qk_norm": False, "tie_embeddings": True}
  return [f"model.{k}={v}" for k, v in wants.items() if m[k] != v] + (
      ["model.num_kv_heads=0"] if m.num_kv_heads not in (0, m.num_heads) else [])


def hf_config(m, specials: dict) -> dict:
  return {"architectures": ["BertForMaskedLM"], "model_type": "bert", "vocab_size": m.vocab_size,
          "hidden_size": m.width, "num_hidden_layers": m.num_layers, "num_attention_heads": m.num_heads,
          "intermediate_size": gpt.mlp_width(m),
          "hidden_act": "gelu_new" if m.gelu_approximate else "gelu", "max_position_embeddings": m.context,
          "type_vocab_size": max(m.type_vocab_size, 1), "layer_norm_eps": m.layer_norm_eps,
          "hidden_dropout_prob": m.dropout, "attention_probs_dropout_prob": m.dropout,
          "position_embedding_type": "absolute", "tie_word_embeddings": True, "initializer_range": 0.02,
          "dtype": "float32", "pad_token_id": specials.get("pad", 0)}


def links(m) -> list[Link]:
  D = m.width
  out = [Link("wte/embedding", ("embeddings.word_embeddings.weight",)),
         Link("wpe/embedding", ("embeddings.position_embeddings.weight",)),
         Link("ln_e/scale", ("embeddings.LayerNorm.weight",)), Link("ln_e/bias", ("embeddings.LayerNorm.bias",))]
  if m.type_vocab_size:
    out.append(Link("wtt/embedding", ("embeddings.token_type_embeddings.weight",)))
  for i in range(m.num_layers):
    at = f"encoder.layer.{i}."
    qkv = tuple(f"{at}attention.self.{p}" for p in ("query", "key", "value"))
    out += [Link(f"h_{i}/attn/c_attn/kernel", tuple(f"{n}.weight" for n in qkv), (D, D, D), True),
            Link(f"h_{i}/attn/c_attn/bias", tuple(f"{n}.bias" for n in qkv), (D, D, D))]
    for ours, theirs in (("attn/c_proj", "attention.output.dense"), ("mlp/c_fc", "intermediate.dense"),
                         ("mlp/c_proj", "output.dense")):
      out += [Link(f"h_{i}/{ours}/kernel", (f"{at}{theirs}.weight",), transpose=True),
              Link(f"h_{i}/{ours}/bias", (f"{at}{theirs}.bias",))]
    for ours, theirs in (("ln_1", "attention.output.LayerNorm"), ("ln_2", "output.LayerNorm")):
      out += [Link(f"h_{i}/{ours}/scale", (f"{at}{theirs}.weight",)), Link(f"h_{i}/{ours}/bias", (f"{at}{theirs}.bias",))]
  if m.pooler:
    out += [Link("pooler_dense/kernel", ("pooler.dense.weight",), transpose=True),
            Link("pooler_dense/bias", ("pooler.dense.bias",))]
  out += [Link("mlm_dense/kernel", ("cls.predictions.transform.dense.weight",), transpose=True),
          Link("mlm_dense/bias", ("cls.predictions.transform.dense.bias",)),
          Link("mlm_ln/scale", ("cls.predictions.transform.LayerNorm.weight",)),
          Link("mlm_ln/bias", ("cls.predictions.transform.LayerNorm.bias",)),
          Link("mlm_bias/bias", ("cls.predictions.bias",))]
  return out


def stored_name(name: str) -> str:
  return name if name.startswith("cls.") else "bert." + name
