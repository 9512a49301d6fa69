"""Generation for `basealign eval`: batched = one at a time, stops at EOS and at the next user
turn, seeded sampling, and the LoRA reference is the base model."""

from __future__ import annotations

import pytest
import torch

from basealign.config import ModelConfig
from basealign.eval.generate import Decoding, generate, side_by_side, user_turn_stops
from basealign.models.chat_templates import TEMPLATES
from basealign.models.loading import load_model
from basealign.models.tiny import materialize_builtin
from conftest import save_lora_run

PROMPTS = ["Hello there, how are you doing today?", "Hi",
           [{"role": "user", "content": "What is two plus two?"}, {"role": "assistant", "content": "Four."},
            {"role": "user", "content": "And three plus three?"}],
           "A much longer prompt that needs a lot of left padding in a batch with the short ones."]


@pytest.fixture(scope="module")
def base_path(tmp_path_factory) -> str:
    return str(materialize_builtin("builtin:tiny-mistral", tmp_path_factory.mktemp("gen") / "base"))


def test_the_next_user_turn_comes_from_the_template(tokenizer):
    assert user_turn_stops(tokenizer) == ["\n\nHuman:"]
    tokenizer.chat_template = TEMPLATES["chatml"]
    assert user_turn_stops(tokenizer) == ["<|im_end|>\n<|im_start|>user"]


def test_batched_left_padded_equals_one_at_a_time(base_path, tokenizer):
    model = load_model(ModelConfig(), base_path)
    batched = generate(model, tokenizer, PROMPTS, Decoding(max_new_tokens=8, batch_size=4))
    single = generate(model, tokenizer, PROMPTS, Decoding(max_new_tokens=8, batch_size=1))
    assert batched == single
    assert all(a.generated == 8 and a.stop == "length" for a in batched)
    # generation borrows SDPA (basealign's attention masks no left padding) and gives it back
    assert model.config._attn_implementation == "basealign"


def test_sampling_is_seeded(base_path, tokenizer):
    model = load_model(ModelConfig(), base_path)
    sampled = Decoding(max_new_tokens=8, temperature=1.0, top_p=0.9, seed=3, batch_size=4)
    first = generate(model, tokenizer, PROMPTS, sampled)
    assert generate(model, tokenizer, PROMPTS, sampled) == first
    assert generate(model, tokenizer, PROMPTS, Decoding(max_new_tokens=8, temperature=1.0, seed=4)) != first


def _memorizing_model(tokenizer, cases):
    """A tiny model trained until greedy decoding repeats each case's answer."""
    from transformers import AutoModelForCausalLM

    from basealign.models.tiny import tiny_config
    from basealign.models.tokenize_pairs import prompt_token_ids

    config = tiny_config("tiny-llama")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    seqs = [prompt_token_ids(tokenizer, p) + tokenizer(a, add_special_tokens=False)["input_ids"] + tail
            for p, a, tail in cases]
    width = max(map(len, seqs))
    ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
    labels = torch.tensor([s + [-100] * (width - len(s)) for s in seqs])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(80):
        loss = model(ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_stops_at_eos_and_at_the_next_user_turn(tokenizer):
    cases = [("Hi", " Fine.", [tokenizer.eos_token_id]),
             ("Tell me a long story please", " Ok then\n\nHuman: more more more", [])]
    model = _memorizing_model(tokenizer, cases)
    eos, turn = generate(model, tokenizer, [c[0] for c in cases], Decoding(max_new_tokens=30, batch_size=2))
    assert (eos.text, eos.stop, eos.tokens, eos.generated) == ("Fine.", "eos", 6, 7)  # " Fine." + EOS
    # cut before "\n\nHuman:"; generation stopped right after it, far before 30 tokens
    assert (turn.text, turn.stop, turn.tokens) == ("Ok then", "user_turn", len(" Ok then"))
    assert turn.generated == len(" Ok then\n\nHuman:")


def test_lora_reference_answers_are_the_base_models(tmp_path, tokenizer):
    from peft import PeftModel

    run = save_lora_run(tmp_path / "run", lora_b_scale=0.5)
    base = load_model(ModelConfig(), str(run / "base_model"))
    policy_model = PeftModel.from_pretrained(load_model(ModelConfig(), str(run / "base_model")), run)
    decoding = Decoding(max_new_tokens=8, batch_size=4)
    policy, reference = side_by_side(policy_model, policy_model, tokenizer, PROMPTS, decoding)
    assert reference == generate(base, tokenizer, PROMPTS, decoding)
    assert policy != reference
    # a full fine-tune's reference is a separate model
    _, separate = side_by_side(policy_model, base, tokenizer, PROMPTS, decoding)
    assert separate == reference
