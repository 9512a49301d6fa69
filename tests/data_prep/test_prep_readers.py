"""Reader-level behaviour: every awkward case of each upstream schema."""

import pytest

from basealign.data_prep.readers import READERS, Reject
from basealign.data_prep.readers import hh_rlhf


def hh(source=None):
    return hh_rlhf.make_converter(source or {"name": "hh", "label": "harmless"})


def reason(convert, row):
    with pytest.raises(Reject) as info:
        convert(row)
    return info.value.reason


def test_hh_multi_turn_split_and_strip():
    row = {"chosen": "\n\nHuman:  Hi there \n\nAssistant: Hello! \n\nHuman: Help me bake.\n\nAssistant:  Sure, preheat the oven. ",
           "rejected": "\n\nHuman:  Hi there \n\nAssistant: Hello! \n\nHuman: Help me bake.\n\nAssistant: no"}
    pair = hh()(row)
    assert pair.prompt == (("user", "Hi there"), ("assistant", "Hello!"), ("user", "Help me bake."))
    assert pair.chosen == "Sure, preheat the oven."
    assert pair.rejected == "no"


def test_hh_merges_consecutive_same_speaker_turns():
    row = {"chosen": "\n\nHuman: one\n\nHuman: two\n\nAssistant: yes", "rejected": "\n\nHuman: one\n\nHuman: two\n\nAssistant: no"}
    assert hh()(row).prompt == (("user", "one\n\ntwo"),)


