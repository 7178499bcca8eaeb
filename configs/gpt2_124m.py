"""GPT-2 124M as nanoGPT's train_gpt2 trains it on OpenWebText.

Command:   python -m pretrain.main --config configs/gpt2_124m.py --config.data.path CORPUS --workdir runs/gpt2
           (8 GPUs: add --config.parallel.strategy=mesh --config.optim.accum_steps=5). CORPUS: text files,
           JSON lines or Parquet shards (OpenWebText, FineWeb); for many processes prepare it first with
           `python -m pretrain.prepare` and the same --config flags.
Hardware:  8x A100/H100 class GPUs for the full 600k steps (~4 days on 8 A100 in nanoGPT's report).
Expected:  val loss ~2.85 on OpenWebText (nanoGPT); byte-level tokens here unless a GPT-2 tokenizer is given.
Variants:
  :bench   random tokens, batch 12 x 1024, no accumulation: the speed benchmark (benchmarks/gpu.sh).
  :smoke   a tiny width, a few steps on CPU: checks the config runs end to end (in `make test`).
"""
from configs import base


def get_config(variant=None):
  c = base.get_config()
  c.data.name = "text"
  c.data.tokenizer = "byte"
  c.model.num_layers = 12
  c.model.num_heads = 12
  c.model.width = 768
  c.model.context = 1024
  c.model.vocab_size = 50304  # GPT-2's 50257 padded to a multiple of 64, as nanoGPT does.
  c.model.dropout = 0.0
  c.model.bias = False
  c.model.dtype = "bfloat16"
  c.model.param_dtype = "float32"
  c.model.attention = "cudnn"  # Falls back to XLA attention (with a note) where cuDNN is unavailable.
  c.optim.lr = 6e-4
  c.optim.min_lr = 6e-5
  c.optim.warmup_steps = 2000
  c.optim.decay_steps = 600_000
  c.optim.beta1 = 0.9
  c.optim.beta2 = 0.95
  c.optim.weight_decay = 0.1
  c.optim.grad_clip = 1.0
  c.train.batch_size = 480  # 12 sequences x 40 micro-batches = 491,520 tokens per update.
  c.optim.accum_steps = 40
  c.train.steps = 600_000
  c.train.log_every = 10
  c.train.eval_every = 1000
  c.train.checkpoint_every = 1000
  c.eval.batches = 200
  if variant == "bench":
    c.data.name = "random"
    c.data.random_tokens = 1 << 22
    c.train.batch_size = 12
    c.optim.accum_steps = 1
    c.optim.warmup_steps = 10
    c.train.steps = 100
    c.train.steps_per_call = 10
    c.train.log_every = 20
    c.train.eval_every = 100
    c.train.checkpoint_every = 100
    c.eval.batches = 2
  elif variant == "smoke":
    c.data.name = "random"
    c.data.random_tokens = 1 << 14
    c.model.num_layers = 2
    c.model.num_heads = 2
    c.model.width = 32
    c.model.context = 32
    c.model.dtype = "float32"
    base.seconds_long(c, steps=6, batch_size=4, log_every=2, eval_every=6)
    c.optim.accum_steps = 2
    c.optim.warmup_steps = 2
    c.eval.batches = 2
  elif variant:
    raise KeyError(f"unknown variant {variant!r}; use configs/gpt2_124m.py, :bench or :smoke")
  return c
