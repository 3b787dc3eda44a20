"""Writes models/<name>/README.md (the model card) from config.json, tandem.json and
training-stats.json that train.py leaves in the model directory.

    /usr/bin/python3 tools/train/model_card.py models/tandem-demo
"""
import json
import os
import sys



# The shipped models' data paragraph, kept as their cards have it.
PYTHON_DOCS_DATA = """- The reStructuredText sources of the Python 3.11 documentation as installed by Debian's `python3.11-doc`
  (`/usr/share/doc/python3.11/html/_sources`, PSF licence), cleaned by `tools/train/make_corpus.py`; documents in
  sorted path order, about 5% of them, chosen by a hash of the path, held out for validation.
- {train_tokens:,} training tokens, {valid_tokens:,} validation tokens. Documents are joined by a blank
  line, with no `<|endoftext|>` between them, so the model does not learn to end a text.
- Held-out text for calibration, tests and benchmarks: `{heldout}` (the first 180 KB of the validation split, never trained on).
"""


def sources_data(corpus):
    """The data paragraph of a model trained on a corpus of several sources: each named with its licence."""
    lines = [f"- Corpus `{corpus['name']}` of `tools/train/make_corpus.py`, from documentation Debian installs (no network):"]
    for source in corpus["sources"]:
        lines.append(f"  - {source['name']}: Debian's `{source['package']}`, {source['licence']} licence")
    lines += [
        "- Documents in sorted path order per source, about 5% of them, chosen by a hash of the path, held out for",
        "  validation (the Python documentation's held-out documents as for the first demo models); each document ends",
        "  with `<|endoftext|>`.",
        "- {train_tokens:,} training tokens, {valid_tokens:,} validation tokens.",
        "- Held-out text for calibration, tests and benchmarks: `{heldout}` (Python documentation held out above, never trained on).",
    ]
    return "\n".join(lines) + "\n"

