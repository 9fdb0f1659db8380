# Barrier sets (Algorithm 1): every model of one seed on the seed's batch and
# walk. Per seed, one job for epoch 0 (phi* and every theta^(0)), so that the
# ranking before training needs no training, and one for the candidates'
# trained epochs (one job per run would mostly pay for starting Python).


def initial_checkpoints(wildcards):
    return list(get_initial_checkpoints(wildcards).values())


def initial_labels(wildcards):
    return [[e, 0] for e in get_initial_checkpoints(wildcards)]


def trained_labels(wildcards):
    return [list(key) for key in get_trained_checkpoints(wildcards)]


rule barrier_set_initial:
    input:
        checkpoints=initial_checkpoints,
        data=get_dataset_npz,
    output:
        P.initial_barriers,
    params:
        labels=initial_labels,
        n=config["metric"]["n_max"],
        batch_size=get_metric_batch_size,
        chunk=config["metric"].get("chunk"),
        group=get_group,
        code=code("barrier_set.py"),
    log:
        "logs/barriers/{setting}/initial/seed{seed}.log",
    script:
        "../scripts/barrier_set.py"


use rule barrier_set_initial as barrier_set with:
    input:
        checkpoints=lambda w: list(get_trained_checkpoints(w).values()),
        data=get_dataset_npz,
    output:
        P.barriers,
    params:
        labels=trained_labels,
        n=config["metric"]["n_max"],
        batch_size=get_metric_batch_size,
        chunk=config["metric"].get("chunk"),
        group=get_group,
        code=code("barrier_set.py"),
    log:
        "logs/barriers/{setting}/trained/seed{seed}.log",


# Another neuron group than the first layer (lm.groups: BERT's attention
# heads, Figure 11 (ii)).
use rule barrier_set_initial as barrier_set_initial_group with:
    output:
        P.initial_barriers_group,
    log:
        "logs/barriers/{setting}/initial/seed{seed}.{group}.log",


use rule barrier_set as barrier_set_group with:
    output:
        P.barriers_group,
    log:
        "logs/barriers/{setting}/trained/seed{seed}.{group}.log",


use rule barrier_set_initial as barrier_set_scratch with:
    input:
        checkpoints=lambda w: list(get_scratch_checkpoints(w).values()),
        data=get_dataset_npz,
    output:
        P.scratch_barriers,
    params:
        labels=lambda w: [["scratch", e] for e in SCRATCH_EPOCHS],
        n=config["metric"]["n_max"],
        batch_size=get_metric_batch_size,
        chunk=config["metric"].get("chunk"),
        group=None,
        code=code("barrier_set.py"),
    log:
        "logs/barriers/{setting}/scratch/seed{seed}.log",
