"""Answers of the aligned model and of its base, side by side.

Prompts are rendered with the run's chat template exactly as training renders them
(`prompt_token_ids`), left-padded into batches of similar length, and decoded by
transformers' `generate` with its KV cache: greedy by default, seeded sampling with a
temperature. An answer ends at EOS or where the template would start the next user turn
(for `hh`, "\\n\\nHuman:"); the text is cut there.

basealign's registered attention builds no mask outside the packed layout, so in a
left-padded batch real tokens would attend to the padding; generation therefore runs
with transformers' SDPA attention (`plain_attention`), and the model gets its attention
back afterwards. This module never scores pairs and never writes files.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from basealign.models.loading import is_peft, reference_context
from basealign.models.tokenize_pairs import prompt_token_ids

# Markers no chat template rewrites; used to find the text a template puts between turns.
_TURN_MARKERS = ("basealignuserturnone", "basealignassistantturn", "basealignuserturntwo")


@dataclass
class Decoding:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 8


@dataclass
class Answer:
    text: str
    tokens: int  # tokens of the answer: before EOS, or before the next user turn
    generated: int  # tokens the model produced, the stop included
    stop: str  # "eos", "user_turn" or "length"


def user_turn_stops(tokenizer) -> list[str]:
    """The text the chat template writes after an assistant answer up to the next user message,
    without EOS and trailing spaces: "\\n\\nHuman:" for `hh`. Empty when the template has no turns."""
    one, answer, two = _TURN_MARKERS
    messages = [{"role": "user", "content": one}, {"role": "assistant", "content": answer},
                {"role": "user", "content": two}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # noqa: BLE001 - a template without a user/assistant alternation: stop at EOS only
        return []
    if answer not in text or two not in text:
        return []
    between = text[text.index(answer) + len(answer):text.index(two)]
    if tokenizer.eos_token:
        between = between.replace(tokenizer.eos_token, "")
    between = between.rstrip()
    return [between] if between.strip() else []


def transcript(messages: list[dict]) -> str:
    """Messages as an HH transcript ("\n\nHuman: ...\n\nAssistant: ..."), for readers without a template."""
    speaker = {"user": "Human", "assistant": "Assistant"}
    return "".join(f"\n\n{speaker.get(m['role'], m['role'].title())}: {m['content']}" for m in messages)


@contextlib.contextmanager
def plain_attention(model):
    """Inside: MODEL runs transformers' SDPA attention, which masks left padding and the KV cache."""
    from accelerate.utils import extract_model_from_parallel

    inner = extract_model_from_parallel(model)
    base = inner.get_base_model() if is_peft(inner) else inner
    before = base.config._attn_implementation
    if before == "sdpa":
        yield
        return
    base.set_attn_implementation("sdpa")
    try:
        yield
    finally:
        base.set_attn_implementation(before)


def generate(model, tokenizer, prompts: list, decoding: Decoding, stops: list[str] | None = None) -> list[Answer]:
    """One Answer per prompt (text or message list), in prompt order."""
    stops = user_turn_stops(tokenizer) if stops is None else stops
    ids = [prompt_token_ids(tokenizer, p) for p in prompts]
    # Batches of similar length waste less on padding; answers go back to prompt order.
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    answers: list[Answer | None] = [None] * len(ids)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    torch.manual_seed(decoding.seed)
    try:
        with torch.no_grad(), plain_attention(model):
            for start in range(0, len(order), decoding.batch_size):
                chunk = order[start:start + decoding.batch_size]
                rows = _generate_batch(model, tokenizer, [ids[i] for i in chunk], decoding, stops, device)
                for i, row in zip(chunk, rows):
                    answers[i] = _answer(tokenizer, row, stops)
    finally:
        model.train(was_training)
    return answers


def side_by_side(model, ref_model, tokenizer, prompts: list, decoding: Decoding) -> tuple[list[Answer], list[Answer]]:
    """(policy answers, reference answers). REF_MODEL is a full fine-tune's base model, or MODEL
    itself for a LoRA policy, which answers again with its adapter disabled."""
    stops = user_turn_stops(tokenizer)
    policy = generate(model, tokenizer, prompts, decoding, stops)
    with reference_context(ref_model):
        return policy, generate(ref_model, tokenizer, prompts, decoding, stops)


def _generate_batch(model, tokenizer, batch_ids: list[list[int]], decoding: Decoding, stops, device) -> list[list[int]]:
    width = max(len(x) for x in batch_ids)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in batch_ids], device=device)
    attention_mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch_ids], device=device)
    sampling = {"do_sample": True, "temperature": decoding.temperature, "top_p": decoding.top_p} \
        if decoding.temperature > 0 else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    out = model.generate(
        input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=decoding.max_new_tokens,
        pad_token_id=pad, eos_token_id=tokenizer.eos_token_id, use_cache=True,
        stop_strings=stops or None, tokenizer=tokenizer if stops else None, **sampling,
    )
    return [row[width:].tolist() for row in out]


def _answer(tokenizer, row: list[int], stops: list[str]) -> Answer:
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    if eos in row:
        end = row.index(eos)
        generated = end + 1
    else:
        end = len(row)
        while end and row[end - 1] == pad:  # a row a stop string ended is filled with padding
            end -= 1
        generated = end
    text = tokenizer.decode(row[:end], skip_special_tokens=True)
    cut = min((text.find(s) for s in stops if s in text), default=-1)
    if cut >= 0:
        # the answer's tokens are those whose text lies before the next user turn
        while end and len(tokenizer.decode(row[:end], skip_special_tokens=True)) > cut:
            end -= 1
        text, stop = text[:cut], "user_turn"
    else:
        stop = "eos" if eos in row else "length"
    return Answer(text.strip(), end, generated, stop)
