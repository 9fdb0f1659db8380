# Barrier sets (Algorithm 1) of every model of every seed, on the seed's
# batch and walks, for every neuron group of phi* and both walks. One job per
# setting for epoch 0 (phi* and every theta^(0), expanded here: the ranking
# before training needs no training), one for the candidates' trained epochs.


rule barrier_set_initial:
    input:
        base=get_base_checkpoints,
        data=get_dataset_npz,
    output:
        seed_outputs(P.initial_barriers),
    log:
        "logs/barriers/{setting}/initial.log",
    wildcard_constraints:
        setting=alternatives(IMAGE_SETTINGS),
    params:
        expansions=get_expansions,
        train=get_train_hp,
        seeds=get_seeds,
        n=config["metric"]["n_max"],
        batch_size=get_metric_batch_size,
        chunk=config["metric"].get("chunk"),
        code=code("barrier_set_initial.py"),
    script:
        "../scripts/barrier_set_initial.py"


use rule barrier_set_initial as barrier_set_initial_lm with:
    output:
        seed_outputs(P.initial_barriers, lm=True),
    wildcard_constraints:
        setting=alternatives(LM_SETTINGS),
    priority: FIRST


rule barrier_set:
    input:
        checkpoints=lambda w: list(get_trained_checkpoints(w).values()),
        data=get_dataset_npz,
    output:
        seed_outputs(P.barriers),
    log:
        "logs/barriers/{setting}/trained.log",
    wildcard_constraints:
        setting=alternatives(IMAGE_SETTINGS),
    params:
        labels=trained_labels,
        model=get_model,
        expansions=get_expansions,
        seeds=get_seeds,
        n=config["metric"]["n_max"],
        batch_size=get_metric_batch_size,
        chunk=config["metric"].get("chunk"),
        code=code("barrier_set.py"),
    script:
        "../scripts/barrier_set.py"


use rule barrier_set as barrier_set_lm with:
    output:
        seed_outputs(P.barriers, lm=True),
    wildcard_constraints:
        setting=alternatives(LM_SETTINGS),
    priority: FIRST


# Figure 11 (i): every epoch of the run from random initialisation, the first
# group (layer 0's FFN).
rule barrier_set_scratch:
    input:
        checkpoints=lambda w: list(get_scratch_checkpoints(w).values()),
        data=get_dataset_npz,
    output:
        seed_outputs(P.scratch_barriers, lm=True),
    log:
        "logs/barriers/{setting}/scratch.log",
    wildcard_constraints:
        setting=alternatives(LM_SETTINGS),
    params:
        labels=lambda w: [list(key) for key in get_scratch_checkpoints(w)],
        seeds=get_seeds,
        n=config["metric"]["n_max"],
        batch_size=get_metric_batch_size,
        chunk=config["metric"].get("chunk"),
        code=code("barrier_set_scratch.py"),
    script:
        "../scripts/barrier_set_scratch.py"
