"""Every field the trainer reads, with its default. Experiment configs start from `get_config()` here.

The returned ConfigDict is locked: setting a key that is not listed below is an error, which is how a
typo in a config file or a `--config.a.b=value` override is caught before anything runs.
"""
import ml_collections
from ml_collections.config_dict import placeholder


def get_config(variant=None):
  del variant
  c = ml_collections.ConfigDict()
  c.seed = 0  # Seeds parameter init, dropout and the order of training batches.
  c.objective = "next_token"  # Likelihood to maximise; one function per name in pretrain/objectives.py.

  c.data = ml_collections.ConfigDict()
  c.data.name = "markov"  # "markov" (embedded), "text" (your files), or a TFDS catalog name.
  c.data.path = placeholder(str)  # File or directory of text for name="text".
  c.data.tokenizer = "char"  # "char" (sorted unique characters), "byte" (256 symbols) or "file" (data.tokenizer_path).
  c.data.tokenizer_path = placeholder(str)  # tokenizer="file": a Hugging Face tokenizer.json, or a directory with one or with GPT-2's vocab.json + merges.txt.
  c.data.val_fraction = 0.1  # Last fraction of the text held out for validation (nanoGPT: 0.1).
  c.data.data_dir = placeholder(str)  # Where prepared datasets live; default $PRETRAIN_DATA_DIR or ~/.cache/pretrain/datasets.
  c.data.train_split = "train"  # Split names inside the TFDS dataset.
  c.data.val_split = "validation"
  c.data.markov = ml_collections.ConfigDict()
  c.data.markov.num_sources = 8  # K sources; the id of the one that emitted a sequence is its label.
  c.data.markov.vocab_size = 16  # Symbols in the alphabet (a BOS token is added on top for the model).
  c.data.markov.branching = 3  # Non-zero transitions per state: small means low entropy.
  c.data.markov.seq_len = 128  # Tokens per sequence.
  c.data.markov.num_train = 16384  # Sequences in the train split.
  c.data.markov.num_val = 1024  # Sequences in the validation split.
  c.data.markov.seed = 1234  # Seed of the sources and the samples: the dataset's identity.

  c.model = ml_collections.ConfigDict()
  c.model.family = "gpt"  # Model family in pretrain/models.
  c.model.num_layers = 4  # Transformer blocks.
  c.model.num_heads = 4  # Attention heads; must divide width.
  c.model.width = 128  # Residual stream width (d_model).
  c.model.mlp_ratio = 4  # MLP hidden width = mlp_ratio * width.
  c.model.context = 128  # Longest sequence the model sees (position embeddings).
  c.model.vocab_size = 0  # 0: take it from the dataset; larger values pad the vocabulary (e.g. 50304).
  c.model.dropout = 0.0  # Dropout on embeddings, attention weights and residual branches.
  c.model.bias = False  # Biases in Dense and LayerNorm layers (GPT-2 has them, nanoGPT's default not).
  c.model.gelu_approximate = False  # GPT MLP: tanh-approximate GELU (GPT-2's "gelu_new") instead of the exact one.
  c.model.layer_norm_eps = 1e-5  # Epsilon of every LayerNorm (GPT-2: 1e-5).
  c.model.tie_embeddings = True  # Output head shares the token embedding matrix.
  c.model.dtype = "float32"  # Compute dtype ("bfloat16" halves activation traffic); params stay float32.
  c.model.attention = "xla"  # jax.nn.dot_product_attention implementation: "xla" or "cudnn" (GPU only).

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 1e-3  # Peak learning rate after warmup.
  c.optim.min_lr = 1e-4  # Cosine decay ends here.
  c.optim.warmup_steps = 100  # Linear warmup from 0.
  c.optim.decay_steps = 0  # Cosine decay length including warmup; 0 means train.steps.
  c.optim.beta1 = 0.9
  c.optim.beta2 = 0.99
  c.optim.eps = 1e-8
  c.optim.weight_decay = 0.1  # Decoupled (AdamW); applied to matrices only, not to biases, norms or gains.
  c.optim.grad_clip = 1.0  # Global-norm clipping; 0 disables.
  c.optim.accum_steps = 1  # Gradient accumulation: the batch is split into this many micro-batches.

  c.train = ml_collections.ConfigDict()
  c.train.steps = 1000  # Optimizer updates.
  c.train.batch_size = 32  # Global batch (sequences), over all devices and processes.
  c.train.steps_per_call = 1  # Updates per jitted call (lax.scan); log/eval/checkpoint intervals must be multiples.
  c.train.log_every = 50  # Steps between train lines in metrics.jsonl and the console.
  c.train.eval_every = 250  # Steps between evaluations (and one at the end).
  c.train.checkpoint_every = 250  # Steps between checkpoints (and one at the end).
  c.train.keep_checkpoints = 3  # Newest checkpoints kept on disk.
  c.train.async_checkpoints = True  # Write checkpoints in the background while training continues.

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 0  # Eval batch (sequences); 0 means train.batch_size.
  c.eval.batches = 0  # Eval batches per evaluation; 0 covers the whole validation split.

  c.parallel = ml_collections.ConfigDict()
  c.parallel.strategy = "single"  # "single" (jax.jit on one device).

  c.lock()
  return c
