# `snakemake verify`: reads every checkpoint, table, dataset and vocabulary
# under results/ and names each one that does not load. Snakemake trusts file
# times, so a file damaged in place keeping its time (copied, restored, edited
# by hand) would pass; this checks what is there. No output: it runs whenever
# it is asked for, and never as part of `all`.
rule verify:
    log:
        "logs/verify.log",
    localrule: True
    script:
        "../scripts/verify.py"
