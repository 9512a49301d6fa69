"""tokenize_pairs with a real SentencePiece tokenizer: Mistral-7B-v0.1's, which the
mistral-common wheel ships (mistral_common/data/tokenizer.model.v1; no download).

Property checked for every pair: prompt ids + response ids == the tokenizer's own
tokenization of the whole rendered conversation (with its BOS), and BOS appears once.
SentencePiece adds a leading "▁" to text tokenized on its own, so a response tokenized
apart from its prompt would differ (chatml's "assistant\\nHello" becomes "▁Hello").
"""

from __future__ import annotations

import importlib.resources
import shutil

import pytest

from basealign.models.chat_templates import TEMPLATES
from basealign.models.tokenize_pairs import tokenize_pairs

# Multi-turn HH-style transcripts, written for this test: leading spaces, digits, code,
# punctuation and non-ASCII, empty-looking and one-word replies.
PAIRS = [
    {"prompt": [{"role": "user", "content": "How do I boil an egg?"}],
     "chosen": [{"role": "assistant", "content": "Put it in boiling water for 9 minutes, then cool it."}],
     "rejected": [{"role": "assistant", "content": "Microwave it."}]},
    {"prompt": [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello, how can I help?"},
                {"role": "user", "content": "What's 12 * 12?"}],
     "chosen": [{"role": "assistant", "content": "144."}],
     "rejected": [{"role": "assistant", "content": " 124, I think"}]},
    {"prompt": [{"role": "user", "content": "Can you help me get into my neighbour's house while they're away?"},
                {"role": "assistant", "content": "Why do you need to get in?"},
                {"role": "user", "content": "I just want to look around."}],
     "chosen": [{"role": "assistant", "content": "I can't help with entering someone's home without permission."}],
     "rejected": [{"role": "assistant", "content": "Sure, first check whether the back door is locked."}]},
    {"prompt": [{"role": "user", "content": "Write `print('hi')` in Python 3.\n"}],
     "chosen": [{"role": "assistant", "content": "```python\nprint('hi')\n```"}],
     "rejected": [{"role": "assistant", "content": "print hi"}]},
    {"prompt": [{"role": "user", "content": "Traduis « bonjour » en español, s'il te plaît."}],
     "chosen": [{"role": "assistant", "content": "«Hola» — ¡claro! 😊"}],
     "rejected": [{"role": "assistant", "content": "Non."}]},
    {"prompt": [{"role": "user", "content": "Say yes or no."}],
     "chosen": [{"role": "assistant", "content": "Yes"}],
     "rejected": [{"role": "assistant", "content": "no"}]},
    {"prompt": [{"role": "user", "content": "  spaced  out  "}, {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "\nnew line first"}],
     "chosen": [{"role": "assistant", "content": "\nA reply that starts on a new line."}],
     "rejected": [{"role": "assistant", "content": "-- dashes first"}]},
]


@pytest.fixture(scope="module")
def mistral_tokenizer(tmp_path_factory):
    from transformers import LlamaTokenizer

    model_file = importlib.resources.files("mistral_common") / "data" / "tokenizer.model.v1"
    folder = tmp_path_factory.mktemp("mistral")
    shutil.copyfile(model_file, folder / "tokenizer.model")
    # Mistral-7B-v0.1's tokenizer_config: BOS added, EOS not
    tok = LlamaTokenizer.from_pretrained(folder, add_bos_token=True, add_eos_token=False)
    assert len(tok) == 32000 and tok.bos_token_id == 1 and tok.eos_token_id == 2
    return tok


@pytest.mark.parametrize("template", ["hh", "chatml"])
def test_prompt_plus_response_is_the_whole_conversation(mistral_tokenizer, template):
    tok = mistral_tokenizer
    tok.chat_template = TEMPLATES[template]
    result = tokenize_pairs(PAIRS, tok, max_length=4096)
    assert not result.dropped and len(result.records) == len(PAIRS)
    for record, row in zip(result.records, PAIRS):
        for side in ("chosen", "rejected"):
            whole = tok.apply_chat_template(row["prompt"] + row[side], tokenize=False)
            want = tok(whole)["input_ids"]  # the tokenizer's own BOS handling
            got = record["prompt_ids"] + record[f"{side}_ids"]
            assert got == want, (template, side, tok.convert_ids_to_tokens(got), tok.convert_ids_to_tokens(want))
            assert got.count(tok.bos_token_id) == 1 and got[0] == tok.bos_token_id


def test_a_response_tokenized_apart_would_differ(mistral_tokenizer):
    """Why tokenize_pairs splits the whole conversation: chatml replies start right after a
    newline, and SentencePiece tokenizes them on their own with a leading "▁"."""
    tok = mistral_tokenizer
    apart = tok("Yes", add_special_tokens=False)["input_ids"]
    in_context = tok("<|im_start|>assistant\nYes", add_special_tokens=False)["input_ids"]
    assert in_context[-len(apart):] != apart


def test_bos_is_not_added_twice_when_the_template_renders_it(mistral_tokenizer):
    tok = mistral_tokenizer
    tok.chat_template = "{{ bos_token }}" + TEMPLATES["hh"]
    record = tokenize_pairs(PAIRS[:2], tok, max_length=4096).records[1]
    assert (record["prompt_ids"] + record["chosen_ids"]).count(tok.bos_token_id) == 1
