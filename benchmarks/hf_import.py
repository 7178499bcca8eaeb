"""pretrain.hf import / export of a ~1 GB random Llama: wall time and peak host memory against the model's size.

  python -m benchmarks.hf_import [--layers 13] [--dtype float32] [--out /tmp/hf_import]

Builds a Llama in Transformers (width 1024, 16 heads sharing 4 key/value heads, MLP 4096, vocabulary 32,000,
untied head; float32: 1.05 GB at 13 layers), saves it with save_pretrained, then times each command as a user
runs it, under /usr/bin/time -v (peak RSS of the whole process, Python and JAX included). The baseline is the
peak RSS of a process that only imports pretrain.hf and JAX and touches the CPU device.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time


def timed(command: list[str]) -> dict:
  start = time.time()
  proc = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True)
  if proc.returncode:
    sys.exit(f"{' '.join(command)} failed:\n{proc.stderr[-2000:]}")
  rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
  return {"wall_s": round(time.time() - start, 1), "peak_rss_mb": round(rss_kb / 1024)}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--layers", type=int, default=13)
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--out", default="/tmp/hf_import")
  args = parser.parse_args()
  import torch
  import transformers
  shutil.rmtree(args.out, ignore_errors=True)
  hf_dir = os.path.join(args.out, "llama")
  config = transformers.LlamaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=4096,
                                    num_hidden_layers=args.layers, num_attention_heads=16, num_key_value_heads=4,
                                    max_position_embeddings=2048, tie_word_embeddings=False)
  torch.manual_seed(0)
  model = transformers.LlamaForCausalLM(config).to(getattr(torch, args.dtype))
  model.save_pretrained(hf_dir)
  params = sum(p.numel() for p in model.parameters())
  del model
  size_mb = sum(os.path.getsize(os.path.join(hf_dir, f)) for f in os.listdir(hf_dir) if f.endswith(".safetensors")) / 2**20
  py = sys.executable
  baseline = timed([py, "-c", "import jax, pretrain.hf; jax.numpy.zeros(1).block_until_ready()"])
  run = os.path.join(args.out, "run")
  imported = timed([py, "-m", "pretrain.hf", "import", "--hf-dir", hf_dir, "--workdir", run])
  exported = timed([py, "-m", "pretrain.hf", "export", "--workdir", run, "--hf-dir", os.path.join(args.out, "back")])
  f32_mb = params * 4 / 2**20
  print(json.dumps({"params": params, "dtype": args.dtype, "file_mb": round(size_mb), "float32_mb": round(f32_mb),
                    "baseline": baseline, "import": imported, "export": exported,
                    "import_rss_over_float32_size": round((imported["peak_rss_mb"] - baseline["peak_rss_mb"]) / f32_mb, 2),
                    "export_rss_over_float32_size": round((exported["peak_rss_mb"] - baseline["peak_rss_mb"]) / f32_mb, 2)}))


if __name__ == "__main__":
  main()
