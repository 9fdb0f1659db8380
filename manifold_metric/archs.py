"""Architectures as plain data: the paper's sizes (Tables 2 and 3) and the
keys each kind takes, readable without building a model, so that a config
can be checked before any job runs (and without importing JAX).

A config `model` entry names a kind and overrides sizes, e.g. {"kind": "cnn",
"channels": [4, 32]}; `sizes` fills in the rest.
"""

IMAGE_KINDS = ("mlp", "cnn", "resnet18")
KINDS = (*IMAGE_KINDS, "bert")
IMAGE_DEFAULTS = {
    "mlp": {"hidden": [20]},
    "cnn": {"channels": [8, 32], "dense": 256},
    "resnet18": {"stages": [64, 128, 256, 512],
                 "mids": [[64, 64], [128, 128], [256, 256], [512, 512]]},
}
BERT_PRESETS = {
    "tinybert": {"layers": 2, "hidden": 128, "heads": 2, "ffn": 512},
    "minibert": {"layers": 4, "hidden": 256, "heads": 4, "ffn": 1024},
}
# The size keys a config model entry of each kind may set.
SIZE_KEYS = {"mlp": ("hidden",), "cnn": ("channels", "dense"),
             "resnet18": ("stages", "mids"), "bert": ("preset", "layers", "heads", "ffn")}


def is_lm(arch: dict) -> bool:
  """True for the Transformer track (masked language modelling)."""
  return arch["kind"] == "bert"


def sizes(model: dict) -> dict:
  """A config model entry with the paper's defaults filled in.

  Args:
    model: {"kind": ..., size overrides}; BERT's `ffn` may be one width for
      every layer or a list, and `preset` picks Table 3's sizes (tinybert).

  Returns:
    The kind and every size key, BERT's `ffn` as one width per layer; no
    num_classes or vocabulary, which come from the data.
  """
  kind = model["kind"]
  if kind not in KINDS:
    raise ValueError(f"unknown model kind {kind!r}; expected one of {KINDS}")
  extra = sorted(set(model) - {"kind", *SIZE_KEYS[kind]})
  if extra:
    raise ValueError(f"a {kind} model takes {', '.join(SIZE_KEYS[kind])}, not {', '.join(extra)}")
  if kind != "bert":
    return {"kind": kind, **IMAGE_DEFAULTS[kind], **model}
  preset = model.get("preset", "tinybert")
  if preset not in BERT_PRESETS:
    raise ValueError(f"unknown BERT preset {preset!r}; expected one of {sorted(BERT_PRESETS)}")
  out = {"kind": kind, **BERT_PRESETS[preset],
         **{k: v for k, v in model.items() if k not in ("kind", "preset")}}
  if isinstance(out["ffn"], int):
    out["ffn"] = [out["ffn"]] * out["layers"]
  return out


def first_width(model: dict) -> int:
  """Neurons of the group the metric permutes and `widen_first` widens: the
  first hidden layer, the first conv, ResNet's stem stage, BERT layer 0's FFN."""
  s = sizes(model)
  return {"mlp": lambda: s["hidden"][0], "cnn": lambda: s["channels"][0],
          "resnet18": lambda: s["stages"][0], "bert": lambda: s["ffn"][0]}[s["kind"]]()
