"""Classification: log p(y | x), the label given the whole input, through a head on any family's features
(pretrain/models/classifier.py); counts are examples."""
import jax.numpy as jnp
import optax

from pretrain.errors import ConfigError
from pretrain.models import classifier
from pretrain.objectives import apply


def model_inputs(batch):
  """What a classifier reads: the image, or the tokens a next-token model reads (all but the last), so a
  pretrained backbone sees the same positions and the same leading BOS it was trained on."""
  return batch["image"] if "image" in batch else batch["tokens"][:, :-1]


def accepts(family) -> bool:
  return True  # Any family whose network has features(); wrap says so when it has not.


def wrap(backbone, config, dataset):
  if not hasattr(backbone, "features"):
    raise ConfigError(f"model.family={config.model.family!r} has no features() method, so it cannot carry a "
                      "classification head; use a family that has one")
  head = config.model.head
  if head.pooling not in classifier.POOLINGS:
    raise ConfigError(f"model.head.pooling={head.pooling!r} is not one of {classifier.POOLINGS}")
  num_classes = head.num_classes or dataset.num_classes
  if num_classes < 1:
    raise ConfigError(f"objective=classification needs labels, but dataset {dataset.name} has none; "
                      "set --config.data.name to a dataset with a label feature")
  return classifier.Classifier(backbone, num_classes, head.pooling)


def loss(model, variables, batch, *, train, rng):
  # Padded texts: pooling reads only their real tokens (the inputs are all columns but the last).
  real = {"positions_mask": batch["token_mask"][:, :-1]} if "token_mask" in batch and "tokens" in batch else {}
  logits_BxC, model_state = apply(model, variables, model_inputs(batch), train=train, rng=rng, **real)
  nll_B = optax.softmax_cross_entropy_with_integer_labels(logits_BxC, batch["label"])
  w_B = batch["mask"]
  hit_B = (jnp.argmax(logits_BxC, axis=-1) == batch["label"]).astype(jnp.float32)
  return {"loss_sum": jnp.sum(nll_B * w_B), "count": jnp.sum(w_B), "correct": jnp.sum(hit_B * w_B)}, model_state
