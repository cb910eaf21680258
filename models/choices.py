"""The names a model's pipeline is picked by (poolings, tokenizers), without torch: the command line lists
them in its help, and a command that runs no model must start at once."""

POOLINGS = ("cls", "pooler", "last-avg", "first-last-avg", "max")
TOKENIZERS = ("bert", "wobert")
