"""The study's configuration: the checks a JSON schema cannot express, and
the values derived from it (a setting's optimizer, a dataset's directory).

`check` runs right after Snakemake validates config/schema.yaml, before any
job: a mistake that would otherwise surface hours later (after base
training, say) fails at once, naming its key. Importing this module does not
import JAX.
"""

import os

from manifold_metric import archs, data
from manifold_metric.data import FASHION_MNIST_DIR

BUNDLED = "bundled"
# Data that ships inside the package (see its README per directory).
BUNDLED_DIRS = {"fashion_mnist": "fashion-mnist", "wikitext": "wikitext-103"}
RESERVED = ("base", "initial", "scratch")  # names of files beside the expansions'
# Figures that draw language-model settings only, or image settings only.
LM_FIGURES = ("figure5", "figure11")
IMAGE_FIGURES = ("figure4", "figure10")


class ConfigError(ValueError):
  """A config value is wrong; the message starts with its key."""

  def __init__(self, key: str, message: str):
    super().__init__(f"config key {key}: {message}")


def bundled_dir(source: str) -> str:
  """The directory of the data shipped with the package for `source`."""
  if source not in BUNDLED_DIRS:
    raise ValueError(
        f"no data of source {source!r} ships with the package; bundled are "
        f"{sorted(BUNDLED_DIRS)}"
    )
  return os.path.join(os.path.dirname(__file__), "bundled", BUNDLED_DIRS[source])


def dataset_path(spec: dict, data_dir: str = "data") -> str | None:
  """Where a dataset's files are.

  Args:
    spec: the config's `datasets.<name>` entry.
    data_dir: the config's `data_dir`.

  Returns:
    `path` if given (`bundled`: the copy shipped with the package); else
    Debian's directory for Fashion-MNIST, `data_dir` for CIFAR,
    `data_dir`/wikitext-103 for WikiText; None for digits (it ships with
    scikit-learn).
  """
  source, path = spec["source"], spec.get("path")
  if source == "digits":
    return None
  if path == BUNDLED:
    return bundled_dir(source)
  if path:
    return path
  return {
      "fashion_mnist": FASHION_MNIST_DIR,
      "wikitext": os.path.join(data_dir, "wikitext-103"),
  }.get(source, data_dir)


def is_lm_setting(config: dict, name: str) -> bool:
  return config["settings"][name]["model"]["kind"] == "bert"


def seeds(config: dict, name: str) -> list[int]:
  """The seeds of setting `name`: its track's `seeds` (`lm.seeds`: BERT's
  runs cost most), else the study's."""
  return track(config, name).get("seeds", config["seeds"])


def track(config: dict, name: str) -> dict:
  """The config section of a setting's track: `lm` for BERT, the top level
  for image models (both have train, base, candidate)."""
  return config["lm"] if is_lm_setting(config, name) else config


def metric_batch_size(config: dict, name: str) -> int:
  """Examples (images) or sequences (BERT) in a setting's metric batch."""
  return (
      config["lm"]["metric_batch_size"]
      if is_lm_setting(config, name)
      else config["metric"]["batch_size"]
  )


def train_hp(config: dict, name: str) -> dict:
  """A setting's training hyperparameters: its own `train` entries over its
  track's. Adam has no weight decay, so `weight_decay` is dropped with it."""
  hp = {**track(config, name)["train"], **config["settings"][name].get("train", {})}
  if hp["optimizer"] == "adam":
    hp.pop("weight_decay", None)
  return hp


def checkpoint_epochs(candidate: dict) -> list[int]:
  """Epochs kept of a candidate run: 0 (the expanded model) and T always."""
  T = candidate["epochs"]
  every = candidate.get("checkpoint_every", 1)
  return sorted({0, T} | set(candidate.get("checkpoints", range(0, T + 1, every))))


# The keys each shorthand and each step takes (besides kind).
SHORTHAND_KEYS = {
    "widen_first": {"width", "factor", "split"},
    "widen_ffn": {"width", "factor", "split"},
    "widen_all": {"factor", "split"},
    "deepen": {"after", "count"},
}
STEP_KEYS = {
    "widen": {"layer", "width", "factor"},
    "widen_all": {"factor"},
    "deepen": {"after", "count"},
}


