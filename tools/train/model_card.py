"""Writes models/<name>/README.md (the model card) from config.json, tandem.json and
training-stats.json that train.py leaves in the model directory.

    /usr/bin/python3 tools/train/model_card.py models/tandem-demo
"""
import json
import os
import sys


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
    card = f"""# {name}

A small {'Mixtral-style mixture-of-experts' if moe else 'Llama-architecture'} model that Tandem ships for its demo, tests and benchmarks,
trained with auxiliary losses at its early exits (after {' and '.join(map(str, deployment['exit_layers']))} layers) so they are usable.
It is a toy: it has learned the style of the Python documentation, not facts.

## Data
- The reStructuredText sources of the Python 3.11 documentation as installed by Debian's `python3.11-doc`
  (PSF licence), cleaned by `tools/train/make_corpus.py`; about 5% of the documents, chosen by a hash of the path,
  are held out for validation.
- {stats['train_tokens']:,} training tokens, {stats['valid_tokens']:,} validation tokens.
{'- `heldout.txt`: the first 180 KB of the validation split, for calibration and benchmarks.' if os.path.exists(os.path.join(model_dir, 'heldout.txt')) else ''}

## Tokenizer
Byte-level BPE (GPT-2 style pre-tokenization), {config['vocab_size']} tokens including `<|endoftext|>`, trained on the training split by
`tools/train/bpe.py` and written as a Hugging Face `tokenizer.json`.

## Shape
{chr(10).join(shape)}

## Training
- {stats['steps']} steps of batch {stats['batch_size']} × {stats['sequence_length']} tokens ({stats['tokens_seen']:,} tokens seen), AdamW, warmup and cosine decay
- loss: final cross-entropy + {json.load(open(os.path.join(os.path.dirname(__file__), '..', '..', stats['config'])))['exit_loss_weight']} × cross-entropy at each exit (final norm and LM head shared){' + 0.01 × load-balancing loss' if moe else ''}
- wall time {stats['wall_minutes']} minutes on one CPU thread (`torch.set_num_threads(1)`)

## Validation ({stats['eval_tokens']:,} tokens)
| head | loss | perplexity |
|---|---|---|
{rows}

## Reproduce
```sh
apt-get install -y python3-torch python3-numpy libopenblas0-pthread python3.11-doc
/usr/bin/python3 tools/train/train.py --config {stats['config']}{' --steps ' + str(stats['steps']) if name == 'tandem-demo' else ''}
```
`reference-logits.json` holds logits that PyTorch computes from the saved F16 weights, used by the TypeScript tests to
check Tandem's engine against an independent implementation.
"""
    open(os.path.join(model_dir, "README.md"), "w").write(card)


if __name__ == "__main__":
    main(sys.argv[1])
