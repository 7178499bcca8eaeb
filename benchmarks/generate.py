"""Generation speed: pretrain.sample's cached loop against the recompute path it replaced and Transformers' generate().

  python -m benchmarks.generate [--contexts 256 1024] [--batches 1 32] [--new_tokens 240] [--recompute_tokens 24]

A GPT-2 of the 16-generate check's shape (4 layers, 4 heads, width 192, 65 symbols; random weights: speed does
not depend on them) is built in Transformers at each context, saved and imported with pretrain.hf, so both
sides run the same model. Each figure is new tokens per second of one timed call after a warm-up (ours: the
compiled call, compilation excluded), prompt "ROMEO:" (6 tokens), top-k 10 sampling. The recompute path (the
old sample.py: the whole window for every new token, one sequence at a time from Python) costs as much per
token whatever the batch, so it runs --recompute_tokens tokens of one sequence only.
"""
import argparse
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from pretrain import hf, sample

PROMPT = [30, 27, 25, 17, 27, 10]  # "ROMEO:" in tiny shakespeare's characters.


def recompute_generate(model, params, prompt_ids, *, max_new_tokens, context, temperature, top_k, seed):
  """The old sample.generate: a fixed-size window recomputed for every new token, parameters baked in."""
  @jax.jit
  def next_logits(window_1xT, position):
    logits_1xTxV = model.apply({"params": params}, window_1xT, train=False)
    return logits_1xTxV[0, position]

  ids = list(prompt_ids)
  rng = jax.random.key(seed)
  for _ in range(max_new_tokens):
    window = ids[-context:]
    padded = np.zeros((1, context), np.int32)
    padded[0, :len(window)] = window
    logits = next_logits(jnp.asarray(padded), len(window) - 1)
    if temperature <= 0:
      token = int(jnp.argmax(logits))
    else:
      logits = logits / temperature
      if top_k:
        kth = jnp.sort(logits)[-min(top_k, logits.shape[-1])]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
      rng, key = jax.random.split(rng)
      token = int(jax.random.categorical(key, logits))
    ids.append(token)
  return ids[len(prompt_ids):]


def _models(context: int, directory: str):
  import torch
  import transformers
  torch.manual_seed(0)
  theirs = transformers.GPT2LMHeadModel(transformers.GPT2Config(
      vocab_size=65, n_positions=context, n_embd=192, n_layer=4, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0,
      attn_pdrop=0.0, bos_token_id=None, eos_token_id=None)).eval()
  theirs.save_pretrained(directory)
  config = hf.import_hf(directory, os.path.join(directory, "ours"))
  _, params, _ = hf.restore(os.path.join(directory, "ours"))
  return theirs, hf.model_of(config), jax.device_put(params)


def _hf_tokens_per_s(model, batch: int, new_tokens: int) -> float:
  import torch
  prompt = torch.tensor([PROMPT] * batch)
  with torch.no_grad():
    model.generate(prompt, max_new_tokens=8, do_sample=True, top_k=10, pad_token_id=0)  # Warm-up.
    start = time.perf_counter()
    model.generate(prompt, max_new_tokens=new_tokens, do_sample=True, top_k=10, pad_token_id=0)
  return batch * new_tokens / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--contexts", type=int, nargs="+", default=[256, 1024])
  parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
  parser.add_argument("--new_tokens", type=int, default=240)
  parser.add_argument("--recompute_tokens", type=int, default=24)
  parser.add_argument("--threads", type=int, default=2, help="PyTorch threads (the machine's cores).")
  args = parser.parse_args()
  import torch
  torch.set_num_threads(args.threads)
  print("| context | batch | pretrain.sample (KV cache) | recompute path (old) | Transformers generate() "
        "| ours / theirs |")
  print("|---|---|---|---|---|---|")
  for context in args.contexts:
    with tempfile.TemporaryDirectory() as directory:
      theirs, model, params = _models(context, directory)
      new = min(args.new_tokens, context - len(PROMPT))
      recompute_generate(model, params, PROMPT, max_new_tokens=2, context=context, temperature=1.0, top_k=10, seed=0)
      start = time.perf_counter()
      recompute_generate(model, params, PROMPT, max_new_tokens=args.recompute_tokens, context=context,
                         temperature=1.0, top_k=10, seed=0)
      recompute = args.recompute_tokens / (time.perf_counter() - start)
      for batch in args.batches:
        ours = sample.generate(model, params, [PROMPT] * batch, max_new_tokens=new, temperature=1.0, top_k=10)
        hf_tps = _hf_tokens_per_s(theirs, batch, new)
        print(f"| {context} | {batch} | {ours.tokens_per_s:,.0f} | {recompute:,.0f} | {hf_tps:,.0f} | "
              f"{ours.tokens_per_s / hf_tps:.2f}x |", flush=True)


if __name__ == "__main__":
  main()
