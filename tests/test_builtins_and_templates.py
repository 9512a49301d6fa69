"""The named chat templates end assistant turns with EOS; the builtin models are distinct models."""

from __future__ import annotations

import pytest
import torch

from basealign.models.chat_templates import TEMPLATES
from basealign.models.tiny import build_tiny_model, byte_level_tokenizer, materialize_builtin, tiny_config
from basealign.models.tokenize_pairs import render, tokenize_pairs


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_template_ends_the_reply_with_eos(name):
    tok = byte_level_tokenizer()
    tok.chat_template = TEMPLATES[name]
    prompt = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye?"}]
    prompt_text, reply = render(tok, prompt, "see you")
    assert reply.endswith(tok.eos_token) and "see you" in reply
    assert prompt_text.count(tok.eos_token) == 1  # the earlier assistant turn too
    records = tokenize_pairs([{"prompt": prompt, "chosen": "see you", "rejected": "no"}], tok, 512).records
    assert records[0]["chosen_ids"][-1] == tok.eos_token_id == records[0]["rejected_ids"][-1]


def test_chatml_renders_standard_turns():
    tok = byte_level_tokenizer()
    tok.chat_template = TEMPLATES["chatml"]
    text = tok.apply_chat_template([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
                                   tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>system\ns<|im_end|>\n<|im_start|>user\nu<|im_end|>\n<|im_start|>assistant\n"


def test_tiny_llama_is_not_tiny_mistral(tmp_path):
    llama, mistral = tiny_config("tiny-llama"), tiny_config("tiny-mistral")
    assert (llama.hidden_size, llama.num_attention_heads, llama.num_key_value_heads) != (
        mistral.hidden_size, mistral.num_attention_heads, mistral.num_key_value_heads)
    ids = torch.tensor([[1] + [4 + b for b in b"the same input"]])
    with torch.no_grad():
        a = build_tiny_model("tiny-llama").eval()(input_ids=ids).logits
        b = build_tiny_model("tiny-mistral").eval()(input_ids=ids).logits
    assert not torch.allclose(a, b, atol=1e-3)
    # a folder built from an older definition of the same name is rebuilt, not reused
    folder = materialize_builtin("builtin:tiny-llama", tmp_path / "m")
    stamp = folder / "basealign_builtin.json"
    stamp.write_text('{"name": "tiny-llama", "seed": 0}')
    materialize_builtin("builtin:tiny-llama", folder)
    assert "config" in stamp.read_text()
