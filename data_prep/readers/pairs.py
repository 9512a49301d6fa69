"""Any local file of preference pairs, with a column mapping.

    {name: mine, type: pairs, path: my_pairs.jsonl, label: helpful,
     columns: {prompt: question, chosen: good, rejected: bad},   # default: same names
     metadata_columns: [topic]}                                     # copied into metadata

prompt may be plain text (one user message) or a message list; chosen/rejected may be
plain text or a message list whose last message is the assistant reply (when the prompt
column is null and chosen is a full conversation, the prompt is chosen minus its reply).
A conversation before a reply must be the pair's prompt: chosen and rejected whose
conversations differ (from each other or from the prompt column) are a prompt_mismatch.

Rejection reasons: missing_value, invalid_value, malformed_messages, no_assistant_turn,
prompt_mismatch, empty_prompt, prompt_not_ending_with_user, empty_reply, identical_replies.
"""

from __future__ import annotations

from basealign.data_prep.errors import PrepareError
from basealign.data_prep.readers.base import Pair, Reject, check_prompt, check_replies, normalize_messages

TYPE = "pairs"
DEFAULT_SPLIT = "train"
OPTIONS = {"columns": None, "metadata_columns": None}
FIELDS = ("prompt", "chosen", "rejected")


def column_map(source: dict) -> dict[str, str]:
    mapping = source.get("columns") or {}
    if not isinstance(mapping, dict):
        raise PrepareError(f"source {source['name']!r}: columns must be a mapping like {{prompt: question}}")
    unknown = sorted(set(mapping) - set(FIELDS))
    if unknown:
        raise PrepareError(f"source {source['name']!r}: columns: unknown field {unknown[0]!r} (expected prompt, chosen, rejected)")
    return {field: str(mapping.get(field, field)) for field in FIELDS}


def metadata_columns(source: dict) -> list[str]:
    cols = source.get("metadata_columns") or []
    if isinstance(cols, str):
        cols = [cols]
    return [str(c) for c in cols]


def required_columns(source: dict) -> list[str]:
    return list(column_map(source).values())


def _reply(value, what: str) -> tuple[str, tuple]:
    if value is None:
        raise Reject("missing_value", f"{what} is null")
    if isinstance(value, str):
        return value.strip(), ()
    messages = normalize_messages(value, what)
    if not messages or messages[-1][0] != "assistant":
        raise Reject("no_assistant_turn")
    return messages[-1][1], messages[:-1]


def make_converter(source: dict):
    cols = column_map(source)
    meta_cols = metadata_columns(source)

    def convert(row: dict) -> Pair:
        chosen, chosen_ctx = _reply(row.get(cols["chosen"]), "chosen")
        rejected, rejected_ctx = _reply(row.get(cols["rejected"]), "rejected")
        raw_prompt = row.get(cols["prompt"])
        if isinstance(raw_prompt, str):
            prompt = (("user", raw_prompt.strip()),)
        elif raw_prompt is None:
            if not chosen_ctx:
                raise Reject("missing_value", "prompt is null")
            prompt = chosen_ctx
        else:
            prompt = normalize_messages(raw_prompt, "prompt")
        if any(ctx and ctx != prompt for ctx in (chosen_ctx, rejected_ctx)):
            raise Reject("prompt_mismatch", "chosen and rejected continue different conversations")
        check_prompt(prompt)
        check_replies(chosen, rejected)
        return Pair(prompt, chosen, rejected, {c: row.get(c) for c in meta_cols if c in row})

    return convert
