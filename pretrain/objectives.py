"""One log-likelihood per objective. Each returns *sums* and their denominators, never means:
the step adds them over micro-batches and devices, and the host divides.

Signature: objective(model, variables, batch, *, train, rng) -> (sums, model_state) where sums has
  loss_sum  sum of negative log-likelihoods (nats) over the counted targets
  count     number of counted targets (tokens, pixels or examples)
plus any other sums worth logging (e.g. `correct`), and model_state holds the updated non-parameter
collections (BatchNorm statistics) when training, else {}.
"""
import jax
import jax.numpy as jnp
import optax


def _weights(batch, tokens_BxT):
  w = batch["mask"][:, None] * jnp.ones(tokens_BxT.shape, jnp.float32)
  if "token_mask" in batch:
    w = w * batch["token_mask"]
  return w


def apply(model, variables, inputs, *, train, rng, **kwargs):
  """Runs the model; in training, also returns its updated non-parameter collections (e.g. batch_stats)."""
  mutable = [k for k in variables if k != "params"] if train else []
  rngs = {"dropout": rng} if rng is not None else {}
  if mutable:
    return model.apply(variables, inputs, train=train, rngs=rngs, mutable=mutable, **kwargs)
  return model.apply(variables, inputs, train=train, rngs=rngs, **kwargs), {}


def next_token(model, variables, batch, *, train, rng):
  """log p(x) = sum_t log p(x_t | x_<t): autoregressive language modelling."""
  tokens_BxT1 = batch["tokens"]
  logits_BxTxV, model_state = apply(model, variables, tokens_BxT1[:, :-1], train=train, rng=rng)
  nll_BxT = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, tokens_BxT1[:, 1:])
  w_BxT = _weights(batch, tokens_BxT1)[:, 1:]
  return {"loss_sum": jnp.sum(nll_BxT * w_BxT), "count": jnp.sum(w_BxT)}, model_state


def classifier_inputs(batch):
  """What a classifier reads: the image, or the tokens a next-token model reads (all but the last), so a
  pretrained backbone sees the same positions and the same leading BOS it was trained on."""
  return batch["image"] if "image" in batch else batch["tokens"][:, :-1]


def classification(model, variables, batch, *, train, rng):
  """log p(y | x): the label given the whole input; counts are examples."""
  # Padded texts: pooling reads only their real tokens (the inputs are all columns but the last).
  real = {"positions_mask": batch["token_mask"][:, :-1]} if "token_mask" in batch and "tokens" in batch else {}
  logits_BxC, model_state = apply(model, variables, classifier_inputs(batch), train=train, rng=rng, **real)
  nll_B = optax.softmax_cross_entropy_with_integer_labels(logits_BxC, batch["label"])
  w_B = batch["mask"]
  hit_B = (jnp.argmax(logits_BxC, axis=-1) == batch["label"]).astype(jnp.float32)
  return {"loss_sum": jnp.sum(nll_B * w_B), "count": jnp.sum(w_B), "correct": jnp.sum(hit_B * w_B)}, model_state


MASK_RATE = 0.15  # BERT: the fraction of tokens whose identity is predicted ...
MASK_SPLIT = (0.8, 0.1)  # ... of which 80% are shown as [MASK], 10% as a random token and 10% unchanged.
_EVAL_MASK_SEED = 0  # Evaluation masks every eval batch the same way, so evaluations compare like for like.


def mask_tokens(tokens_BxT, w_BxT, rng, *, mask_id: int):
  """BERT's corruption, a pure function of `rng`: (model inputs, selected [B, T] 0/1 targets).

  Each counted token is selected with probability MASK_RATE; a selected token becomes `mask_id` (80%),
  a uniformly random symbol in [0, mask_id) (10%), or stays as it is (10%).
  """
  k_select, k_action, k_random = jax.random.split(rng, 3)
  selected_BxT = (jax.random.uniform(k_select, tokens_BxT.shape) < MASK_RATE) & (w_BxT > 0)
  u_BxT = jax.random.uniform(k_action, tokens_BxT.shape)
  random_BxT = jax.random.randint(k_random, tokens_BxT.shape, 0, mask_id, dtype=tokens_BxT.dtype)
  inputs_BxT = jnp.where(selected_BxT & (u_BxT < MASK_SPLIT[0]), mask_id, tokens_BxT)
  inputs_BxT = jnp.where(selected_BxT & (u_BxT >= MASK_SPLIT[0]) & (u_BxT < sum(MASK_SPLIT)), random_BxT, inputs_BxT)
  return inputs_BxT, selected_BxT.astype(jnp.float32)


def masked_lm(model, variables, batch, *, train, rng):
  """log p(x_i | x corrupted) summed over the selected tokens (BERT's masked-LM); counts are those tokens.

  The model reads the first T tokens of each window (as next-token models do); `model.mask_id` is [MASK].
  """
  tokens_BxT = batch["tokens"][:, :-1]
  w_BxT = _weights(batch, batch["tokens"])[:, :-1]
  if rng is None:
    mask_rng, dropout_rng = jax.random.key(_EVAL_MASK_SEED), None
  else:
    mask_rng, dropout_rng = jax.random.split(rng)
  inputs_BxT, selected_BxT = mask_tokens(tokens_BxT, w_BxT, mask_rng, mask_id=model.mask_id)
  logits_BxTxV, model_state = apply(model, variables, inputs_BxT, train=train, rng=dropout_rng)
  nll_BxT = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, tokens_BxT)
  return {"loss_sum": jnp.sum(nll_BxT * selected_BxT), "count": jnp.sum(selected_BxT)}, model_state


def pixels(model, variables, batch, *, train, rng):
  """log p(x) = sum_i log p(x_i | x_<i) over the sub-pixels of each image in raster order, a categorical
  over the pixel levels (256, or 2 on binarized images: a Bernoulli). Counts are sub-pixels (so the mean
  loss / ln 2 is bits/dim); `images` counts images, for nats/image."""
  image_BxHxWxC = batch["image"]
  logits_BxHxWxCxL, model_state = apply(model, variables, image_BxHxWxC, train=train, rng=rng)
  nll_BxHxWxC = optax.softmax_cross_entropy_with_integer_labels(logits_BxHxWxCxL, image_BxHxWxC.astype(jnp.int32))
  w_B = batch["mask"]
  dims = image_BxHxWxC[0].size
  return {"loss_sum": jnp.sum(jnp.sum(nll_BxHxWxC, axis=(1, 2, 3)) * w_B), "count": jnp.sum(w_B) * dims,
          "images": jnp.sum(w_B)}, model_state


OBJECTIVES = {"next_token": next_token, "classification": classification, "masked_lm": masked_lm, "pixels": pixels}

# What each objective feeds the model, for shape-only uses such as initialisation.
MODEL_INPUTS = {"next_token": lambda batch: batch["tokens"][:, :-1], "classification": classifier_inputs,
                "masked_lm": lambda batch: batch["tokens"][:, :-1], "pixels": lambda batch: batch["image"]}
