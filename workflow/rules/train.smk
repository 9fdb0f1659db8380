rule train_base:
    input:
        data=get_dataset_npz,
    output:
        checkpoint="results/base/{setting}/seed{seed}.msgpack",
        log="results/base/{setting}/seed{seed}.log.parquet",
    params:
        model=get_model,
        train=config["train"],
        base=config["base"],
    log:
        "logs/base/{setting}/seed{seed}.log",
    script:
        "../scripts/train_base.py"


rule expand_candidate:
    input:
        data=get_dataset_npz,
        base="results/base/{setting}/seed{seed}.msgpack",
    output:
        "results/expanded/{setting}/{expansion}/seed{seed}.msgpack",
    params:
        expansion=get_expansion,
    log:
        "logs/expanded/{setting}/{expansion}/seed{seed}.log",
    script:
        "../scripts/expand_candidate.py"


rule train_candidate:
    input:
        data=get_dataset_npz,
        expanded="results/expanded/{setting}/{expansion}/seed{seed}.msgpack",
    output:
        checkpoints=[
            f"results/checkpoints/{{setting}}/{{expansion}}/seed{{seed}}/epoch{e:04d}.msgpack"
            for e in TRAIN_EPOCHS
        ],
        log="results/checkpoints/{setting}/{expansion}/seed{seed}/log.parquet",
    params:
        train=config["train"],
        epochs=T,
        save=TRAIN_EPOCHS,
    log:
        "logs/checkpoints/{setting}/{expansion}/seed{seed}.log",
    script:
        "../scripts/train_candidate.py"
