rule build_vocab:
    input:
        raw=get_raw_files,
    output:
        P.vocab,
    log:
        "logs/data/{dataset}.vocab.log",
    params:
        spec=get_dataset_spec,
        code=code("build_vocab.py"),
    script:
        "../scripts/build_vocab.py"


rule prepare_dataset:
    input:
        get_vocab,
        raw=get_raw_files,
    output:
        P.data,
    log:
        "logs/data/{dataset}.log",
    params:
        spec=get_dataset_spec,
        code=code("prepare_dataset.py"),
    script:
        "../scripts/prepare_dataset.py"
