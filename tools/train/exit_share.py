"""Compares trained models' early exits on the same held-out text: for each exit, the share
of positions it can answer while the model as a whole keeps at least 99% (and 95%)
agreement with its final layer, plus each layer's perplexity.

    /usr/bin/python3 tools/train/exit_share.py models/tandem-demo .cache/models/tandem-demo-distilled

Teacher-forced over models/tandem-demo/heldout.txt (or --text), windows of 128 tokens. A
position answered at the exit agrees when the exit's arg max is the final layer's; the
others go to the cloud and agree by definition. The threshold on the exit's confidence
(top-1 probability, or top-1 minus top-2) is the one that answers the most positions at
the agreement, chosen on this same text for every model alike: an A/B of training runs,
not the calibrated figure of the `exits` benchmark (which tunes and tests on separate
halves).
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bpe  # noqa: E402
from model import CausalLM  # noqa: E402
from safetensors_io import read_safetensors  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def load(model_dir, exit_adapters=True):
    """The model of `model_dir` (with the exit adapters its tandem.json names, unless
    exit_adapters is False), its config, exit layers and encoder."""
    config = json.load(open(os.path.join(model_dir, "config.json")))
    tandem = json.load(open(os.path.join(model_dir, "tandem.json")))
    exits = tandem["exit_layers"]
    model = CausalLM(config)
    tensors = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    with torch.no_grad():
        for name, value in model.hf_state_dict().items():
            value.copy_(tensors[name])
        if config["tie_word_embeddings"]:
            model.lm_head.weight = model.embed_tokens.weight
    if exit_adapters and "exit_adapters" in tandem:
        model.add_exit_adapters(read_safetensors(os.path.join(model_dir, tandem["exit_adapters"])))
    model.eval()
    tokenizer = json.load(open(os.path.join(model_dir, "tokenizer.json"), encoding="utf-8"))["model"]
    encoder = bpe.Encoder(tokenizer["vocab"], [tuple(m.split(" ")) for m in tokenizer["merges"]])
    return model, config, exits, encoder


def best_share(confidence, agrees, target):
    """Most positions answerable at the exit with overall agreement ≥ target."""
    order = np.argsort(-confidence)
    wrong = np.cumsum(~agrees[order])
    allowed = (1 - target) * len(agrees)
    ok = np.nonzero(wrong <= allowed)[0]
    return float((ok[-1] + 1) / len(agrees)) if len(ok) else 0.0


def evaluate(model_dir, text, seq=128):
    model, config, exits, encoder = load(model_dir)
    ids = np.array(encoder.encode(text), dtype=np.int64)
    final_layer = config["num_hidden_layers"]
    windows = (len(ids) - 1) // seq
    logits_by_layer = {k: [] for k in exits + [final_layer]}
    targets = []
    with torch.no_grad():
        for w in range(0, windows, 16):
            idx = range(w, min(w + 16, windows))
            x = torch.stack([torch.from_numpy(ids[i * seq:(i + 1) * seq]) for i in idx])
            targets.append(torch.stack([torch.from_numpy(ids[i * seq + 1:(i + 1) * seq + 1]) for i in idx]).reshape(-1))
            outputs = model(x, exits)
            for k in logits_by_layer:
                logits_by_layer[k].append(outputs[k].reshape(-1, outputs[k].shape[-1]))
    y = torch.cat(targets)
    logits = {k: torch.cat(v) for k, v in logits_by_layer.items()}
    final = logits[final_layer].argmax(-1)
    result = {
        "model": os.path.relpath(os.path.abspath(model_dir), ROOT),
        "positions": int(y.numel()),
        "perplexity": {str(k): round(math.exp(F.cross_entropy(v, y).item()), 2) for k, v in logits.items()},
        "exits": {},
    }
    for k in exits:
        probs = logits[k].softmax(-1)
        top2 = probs.topk(2, dim=-1).values
        agrees = (logits[k].argmax(-1) == final).numpy()
        result["exits"][str(k)] = {
            "top1_agreement": round(float(agrees.mean()), 4),
            **{
                f"share_at_{int(target * 100)}pct_{metric}": round(best_share(values, agrees, target), 4)
                for target in (0.99, 0.95)
                for metric, values in (
                    ("prob", top2[:, 0].numpy()),
                    ("margin", (top2[:, 0] - top2[:, 1]).numpy()),
                )
            },
        }
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+")
    parser.add_argument("--text", default=os.path.join(ROOT, "models", "tandem-demo", "heldout.txt"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    text = open(args.text, encoding="utf-8").read()
    print(json.dumps([evaluate(m, text) for m in args.models], indent=2))


if __name__ == "__main__":
    main()
