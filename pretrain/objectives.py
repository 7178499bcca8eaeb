"""One log-likelihood per objective. Each returns *sums* and their denominators, never means:
the step adds them over micro-batches and devices, and the host divides.

Signature: objective(model, variables, batch, *, train, rng) -> (sums, model_state) where sums has
  loss_sum  sum of negative log-likelihoods (nats) over the counted targets
  count     number of counted targets (tokens, pixels or examples)
plus any other sums worth logging (e.g. `correct`), and model_state holds the updated non-parameter
collections (BatchNorm statistics) when training, else {}.
"""
import jax.numpy as jnp
import optax


def _weights(batch, tokens_BxT):
  w = batch["mask"][:, None] * jnp.ones(tokens_BxT.shape, jnp.float32)
  if "token_mask" in batch:
    w = w * batch["token_mask"]
  return w


def apply(model, variables, inputs, *, train, rng):
  """Runs the model; in training, also returns its updated non-parameter collections (e.g. batch_stats)."""
  mutable = [k for k in variables if k != "params"] if train else []
  rngs = {"dropout": rng} if rng is not None else {}
  if mutable:
    return model.apply(variables, inputs, train=train, rngs=rngs, mutable=mutable)
  return model.apply(variables, inputs, train=train, rngs=rngs), {}


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
  logits_BxC, model_state = apply(model, variables, classifier_inputs(batch), train=train, rng=rng)
  nll_B = optax.softmax_cross_entropy_with_integer_labels(logits_BxC, batch["label"])
  w_B = batch["mask"]
  hit_B = (jnp.argmax(logits_BxC, axis=-1) == batch["label"]).astype(jnp.float32)
  return {"loss_sum": jnp.sum(nll_B * w_B), "count": jnp.sum(w_B), "correct": jnp.sum(hit_B * w_B)}, model_state


OBJECTIVES = {"next_token": next_token, "classification": classification}

# What each objective feeds the model, for shape-only uses such as initialisation.
MODEL_INPUTS = {"next_token": lambda batch: batch["tokens"][:, :-1], "classification": classifier_inputs}
