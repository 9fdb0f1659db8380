"""study.check: every branch rejects its mistake naming the key, and the
project's own configs pass; the derived values (optimizer per setting,
dataset directories, checkpoint epochs)."""

import copy
import os
import re
from pathlib import Path

import pytest
import yaml

from manifold_metric import study

ROOT = Path(__file__).resolve().parents[1]
SMALL = yaml.safe_load((ROOT / "tests" / "workflow_config.yaml").read_text())
IMG, LM = "digits-mlp", "wikitext-bert"


def changed(change):
  cfg = copy.deepcopy(SMALL)
  change(cfg)
  return cfg


def rejects(change, key: str, text: str = ""):
  with pytest.raises(study.ConfigError, match=r"^config key " + re.escape(key)) as e:
    study.check(changed(change))
  assert text in str(e.value), str(e.value)


@pytest.mark.parametrize(
    "path", ["config/config.yaml", "config/paper.yaml", "tests/workflow_config.yaml"]
)
def test_the_projects_configs_pass(path):
  study.check(yaml.safe_load((ROOT / path).read_text()))


def test_n_above_n_max():
  rejects(lambda c: c["metric"].update(n=[30, 600]), "metric.n", "n = 600 is larger")


def test_main_q_and_main_n_in_the_grid():
  rejects(lambda c: c["metric"].update(main_q=0.3), "metric.main_q")
  rejects(lambda c: c["metric"].update(main_n=50), "metric.main_n")


def test_checkpoints_after_T():
  rejects(
      lambda c: c["candidate"].update(checkpoints=[1, 3]),
      "candidate.checkpoints",
      "epoch 3 is after",
  )
  rejects(lambda c: c["lm"]["candidate"].update(checkpoints=[9]), "lm.candidate.checkpoints")


def test_setting_name_with_dot_or_slash():
  rejects(lambda c: c["settings"].update({"a.b": c["settings"][IMG]}), "settings.a.b", "no '.'")


def test_unknown_dataset():
  rejects(
      lambda c: c["settings"][IMG].update(dataset="nope"),
      f"settings.{IMG}.dataset",
      "unknown dataset 'nope'",
  )


def test_model_keys_of_another_kind():
  rejects(
      lambda c: c["settings"][IMG].update(model={"kind": "cnn", "hidden": [8]}),
      f"settings.{IMG}.model",
      "not hidden",
  )


def test_bert_needs_text_and_images_need_images():
  rejects(lambda c: c["settings"][LM].update(dataset="digits"), f"settings.{LM}.model.kind")


def test_bert_without_lm_section():
  rejects(lambda c: c.pop("lm"), "lm", "needs an lm section")


def test_heads_must_divide_hidden():
  rejects(
      lambda c: c["settings"][LM]["model"].update(heads=3),
      f"settings.{LM}.model",
      "not a multiple of heads",
  )


def test_first_layer_of_one_neuron():
  rejects(
      lambda c: c["settings"][IMG]["model"].update(hidden=[1]),
      f"settings.{IMG}.model",
      "at least 2 neurons",
  )


def test_reserved_expansion_names():
  for name in ("base", "initial", "scratch"):
    rejects(
        lambda c: c["settings"][IMG]["expansions"].update(
            {name: {"kind": "widen_first", "factor": 2}}
        ),
        f"settings.{IMG}.expansions.{name}",
        "reserved",
    )


def test_expansion_kind_of_another_track():
  rejects(
      lambda c: c["settings"][IMG]["expansions"].update(x2={"kind": "widen_ffn", "factor": 2}),
      f"settings.{IMG}.expansions.x2.kind",
  )
  rejects(
      lambda c: c["settings"].update(
          r={
              "dataset": "digits",
              "model": {"kind": "resnet18"},
              "expansions": {
                  "d": {"kind": "deepen", "after": 0},
                  "e": {"kind": "widen_all", "factor": 2},
              },
          }
      ),
      "settings.r.expansions.d.kind",
      "mlp, cnn",
  )


