import json

from snakemake.utils import min_version, validate

min_version("9.0")


validate(config, "../../config/schema.yaml")


def config_error(key, message):
    raise ValueError(f"config key {key}: {message}")


def check_config():
    """Cross-key checks the JSON schema cannot express; run before any job."""
    m = config["metric"]
    for n in m["n"] + [m["main_n"]]:
        if n > m["n_max"]:
            config_error("metric.n", f"n = {n} is larger than metric.n_max = "
                         f"{m['n_max']}, the number of barriers computed")
    if m["main_q"] not in m["q"] or m["main_n"] not in m["n"]:
        config_error("metric.main_q/main_n", "must be one of metric.q / metric.n")
    for name, s in config["settings"].items():
        if s["dataset"] not in config["datasets"]:
            config_error(f"settings.{name}.dataset", f"unknown dataset {s['dataset']!r}; "
                         f"defined are {sorted(config['datasets'])}")
        if "base" in s["expansions"]:
            config_error(f"settings.{name}.expansions.base", "'base' names the base model")
    f1 = config["figures"].get("figure1")
    if f1:
        s = config["settings"].get(f1["setting"])
        if s is None:
            config_error("figures.figure1.setting", f"unknown setting {f1['setting']!r}")
        for e in f1["expansions"]:
            if e not in s["expansions"]:
                config_error("figures.figure1.expansions", f"unknown expansion {e!r}")
    for name in config["figures"].get("figure3", {}).get("settings", []):
        if name not in config["settings"]:
            config_error("figures.figure3.settings", f"unknown setting {name!r}")


check_config()

SETTINGS = config["settings"]
SEEDS = config["seeds"]
T = config["candidate"]["epochs"]
EVERY = config["candidate"].get("checkpoint_every", 1)
# Epoch 0 is the expanded model itself; T is always kept.
EPOCHS = sorted(set(range(0, T + 1, EVERY)) | {T})
TRAIN_EPOCHS = [e for e in EPOCHS if e > 0]


wildcard_constraints:
    setting="[^/]+",
    expansion="[^/]+",
    dataset="[^/]+",
    seed=r"\d+",


def as_json(obj):
    return json.dumps(obj, sort_keys=True)


def get_dataset_npz(wildcards):
    return f"results/data/{SETTINGS[wildcards.setting]['dataset']}.npz"


def get_dataset_spec(wildcards):
    spec = dict(config["datasets"][wildcards.dataset])
    spec.setdefault("path", config.get("data_dir", "data"))
    return spec


def get_model(wildcards):
    return SETTINGS[wildcards.setting]["model"]


def get_expansion(wildcards):
    return SETTINGS[wildcards.setting]["expansions"][wildcards.expansion]


def run_dir(wildcards):
    return f"results/checkpoints/{wildcards.setting}/{wildcards.expansion}/seed{wildcards.seed}"


def get_run_checkpoints(wildcards):
    """(epoch -> checkpoint) of one barrier set: phi* alone for 'base'."""
    w = wildcards
    if w.expansion == "base":
        return {"epoch0": f"results/base/{w.setting}/seed{w.seed}.msgpack"}
    ckpts = {"epoch0": f"results/expanded/{w.setting}/{w.expansion}/seed{w.seed}.msgpack"}
    ckpts.update({f"epoch{e}": f"{run_dir(w)}/epoch{e:04d}.msgpack" for e in TRAIN_EPOCHS})
    return ckpts


def get_setting_barriers(wildcards):
    s = wildcards.setting
    return [f"results/barriers/{s}/{e}/seed{seed}.parquet"
            for e in ["base", *SETTINGS[s]["expansions"]] for seed in SEEDS]


def get_setting_logs(wildcards):
    s = wildcards.setting
    return [f"results/checkpoints/{s}/{e}/seed{seed}/log.parquet"
            for e in SETTINGS[s]["expansions"] for seed in SEEDS]


def get_base_logs(wildcards):
    return [f"results/base/{wildcards.setting}/seed{seed}.log.parquet" for seed in SEEDS]


def get_figure1_checkpoints(wildcards):
    f1 = config["figures"]["figure1"]
    s = f1["setting"]
    ckpts = {"base": [f"results/base/{s}/seed{seed}.msgpack" for seed in SEEDS]}
    for e in f1["expansions"]:
        ckpts[e] = [f"results/checkpoints/{s}/{e}/seed{seed}/epoch{T:04d}.msgpack"
                    for seed in SEEDS]
    return ckpts


def get_figure3_metrics(wildcards):
    return [f"results/metrics/{s}.parquet" for s in config["figures"]["figure3"]["settings"]]


def get_final_targets():
    targets = [f"results/metrics/{s}.parquet" for s in SETTINGS]
    for fig in config["figures"]:
        targets += [f"results/figures/{fig}.png", f"results/figures/{fig}.pdf"]
    return targets
