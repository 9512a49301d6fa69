"""The embedded default model: a tiny Mistral-architecture model and a byte-level tokenizer.

Nothing here downloads. The tokenizer maps every UTF-8 byte to one token (plus four
special tokens), so it needs no vocabulary file; the model is built from a config with a
fixed seed and saved to disk, so an adapter trained on it can be loaded again later.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

BUILTIN_PREFIX = "builtin:"
BUILTIN_MODELS = ("tiny-mistral", "tiny-llama", "tiny-qwen2")
SPECIAL_TOKENS = {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "unk": "<unk>"}


def byte_level_tokenizer():
    """A PreTrainedTokenizerFast over raw bytes: ids 0-3 special, 4-259 the 256 bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_chars = sorted(pre_tokenizers.ByteLevel.alphabet(), key=_BYTE_ORDER.__getitem__)
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS.values())}
    for char in byte_chars:
        vocab[char] = len(vocab)
    model = models.BPE(vocab=vocab, merges=[], unk_token=SPECIAL_TOKENS["unk"])
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL_TOKENS["bos"],
        eos_token=SPECIAL_TOKENS["eos"],
        pad_token=SPECIAL_TOKENS["pad"],
        unk_token=SPECIAL_TOKENS["unk"],
    )


def _build_byte_order() -> dict[str, int]:
    # The GPT-2 byte-to-unicode table: printable bytes map to themselves, the rest to 256+.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars)}


_BYTE_ORDER = _build_byte_order()


def tiny_config(kind: str = "tiny-mistral", vocab_size: int = 260):
    """A small random-init config of the given family; big enough to learn the quickstart pairs."""
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    common = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    if kind == "tiny-mistral":
        return MistralConfig(sliding_window=None, **common)
    if kind == "tiny-llama":
        # Not a copy of tiny-mistral (the same architecture at the same seed would give the same
        # numbers): narrower, one key/value head for three query heads (MQA), Llama-3's RoPE base.
        shape = dict(hidden_size=48, intermediate_size=96, num_attention_heads=3, num_key_value_heads=1,
                     rope_theta=500000.0)
        return LlamaConfig(**{**common, **shape})
    if kind == "tiny-qwen2":
        return Qwen2Config(use_sliding_window=False, **common)
    raise ValueError(f"unknown builtin model {kind!r}; choose one of {', '.join(BUILTIN_MODELS)}")


def build_tiny_model(kind: str = "tiny-mistral", seed: int = 0, dtype: torch.dtype = torch.float32):
    """Random-init model of the given family, deterministic for a seed."""
    from transformers import AutoModelForCausalLM

    config = tiny_config(kind)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model


def materialize_builtin(name: str, directory: Path, seed: int = 0) -> Path:
    """Save builtin model `name` (e.g. 'tiny-mistral') and its tokenizer under `directory`.

    Idempotent: an existing folder built from the same name and seed is reused.
    """
    kind = name.removeprefix(BUILTIN_PREFIX)
    if kind not in BUILTIN_MODELS:
        raise ValueError(f"unknown builtin model {name!r}; choose one of {', '.join(BUILTIN_PREFIX + k for k in BUILTIN_MODELS)}")
    directory = Path(directory)
    stamp = directory / "basealign_builtin.json"
    # the config is part of the stamp, so a folder built from an older definition is rebuilt
    config = hashlib.sha256(tiny_config(kind).to_json_string().encode()).hexdigest()[:16]
    wanted = {"name": kind, "seed": seed, "config": config}
    if stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a 100 kB save needs no progress bar on stderr
    try:
        build_tiny_model(kind, seed=seed).save_pretrained(directory)
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    byte_level_tokenizer().save_pretrained(directory)
    stamp.write_text(json.dumps(wanted))
    return directory
