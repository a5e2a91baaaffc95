"""Fine-tuning on the Hugging Face stack: config (config.py), tokenization and packing (encode.py), recipes
(sft.py) and the `athanor train` entry point (run.py). Importing this package loads nothing heavy."""
