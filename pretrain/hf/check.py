"""The logit checker: Transformers and ours on the same tokens, position by position.

  python -m pretrain.hf check --hf-dir D --workdir W [--step N]

Prints the largest absolute logit difference over all positions, the KL divergence of our next-token (or
masked-token) distribution from Transformers' (mean and largest over positions), then one line per position.
The tokens are seeded random ids (2 rows of min(context, 64)): every id can occur, and neither side can
recognise them.
"""
import jax
import jax.numpy as jnp
import numpy as np

from pretrain import hf
from pretrain.models import lora

ROWS, LENGTH = 2, 64


def _transformers_logits(hf_dir: str, kind: str, tokens_BxT: np.ndarray) -> np.ndarray:
  import torch
  import transformers
  auto = transformers.AutoModelForMaskedLM if kind == "bert" else transformers.AutoModelForCausalLM
  model = auto.from_pretrained(hf_dir, dtype=torch.float32).eval()
  with torch.no_grad():
    return model(input_ids=torch.from_numpy(tokens_BxT.astype(np.int64))).logits.float().numpy()


def our_logits(config, params, tokens_BxT: np.ndarray) -> np.ndarray:
  return np.asarray(jax.jit(hf.model_of(config).apply)({"params": params}, jnp.asarray(tokens_BxT)))


def compare(ours_BxTxV: np.ndarray, theirs_BxTxV: np.ndarray) -> dict:
  """max_abs: the largest |difference|; kl_BxT: KL(theirs || ours) per position, in nats."""
  log_p = jax.nn.log_softmax(jnp.asarray(theirs_BxTxV, jnp.float64 if jax.config.x64_enabled else jnp.float32), -1)
  log_q = jax.nn.log_softmax(jnp.asarray(ours_BxTxV, log_p.dtype), -1)
  kl_BxT = np.asarray(jnp.sum(jnp.exp(log_p) * (log_p - log_q), -1))
  return {"max_abs": float(np.max(np.abs(ours_BxTxV - theirs_BxTxV))), "kl_BxT": np.maximum(kl_BxT, 0.0),
          "max_abs_BxT": np.max(np.abs(ours_BxTxV - theirs_BxTxV), -1)}


def check(hf_dir: str, workdir: str, at_step=None, print_fn=print) -> dict:
  config, params, chosen = hf.restore(workdir, at_step)
  params = lora.merge(params, config.model.lora)
  kind = hf.read_hf_config(hf_dir).get("model_type")
  V = np.shape(params["wte"]["embedding"])[0]
  config.model.vocab_size = V
  length = min(config.model.context, LENGTH)
  tokens_BxT = np.random.default_rng(0).integers(0, V, (ROWS, length))
  result = compare(our_logits(config, params, tokens_BxT), _transformers_logits(hf_dir, kind, tokens_BxT))
  kl = result["kl_BxT"]
  print_fn(f"max abs logit difference {result['max_abs']:.3e} over {ROWS} x {length} positions ({workdir} step "
           f"{chosen} vs {hf_dir}, {kind}); KL divergence (Transformers || ours) mean {kl.mean():.3e}, max "
           f"{kl.max():.3e} nats")
  print_fn("row position  max|diff|   KL")
  for b in range(ROWS):
    for t in range(length):
      print_fn(f"{b:3d} {t:8d}  {result['max_abs_BxT'][b, t]:.2e}  {kl[b, t]:.2e}")
  return result
