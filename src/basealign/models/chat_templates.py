"""Named chat templates. Base models ship without one, so a recipe picks one here.

`hh` is the Anthropic HH-RLHF transcript format ("\n\nHuman: ...\n\nAssistant: ..."),
which base models have seen in pre-training text and which the harmless + helpful data
is written in. Every assistant turn ends with the EOS token so the model learns to stop.
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
    "chatml": (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
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
