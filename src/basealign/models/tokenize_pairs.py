"""Pairs (conversational preference rows) to token ids: one record per pair.

A record is {prompt_ids, chosen_ids, rejected_ids, index (its row), truncated}. The prompt is
rendered with the chat template and a generation prompt; each full conversation (prompt +
response) is tokenized whole and split at the prompt's token length, so prompt ids + response
ids are exactly the conversation's own tokenization (a response tokenized on its own would
gain SentencePiece's leading "▁"), and both responses share the prompt ids. A pair whose
response merges with the prompt's last token (the prompt ids are then not a prefix) is
dropped and counted. BOS appears once: added unless the template already renders it.

Truncation (pairs longer than max_length, counted per sequence P+C and P+R as TRL does):
with `max_prompt_length` set, the prompt keeps its last that many tokens; then responses
keep their first tokens. A pair whose prompt alone fills max_length, or whose responses
become identical, is dropped and counted by reason; nothing is dropped silently.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from basealign.errors import BasealignError

REQUIRED_COLUMNS = ("prompt", "chosen", "rejected")


@dataclass
class TokenizedPairs:
    records: list[dict]
    dropped: Counter = field(default_factory=Counter)
    truncated: int = 0


def as_messages(value, role_default: str = "user") -> list[dict]:
    """A message list from a plain string (one ROLE_DEFAULT turn) or from messages."""
    if isinstance(value, str):
        return [{"role": role_default, "content": value}]
    return [{"role": m["role"], "content": m["content"]} for m in value]


def render(tokenizer, prompt, response) -> tuple[str, str]:
    """(prompt text with generation prompt, response text) under the tokenizer's chat template."""
    prompt_msgs = as_messages(prompt, "user")
    response_msgs = as_messages(response, "assistant")
    prompt_text = tokenizer.apply_chat_template(prompt_msgs, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(prompt_msgs + response_msgs, tokenize=False)
    if not full_text.startswith(prompt_text):
        raise BasealignError(
            "the chat template renders the prompt differently with and without the reply; "
            "pick a template whose generation prompt is a prefix of the assistant turn"
        )
    return prompt_text, full_text[len(prompt_text):]


def tokenize_pairs(rows, tokenizer, max_length: int, max_prompt_length: int | None = None) -> TokenizedPairs:
    out = TokenizedPairs(records=[])
    adds_bos = _adds_bos(tokenizer)
    for index, row in enumerate(rows):
        missing = [c for c in REQUIRED_COLUMNS if c not in row or row[c] is None]
        if missing:
            raise BasealignError(
                f"pair {index} has no {', '.join(missing)}; a pairs dataset needs columns prompt, chosen, rejected"
            )
        prompt_text, chosen_text = render(tokenizer, row["prompt"], row["chosen"])
        _, rejected_text = render(tokenizer, row["prompt"], row["rejected"])
        bos = _bos(tokenizer, adds_bos, prompt_text)
        prompt_ids = bos + tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        chosen_ids = _response_ids(tokenizer, bos, prompt_ids, prompt_text + chosen_text)
        rejected_ids = _response_ids(tokenizer, bos, prompt_ids, prompt_text + rejected_text)
        if chosen_ids is None or rejected_ids is None:
            out.dropped["response merges with the prompt's last token"] += 1
            continue
        if not chosen_ids or not rejected_ids:
            out.dropped["empty response"] += 1
            continue
        if chosen_ids == rejected_ids:
            out.dropped["identical responses"] += 1
            continue
        longest = len(prompt_ids) + max(len(chosen_ids), len(rejected_ids))
        truncated = longest > max_length
        if truncated:
            out.truncated += 1
            if max_prompt_length is not None and len(prompt_ids) > max_prompt_length:
                prompt_ids = prompt_ids[len(prompt_ids) - max_prompt_length:]
            budget = max_length - len(prompt_ids)
            if budget < 1:
                out.dropped["prompt fills max_length"] += 1  # nothing left to score
                continue
            chosen_ids, rejected_ids = chosen_ids[:budget], rejected_ids[:budget]
            if chosen_ids == rejected_ids:
                out.dropped["identical after truncation"] += 1
                continue
        out.records.append({"prompt_ids": prompt_ids, "chosen_ids": chosen_ids, "rejected_ids": rejected_ids,
                            "index": index, "truncated": truncated})
    return out


def prompt_token_ids(tokenizer, prompt) -> list[int]:
    """A prompt (text or message list) as the model sees it before its answer: chat template with the
    generation prompt, BOS as `tokenize_pairs` adds it; the same ids a pair's record starts with."""
    text = tokenizer.apply_chat_template(as_messages(prompt, "user"), tokenize=False, add_generation_prompt=True)
    return _bos(tokenizer, _adds_bos(tokenizer), text) + tokenizer(text, add_special_tokens=False)["input_ids"]


def _bos(tokenizer, adds_bos: bool, prompt_text: str) -> list[int]:
    return [tokenizer.bos_token_id] if adds_bos and not prompt_text.startswith(tokenizer.bos_token) else []


def _response_ids(tokenizer, bos: list[int], prompt_ids: list[int], full_text: str) -> list[int] | None:
    """The conversation's tokens after the prompt's; None when the prompt's are not a prefix."""
    full_ids = bos + tokenizer(full_text, add_special_tokens=False)["input_ids"]
    if full_ids[: len(prompt_ids)] != prompt_ids:
        return None
    return full_ids[len(prompt_ids):]


def _adds_bos(tokenizer) -> bool:
    # Models like Mistral/Llama expect BOS first; templates that already emit it do not need it again.
    if tokenizer.bos_token_id is None:
        return False
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(probe) and probe[0] == tokenizer.bos_token_id