def main(model_dir):
    config = json.load(open(os.path.join(model_dir, "config.json")))
    stats = json.load(open(os.path.join(model_dir, "training-stats.json")))
    deployment = json.load(open(os.path.join(model_dir, "tandem.json")))
    name = os.path.basename(os.path.normpath(model_dir))
    moe = config["model_type"] == "mixtral"
    size = os.path.getsize(os.path.join(model_dir, "model.safetensors"))
    rows = "\n".join(
        f"| {'final' if int(k) == config['num_hidden_layers'] else 'exit'} after {k} of {config['num_hidden_layers']} layers | {v['loss']:.4f} | {v['perplexity']:.2f} |"
        for k, v in sorted(stats["validation"].items(), key=lambda kv: int(kv[0]))
    )
    shape = [
        f"- architecture: {'Mixtral-style MoE' if moe else 'Llama'} (`model_type: {config['model_type']}`), RMSNorm, RoPE (theta {config['rope_theta']:g}), grouped-query attention, SwiGLU{', tied embeddings' if config['tie_word_embeddings'] else ''}",
        f"- hidden {config['hidden_size']}, {config['num_hidden_layers']} layers, {config['num_attention_heads']} heads ({config['num_key_value_heads']} KV heads), "
        + (f"{config['num_local_experts']} experts of intermediate {config['intermediate_size']}, top-{config['num_experts_per_tok']} routing" if moe else f"intermediate {config['intermediate_size']}"),
        f"- vocabulary {config['vocab_size']}, context {config['max_position_embeddings']}",
        f"- parameters: {stats['parameters']:,}" + (f" total, {stats['active_parameters']:,} active per token" if moe else ""),
        f"- weights: `model.safetensors`, F16, {size / 2**20:.1f} MiB",
    ]
    spec = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", stats["config"])))
    layers = config["num_hidden_layers"]
    exits = deployment["exit_layers"]
    heldout = "heldout.txt" if os.path.exists(os.path.join(model_dir, "heldout.txt")) else "../tandem-demo/heldout.txt"
    loss = f"final cross-entropy + {spec['exit_loss_weight']} × cross-entropy at each exit (final norm and LM head shared)"
    if spec.get("distill_weight"):
        frozen = "" if spec.get("distill_through_head", True) else "; the exit's logits through a frozen copy of the norm and head, so it moves only the layers below the exit"
        loss += (
            f" + {spec['distill_weight']} × KL(final ‖ exit) at each exit (self-distillation, temperature"
            f" {spec.get('distill_temperature', 1.0):g}, on a sampled {spec.get('distill_positions', 1.0):g} of each batch's positions{frozen})"
        )
    if moe:
        loss += f" + {spec.get('balance_loss_weight', 0.0)} × load-balancing loss (Switch/Mixtral: experts × Σ routed share × mean router probability, averaged over layers)"
    load = ""
    if stats.get("expert_load"):
        header = "| layer | " + " | ".join(f"e{e}" for e in range(config["num_local_experts"])) + " |"
        rule = "|---" * (config["num_local_experts"] + 1) + "|"
        lines = [f"| {i} | " + " | ".join(f"{share:.3f}" for share in shares) + " |" for i, shares in enumerate(stats["expert_load"])]
        load = "\n\n" + "Share of the top-2 assignments each expert receives on the validation split (0.125 is perfectly even):\n\n" + "\n".join([header, rule, *lines])
    python_docs = stats.get("corpus", {}).get("name", "python-docs") == "python-docs"
    data = PYTHON_DOCS_DATA if python_docs else sources_data(stats["corpus"])
    style = "the Python documentation" if python_docs else "software documentation"
    data = data.format(train_tokens=stats["train_tokens"], valid_tokens=stats["valid_tokens"], heldout=heldout)
    card = f"""# {name}

A small {'Mixtral-style mixture-of-experts' if moe else 'Llama-architecture'} model that Tandem ships for its demo, tests and benchmarks,
trained with auxiliary losses at its early exits (after {' and '.join(map(str, exits))} of {layers} layers) so they are usable.
It is a toy: it has learned the style of {style}, not facts.

## Data
{data}
## Tokenizer
Byte-level BPE (GPT-2 style pre-tokenization and byte mapping, `add_prefix_space: false`), {config['vocab_size']} tokens
({config['vocab_size'] - 257} merges, 256 bytes, `<|endoftext|>` = id {config['eos_token_id']} as BOS and EOS), trained on the training split
by `tools/train/bpe.py` and written as a Hugging Face `tokenizer.json`; `tools/train/check_tokenizer.py` checks that
`@huggingface/tokenizers` encodes exactly as the Python encoder does and round-trips.

## Shape
{chr(10).join(shape)}

## Exits
`tandem.json`: `{json.dumps(deployment)}`. "Exit after k layers" is the hidden state output by decoder layer
index k−1 (after k layers), put through the model's final norm (`model.norm`) and LM head — the same heads as the
last layer, no extra weights.

## Training
- {stats['steps']} steps of batch {stats['batch_size']} × {stats['sequence_length']} tokens ({stats['tokens_seen']:,} tokens seen, ~{stats['tokens_seen'] / stats['train_tokens']:.2f} epochs), random windows in a seeded order (seed {spec['seed']})
- AdamW (β 0.9/0.95, weight decay 0.1, gradient clip 1.0), learning rate {spec['learning_rate']}, {spec['warmup_steps']} warmup steps, cosine decay to 10%
- loss: {loss}
- wall time {stats['wall_minutes']} minutes on one CPU thread (`torch.set_num_threads(1)`){f", {stats['tokens_per_second']:,} tokens/s" if stats.get('tokens_per_second') else ''}{chr(10) + '- ' + stats['note'] if stats.get('note') else ''}

## Validation ({stats['eval_tokens']:,} tokens of the validation split, windows of {stats['sequence_length']})
| head | loss | perplexity |
|---|---|---|
{rows}{load}

## Reproduce
```sh
apt-get install -y python3-torch python3-numpy libopenblas0-pthread python3.11-doc
/usr/bin/python3 tools/train/train.py --config {stats['config']} --steps {stats['steps']}{f" --sized-at {stats['sized_at']}" if stats.get('sized_at') else ''}
/usr/bin/python3 tools/train/check_checkpoint.py {os.path.relpath(os.path.abspath(model_dir), os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))}
```
`reference-logits.json` holds, for a 16-token prompt from the validation split, the full model's argmax at every
position, its logits at the last position and the exits' argmax, computed in float32 from the saved F16 weights; the
TypeScript tests check Tandem's engine against it, and `tools/train/check_checkpoint.py` checks it with a separate
numpy forward.
"""
    open(os.path.join(model_dir, "README.md"), "w").write(card)


if __name__ == "__main__":
    main(sys.argv[1])
