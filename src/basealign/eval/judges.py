"""Judges: sequence-classification models that score both sides' answers, and the aligned-over-base
win rate per prompt label with a seeded bootstrap 95% interval.

A judge is given as NAME=PATH (a reward model: higher is better) or NAME=PATH:lower (a cost
or toxicity model: lower is better). It reads prompt + answer through its own chat template
when its tokenizer has one, else as an HH transcript ("\\n\\nHuman: ...\\n\\nAssistant: ...").
This module knows nothing of the models that wrote the answers.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from basealign.errors import BasealignError
from basealign.eval.generate import transcript
from basealign.models.tokenize_pairs import as_messages

BOOTSTRAP_SAMPLES = 2000


@dataclass
class JudgeSpec:
    name: str
    path: str
    higher_is_better: bool = True


def parse_judge(text: str) -> JudgeSpec:
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise BasealignError(f"--judge {text!r}: expected NAME=PATH or NAME=PATH:lower (e.g. helpful=models/rm)")
    higher = True
    for suffix, value in ((":lower", False), (":higher", True)):
        if path.endswith(suffix):
            path, higher = path[: -len(suffix)], value
    return JudgeSpec(name.strip(), str(Path(path.strip()).expanduser()), higher)


def check_judge(spec: JudgeSpec) -> None:
    """One line unless SPEC names a saved single-score sequence-classification model; reads only its config."""
    from transformers import AutoConfig

    where = f"--judge {spec.name}={spec.path}"
    if not Path(spec.path).expanduser().exists():
        raise BasealignError(f"{where}: no such model folder")
    try:
        config = AutoConfig.from_pretrained(spec.path)
    except (OSError, ValueError) as err:
        raise BasealignError(f"{where}: not a model folder ({str(err).splitlines()[0]})") from None
    architectures = config.architectures or []
    # A causal LM loads as a classifier too, with a random head: refuse anything not saved as one.
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise BasealignError(f"{where}: not a sequence-classification model "
                             f"(architectures: {', '.join(architectures) or 'none'})")
    if config.num_labels != 1:
        raise BasealignError(f"{where}: has {config.num_labels} labels; a judge gives one score (num_labels=1)")


def load_judge(spec: JudgeSpec, device):
    """(model, tokenizer) of a judge that passed `check_judge`, padding on the right."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(spec.path).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(spec.path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    tokenizer.padding_side = "right"
    tokenizer.truncation_side = "left"  # a text too long for the judge loses prompt, not the answer it judges
    return model, tokenizer


def judge_text(tokenizer, prompt, answer: str) -> str:
    messages = as_messages(prompt) + [{"role": "assistant", "content": answer}]
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return transcript(messages)


def scores(model, tokenizer, prompts: list, answers: list[str], batch_size: int) -> list[float]:
    """The judge's score of each (prompt, answer)."""
    texts = [judge_text(tokenizer, p, a) for p, a in zip(prompts, answers)]
    limit = min(tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", None) or 1 << 30)
    device = next(model.parameters()).device
    out: list[float] = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=limit,
                            add_special_tokens=True, return_tensors="pt").to(device)
            out += model(**enc).logits[:, 0].float().cpu().tolist()
    return out


def win_rates(labels: list[str], policy: list[float], reference: list[float], higher_is_better: bool,
              seed: int) -> dict:
    """Per label and for all prompts: aligned-over-base win rate (ties count half), a bootstrap 95%
    interval over prompts, wins / ties / losses and the mean scores."""
    import numpy as np

    sign = 1.0 if higher_is_better else -1.0
    outcome = [0.5 if p == r else float(sign * (p - r) > 0) for p, r in zip(policy, reference)]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        groups[str(label)].append(i)
    groups = {"all": list(range(len(labels))), **dict(sorted(groups.items()))}
    rng = np.random.default_rng(seed)
    result = {}
    for label, idx in groups.items():
        values = np.array([outcome[i] for i in idx])
        if not len(values):
            continue
        boot = values[rng.integers(0, len(values), size=(BOOTSTRAP_SAMPLES, len(values)))].mean(axis=1)
        result[label] = {
            "prompts": len(values),
            "win_rate": float(values.mean()),
            "ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
            "wins": int((values == 1).sum()),
            "ties": int((values == 0.5).sum()),
            "losses": int((values == 0).sum()),
            "policy_score": float(np.mean([policy[i] for i in idx])),
            "reference_score": float(np.mean([reference[i] for i in idx])),
        }
    return result
