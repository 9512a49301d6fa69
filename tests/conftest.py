"""Shared fixtures: tiny models from configs, the byte-level tokenizer, random pair records."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from basealign.models.chat_templates import TEMPLATES
from basealign.models.tiny import byte_level_tokenizer


def random_records(n: int, seed: int = 0, vocab=(4, 260), prompt=(1, 40), response=(1, 25)) -> list[dict]:
    """Random pairs of token ids, including 1-token responses and prompts longer than responses."""
    rng = random.Random(seed)
    tok = lambda k: [rng.randrange(*vocab) for _ in range(k)]  # noqa: E731
    records = []
    for i in range(n):
        c, r = rng.randint(*response), rng.randint(*response)
        if i == 0:
            c, r = 1, 1  # single-token responses
        if i == 1:
            c = 1
        records.append({"prompt_ids": tok(rng.randint(*prompt)), "chosen_ids": tok(c), "rejected_ids": tok(r)})
    return records


def with_seeded_lora(model):
    """MODEL with a LoRA adapter on all linear layers whose weights are the same non-zero
    values on every call, so two copies of a model get the same adapter and policy != reference."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0))
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return peft_model


def assert_same_adapter_gradients(fast, oracle, rtol: float) -> None:
    """max |g_fast - g_oracle| <= rtol * max |g_oracle| for every trainable tensor."""
    fast_grads = {n: p.grad for n, p in fast.named_parameters() if p.requires_grad}
    oracle_grads = {n: p.grad for n, p in oracle.named_parameters() if p.requires_grad}
    assert fast_grads.keys() == oracle_grads.keys() and fast_grads
    for name, want in oracle_grads.items():
        scale = want.abs().max()
        assert scale > 0, name
        assert (fast_grads[name] - want).abs().max() <= rtol * scale, name


@pytest.fixture
def tokenizer():
    tok = byte_level_tokenizer()
    tok.chat_template = TEMPLATES["hh"]
    return tok


def write_pairs_folder(folder: Path, rows: list[dict], test_rows: list[dict] | None = None) -> Path:
    """A prepared pairs folder in the data_prep output format."""
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)

    def frame(items):
        return pd.DataFrame(
            [
                {
                    "prompt": [{"role": "user", "content": r["prompt"]}],
                    "chosen": [{"role": "assistant", "content": r["chosen"]}],
                    "rejected": [{"role": "assistant", "content": r["rejected"]}],
                    "source": r.get("source", "toy"),
                    "label": r.get("label", "helpful"),
                    "metadata": json.dumps({}),
                }
                for r in items
            ]
        )

    frame(rows).to_parquet(folder / "train.parquet")
    if test_rows is not None:
        frame(test_rows).to_parquet(folder / "test.parquet")
    return folder


def toy_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    topics = ["cook rice", "fix a bike", "learn python", "plant tomatoes", "write a letter", "save money"]
    return [
        {
            "prompt": f"How do I {rng.choice(topics)}? ({i})",
            "chosen": "Start small, be patient, and ask for help when stuck.",
            "rejected": "No. Figure it out yourself!!",
        }
        for i in range(n)
    ]


def small_recipe(pairs: Path, out: Path, **sections) -> dict:
    """A small LoRA training recipe (as a dict) on the builtin tiny model; SECTIONS override."""
    recipe = {
        "model": {"name_or_path": "builtin:tiny-mistral"},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "data": {"pairs": str(pairs), "max_length": 256},
        "loss": {"type": ["sigmoid"], "beta": 0.1},
        "training": {"learning_rate": 2e-3, "max_tokens_per_batch": 700, "num_epochs": 1, "logging_steps": 1,
                     "save_steps": 100, "seed": 3},
        "output_dir": str(out),
    }
    for section, values in sections.items():
        if values is None or not isinstance(recipe.get(section), dict):
            recipe[section] = values
        else:
            recipe[section] = {**recipe[section], **values}
    return recipe


@pytest.fixture
def pairs_folder(tmp_path):
    return write_pairs_folder(tmp_path / "pairs", toy_rows(24), toy_rows(6, seed=1))


def save_lora_run(run_dir: Path, lora_b_scale: float, chat_template: str | None = None) -> Path:
    """A LoRA run folder as training leaves it: base_model/, adapter (non-zero, seeded), tokenizer."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from basealign.models.tiny import materialize_builtin

    base = AutoModelForCausalLM.from_pretrained(materialize_builtin("builtin:tiny-mistral", run_dir / "base_model"))
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear",
                                            task_type="CAUSAL_LM"))
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():  # lora_B starts at zero; make the adapter change the model
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * lora_b_scale)
    model.save_pretrained(run_dir)
    tok = byte_level_tokenizer()
    if chat_template is not None:
        tok.chat_template = chat_template
    tok.save_pretrained(run_dir)
    return run_dir


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def failure_lines(stderr: str, limit: int = 20) -> str:
    """The lines of a child process's stderr that say what failed (its one-line error or the
    exception), rather than its last few thousand characters of warnings and progress bars."""
    lines = [line for line in stderr.splitlines() if "rror" in line and "warn" not in line.lower()]
    return "\n".join(lines[-limit:]) or stderr[-3000:]