def test_warmup_in_an_image_setting_runs():
  """The schema takes warmup in any train section; the image trainer builds
  its schedule over the run's steps like BERT's (it failed at job time)."""
  from manifold_metric import train

  study.check(changed(lambda c: c["train"].update(warmup=10)))
  hp = study.train_hp(changed(lambda c: c["train"].update(warmup=10)), IMG)
  train.optimizer(hp, total_steps=100)


def test_width_and_factor_both_or_neither():
  rejects(
      lambda c: c["settings"][IMG]["expansions"].update(
          x2={"kind": "widen_first", "factor": 2, "width": 20}
      ),
      f"settings.{IMG}.expansions.x2",
      "exactly one of width and factor",
  )
  rejects(
      lambda c: c["settings"][IMG]["expansions"].update(x2={"kind": "widen_first"}),
      f"settings.{IMG}.expansions.x2",
      "exactly one",
  )


def test_width_that_does_not_widen():
  rejects(
      lambda c: c["settings"][IMG]["expansions"].update(x2={"kind": "widen_first", "width": 8}),
      f"settings.{IMG}.expansions.x2.width",
      "does not widen the base's 8",
  )
  rejects(
      lambda c: c["settings"][LM]["expansions"].update(f96={"kind": "widen_ffn", "width": 32}),
      f"settings.{LM}.expansions.f96.width",
      "smaller than the current 64",
  )
  rejects(
      lambda c: c["settings"][IMG]["expansions"].update(
          x2={
              "steps": [
                  {"kind": "widen", "layer": 0, "width": 12},
                  {"kind": "widen", "layer": 0, "width": 12},
              ]
          }
      ),
      f"settings.{IMG}.expansions.x2.steps[1]",
      "does not widen the base's 12",
  )


def test_steps_name_their_mistake():
  rejects(
      lambda c: c["settings"][IMG]["expansions"].update(
          x2={"steps": [{"kind": "widen", "width": 12}]}
      ),
      f"settings.{IMG}.expansions.x2.steps[0].layer",
      "needs the layer",
  )
  rejects(
      lambda c: c["settings"][IMG]["expansions"].update(
          x2={"steps": [{"kind": "widen", "layer": 1, "width": 12}]}
      ),
      f"settings.{IMG}.expansions.x2.steps[0]",
      "layer 1 is outside 0..0",
  )
  rejects(
      lambda c: c["settings"][IMG]["expansions"].update(
          x2={"steps": [{"kind": "deepen", "after": 0, "layer": 0}]}
      ),
      f"settings.{IMG}.expansions.x2.steps[0].layer",
      "deepen takes after, count",
  )
  # A step after a deepening sees the deepened model: layer 1 is the new one.
  study.check(
      changed(
          lambda c: c["settings"][IMG]["expansions"].update(
              x2={
                  "steps": [
                      {"kind": "deepen", "after": 0},
                      {"kind": "widen", "layer": 1, "width": 9},
                  ]
              }
          )
      )
  )


def test_keys_an_expansion_does_not_take():
  rejects(
      lambda c: c["settings"][IMG]["expansions"].update(
          x2={"kind": "widen_all", "factor": 2, "width": 9}
      ),
      f"settings.{IMG}.expansions.x2.width",
  )
  rejects(
      lambda c: c["settings"][IMG]["expansions"].update(x2={"kind": "widen_all"}),
      f"settings.{IMG}.expansions.x2.factor",
      "needs a factor",
  )


def test_deepen_after_out_of_range_or_missing():
  rejects(
      lambda c: c["settings"][IMG]["expansions"].update(x2={"kind": "deepen", "after": 1}),
      f"settings.{IMG}.expansions.x2.after",
      "outside 0..0",
  )
  rejects(
      lambda c: c["settings"][IMG]["expansions"].update(x2={"kind": "deepen"}),
      f"settings.{IMG}.expansions.x2.after",
      "needs the layer",
  )


