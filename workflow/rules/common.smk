import os
import re
from types import SimpleNamespace

from snakemake.utils import min_version, validate

min_version("9.0")


validate(config, "../../config/schema.yaml")

# JAX jobs, local or on Slurm (sbatch exports the environment), must not
# preallocate 75% of a GPU that other jobs share; harmless on the CPU.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# Jobs compile the same functions over and over (one arch, many seeds and
# epochs): a persistent compilation cache shared by all jobs saves most of it.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.abspath(".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


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
    for track in ("candidate", "lm.candidate"):
        c = config["lm"]["candidate"] if track == "lm.candidate" else config["candidate"]
        for e in c.get("checkpoints", []):
            if e > c["epochs"]:
                config_error(f"{track}.checkpoints", f"epoch {e} is after {track}.epochs")
    for name, s in config["settings"].items():
        if s["dataset"] not in config["datasets"]:
            config_error(f"settings.{name}.dataset", f"unknown dataset {s['dataset']!r}; "
                         f"defined are {sorted(config['datasets'])}")
        text = config["datasets"][s["dataset"]]["source"] == "wikitext"
        if text != (s["model"]["kind"] == "bert"):
            config_error(f"settings.{name}.model.kind", "bert goes with a wikitext "
                         "dataset, image models with image datasets")
        for e, spec in s["expansions"].items():
            if e in ("base", "scratch"):
                config_error(f"settings.{name}.expansions.{e}", f"'{e}' is reserved")
            if (spec["kind"] == "widen_ffn") != text:
                config_error(f"settings.{name}.expansions.{e}.kind",
                             "widen_ffn is the expansion of bert models (only)")
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


if "lm" not in config:
    config["lm"] = {"candidate": {"epochs": 1}}
check_config()

SETTINGS = config["settings"]
SEEDS = config["seeds"]


def is_image(setting):
    return SETTINGS[setting]["model"]["kind"] != "bert"


IMAGE_SETTINGS = [s for s in SETTINGS if is_image(s)]
LM_SETTINGS = [s for s in SETTINGS if not is_image(s)]


def checkpoint_epochs(candidate):
    """Epochs kept of a candidate run: 0 (the expanded model) and T always."""
    T = candidate["epochs"]
    every = candidate.get("checkpoint_every", 1)
    return sorted({0, T} | set(candidate.get("checkpoints", range(0, T + 1, every))))


EPOCHS = checkpoint_epochs(config["candidate"])
LM_EPOCHS = checkpoint_epochs(config["lm"]["candidate"])
LM_BASE_EPOCHS = list(range(1, config["lm"].get("base", {}).get("epochs", 1) + 1))


def epochs_of(setting):
    return EPOCHS if is_image(setting) else LM_EPOCHS


def alternatives(names):
    """A wildcard regex matching exactly these names (none: nothing)."""
    return "|".join(map(re.escape, names)) or "(?!)"


wildcard_constraints:
    setting="[^/.]+",
    expansion="[^/]+",
    dataset="[^/.]+",
    seed=r"\d+",


def track(wildcards):
    """The config section of the setting's track: hyperparameters per track."""
    return config if is_image(wildcards.setting) else config["lm"]


def get_dataset_npz(wildcards):
    return f"results/data/{SETTINGS[wildcards.setting]['dataset']}.npz"


def get_dataset_spec(wildcards):
    spec = dict(config["datasets"][wildcards.dataset])
    spec.setdefault("path", config.get("data_dir", "data"))
    return spec


def get_vocab(wildcards):
    text = config["datasets"][wildcards.dataset]["source"] == "wikitext"
    return [f"results/data/{wildcards.dataset}.vocab.json"] if text else []


def get_model(wildcards):
    return SETTINGS[wildcards.setting]["model"]


def get_expansion(wildcards):
    return SETTINGS[wildcards.setting]["expansions"][wildcards.expansion]


def get_train_hp(wildcards):
    return track(wildcards)["train"]


def get_metric_batch_size(wildcards):
    return (config["metric"]["batch_size"] if is_image(wildcards.setting)
            else config["lm"]["metric_batch_size"])


def run_dir(wildcards):
    return f"results/checkpoints/{wildcards.setting}/{wildcards.expansion}/seed{wildcards.seed}"


