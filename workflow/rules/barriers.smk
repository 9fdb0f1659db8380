rule barrier_set:
    input:
        unpack(get_run_checkpoints),
        data=get_dataset_npz,
    output:
        "results/barriers/{setting}/{expansion}/seed{seed}.parquet",
    params:
        n=config["metric"]["n_max"],
        batch_size=get_metric_batch_size,
        chunk=config["metric"].get("chunk"),
        group=None,
    log:
        "logs/barriers/{setting}/{expansion}/seed{seed}.log",
    script:
        "../scripts/barrier_set.py"


# Another neuron group than the metric's default (lm.groups: BERT's
# attention heads, Figure 11).
use rule barrier_set as barrier_set_group with:
    output:
        "results/barriers/{setting}/{expansion}/seed{seed}.{group}.parquet",
    params:
        n=config["metric"]["n_max"],
        batch_size=get_metric_batch_size,
        chunk=config["metric"].get("chunk"),
        group=lambda w: w.group,
    log:
        "logs/barriers/{setting}/{expansion}/seed{seed}.{group}.log",
