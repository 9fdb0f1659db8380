"""One entry point per operation for both tracks (image classifiers and
BERT), dispatched on the architecture's kind, so workflow scripts need not
know which track they serve."""

import jax
import numpy as np

from manifold_metric import bert, data, expansion, models, text, train


def is_lm(arch: dict) -> bool:
  return arch["kind"] == "bert"


def probe_and_spec(arch: dict, group: str | None = None):
  """The (Probe, PermSpec) of a neuron group; None means the metric's
  default: the first layer, or layer 0's FFN for BERT."""
  if is_lm(arch):
    group = group or "ffn_0"
    return bert.probe(arch, group), bert.spec(arch, group)
  spec = models.neuron_groups(arch)[group] if group else models.first_group(arch)
  return models.probe(arch), spec


def expand(arch: dict, variables, spec: dict, key):
  """Applies a config expansion entry; 'widen_ffn' is BERT's."""
  if spec["kind"] == "widen_ffn":
    return bert.widen_ffn(arch, variables, key, width=spec.get("width"),
                          factor=spec.get("factor"), split=spec.get("split", "random"))
  return expansion.expand(arch, variables, spec, key)


def metric_batch(arch: dict, ds: dict, seed: int, size: int):
  """The single training batch every model of one seed is probed on. For
  BERT: `size` training sequences, masked once with a key from the seed."""
  if not is_lm(arch):
    return data.training_batch(ds, seed, size)
  seqs = ds["train"]
  idx = np.sort(np.random.default_rng([seed, 1]).permutation(len(seqs))[:size])
  return bert.probe_batch(text.mask_tokens(jax.random.key(seed), seqs[idx], arch["vocab_size"]))


def load_dataset(path):
  """A prepared dataset (.npz) of either track."""
  with np.load(path) as z:
    keys = text.TEXT_KEYS if "train" in z.files else data.KEYS
  return data.load_npz(path, keys)


def build_arch(model: dict, ds: dict) -> dict:
  """The architecture of a config `model` entry for a prepared dataset."""
  sizes = {k: v for k, v in model.items() if k not in ("kind", "preset")}
  if model["kind"] == "bert":
    return bert.arch(model.get("preset", "tinybert"), int(ds["vocab_size"]),
                     max_len=ds["train"].shape[1], **sizes)
  return models.default_arch(model["kind"], ds["num_classes"], **sizes)


def init(arch: dict, key, ds: dict):
  if is_lm(arch):
    return bert.init(arch, key)
  return models.init(arch, key, ds["x_train"].shape[1:])


def performance(arch: dict, variables, ds: dict, hp: dict) -> float:
  """Validation accuracy, or -log(validation MLM loss) for BERT."""
  if is_lm(arch):
    return float(bert.performance(train.lm_val_loss(arch, variables, ds, hp)))
  return train.accuracy(arch, variables, ds["x_val"], ds["y_val"])


def run_epochs(arch: dict, variables, ds: dict, **kwargs):
  """train.run_epochs or train.run_lm_epochs, by track."""
  runner = train.run_lm_epochs if is_lm(arch) else train.run_epochs
  return runner(arch, variables, ds, **kwargs)