def _check_keys(key: str, entry: dict, kind: str, allowed: set) -> None:
  extra = sorted(set(entry) - allowed - {"kind"})
  if extra:
    raise ConfigError(f"{key}.{extra[0]}", f"{kind} takes {', '.join(sorted(allowed))}")
  if kind in ("widen_first", "widen_ffn", "widen") and ("width" in entry) == ("factor" in entry):
    raise ConfigError(key, f"{kind} takes exactly one of width and factor")
  if kind == "widen_all" and "factor" not in entry:
    raise ConfigError(f"{key}.factor", "widen_all needs a factor")
  if kind == "deepen" and "after" not in entry:
    raise ConfigError(f"{key}.after", "deepen needs the layer to insert after")
  if kind == "widen" and "layer" not in entry:
    raise ConfigError(f"{key}.layer", "widen needs the layer to widen")


def _check_expansion(key: str, spec: dict, model: dict) -> None:
  base = archs.make(model)
  if "steps" in spec:
    _check_keys(key, spec, "steps", {"steps", "split"})
    for i, step in enumerate(spec["steps"]):
      _check_keys(f"{key}.steps[{i}]", step, step["kind"], STEP_KEYS[step["kind"]])
  else:
    kind = spec["kind"]
    if kind == "widen_ffn" and base.kind != "bert":
      raise ConfigError(
          f"{key}.kind", f"widen_ffn widens BERT's FFNs; this setting's model is " f"{base.kind}"
      )
    if kind == "deepen" and base.kind not in ("mlp", "cnn"):
      raise ConfigError(f"{key}.kind", f"deepen is defined for mlp, cnn models, not {base.kind}")
    _check_keys(key, spec, kind, SHORTHAND_KEYS[kind])
  current = base
  for i, step in enumerate(archs.steps(spec, base)):
    if "steps" in spec:
      where = f"{key}.steps[{i}]"
    else:  # a shorthand: the key that sets what does not apply
      sets = "after" if step["kind"] == "deepen" else "width" if "width" in step else "factor"
      where = f"{key}.{sets}"
    try:
      for group, new in archs.step_groups(current, step):
        if new <= current.groups()[group]:
          raise ValueError(
              f"{new} does not widen the base's {current.groups()[group]} neurons " f"of {group}"
          )
      current, _ = archs.apply_step(current, step, {})
    except ValueError as e:
      raise ConfigError(where, str(e)) from None
  if "split" in spec and spec["split"] not in archs.SPLITS:
    raise ConfigError(f"{key}.split", f"expected one of {archs.SPLITS}")


def _check_setting(config: dict, name: str, s: dict) -> None:
  key = f"settings.{name}"
  if "." in name or "/" in name:
    raise ConfigError(key, "a setting's name is part of file names: no '.' or '/'")
  if s["dataset"] not in config["datasets"]:
    raise ConfigError(
        f"{key}.dataset",
        f"unknown dataset {s['dataset']!r}; defined are " f"{sorted(config['datasets'])}",
    )
  try:
    base = archs.make(s["model"])
  except ValueError as e:
    raise ConfigError(f"{key}.model", str(e)) from None
  lm = s["model"]["kind"] == "bert"
  if lm != (config["datasets"][s["dataset"]]["source"] == "wikitext"):
    raise ConfigError(
        f"{key}.model.kind",
        "bert goes with a wikitext dataset, image models " "with image datasets",
    )
  if lm and "lm" not in config:
    raise ConfigError(
        "lm",
        f"setting {name} is a BERT: the config needs an lm section "
        "(its training, epochs and metric batch)",
    )
  if base.groups()[archs.first_group(base)] < 2:
    raise ConfigError(f"{key}.model", "the permuted first layer needs at least 2 neurons")
  for e, spec in s["expansions"].items():
    if e in RESERVED:
      raise ConfigError(f"{key}.expansions.{e}", f"'{e}' is reserved")
    _check_expansion(f"{key}.expansions.{e}", spec, s["model"])
  own = s.get("train", {})
  optimizer = own.get("optimizer", track(config, name)["train"]["optimizer"])
  if optimizer == "adam" and "weight_decay" in own:
    raise ConfigError(
        f"{key}.train.weight_decay",
        "Adam has no weight decay; use optimizer: " "adamw for weight decay",
    )
  if optimizer == "adamw" and "weight_decay" not in {**track(config, name)["train"], **own}:
    raise ConfigError(f"{key}.train.weight_decay", "AdamW needs a weight_decay")


