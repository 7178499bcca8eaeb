"""A Llama-shaped character model on tiny shakespeare: RMSNorm, SwiGLU, grouped-query attention, rotary
positions, untied head, no biases; the shape pretrain.hf imports Llama, Mistral and Qwen2 into and exports
back as model_type llama (configs/shakespeare_char.py is the GPT-2-shaped twin).

Command:   python -m pretrain.main --config configs/llama_shakespeare.py[:cpu] \
             --config.data.path ../shared/data/tinyshakespeare/input.txt --workdir runs/llama_shakespeare
           python -m pretrain.hf export --workdir runs/llama_shakespeare --hf-dir runs/llama_shakespeare_hf
           (a char vocabulary has no tokenizer.json: Transformers loads the weights; encode with the run's
           dataset.json symbols, or train with --config.data.tokenizer=file)
Hardware:  default: 6 layers of width 384, 6 heads sharing 2 key/value heads, 5,000 steps of 64 x 256 characters
           on one accelerator (not run here); :cpu: 4 layers of width 128, 4 heads sharing 2 key/value heads,
           2,000 steps of 12 x 64 characters on 2 CPU cores, as shakespeare_char.py:cpu.
Expected:  :cpu: val loss 1.6853 at 2,000 steps (20 eval batches; 742,784 parameters), 115 s for the whole
           command; shakespeare_char.py:cpu (GPT-2 shape with rotary positions, 795,904 parameters) run just
           before it: 1.7795, 124 s (2026-12-04, 2-core AMD EPYC, one after the other).
Data:      the first 90% of the characters train, the last 10% validate.

The MLP has 8/3 x width hidden units (rounded to a multiple of 8), Llama's ratio for SwiGLU, so its
parameter count matches a 4 x width GELU MLP.
"""
from configs import shakespeare_char


def get_config(variant=None):
  if variant not in (None, "cpu"):
    raise KeyError(f"unknown variant {variant!r}; use configs/llama_shakespeare.py or :cpu")
  c = shakespeare_char.get_config(variant)
  c.model.norm = "rmsnorm"
  c.model.activation = "swiglu"
  c.model.num_kv_heads = 2  # Grouped-query attention: 3 (default) or 2 (:cpu) query heads per key/value head.
  c.model.mlp_width = 8 * round(8 / 3 * c.model.width / 8)
  c.model.position = "rope"
  c.model.rope_theta = 10000.0
  c.model.tie_embeddings = False
  c.model.bias = False
  c.model.layer_norm_eps = 1e-6  # Llama's rms_norm_eps.
  return c