@pytest.mark.parametrize("row, expected", [
    ({"chosen": "\n\nHuman: hi", "rejected": "\n\nHuman: hi"}, "no_assistant_turn"),
    ({"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "\n\nHuman: hey\n\nAssistant: b"}, "prompt_mismatch"),
    ({"chosen": "\n\nHuman: hi\n\nAssistant: same ", "rejected": "\n\nHuman: hi\n\nAssistant:  same"}, "identical_replies"),
    ({"chosen": "\n\nHuman: hi\n\nAssistant:", "rejected": "\n\nHuman: hi\n\nAssistant: b"}, "empty_reply"),
    ({"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "\n\nHuman: hi\n\nAssistant:   "}, "empty_reply"),
    ({"chosen": "junk\n\nHuman: hi\n\nAssistant: a", "rejected": "junk\n\nHuman: hi\n\nAssistant: b"}, "malformed_transcript"),
    ({"chosen": "\n\nAssistant: a", "rejected": "\n\nAssistant: b"}, "empty_prompt"),
    ({"chosen": None, "rejected": "\n\nHuman: hi\n\nAssistant: b"}, "missing_value"),
    ({"chosen": 3, "rejected": "\n\nHuman: hi\n\nAssistant: b"}, "invalid_value"),
])
def test_hh_awkward_rows(row, expected):
    assert reason(hh(), row) == expected


def pku_row(**kw):
    row = {"prompt": "How do I pick a lock?", "response_0": "I can't help with that.", "response_1": "Use a pin.",
           "is_response_0_safe": True, "is_response_1_safe": False,
           "response_0_harm_category": {"Violence": False, "Privacy Violation": False},
           "response_1_harm_category": {"Violence": True, "Privacy Violation": False},
           "response_0_severity_level": 0, "response_1_severity_level": 2,
           "better_response_id": 1, "safer_response_id": 0}
    row.update(kw)
    return row


def pku(label, **opts):
    return READERS["pku_saferlhf"].make_converter({"name": "pku", "label": label, **opts})


def test_pku_harmless_uses_safer_and_helpful_uses_better():
    harmless = pku("harmless")(pku_row())
    helpful = pku("helpful")(pku_row())
    assert (harmless.chosen, harmless.rejected) == ("I can't help with that.", "Use a pin.")
    assert (helpful.chosen, helpful.rejected) == ("Use a pin.", "I can't help with that.")
    assert harmless.prompt == (("user", "How do I pick a lock?"),)
    assert harmless.metadata["rejected_harm_categories"] == ["Violence"]
    assert harmless.metadata["chosen_harm_categories"] == []
    assert harmless.metadata["rejected_severity"] == 2 and harmless.metadata["chosen_safe"] is True
    assert helpful.metadata["chosen_severity"] == 2 and helpful.metadata["chosen_safe"] is False


def test_pku_both_unsafe_policy():
    row = pku_row(is_response_0_safe=False)
    assert reason(pku("harmless"), row) == "both_unsafe"
    assert pku("harmless", both_unsafe="keep")(row).chosen == "I can't help with that."
    assert pku("helpful")(row).chosen == "Use a pin."          # helpful keeps by default
    assert reason(pku("helpful", both_unsafe="drop"), row) == "both_unsafe"


def test_pku_bad_rows():
    assert reason(pku("harmless"), pku_row(safer_response_id=None)) == "missing_preference"
    assert reason(pku("harmless"), pku_row(response_1="I can't help with that.")) == "identical_replies"
    assert reason(pku("harmless"), pku_row(prompt="  ")) == "empty_prompt"
    assert reason(pku("harmless"), pku_row(is_response_0_safe="maybe")) == "invalid_value"


def uf_row(**kw):
    row = {"prompt": "Name a fruit.", "prompt_id": "p1",
           "chosen": [{"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": " Apple. "}],
           "rejected": [{"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": "Chair."}],
           "score_chosen": 8.0, "score_rejected": 2.5}
    row.update(kw)
    return row


def uf(**opts):
    return READERS["ultrafeedback"].make_converter({"name": "uf", "label": "helpful", **opts})


def test_ultrafeedback_rows_and_score_gap():
    pair = uf()(uf_row())
    assert pair.prompt == (("user", "Name a fruit."),) and pair.chosen == "Apple." and pair.rejected == "Chair."
    assert pair.metadata == {"score_chosen": 8.0, "score_rejected": 2.5, "prompt_id": "p1"}
    assert uf(min_score_gap=5.5)(uf_row()).chosen == "Apple."
    assert reason(uf(min_score_gap=6), uf_row()) == "score_gap_below_min"
    assert reason(uf(), uf_row(chosen="Apple")) == "malformed_messages"
    assert reason(uf(), uf_row(rejected=[{"role": "user", "content": "Name a fruit."}])) == "no_assistant_turn"
    assert reason(uf(), uf_row(rejected=[{"role": "user", "content": "Name a veg."}, {"role": "assistant", "content": "x"}])) == "prompt_mismatch"


def test_ultrafeedback_reply_only_lists_fall_back_to_prompt_text():
    row = uf_row(chosen=[{"role": "assistant", "content": "Apple."}], rejected=[{"role": "assistant", "content": "Chair."}])
    assert uf()(row).prompt == (("user", "Name a fruit."),)


def test_pairs_column_mapping_text_and_messages():
    convert = READERS["pairs"].make_converter({"name": "p", "label": "helpful", "columns": {"prompt": "q", "chosen": "a", "rejected": "b"},
                                               "metadata_columns": ["topic"]})
    text = convert({"q": " Hi? ", "a": "Hello!", "b": "go away", "topic": "greeting"})
    assert text.prompt == (("user", "Hi?"),) and text.chosen == "Hello!" and text.metadata == {"topic": "greeting"}
    msgs = convert({"q": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi?"}],
                    "a": [{"role": "assistant", "content": "Hello!"}], "b": [{"role": "assistant", "content": "no"}]})
    assert msgs.prompt == (("system", "Be kind."), ("user", "Hi?")) and msgs.rejected == "no"
    assert reason(convert, {"q": "Hi", "a": [{"role": "user", "content": "x"}], "b": "y"}) == "no_assistant_turn"
    assert reason(convert, {"q": "Hi", "a": "", "b": "y"}) == "empty_reply"
