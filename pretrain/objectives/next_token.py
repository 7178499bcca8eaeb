"""Next-token prediction: log p(x) = sum_t log p(x_t | x_<t), autoregressive language modelling."""
import jax.numpy as jnp
import optax

from pretrain.objectives import apply, token_weights


def model_inputs(batch):
  return batch["tokens"][:, :-1]


def loss(model, variables, batch, *, train, rng):
  tokens_BxT1 = batch["tokens"]
  # data.document_mask: which document each input token is in (its attention and positions stay inside it).
  documents = {"segment_ids_BxT": batch["segment_ids"][:, :-1]} if "segment_ids" in batch else {}
  if getattr(getattr(model, "config", None), "loss_chunk", 0):  # The model scores its targets chunk by chunk.
    nll_BxT, model_state = apply(model, variables, tokens_BxT1[:, :-1], train=train, rng=rng,
                                 targets_BxT=tokens_BxT1[:, 1:], **documents)
  else:
    logits_BxTxV, model_state = apply(model, variables, tokens_BxT1[:, :-1], train=train, rng=rng, **documents)
    nll_BxT = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, tokens_BxT1[:, 1:])
  w_BxT = token_weights(batch, tokens_BxT1)[:, 1:]
  sums = {"loss_sum": jnp.sum(nll_BxT * w_BxT), "count": jnp.sum(w_BxT)}
  if "token_bytes" in batch:  # Evaluation of text: the UTF-8 bytes the scored tokens cover, for bits per byte.
    sums["bytes"] = jnp.sum(batch["token_bytes"][:, 1:] * w_BxT)
  return sums, model_state


def summarize(out: dict, dataset, whole_split: bool) -> dict:
  """`out` with the distances to the dataset's reference scores where it has them (the Markov source): the
  entropy given the source, which only a model told the source can reach, and the best possible model's score,
  which holds for the whole validation split only."""
  references = [("entropy_bits_per_token", "bits_above_entropy")]
  if whole_split:
    references.append(("best_bits_per_token", "bits_above_best"))
  for reference, gap in references:
    if reference in dataset.metadata:
      out[reference] = dataset.metadata[reference]
      out[gap] = out["bits_per_token"] - dataset.metadata[reference]
  return out
