"""Every field the trainer reads, with its default. Experiment configs start from `get_config()` here.

The returned ConfigDict is locked: setting a key that is not listed below is an error, which is how a
typo in a config file or a `--config.a.b=value` override is caught before anything runs. A run's saved
config.json is read back onto these defaults (configlib.upgrade), so a field added later takes its default
here for older runs too: this file is the only place a default is written.

Regex fields (optim.freeze, lr_multipliers, no_decay, muon_exclude, parallel.fsdp_rules, log.layer_groups,
init.dont_load) match '/'-joined parameter names with re.search: anywhere in the name unless anchored
(^backbone/); where several entries could apply, the first listed wins (pretrain/rules.py).
"""
import ml_collections
from ml_collections.config_dict import placeholder


def get_config(variant=None):
  del variant
  c = ml_collections.ConfigDict()
  c.seed = 0  # Seeds parameter init, dropout and the order of training batches.
  # Likelihood to maximise: a module of pretrain/objectives ("next_token", "masked_lm", "pixels" pretrain;
  # "classification" fine-tunes log p(label | x) through a head on the features), or your own by dotted path.
  c.objective = "next_token"

  c.data = ml_collections.ConfigDict()
  # A module of pretrain/data: "markov" (embedded), "text" (your files), "idx"/"npz" (your images), "random"; your own
  # source by dotted path (mylab.sources.web); any other name is a TFDS catalog dataset.
  c.data.name = "markov"
  # Several sources trained on in fixed proportions: ("NAME:KEY=VALUE,...,weight=W", ...), each entry this run's data
  # config with the entry's data.* values (e.g. "web:path=/data/web,weight=0.8", "code:path=/data/code,weight=0.2").
  # Every training batch takes each source's share of its rows (weights are normalised; each source needs weight x
  # train.batch_size >= 1); train rows count the tokens each gave so far (tokens/NAME); each source's validation
  # split is scored as split NAME beside "val" (all of them). All must share one tokenizer and vocabulary.
  c.data.mixture = ()
  # Documents that never see each other: attention stops at each end-of-text token, positions restart after it,
  # and a document's first token is not predicted from the one before (text read as a stream; GPT family).
  c.data.document_mask = False
  # File or directory. name="text": a text file (one document), a folder of text files (one document each), or
  # .jsonl / .csv / .tsv (also .gz, .zst) / .parquet files or folders (one document per record or row); "idx": IDX
  # files (MNIST format, gzip'd or not); "npz": .npz arrays.
  c.data.path = placeholder(str)
  # name="text": a file or folder like data.path that is the whole validation split (labeled or not); unset, a part
  # of data.path validates (data.val_fraction).
  c.data.val_path = placeholder(str)
  # name="text", objective="classification": each record is one example labeled by this field (JSON key, CSV or
  # Parquet column), or "subfolder": data.path is a folder with one subfolder of files per class, named by it.
  # Labels map to ids in sorted order (numerically when all are integers). A text is cut to its first model.context
  # tokens. Other objectives read the same records as documents (labels unused).
  c.data.label_field = placeholder(str)
  # Text that is not UTF-8, for the char and file tokenizers: "strict" stops naming the file and byte offset;
  # "replace" reads each bad byte as U+FFFD. (tokenizer="byte" takes any bytes as they are.)
  c.data.decode_errors = "strict"
  c.data.tokenizer = "char"  # "char" (sorted unique characters), "byte" (256 symbols) or "file" (data.tokenizer_path).
  c.data.tokenizer_path = placeholder(str)  # tokenizer="file": a Hugging Face tokenizer.json, or a directory with one or with GPT-2's vocab.json + merges.txt.
  # Without data.val_path: the last fraction of the text validates (nanoGPT: 0.1); of labeled records, a seeded
  # (data.split_seed) fraction of each class's.
  c.data.val_fraction = 0.1
  c.data.data_dir = placeholder(str)  # Where prepared datasets live; default $PRETRAIN_DATA_DIR or ~/.cache/pretrain/datasets.
  c.data.random_tokens = 1 << 20  # name="random": tokens of uniform noise per split (speed benchmarks).
  c.data.train_split = "train"  # Split names inside the TFDS dataset.
  c.data.val_split = "validation"
  c.data.labels_per_class = 0  # Labeled train examples kept per class (a balanced subset chosen by seed); 0 keeps all.
  # Images (idx/npz): the splits are consecutive runs of one seeded permutation of all images, NAME:COUNT each
  # ("NAME:*" takes the rest). The default cuts the 10,000 MNIST test images into 8,000 for pretraining (labels
  # unused), 1,000 labeled for fine-tuning and 1,000 for testing.
  c.data.splits = ("train:8000", "finetune:1000", "test:1000")
  c.data.split_seed = 0  # Seed of that permutation and of labeled text's validation records: part of the identity.
  # name="text": >0 turns the text into a classification task: this many equal contiguous parts, non-overlapping
  # windows of model.context + 1 tokens labeled by their part, the last val_fraction of each part validating.
  c.data.text_segments = 0
  # Where a record keeps its text: the JSON field of .jsonl, the Parquet column, or the TFDS feature of a catalog
  # dataset (e.g. "sentence" for glue/sst2; with a "label" feature and objective="classification", each example is
  # one row: its first model.context tokens, padded).
  c.data.text_field = "text"
  # Supervised fine-tuning (name="text", JSON lines): each record's prompt and completion fields; loss and the eval
  # count cover the completion and its end-of-text only. Records are packed one after another as documents
  # (attention and positions stay within each, as data.document_mask). Validation: data.val_path, else the last
  # data.val_fraction of the records. Needs data.tokenizer=byte or file (ids that mean what the base's do).
  c.data.prompt_field = placeholder(str)
  c.data.completion_field = placeholder(str)
  # Or chats: each record's list of {"role", "content"} under this key, rendered with data.tokenizer_path's chat
  # template (tokenizer_config.json); the assistant turns are the completions.
  c.data.messages_field = placeholder(str)
  c.data.classes = ()  # Keep only these labels, renumbered 0..k-1 in this order, e.g. (5, 6, 7, 8, 9); () keeps all.
  # Image preprocessing, applied to each batch in order: "scale" (uint8 -> float in [0, 1]), "binarize" (>= 128 -> 1),
  # "sample_binarize" (1 with probability level/255: a fresh sample in training, one fixed sample per image in eval),
  # "pad:P", "resize:S", "random_crop:S" (centre crop in eval), "random_flip" (none in eval).
  c.data.preprocess = ()
  c.data.markov = ml_collections.ConfigDict()
  c.data.markov.num_sources = 8  # K sources; the id of the one that emitted a sequence is its label.
  c.data.markov.vocab_size = 16  # Symbols in the alphabet (a BOS token is added on top for the model).
  c.data.markov.branching = 3  # Non-zero transitions per state: small means low entropy.
  c.data.markov.seq_len = 128  # Tokens per sequence.
  c.data.markov.num_train = 16384  # Sequences in the train split.
  c.data.markov.num_val = 1024  # Sequences in the validation split.
  c.data.markov.seed = 1234  # Seed of the sources and the samples: the dataset's identity.

  c.model = ml_collections.ConfigDict()
  # A module of pretrain/models (gpt, bert, lstm, seed_cnn, resnet, pixelcnn), or your own by dotted path.
  c.model.family = "gpt"
  c.model.num_layers = 4  # Transformer blocks (gpt, bert), LSTM layers, or PixelCNN residual blocks.
  c.model.num_heads = 4  # Attention heads; must divide width.
  c.model.width = 128  # Residual stream width (d_model); LSTM hidden size; PixelCNN channels.
  c.model.mlp_ratio = 4  # MLP hidden width = mlp_ratio * width.
  c.model.mlp_width = 0  # GPT/BERT: MLP hidden units when not a multiple of width (Llama's intermediate_size); 0: mlp_ratio * width.
  c.model.num_kv_heads = 0  # GPT: key/value heads (grouped-query attention; 1 is multi-query); must divide num_heads; 0: num_heads.
  c.model.context = 128  # Longest sequence the model sees (position embeddings).
  c.model.vocab_size = 0  # 0: take it from the dataset; larger values pad the vocabulary (e.g. 50304).
  c.model.dropout = 0.0  # Dropout on embeddings, attention weights and residual branches.
  c.model.bias = False  # Biases in Dense and LayerNorm layers (GPT-2 has them, nanoGPT's default not).
  c.model.gelu_approximate = False  # GPT MLP: tanh-approximate GELU (GPT-2's "gelu_new") instead of the exact one.
  c.model.layer_norm_eps = 1e-5  # Epsilon of every LayerNorm (GPT-2: 1e-5).
  c.model.position = "learned"  # Where order comes from: "learned" embeddings added to the input (GPT-2, nanoGPT), or "rope" (rotary, on queries and keys; no wpe).
  c.model.rope_theta = 10000.0  # position=rope: the rotary base (Llama 3: 500000, Qwen2: 1000000).
  c.model.rope_scaling = ml_collections.ConfigDict()  # position=rope: rescaled frequencies for longer contexts.
  c.model.rope_scaling.type = ""  # "" (none), "linear" (every frequency / factor) or "llama3" (Llama 3.1's).
  c.model.rope_scaling.factor = 1.0  # How many times longer than original_context the context may be.
  c.model.rope_scaling.low_freq_factor = 1.0  # llama3: wavelengths past original_context / this are divided by factor ...
  c.model.rope_scaling.high_freq_factor = 4.0  # ... those under original_context / this are kept; between, interpolated.
  c.model.rope_scaling.original_context = 8192  # llama3: the context the rotary frequencies were pretrained on.
  c.model.norm = "layernorm"  # GPT/BERT: "layernorm" (GPT-2, BERT) or "rmsnorm" (Llama: a gain only, no mean subtracted).
  c.model.norm_position = "pre"  # GPT/BERT: "pre" (norm before each block's branch, then ln_f; GPT-2) or "post" (norm after each residual sum; BERT).
  c.model.qkv_bias = False  # GPT: biases on the query/key/value projection even with bias=False (Qwen2).
  c.model.type_vocab_size = 0  # bert: token type (segment) embeddings (BERT: 2); 0: none.
  c.model.mask_id = -1  # bert: the [MASK] token's id in the tokenizer (an imported BERT's); -1: one more id past the data's.
  c.model.cls_id = -1  # The tokenizer's [CLS] id, which model.head.pooling=cls puts before every text (pretrain.hf import sets BERT's); -1: none.
  c.model.pooler = False  # bert: BERT's pooler (dense + tanh on the [CLS] features) that model.head.pooling=cls applies; imported with BertModel's weights.
  c.model.tie_embeddings = True  # Output head shares the token embedding matrix.
  c.model.head_init = "normal"  # Untied head (tie_embeddings=False): "normal" (std 0.02) or "zeros" (starts at uniform predictions).
  c.model.qk_norm = False  # GPT/BERT: queries and keys scaled to unit RMS per head (bounded attention logits, higher stable lr).
  c.model.activation = "gelu"  # GPT/BERT MLP: "gelu" (GPT-2), "relu2" (squared ReLU, Primer / modded-nanogpt) or "swiglu" (Llama: silu(x W_gate) * x W_up).
  c.model.dtype = "float32"  # Compute dtype ("bfloat16" halves activation traffic); params stay float32.
  c.model.param_dtype = "float32"  # Parameter (and optimizer state) dtype.
  c.model.remat = "none"  # Recompute blocks in the backward pass to save memory: "none", "full", "dots".
  # Token embeddings: "gather" (rows of the table) or "one_hot" (a one-hot matmul: the same outputs, and a gradient
  # without XLA:GPU's scatter-add, which is ~10x slower for small vocabularies such as characters; GPT family).
  c.model.embed_lookup = "gather"
  # GPT family and BERT: the blocks under nn.scan, parameters stacked on a leading layer axis: compile time stops growing
  # with depth. The same computation as unscanned from the same parameters (a checkpoint converts both ways:
  # pretrain.models.gpt.stack_layers / unstack_layers); the initial draw is its own.
  c.model.scan_layers = False
  # bfloat16 matmuls as bf16 operands into an f32 result (the form XLA:CPU's fast kernels take, models/matmul.py):
  # "auto" (on CPU), "f32_accumulate" (everywhere) or "native" (XLA's own dot). Same products and roundings.
  c.model.bf16_matmul = "auto"
  # GPT family: the loss's head logits and softmax over this many positions of every row at a time, each chunk
  # recomputed in the backward pass, so the [batch, context, vocabulary] logits never exist at once (GPT-2's 50,304
  # columns at batch 12, context 1024: 2.5 GB in float32); 0: all at once.
  c.model.loss_chunk = 0
  c.model.attention = "xla"  # jax.nn.dot_product_attention implementation: "xla" or "cudnn" (GPU only).
  c.model.stage_sizes = (3, 3, 3)  # resnet: residual blocks per stage (ResNet-20: (3, 3, 3); ResNet-18: (2, 2, 2, 2)).
  c.model.stage_widths = (16, 32, 64)  # resnet: channels per stage (ResNet-20: 16/32/64; ResNet-18: 64/128/256/512).
  c.model.lora = ml_collections.ConfigDict()  # Low-rank adapters (LoRA): only they (and a new task head) train.
  c.model.lora.rank = 0  # Rank r of each adapter A [in, r] B [r, out] beside a frozen kernel W: W + (alpha / r) A B; 0: no LoRA.
  c.model.lora.alpha = 8.0  # The adapters' scale is alpha / rank.
  c.model.lora.targets = ("attn/c_attn/kernel$", "attn/c_proj/kernel$")  # Regexes over 2-D kernel names that get adapters (default: the attention projections).
  c.model.head = ml_collections.ConfigDict()  # The task head objective="classification" puts on the features.
  c.model.head.num_classes = 0  # 0: the dataset's number of labels.
  c.model.head.pooling = "mean"  # Features [B, ..., D] -> [B, D]: "mean" over positions, the "last" or "first" one, or "cls" (model.cls_id put first, BERT's pooler if it has one).

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adamw"  # "adamw", or "muon": Muon (optax.contrib.muon) for Dense kernels, AdamW for the other parameters.
  c.optim.lr = 1e-3  # Peak learning rate after warmup (AdamW's).
  c.optim.min_lr = 1e-4  # The schedule ends here (Muon's ends at min_lr * muon_lr / lr).
  c.optim.warmup_steps = 100  # Linear warmup: update i (from 0) uses lr * (i + 1) / (warmup_steps + 1), as nanoGPT.
  c.optim.schedule = "cosine"  # After warmup: "cosine" decay to min_lr, or "wsd": constant, then a linear cooldown to min_lr.
  c.optim.cooldown_fraction = 0.4  # schedule=wsd: the last fraction of decay_steps spent cooling down.
  c.optim.decay_steps = 0  # Schedule length including warmup; 0 means train.steps.
  c.optim.muon_lr = 0.02  # name=muon: peak learning rate of the Muon-updated matrices (same schedule shape as lr).
  c.optim.muon_momentum = 0.95  # name=muon: Nesterov momentum of Muon.
  c.optim.muon_exclude = ("^lm_head/",)  # name=muon: regexes of Dense kernels left to AdamW (the output head by default).
  c.optim.beta1 = 0.9
  c.optim.beta2 = 0.99
  c.optim.eps = 1e-8
  c.optim.weight_decay = 0.1  # Decoupled (AdamW); applied to matrices only, not to biases, norms or gains.
  c.optim.no_decay = ()  # Regexes of parameters spared weight decay besides 1-D ones, e.g. ("wte", "wpe").
  c.optim.grad_clip = 1.0  # Global-norm clipping; 0 disables.
  c.optim.accum_steps = 1  # Gradient accumulation: the batch is split into this many micro-batches.
  c.optim.skip_nonfinite = 0  # Steps with a non-finite loss/gradient that may be skipped (logged) before the run stops.
  c.optim.freeze = ()  # Regexes (re.search) over '/'-joined parameter names, e.g. "^backbone/": matches are never updated.
  c.optim.lr_multipliers = ()  # "REGEX=MULT" entries, e.g. "^backbone/=0.1": scale matching parameters' lr and decay; first match wins.

  c.train = ml_collections.ConfigDict()
  c.train.steps = 1000  # Optimizer updates.
  c.train.batch_size = 32  # Global batch (sequences), over all devices and processes.
  c.train.steps_per_call = 1  # Updates per jitted call (lax.scan); log/eval/checkpoint intervals must be multiples.
  c.train.log_every = 50  # Steps between train lines in metrics.jsonl and the console.
  c.train.eval_every = 250  # Steps between evaluations (and one at the end).
  c.train.checkpoint_every = 250  # Steps between checkpoints (and one at the end).
  c.train.keep_checkpoints = 3  # Newest checkpoints kept on disk.
  c.train.prefetch = 2  # Host batches built ahead by a background thread while the device computes; 0: none.
  c.train.compilation_cache = True  # Keep compiled steps in $PRETRAIN_COMPILATION_CACHE (~/.cache/pretrain/compilation): reruns skip compiling.
  # The generator of dropout's masks: "threefry2x32" (JAX's default), "rbg" or "unsafe_rbg" (the GPU's own random
  # bits, far cheaper where dropout covers attention weights; other masks than threefry's, so other losses).
  c.train.dropout_rng = "threefry2x32"
  c.train.donate = True  # Donate the train state to the jitted step, so its buffers are updated in place.
  c.train.async_checkpoints = True  # Write checkpoints in the background while training continues.
  c.train.allow_config_change = False  # Resume a workdir whose saved model/data/objective config differs.
  # (START, END): a jax.profiler trace of the calls running steps START+1..END, in DIR/tensorboard/plugins/profile
  # (TensorBoard's profile tab; process 0 only); () traces nothing.
  c.train.profile_steps = ()

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 0  # Eval batch (sequences); 0 means train.batch_size. Rounded up to whole micro-batches.
  c.eval.micro_batch_size = 0  # Rows computed at once (memory); 0: the train micro-batch. Rounded up to the device count.
  c.eval.batches = 0  # Eval batches per evaluation; 0 covers the whole validation split.
  # More datasets evaluated at every evaluation, as "NAME:KEY=VALUE,KEY=VALUE" over data.* (the rest as this run's
  # data): e.g. "novels:path=/data/novels.txt" or "test:val_split=test". Each one's validation split is scored and
  # logged as split NAME; its token ids must mean what the training data's do (same tokenizer and vocabulary).
  c.eval.extra = ()
  # lm-evaluation-harness tasks scored at every evaluation of a next-token run (pip install -e '.[eval]'), logged in the
  # val row as harness/TASK/METRIC: lm-eval's names (e.g. "hellaswag") or your own from eval.harness_include_path.
  c.eval.harness_tasks = ()
  c.eval.harness_limit = 0  # At most this many documents per task at each evaluation (a fraction if below 1); 0: all.
  c.eval.harness_include_path = ""  # A folder of your own lm-eval task YAML files (offline: dataset_path json).
  c.eval.harness_batch_size = 16  # Rows per forward pass of the harness.

  c.log = ml_collections.ConfigDict()  # Where metrics go besides DIR/metrics.jsonl and DIR/tensorboard.
  c.log.wandb_project = placeholder(str)  # Set: Weights & Biases too (pip install -e '.[wandb]'); the run id is kept in DIR/wandb_run_id.
  c.log.wandb_entity = placeholder(str)  # W&B team or user; unset: your default entity.
  c.log.wandb_name = placeholder(str)  # W&B run name; unset: the workdir's name.
  c.log.wandb_tags = ()  # W&B tags.
  # The chip's dense bf16 peak in TFLOP/s for the train rows' `mfu` (model FLOPs per device over it); 0: by
  # jax's device_kind (H100/H200 989, A100 312, TPU v4 275, v5e 197, v5p 459, v6e 918), none on CPUs.
  c.log.peak_flops = 0.0
  c.log.layer_stats = False  # On log steps, norms of parameters, gradients and applied updates per group (free when off).
  # Groups of log.layer_stats: a parameter belongs to the first regex that matches its name, under the matched text
  # (so "^[^/]+" groups by top-level module: h_0, wte, ...); unmatched ones form "other".
  c.log.layer_groups = ("^[^/]+",)

  c.init = ml_collections.ConfigDict()  # Starting from a pretrained run (pretrain/finetune.py).
  c.init.workdir = placeholder(str)  # Run directory of the pretrained model; its parameters (only) initialise this one.
  c.init.step = 0  # Its checkpoint to load; 0 is the newest.
  c.init.mode = placeholder(str)  # "full" (load, train all), "linear_probe" (load, train the head only) or "scratch"
  # (random init, same architecture); unset: "full" when init.workdir is set, else "scratch".
  c.init.architecture = "checkpoint"  # "checkpoint": model.* except head/dropout/dtype/attention come from init.workdir's
  # config.json; "config": this config's model.* (to change the architecture on purpose, with init.dont_load).
  c.init.dont_load = ()  # Regexes over the model's parameter names that keep their fresh init (checkpoint entries ignored).

  c.parallel = ml_collections.ConfigDict()
  c.parallel.strategy = "single"  # "single" (jax.jit, one device), "pmap" (all local devices) or "mesh" (jit over a Mesh).
  # Added to XLA_FLAGS before JAX starts its backend, e.g. "--xla_gpu_enable_latency_hiding_scheduler=true"; XLA
  # stops at start-up on a flag it does not know.
  c.parallel.xla_flags = ""
  c.parallel.cpu_devices = 0  # >0: run the CPU as this many XLA devices (e.g. 2 with strategy=pmap on 2 cores); 0: as XLA starts it.
  c.parallel.mesh_shape = (-1, 1)  # mesh: (data, fsdp) axis sizes; -1 takes the remaining devices.
  c.parallel.fsdp_rules = ()  # mesh: "REGEX=DIM" entries choosing the dim a parameter is sharded on over fsdp; default the largest divisible dim.

  c.lock()
  return c


def seconds_long(c, *, steps: int, batch_size: int, log_every: int, eval_every: int, markov_seq_len: int = 0):
  """What every test-sized variant (:tiny, :smoke) sets: a few steps of a small batch, logged, evaluated and
  checkpointed often; with markov_seq_len, a small Markov dataset of sequences that long."""
  c.train.steps, c.train.batch_size, c.train.log_every = steps, batch_size, log_every
  c.train.eval_every = c.train.checkpoint_every = eval_every
  if markov_seq_len:
    c.data.markov.num_train, c.data.markov.num_val, c.data.markov.seq_len = 512, 64, markov_seq_len
  return c
