rule barrier_set:
    input:
        unpack(get_run_checkpoints),
        data=get_dataset_npz,
    output:
        "results/barriers/{setting}/{expansion}/seed{seed}.parquet",
    params:
        n=config["metric"]["n_max"],
        batch_size=config["metric"]["batch_size"],
        chunk=config["metric"].get("chunk", 8),
    log:
        "logs/barriers/{setting}/{expansion}/seed{seed}.log",
    script:
        "../scripts/barrier_set.py"
