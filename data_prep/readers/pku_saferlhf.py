"""PKU-SafeRLHF: one prompt, two responses, safety meta-labels and two preferences.

Assumed schema (the PKU-Alignment/PKU-SafeRLHF "default" config, 2024 release):
prompt, response_0, response_1, prompt_source, response_0_source, response_1_source,
is_response_0_safe, is_response_1_safe, response_0_harm_category,
response_1_harm_category (dicts category -> bool), response_0_severity_level,
response_1_severity_level (ints 0-3), better_response_id, safer_response_id (0 or 1),
response_0_sha256, response_1_sha256. Only the prompt, the responses, the two safety
flags and the preference id of the source's label are required.

A source labelled `harmless` takes chosen/rejected from `safer_response_id`; one labelled
`helpful` from `better_response_id`. `both_unsafe: drop | keep` decides what happens when
neither response is safe (default: drop for harmless, keep for helpful). Harm categories
(the names flagged true), severity levels and safety flags go into the metadata as
chosen_* / rejected_*.

Rejection reasons: both_unsafe, missing_preference, empty_prompt, empty_reply,
identical_replies, missing_value, invalid_value.
"""

from __future__ import annotations

import json

from basealign.data_prep.errors import PrepareError
from basealign.data_prep.readers.base import Pair, Reject, check_replies, text_field

TYPE = "pku_saferlhf"
DEFAULT_SPLIT = "train"
OPTIONS = {"both_unsafe": None}
PREFERENCE_COLUMN = {"harmless": "safer_response_id", "helpful": "better_response_id"}


def required_columns(source: dict) -> list[str]:
    return ["prompt", "response_0", "response_1", "is_response_0_safe", "is_response_1_safe",
            PREFERENCE_COLUMN[source["label"]]]


def _flag(value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise Reject("invalid_value", f"safety flag {value!r} is not a boolean")


def _categories(value) -> list[str]:
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    if isinstance(value, dict):
        return sorted(name for name, flagged in value.items() if flagged is True or flagged in ("True", "true", 1))
    return []


def _severity(value):
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def both_unsafe_policy(source: dict) -> str:
    policy = source.get("both_unsafe")
    if policy is None:
        return "drop" if source["label"] == "harmless" else "keep"
    if policy not in ("drop", "keep"):
        raise PrepareError(f"source {source['name']!r}: both_unsafe must be drop or keep, got {policy!r}")
    return policy


def make_converter(source: dict):
    column = PREFERENCE_COLUMN[source["label"]]
    drop_unsafe = both_unsafe_policy(source) == "drop"

    def convert(row: dict) -> Pair:
        prompt = text_field(row, "prompt")
        responses = (text_field(row, "response_0"), text_field(row, "response_1"))
        safe = (_flag(row.get("is_response_0_safe")), _flag(row.get("is_response_1_safe")))
        pref = row.get(column)
        if isinstance(pref, str) and pref.strip() in ("0", "1"):
            pref = int(pref)
        if isinstance(pref, bool) or pref not in (0, 1):
            raise Reject("missing_preference", f"{column} is {pref!r}")
        if not prompt:
            raise Reject("empty_prompt")
        if drop_unsafe and not safe[0] and not safe[1]:
            raise Reject("both_unsafe")
        chosen, rejected = responses[pref], responses[1 - pref]
        check_replies(chosen, rejected)
        other = 1 - pref
        metadata = {
            "chosen_safe": safe[pref],
            "rejected_safe": safe[other],
            "chosen_harm_categories": _categories(row.get(f"response_{pref}_harm_category")),
            "rejected_harm_categories": _categories(row.get(f"response_{other}_harm_category")),
            "chosen_severity": _severity(row.get(f"response_{pref}_severity_level")),
            "rejected_severity": _severity(row.get(f"response_{other}_severity_level")),
            "preference": column,
        }
        if isinstance(row.get("prompt_source"), str):
            metadata["prompt_source"] = row["prompt_source"]
        return Pair((("user", prompt),), chosen, rejected, metadata)

    return convert
