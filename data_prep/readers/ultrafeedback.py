"""UltraFeedback binarized (HuggingFaceH4/ultrafeedback_binarized, split train_prefs).

Columns: prompt (text), prompt_id, chosen and rejected (message lists: the user turn(s)
then the assistant reply), score_chosen, score_rejected (and `messages`, unused). The
prompt is the conversation before the final assistant message (falling back to the
`prompt` text when the lists hold only the reply); it must be the same in both lists.
`min_score_gap: X` (optional) drops pairs with score_chosen - score_rejected < X.

Rejection reasons: malformed_messages, no_assistant_turn, prompt_mismatch, empty_prompt,
prompt_not_ending_with_user, empty_reply, identical_replies, missing_score,
score_gap_below_min.
"""

from __future__ import annotations

from basealign.data_prep.errors import PrepareError
from basealign.data_prep.readers.base import Pair, Reject, check_prompt, check_replies, normalize_messages

TYPE = "ultrafeedback"
DEFAULT_SPLIT = "train_prefs"
OPTIONS = {"min_score_gap": None}


def required_columns(source: dict) -> list[str]:
    cols = ["prompt", "chosen", "rejected"]
    if source.get("min_score_gap") is not None:
        cols += ["score_chosen", "score_rejected"]
    return cols


def _score(value):
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def make_converter(source: dict):
    gap = source.get("min_score_gap")
    if gap is not None and (isinstance(gap, bool) or not isinstance(gap, (int, float))):
        raise PrepareError(f"source {source['name']!r}: min_score_gap must be a number, got {gap!r}")

    def convert(row: dict) -> Pair:
        chosen_msgs = normalize_messages(row.get("chosen"), "chosen")
        rejected_msgs = normalize_messages(row.get("rejected"), "rejected")
        if not chosen_msgs or not rejected_msgs or chosen_msgs[-1][0] != "assistant" or rejected_msgs[-1][0] != "assistant":
            raise Reject("no_assistant_turn")
        if chosen_msgs[:-1] != rejected_msgs[:-1]:
            raise Reject("prompt_mismatch")
        prompt = chosen_msgs[:-1]
        if not prompt and isinstance(row.get("prompt"), str):
            prompt = (("user", row["prompt"].strip()),)
        check_prompt(prompt)
        chosen, rejected = chosen_msgs[-1][1], rejected_msgs[-1][1]
        check_replies(chosen, rejected)
        s_c, s_r = _score(row.get("score_chosen")), _score(row.get("score_rejected"))
        if gap is not None:
            if s_c is None or s_r is None:
                raise Reject("missing_score")
            if s_c - s_r < gap:
                raise Reject("score_gap_below_min", f"gap {s_c - s_r:g} < {gap:g}")
        metadata = {"score_chosen": s_c, "score_rejected": s_r}
        if isinstance(row.get("prompt_id"), str):
            metadata["prompt_id"] = row["prompt_id"]
        return Pair(prompt, chosen, rejected, metadata)

    return convert
