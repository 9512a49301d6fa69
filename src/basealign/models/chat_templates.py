"""Named chat templates. Base models ship without one, so a recipe picks one here.

`hh` is the Anthropic HH-RLHF transcript format ("\n\nHuman: ...\n\nAssistant: ..."),
which base models have seen in pre-training text and which the harmless + helpful data
is written in. In every template each assistant turn ends with the EOS token, so the model
learns to stop.
"""

from __future__ import annotations

TEMPLATES = {
    "hh": (
        "{% for message in messages %}"
        "{% if message['role'] == 'user' %}{{ '\n\nHuman: ' + message['content'] }}"
        "{% elif message['role'] == 'assistant' %}{{ '\n\nAssistant: ' + message['content'] + eos_token }}"
        "{% elif message['role'] == 'system' %}{{ message['content'] }}"
        "{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '\n\nAssistant:' }}{% endif %}"
    ),
    # ChatML, with EOS after each assistant turn's <|im_end|> (a base model has no <|im_end|>
    # token to stop on). The newline between turns opens the next turn instead of closing the
    # last, so that a reply ends with EOS and the prompt is a prefix of prompt + reply.
    "chatml": (
        "{% for message in messages %}"
        "{% if not loop.first %}{{ '\n' }}{% endif %}"
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' }}"
        "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '\n<|im_start|>assistant\n' }}{% endif %}"
    ),
}
DEFAULT_TEMPLATE = "hh"


def resolve_template(spec: str | None, tokenizer) -> str:
    """A template name, a Jinja string, or None (keep the tokenizer's, else the default)."""
    if spec is None:
        return tokenizer.chat_template or TEMPLATES[DEFAULT_TEMPLATE]
    if spec in TEMPLATES:
        return TEMPLATES[spec]
    if "{%" in spec or "{{" in spec:
        return spec
    from basealign.errors import BasealignError

    raise BasealignError(f"model.chat_template: unknown template '{spec}' (names: {', '.join(TEMPLATES)}; or give a Jinja string)")