def test_adam_with_weight_decay_and_adamw_without():
  rejects(
      lambda c: c["settings"][IMG].update(train={"optimizer": "adam", "weight_decay": 0.1}),
      f"settings.{IMG}.train.weight_decay",
      "Adam has no weight decay",
  )
  rejects(
      lambda c: (c["train"].pop("weight_decay"),),
      f"settings.{IMG}.train.weight_decay",
      "AdamW needs",
  )


def test_batches_larger_than_the_data():
  # digits: 1437 training images (1797, 20% to validation).
  rejects(
      lambda c: c["metric"].update(batch_size=100000),
      "metric.batch_size",
      "100000 is more than the 1442 training examples dataset digits",
  )
  # wikitext: 6000 tokens in sequences of 32.
  rejects(
      lambda c: c["lm"].update(metric_batch_size=200),
      "lm.metric_batch_size",
      "200 is more than the 187 sequences",
  )
  rejects(lambda c: c["lm"]["train"].update(batch_size=500), "lm.train.batch_size")


def test_figures():
  rejects(
      lambda c: c["figures"]["figure3"].update(settings=["nope"]),
      "figures.figure3",
      "unknown setting 'nope'",
  )
  rejects(
      lambda c: c["figures"].update(figure5={"settings": [IMG]}),
      "figures.figure5",
      "draws BERT settings",
  )
  rejects(
      lambda c: c["figures"].update(figure4={"settings": [LM]}),
      "figures.figure4",
      "draws image settings",
  )
  rejects(
      lambda c: c["figures"]["figure1"].update(expansions=["x9"]),
      "figures.figure1.expansions",
      "unknown expansion 'x9'",
  )


def test_train_hp_per_setting():
  cfg = changed(lambda c: c["settings"][IMG].update(train={"optimizer": "adam", "lr": 0.01}))
  hp = study.train_hp(cfg, IMG)
  assert hp["optimizer"] == "adam" and hp["lr"] == 0.01 and "weight_decay" not in hp
  assert hp["batch_size"] == SMALL["train"]["batch_size"]  # the track's default
  assert study.train_hp(cfg, LM) == SMALL["lm"]["train"]
  assert study.train_hp(SMALL, IMG) == SMALL["train"]


def test_dataset_path():
  assert study.dataset_path({"source": "digits"}) is None
  assert study.dataset_path({"source": "fashion_mnist"}) == study.FASHION_MNIST_DIR
  assert study.dataset_path({"source": "cifar10"}, "d") == "d"
  assert study.dataset_path({"source": "wikitext"}, "d") == os.path.join("d", "wikitext-103")
  assert study.dataset_path({"source": "cifar10", "path": "x"}, "d") == "x"
  bundled = study.dataset_path({"source": "wikitext", "path": "bundled"})
  assert sorted(os.listdir(bundled)) == ["README.md", "wiki.test.tokens.xz", "wiki.valid.tokens.xz"]
  with pytest.raises(ValueError, match="bundled are"):
    study.dataset_path({"source": "cifar10", "path": "bundled"})


def test_checkpoint_epochs_keep_0_and_T():
  assert study.checkpoint_epochs({"epochs": 10, "checkpoints": [2, 5]}) == [0, 2, 5, 10]
  assert study.checkpoint_epochs({"epochs": 4, "checkpoint_every": 2}) == [0, 2, 4]


def test_seeds_of_a_setting_default_to_the_study_and_lm_seeds_override_them():
  assert study.seeds(SMALL, IMG) == study.seeds(SMALL, LM) == SMALL["seeds"]
  cfg = changed(lambda c: c["lm"].update(seeds=[7]))
  assert study.seeds(cfg, LM) == [7] and study.seeds(cfg, IMG) == SMALL["seeds"]
