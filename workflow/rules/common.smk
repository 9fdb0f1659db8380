import json
import os

from types import SimpleNamespace
from snakemake.utils import min_version, validate

min_version("9.0")

# JAX preallocates 75% of a GPU's memory per process; jobs sharing a GPU must
# not. Local jobs inherit this process's environment; Slurm jobs get it both
# from sbatch (--export=ALL) and by reading this file again.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


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
    for e in config["candidate"].get("checkpoints", []):
        if e > config["candidate"]["epochs"]:
            config_error("candidate.checkpoints", f"epoch {e} is after candidate.epochs")
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
    for fig, spec in config["figures"].items():
        for name in spec.get("settings", []):
            if name not in config["settings"]:
                config_error(f"figures.{fig}.settings", f"unknown setting {name!r}")


check_config()

SETTINGS = config["settings"]
SEEDS = config["seeds"]
T = config["candidate"]["epochs"]
# Epoch 0 is the expanded model itself; T is always kept.
EPOCHS = sorted({0, T} | set(config["candidate"].get(
    "checkpoints", range(0, T + 1, config["candidate"].get("checkpoint_every", 1)))))
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


def is_image(setting):
    return SETTINGS[setting]["model"]["kind"] != "bert"


IMAGE_SETTINGS = [s for s in SETTINGS if is_image(s)]


def figure_tables(table, figure=None):
    """One table per setting drawn in a figure (its figures.<name>.settings);
    the figure is named here or by the {figure} wildcard."""
    def get(wildcards):
        settings = config["figures"][figure or wildcards.figure]["settings"]
        return [f"results/{table}/{s}.parquet" for s in settings]
    return get


def get_proxies(wildcards):
    s = wildcards.setting
    return [f"results/proxies/{s}.parquet"] if is_image(s) else []


def get_proxy_checkpoints(wildcards):
    """phi* and every theta^(0) of one setting, for the zero-cost proxies."""
    s = wildcards.setting
    return {f"{e}_seed{seed}": (f"results/base/{s}/seed{seed}.msgpack" if e == "base" else
                                f"results/expanded/{s}/{e}/seed{seed}.msgpack")
            for e in ["base", *SETTINGS[s]["expansions"]] for seed in SEEDS}


def get_table4_checkpoints(wildcards):
    """Per image setting, its last (largest) expansion right after expansion, seed 0."""
    return {s: f"results/expanded/{s}/{list(SETTINGS[s]['expansions'])[-1]}/seed{SEEDS[0]}.msgpack"
            for s in IMAGE_SETTINGS}


def get_intermediates():
    """Every cached intermediate. `all` asks for them too, so that a deleted
    one is rebuilt, and with it exactly what depends on it (Snakemake alone
    ignores a missing input of an up-to-date output)."""
    files = []
    for s in SETTINGS:
        for seed in SEEDS:
            w = SimpleNamespace(setting=s, seed=seed)
            files += get_setting_barriers(w) + get_setting_logs(w) + get_base_logs(w)
            for e in SETTINGS[s]["expansions"]:
                w = SimpleNamespace(setting=s, seed=seed, expansion=e)
                files += list(get_run_checkpoints(w).values())
        files += [f"results/proxies/{s}.parquet"] if is_image(s) else []
    return sorted(set(files))


def get_final_targets():
    targets = get_intermediates()
    targets += [f"results/{t}/{s}.parquet" for s in SETTINGS
                for t in ("metrics", "correlations", "sensitivity")]
    targets.append("results/tables/correlations_summary.parquet")
    if IMAGE_SETTINGS:
        targets += ["results/tables/table4.parquet", "results/tables/table4.md"]
    for fig in config["figures"]:
        targets += [f"results/figures/{fig}.png", f"results/figures/{fig}.pdf"]
    return targets
