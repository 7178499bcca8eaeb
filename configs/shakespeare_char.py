"""nanoGPT's train_shakespeare_char: a character-level GPT on tiny shakespeare.

Command:   python -m pretrain.main --config configs/shakespeare_char.py[:cpu|:speedrun] \
             --config.data.path ../shared/data/tinyshakespeare/input.txt --workdir runs/shakespeare
Hardware:  default: one GPU (6 layers, 6 heads, width 384, context 256, batch 64, 5000 steps);
           :cpu: the CPU command of nanoGPT's README, 2000 steps on a 2-core CPU;
           :speedrun: the fastest way found to val loss <= 1.88 on this 2-core CPU;
           :gpu: the default with bf16 compute, 10 updates per jitted call and an evaluation every 100
           steps: the baby GPT of benchmarks/gpu.sh, raced against nanoGPT to val loss 1.47.
Expected:  :cpu val loss 1.781 at 2000 steps (nanoGPT: 1.8857), about 55 s on a 2-core CPU; default:
           nanoGPT reaches ~1.47 with learned positions (not measured here).
           :speedrun: 24-34 s for the whole command with a warm compilation cache (nanoGPT's 2000 iterations:
           97-101 s of training in the same session), whole-split val loss 1.8311 (seed 0) / 1.8225 (seed 1);
           2026-12-02, ../shared/checks/13-speedrun and REPRODUCTIONS.md; 22 s, 1.8315 on 2026-12-04 with
           model.bf16_matmul=auto, GELU through erf and float32 attention (BENCHMARKS.md).
Data:      the first 90% of the characters train, the last 10% validate, as in nanoGPT.

Every hyperparameter of :cpu is nanoGPT's; the departures are rotary position embeddings
(model.position=rope) in place of its learned position table, and bfloat16 compute on 2 CPU devices.
Measured on :cpu (seed 0, 20 eval batches, f32, 2026-12-01): 1.7738 with rope, 1.8937 with
--config.model.position=learned, which is nanoGPT's architecture exactly; bf16 on 2 devices: 1.7777
(1.7829 with bf16 operands into f32 results, model.bf16_matmul=auto, 2026-12-04; 1.7810 with GELU in
float32 through erf and float32 attention, the same day).
"""
from configs import base


def get_config(variant=None):
  c = base.get_config()
  c.data.name = "text"
  c.data.path = "data/tinyshakespeare/input.txt"
  c.data.tokenizer = "char"
  c.data.val_fraction = 0.1
  c.model.num_layers = 6
  c.model.num_heads = 6
  c.model.width = 384
  c.model.context = 256
  c.model.dropout = 0.2
  c.model.bias = False
  c.model.position = "rope"  # nanoGPT: learned. Rotary is 0.12 nats better at 2000 CPU steps (see above).
  c.optim.lr = 1e-3
  c.optim.min_lr = 1e-4
  c.optim.warmup_steps = 100
  c.optim.beta2 = 0.99
  c.optim.weight_decay = 0.1
  c.optim.grad_clip = 1.0
  c.train.steps = 5000
  c.train.batch_size = 64
  c.train.log_every = 10
  c.train.eval_every = 250
  c.train.checkpoint_every = 250
  c.eval.batches = 200
  if variant == "cpu":
    c.model.num_layers = 4
    c.model.num_heads = 4
    c.model.width = 128
    c.model.context = 64
    c.model.dropout = 0.0
    c.train.batch_size = 12
    c.train.steps = 2000
    c.optim.decay_steps = 2000
    c.train.log_every = 50
    c.train.steps_per_call = 10  # Same updates as one per call, less dispatch overhead per step.
    c.eval.batches = 20
    # Speed levers (BENCHMARKS.md): bfloat16 matmuls (bf16 operands into f32 results on a CPU, by
    # model.bf16_matmul=auto), and the 2 cores as 2 devices under pmap, each computing half the batch,
    # instead of one device spreading every small kernel over both cores.
    c.model.dtype = "bfloat16"
    c.parallel.strategy = "pmap"
    c.parallel.cpu_devices = 2
  elif variant == "speedrun":
    # :cpu's model shape with the speedrun levers; each is measured in REPRODUCTIONS.md's ablation.
    c.model.num_layers = 4
    c.model.num_heads = 4
    c.model.width = 128
    c.model.context = 64
    c.model.dropout = 0.0
    c.model.qk_norm = True
    c.model.activation = "relu2"
    c.model.tie_embeddings = False  # model.head_init=zeros measured no better here than the normal init.
    c.model.dtype = "bfloat16"
    c.optim.name = "muon"
    c.optim.muon_lr = 0.02
    c.optim.muon_momentum = 0.9
    c.optim.lr = 2e-2  # AdamW's, for the embedding, head and gains.
    c.optim.min_lr = 0.0
    c.optim.warmup_steps = 0
    c.optim.schedule = "wsd"
    c.optim.cooldown_fraction = 0.5
    c.train.batch_size = 32  # Larger matmuls than :cpu's 12 rows, and Muon's cost is spread over more tokens.
    c.train.steps = 160
    c.train.steps_per_call = 10
    c.train.log_every = 40
    c.train.eval_every = 160
    c.train.checkpoint_every = 160
    c.eval.batches = 0  # The one evaluation, at the end, covers the whole validation split.
  elif variant == "gpu":
    c.model.dtype = "bfloat16"
    c.model.attention = "cudnn"  # Used where dropout is off (evaluation); training writes attention out for dropout.
    c.model.embed_lookup = "one_hot"  # 65 characters: the gather's gradient would be a contended scatter-add.
    c.train.steps_per_call = 10  # A 10M-parameter step is short: one dispatch per 10 updates keeps the GPU busy.
    c.train.log_every = 50
    c.train.eval_every = 100  # 200 batches take well under a second; finer evaluations find the target sooner.
    c.train.checkpoint_every = 500
  elif variant:
    raise KeyError(f"unknown variant {variant!r}; use configs/shakespeare_char.py, :cpu, :speedrun or :gpu")
  return c
