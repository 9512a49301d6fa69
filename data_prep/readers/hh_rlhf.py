"""Anthropic HH-RLHF: two full transcripts per row, `chosen` and `rejected`.

Each transcript is a sequence of "\\n\\nHuman: ..." and "\\n\\nAssistant: ..." turns. The
pair is the shared conversation before the last assistant turn (the prompt) plus the two
final assistant replies. Surrounding whitespace is stripped from every turn; consecutive
turns of the same speaker are merged (joined by a blank line) so roles alternate.

Rejection reasons: no_assistant_turn, prompt_mismatch (the transcripts differ before the
last assistant turn), empty_reply, identical_replies, malformed_transcript (text before
the first turn marker), empty_prompt, prompt_not_ending_with_user, missing_value,
invalid_value.
"""

from __future__ import annotations

import re

from basealign.data_prep.readers.base import Pair, Reject, check_prompt, check_replies, text_field

TYPE = "hh_rlhf"
DEFAULT_SPLIT = "train"
OPTIONS: dict[str, object] = {}

_ASSISTANT = "\n\nAssistant:"
_TURN = re.compile(r"\n\n(Human|Assistant):")
_ROLE = {"Human": "user", "Assistant": "assistant"}


def required_columns(source: dict) -> list[str]:
    return ["chosen", "rejected"]


def _split_last(transcript: str) -> tuple[str, str]:
    # Upstream transcripts start with "\n\nHuman:"; tolerate a missing leading blank line.
    if not transcript.startswith("\n\n"):
        transcript = "\n\n" + transcript
    cut = transcript.rfind(_ASSISTANT)
    if cut < 0:
        raise Reject("no_assistant_turn")
    return transcript[:cut], transcript[cut + len(_ASSISTANT):].strip()


def parse_turns(text: str) -> tuple[tuple[str, str], ...]:
    """"\\n\\nHuman: a\\n\\nAssistant: b" -> (("user", "a"), ("assistant", "b"))."""
    parts = _TURN.split(text)
    if parts[0].strip():
        raise Reject("malformed_transcript", "text before the first Human/Assistant marker")
    turns: list[list[str]] = []
    for i in range(1, len(parts), 2):
        role, content = _ROLE[parts[i]], parts[i + 1].strip()
        if turns and turns[-1][0] == role:
            turns[-1][1] = f"{turns[-1][1]}\n\n{content}" if turns[-1][1] else content
        else:
            turns.append([role, content])
    return tuple((role, content) for role, content in turns)


def make_converter(source: dict):
    def convert(row: dict) -> Pair:
        chosen_text = row.get("chosen")
        rejected_text = row.get("rejected")
        if not isinstance(chosen_text, str) or not isinstance(rejected_text, str):
            text_field(row, "chosen")
            text_field(row, "rejected")
        prefix_c, chosen = _split_last(chosen_text)
        prefix_r, rejected = _split_last(rejected_text)
        if prefix_c.strip() != prefix_r.strip():
            raise Reject("prompt_mismatch")
        check_replies(chosen, rejected)
        prompt = parse_turns(prefix_c)
        check_prompt(prompt)
        return Pair(prompt, chosen, rejected, {})

    return convert
