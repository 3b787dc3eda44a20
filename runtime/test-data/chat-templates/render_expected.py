"""The oracle for chat-template.test.ts: renders the real chat templates beside this file
with Python's jinja2 in exactly the environment transformers' apply_chat_template builds
(src/transformers/utils/chat_template_utils.py, _cached_compile_jinja_template and
render_jinja_template), and prints each conversation with the text it renders to.

The environment: ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True) with
the loopcontrols extension, transformers' own `tojson` filter (no HTML escaping), and the
globals `raise_exception` and `strftime_now`. transformers also adds its AssistantTracker
extension, which only gives meaning to `{% generation %}` blocks; none of these templates
has one. Render arguments: messages, tools=None, documents=None, add_generation_prompt=True
and the tokenizer's special tokens as strings (transformers passes special_tokens_map).

The clock is fixed at NOW (strftime_now reads it; Llama 3.2 prints "Today Date: ..."), and
the TypeScript test gives ChatTemplate.render the same instant, so both print the same date.

Run (Debian's python3-jinja2 3.1.x is enough; transformers is not needed):
  python3 runtime/test-data/chat-templates/render_expected.py > runtime/test-data/chat-templates/expected.json
"""
import datetime
import json
import pathlib

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = pathlib.Path(__file__).parent
NOW = datetime.datetime(2025, 3, 14, 9, 26, 53)

# The special tokens of each model's tokenizer_config.json, as transformers hands them to
# the template (None when the config sets none: Qwen2.5 has no BOS).
MODELS = {
    "llama-3.2-1b-instruct": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "qwen2.5-0.5b-instruct": {"bos_token": None, "eos_token": "<|im_end|>"},
    "smollm2-360m-instruct": {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"},
}

CONVERSATIONS = {
    "user only": [{"role": "user", "content": "What is the capital of France?"}],
    "system and user": [
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "Why is the sky blue?"},
    ],
    "multi-turn with assistant": [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": "Hi. What do you need?"},
        {"role": "user", "content": "A haiku about edge computing."},
    ],
    "whitespace and non-ASCII": [
        {"role": "user", "content": "  naïve café — 東京 🚀\n\tsecond line  \n"},
    ],
}


def environment():
    """transformers' _cached_compile_jinja_template, without the AssistantTracker."""

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return NOW.strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def main():
    env = environment()
    out = {"now": NOW.isoformat(), "models": {}}
    for model, special_tokens in MODELS.items():
        template = env.from_string((HERE / f"{model}.jinja").read_text(encoding="utf-8"))
        tokens = {k: v for k, v in special_tokens.items() if v is not None}
        out["models"][model] = {
            "special_tokens": tokens,
            "conversations": [
                {
                    "name": name,
                    "messages": messages,
                    "expected": template.render(
                        messages=messages, tools=None, documents=None, add_generation_prompt=True, **tokens
                    ),
                }
                for name, messages in CONVERSATIONS.items()
            ],
        }
    print(json.dumps(out, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