def get_run_checkpoints(wildcards):
    """(epoch -> checkpoint) of one barrier set: phi* alone for 'base'; the
    base run's epochs from random initialisation for 'scratch' (BERT)."""
    w = wildcards
    if w.expansion == "base":
        return {"epoch0": f"results/base/{w.setting}/seed{w.seed}.msgpack"}
    if w.expansion == "scratch":
        return {f"epoch{e}": f"results/scratch/{w.setting}/seed{w.seed}/epoch{e:04d}.msgpack"
                for e in LM_BASE_EPOCHS}
    ckpts = {"epoch0": f"results/expanded/{w.setting}/{w.expansion}/seed{w.seed}.msgpack"}
    ckpts.update({f"epoch{e}": f"{run_dir(w)}/epoch{e:04d}.msgpack"
                  for e in epochs_of(w.setting) if e > 0})
    return ckpts


def barrier_file(setting, expansion, seed, group=None):
    suffix = f".{group}" if group else ""
    return f"results/barriers/{setting}/{expansion}/seed{seed}{suffix}.parquet"


def get_setting_barriers(wildcards):
    s, group = wildcards.setting, getattr(wildcards, "group", None)
    return [barrier_file(s, e, seed, group)
            for e in ["base", *SETTINGS[s]["expansions"]] for seed in SEEDS]


def get_scratch_barriers(wildcards):
    return [barrier_file(wildcards.setting, "scratch", seed) for seed in SEEDS]


def get_setting_logs(wildcards):
    s = wildcards.setting
    return [f"results/checkpoints/{s}/{e}/seed{seed}/log.parquet"
            for e in SETTINGS[s]["expansions"] for seed in SEEDS]


def get_figure1_checkpoints(wildcards):
    f1 = config["figures"]["figure1"]
    s, T = f1["setting"], config["candidate"]["epochs"]
    ckpts = {"base": [f"results/base/{s}/seed{seed}.msgpack" for seed in SEEDS]}
    for e in f1["expansions"]:
        ckpts[e] = [f"results/checkpoints/{s}/{e}/seed{seed}/epoch{T:04d}.msgpack"
                    for seed in SEEDS]
    return ckpts


def figure_tables(table, figure=None, suffix=""):
    """One table per setting drawn in a figure (its figures.<name>.settings);
    the figure is named here or by the {figure} wildcard."""
    def get(wildcards):
        settings = config["figures"][figure or wildcards.figure]["settings"]
        return [f"results/{table}/{s}{suffix}.parquet" for s in settings]
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


LM_GROUPS = config["lm"].get("groups", [])


def get_intermediates():
    """Every cached intermediate. `all` asks for them too, so that a deleted
    one is rebuilt, and with it exactly what depends on it (Snakemake alone
    ignores a missing input of an up-to-date output)."""
    files = []
    for s in SETTINGS:
        for seed in SEEDS:
            w = SimpleNamespace(setting=s, seed=seed)
            files += get_setting_barriers(w) + get_setting_logs(w)
            files.append(f"results/base/{s}/seed{seed}.log.parquet")
            for e in SETTINGS[s]["expansions"]:
                w = SimpleNamespace(setting=s, seed=seed, expansion=e)
                files += list(get_run_checkpoints(w).values())
        if is_image(s):
            files.append(f"results/proxies/{s}.parquet")
        else:
            files += get_scratch_barriers(SimpleNamespace(setting=s))
            for g in LM_GROUPS:
                files += get_setting_barriers(SimpleNamespace(setting=s, group=g))
    return sorted(set(files))


def get_final_targets():
    targets = get_intermediates()
    targets += [f"results/{t}/{s}.parquet" for s in SETTINGS
                for t in ("metrics", "correlations", "sensitivity")]
    targets += [f"results/metrics/{s}.{g}.parquet" for s in LM_SETTINGS for g in LM_GROUPS]
    targets += [f"results/scratch/{s}.parquet" for s in LM_SETTINGS]
    targets.append("results/tables/correlations_summary.parquet")
    if IMAGE_SETTINGS:
        targets += ["results/tables/table4.parquet", "results/tables/table4.md"]
    for fig in config["figures"]:
        targets += [f"results/figures/{fig}.png", f"results/figures/{fig}.pdf"]
    return targets
