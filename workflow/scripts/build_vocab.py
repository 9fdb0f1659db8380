"""The word-level vocabulary of a text dataset's training split."""

import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from manifold_metric import text

spec = snakemake.params.spec
vocab = text.build_vocab(text.read_split(spec["path"], spec["train_split"]), spec["vocab_size"])
print(
    f"{len(vocab)} words from {text.split_path(spec['path'], spec['train_split'])}", file=sys.stderr
)
text.save_vocab(vocab, snakemake.output[0])
