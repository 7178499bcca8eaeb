"""Classification: log p(y | x), the label given the whole input, through a head on any family's features
(pretrain/models/classifier.py); counts are examples. Evaluations add accuracy, per-class and macro-averaged F1
(real labels are imbalanced: accuracy alone flatters the majority class) and the confusion matrix."""
import jax
import jax.numpy as jnp
import numpy as np
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
    raise ConfigError(f"objective=classification needs labels, but dataset {dataset.name} has none; set "
                      "--config.data.label_field to the field of your records holding them (data.name=text), or "
                      "--config.data.name to a dataset with a label feature")
  cls_id = getattr(config.model, "cls_id", -1)
  if head.pooling == "cls" and not 0 <= cls_id < getattr(getattr(backbone, "config", None), "vocab_size", cls_id + 1):
    raise ConfigError(f"model.head.pooling=cls puts the tokenizer's [CLS] before each text, but model.cls_id={cls_id}; "
                      "import a BERT with its tokenizer (pretrain.hf import sets it) or set --config.model.cls_id")
  return classifier.Classifier(backbone, num_classes, head.pooling, cls_id=cls_id)


def loss(model, variables, batch, *, train, rng):
  # Padded texts: pooling reads only their real tokens (the inputs are all columns but the last).
  real = {"positions_mask": batch["token_mask"][:, :-1]} if "token_mask" in batch and "tokens" in batch else {}
  logits_BxC, model_state = apply(model, variables, model_inputs(batch), train=train, rng=rng, **real)
  nll_B = optax.softmax_cross_entropy_with_integer_labels(logits_BxC, batch["label"])
  w_B = batch["mask"]
  predicted_B = jnp.argmax(logits_BxC, axis=-1)
  hit_B = (predicted_B == batch["label"]).astype(jnp.float32)
  sums = {"loss_sum": jnp.sum(nll_B * w_B), "count": jnp.sum(w_B), "correct": jnp.sum(hit_B * w_B)}
  if not train:  # Evaluation only: a train step would add and reduce a C x C matrix nobody reads.
    C = logits_BxC.shape[-1]
    # Rows: the true label; columns: the predicted one.
    truth_BxC = jax.nn.one_hot(batch["label"], C) * w_B[:, None]
    sums["confusion"] = jnp.einsum("bi,bj->ij", truth_BxC, jax.nn.one_hot(predicted_B, C))
  return sums, model_state


def f1_scores(confusion_CxC) -> np.ndarray:
  """Each class's F1, 2 TP / (2 TP + FP + FN), from a confusion matrix (rows true, columns predicted); 0 where a
  class is neither present nor predicted."""
  confusion_CxC = np.asarray(confusion_CxC, np.float64)
  tp_C = np.diag(confusion_CxC)
  denominator_C = confusion_CxC.sum(0) + confusion_CxC.sum(1)
  return np.divide(2 * tp_C, denominator_C, out=np.zeros_like(tp_C), where=denominator_C > 0)


def macro_f1(confusion_CxC) -> float:
  """The mean F1 over the classes that are present or predicted (scikit-learn's f1_score(average="macro"))."""
  confusion_CxC = np.asarray(confusion_CxC, np.float64)
  seen_C = (confusion_CxC.sum(0) + confusion_CxC.sum(1)) > 0
  return float(f1_scores(confusion_CxC)[seen_C].mean()) if seen_C.any() else 0.0


def summarize(metrics, dataset, whole_split):
  """macro_f1, f1/NAME per class, and the confusion matrix with the label names (confusion, labels)."""
  del whole_split
  confusion_CxC = np.asarray(metrics.pop("confusion"))
  out = dict(metrics, macro_f1=macro_f1(confusion_CxC))
  names = [dataset.label_name(c) for c in range(len(confusion_CxC))]
  out.update({f"f1/{name}": float(f1) for name, f1 in zip(names, f1_scores(confusion_CxC))})
  out["confusion"], out["labels"] = confusion_CxC.round().astype(int).tolist(), names
  return out
