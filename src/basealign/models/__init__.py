"""Models and their text side: loading, LoRA, the reference, builtin tiny models, chat
templates, and pairs to token ids."""