def _train_examples(config: dict, dataset: str) -> int | None:
  """At most how many training examples (images) or sequences (text) a
  dataset gives, known without preparing it; None if unknown yet."""
  spec = config["datasets"][dataset]
  if spec["source"] == "wikitext":
    return spec["max_tokens"] // spec["seq_len"] if spec.get("max_tokens") else None
  return data.max_train_examples(
      spec["source"],
      dataset_path(spec, config.get("data_dir", "data")),
      val_fraction=spec.get("val_fraction", 0.2),
      limit=spec.get("limit"),
  )


def _check_data_sizes(config: dict) -> None:
  """Batches the data cannot fill: the metric batch (one batch of training
  examples, Section 4.2) and BERT's training batch."""
  for name, s in config["settings"].items():
    n = _train_examples(config, s["dataset"])
    if n is None:
      continue
    lm = is_lm_setting(config, name)
    what = "sequences" if lm else "training examples"
    key = "lm.metric_batch_size" if lm else "metric.batch_size"
    if metric_batch_size(config, name) > n:
      raise ConfigError(
          key,
          f"{metric_batch_size(config, name)} is more than the {n} {what} "
          f"dataset {s['dataset']} gives setting {name}: lower it (the metric "
          "batch is one batch of training data)",
      )
    if lm and train_hp(config, name)["batch_size"] > n:
      raise ConfigError(
          "lm.train.batch_size",
          f"{train_hp(config, name)['batch_size']} is "
          f"more than the {n} sequences of dataset {s['dataset']}",
      )


def _check_figures(config: dict) -> None:
  settings = config["settings"]
  for fig, spec in config["figures"].items():
    names = [spec["setting"]] if fig == "figure1" else spec["settings"]
    for name in names:
      if name not in settings:
        raise ConfigError(f"figures.{fig}", f"unknown setting {name!r}")
      if fig in LM_FIGURES and not is_lm_setting(config, name):
        raise ConfigError(f"figures.{fig}", f"{fig} draws BERT settings; {name} is not one")
      if fig in IMAGE_FIGURES + ("figure1",) and is_lm_setting(config, name):
        raise ConfigError(f"figures.{fig}", f"{fig} draws image settings; {name} is BERT")
    for e in spec.get("expansions", []):
      if e not in settings[spec["setting"]]["expansions"]:
        raise ConfigError(
            f"figures.{fig}.expansions", f"unknown expansion {e!r} of " f"{spec['setting']}"
        )


def check(config: dict) -> None:
  """Raises ConfigError naming the key of the first mistake the JSON schema
  cannot see: cross-key references, sizes an expansion must exceed, layer
  indices, optimizer options, batches larger than the data, and figures that
  cannot be drawn.

  Args:
    config: the workflow's config, already validated against the schema
      (defaults filled in).
  """
  m = config["metric"]
  for n in m["n"] + [m["main_n"]]:
    if n > m["n_max"]:
      raise ConfigError(
          "metric.n",
          f"n = {n} is larger than metric.n_max = {m['n_max']}, the " "number of barriers computed",
      )
  if m["main_q"] not in m["q"]:
    raise ConfigError("metric.main_q", f"{m['main_q']} is not one of metric.q {m['q']}")
  if m["main_n"] not in m["n"]:
    raise ConfigError("metric.main_n", f"{m['main_n']} is not one of metric.n {m['n']}")
  for key, section in (
      ("candidate", config.get("candidate")),
      ("lm.candidate", config.get("lm", {}).get("candidate")),
  ):
    for e in (section or {}).get("checkpoints", []):
      if e > section["epochs"]:
        raise ConfigError(
            f"{key}.checkpoints", f"epoch {e} is after {key}.epochs = " f"{section['epochs']}"
        )
  for name, s in config["settings"].items():
    _check_setting(config, name, s)
  _check_data_sizes(config)
  _check_figures(config)
