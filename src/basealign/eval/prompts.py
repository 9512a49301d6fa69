"""The prompts that answers are generated for, and the JSON line written per prompt.

Prompts come from the held-out pairs (their prompt, label and source) or from a JSON-lines
file whose lines each have a `prompt` (text or a message list) and optionally `label` and
`source`. Nothing here touches a model.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from basealign.errors import BasealignError
from basealign.eval.generate import Answer, Decoding, transcript
from basealign.models.tokenize_pairs import as_messages


@dataclass
class Prompt:
    index: int  # row in the pairs split, or line number (from 0) in the prompts file
    prompt: object  # text or message list, as given
    label: str | None
    source: str | None


def from_pairs(rows: list[dict]) -> list[Prompt]:
    return [Prompt(i, row["prompt"], row.get("label"), row.get("source")) for i, row in enumerate(rows)]


def read_prompts(path: str) -> list[Prompt]:
    """The prompts of a JSON-lines file; one line naming the first bad line."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise BasealignError(f"--prompts: no such file: {path}")
    prompts: list[Prompt] = []
    for number, raw in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except json.JSONDecodeError as err:
            raise BasealignError(f"--prompts: {path} line {number} is not JSON ({err.msg}); expected JSON lines") from None
        if not isinstance(item, dict) or "prompt" not in item:
            raise BasealignError(f"--prompts: {path} line {number} has no 'prompt' field")
        prompt = item["prompt"]
        if not (isinstance(prompt, str) and prompt.strip()) and not _is_messages(prompt):
            raise BasealignError(f"--prompts: {path} line {number}: 'prompt' must be non-empty text or a list of "
                                 "{role, content} messages")
        prompts.append(Prompt(len(prompts), prompt, item.get("label"), item.get("source")))
    if not prompts:
        raise BasealignError(f"--prompts: {path} holds no prompts")
    return prompts


def _is_messages(value) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value)


def generation_line(prompt: Prompt, prompt_tokens: int, policy: Answer, reference: Answer) -> dict:
    return {
        "index": prompt.index,
        "prompt": prompt.prompt,
        "prompt_text": transcript(as_messages(prompt.prompt)).strip(),
        "label": prompt.label,
        "source": prompt.source,
        "prompt_tokens": prompt_tokens,
        "reference": reference.text,
        "policy": policy.text,
        "reference_tokens": reference.tokens,
        "policy_tokens": policy.tokens,
        "reference_stop": reference.stop,
        "policy_stop": policy.stop,
    }


def summarize(lines: list[dict], decoding: Decoding) -> dict:
    """Counts, mean lengths (DPO is known to lengthen answers) and how answers ended."""
    n = len(lines) or 1
    mean = {side: sum(l[f"{side}_tokens"] for l in lines) / n for side in ("policy", "reference")}
    return {
        "prompts": len(lines),
        "decoding": describe(decoding),
        "mean_tokens": mean,
        "length_change": mean["policy"] - mean["reference"],
        "stops": {side: dict(Counter(l[f"{side}_stop"] for l in lines)) for side in ("policy", "reference")},
    }


def describe(decoding: Decoding) -> str:
    how = "greedy" if decoding.temperature <= 0 else \
        f"sampled (temperature {decoding.temperature}, top_p {decoding.top_p}, seed {decoding.seed})"
    return f"{how}, at most {decoding.max_new_tokens} new tokens"
