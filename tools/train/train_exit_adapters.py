"""Trains exit adapters on a trained model whose own weights stay frozen.

    /usr/bin/python3 tools/train/train_exit_adapters.py --model models/tandem-demo --steps 600

With --attend K, exit K's adapter attends too: a whole decoder layer on the exit's path,
started as a copy of the model's layer K (the next one) and trained like the others
(model.ExitAdapter.from_layer; the runtime keeps its keys and values at the edge).

Each exit gets a small block of its own (model.ExitAdapter: x + SwiGLU(RMSNorm(x))) between
its hidden state and the shared final norm and LM head. Only the adapters learn, by
self-distillation towards the final layer's distribution (KL(final ‖ exit), CALM / "Jump to
Conclusions") plus the next-token loss. The model's weights do not move, so its final
layer's output, and its perplexity, are exactly what they were: the exits stop competing
with the final layer for the layers they share (tools/train/README.md, issue 14's runs).

Writes exit-adapters.safetensors (F16) into --out (default: the model's directory) and
names it in tandem.json (`exit_adapters`), with the run's figures in
exit-adapters-stats.json. The training text is the model's corpus split encoded with the
model's own tokenizer.json.
"""
import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bpe  # noqa: E402
import make_corpus  # noqa: E402
from exit_share import load  # noqa: E402
from model import ExitAdapter  # noqa: E402
from safetensors_io import read_safetensors, write_safetensors  # noqa: E402
from train import distillation_loss, ensure_corpus, log  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ADAPTERS_FILE = "exit-adapters.safetensors"


def encoded_split(model_dir, corpus, split):
    """The corpus split as token ids of the model's own tokenizer (cached per tokenizer)."""
    tokenizer_path = os.path.join(model_dir, "tokenizer.json")
    digest = hashlib.sha256(open(tokenizer_path, "rb").read()).hexdigest()[:16]
    directory = ensure_corpus(corpus)
    cache = os.path.join(directory, f"{split}-tokenizer-{digest}.npy")
    if os.path.exists(cache):
        return np.load(cache)
    model = json.load(open(tokenizer_path, encoding="utf-8"))["model"]
    encoder = bpe.Encoder(model["vocab"], [tuple(m.split(" ")) for m in model["merges"]])
    eot = model["vocab"][bpe.END_OF_TEXT]
    text = open(os.path.join(directory, f"{split}.txt"), encoding="utf-8").read()
    log(f"encoding {corpus} {split} ({len(text)} characters)")
    ids = []
    for document in text.split(make_corpus.DOCUMENT_SEPARATOR):
        if document.strip():
            ids += encoder.encode(document) + [eot]
    array = np.array(ids, dtype=np.int32)
    np.save(cache, array)
    return array


def shipped_adapters(model_dir):
    """The tensors of the exit adapters the model's directory has, or None without any."""
    tandem = json.load(open(os.path.join(model_dir, "tandem.json")))
    if "exit_adapters" not in tandem:
        return None
    return read_safetensors(os.path.join(model_dir, tandem["exit_adapters"]))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="a trained model's directory (config.json, model.safetensors, tandem.json)")
    parser.add_argument("--out", help="write the model here (a copy with the adapters) instead of into --model")
    parser.add_argument("--corpus", default="python-docs")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--intermediate", type=int, default=0, help="the adapters' SwiGLU width (default: the model's intermediate_size)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--only", type=int, nargs="*", default=[], help="train only these exits' adapters; the others keep the ones the model's directory has")
    parser.add_argument("--attend", type=int, nargs="*", default=[], help="exits whose adapter attends (a copy of the next layer to start)")
    parser.add_argument("--attend-lr", type=float, default=1e-3, help="learning rate of the attending adapters (they start trained)")
    parser.add_argument("--resume", action="store_true", help="start the trained exits' adapters from the ones the model's directory has (same kind) rather than afresh")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--ce-weight", type=float, default=0.2, help="weight of the next-token loss beside the KL")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)

    model_dir = os.path.abspath(args.model)
    # Without any adapters the directory already has: building them would draw from the
    # seeded generator, and a rerun in place would start its adapters elsewhere.
    model, config, exits, _ = load(model_dir, exit_adapters=False)
    for p in model.parameters():
        p.requires_grad_(False)
    hidden, final_layer = config["hidden_size"], config["num_hidden_layers"]
    width = args.intermediate or config["intermediate_size"]
    for option, layers in (("--only", args.only), ("--attend", args.attend)):
        unknown = [k for k in layers if k not in exits]
        if unknown:
            parser.error(f"{option} {unknown}: not among the model's exits {exits}")
    trained = args.only or exits
    existing = shipped_adapters(model_dir) if args.only or args.resume else None
    for option, wanted in (("--only", args.only), ("--resume", args.resume)):
        if wanted and existing is None:
            parser.error(f"{option} needs the model's exit adapters, but it has none")
    # The adapters of the exits not trained, as the directory has them (--only).
    kept = {n: v for n, v in existing.items() if int(n.split(".")[1]) not in trained} if args.only else {}
    adapters = {
        k: ExitAdapter.from_layer(model.layers[k], config, width) if k in args.attend else ExitAdapter(hidden, width, config["rms_norm_eps"])
        for k in trained
    }
    if args.resume:
        # More steps on the shipped adapters (with another --seed, other batches): each
        # trained exit must already have an adapter of the kind asked for.
        for k, adapter in adapters.items():
            wanted = adapter.tensors(k)
            shipped = {n for n in existing if n.startswith(f"exit_adapters.{k}.")}
            if shipped != set(wanted) or any(existing[n].shape != v.shape for n, v in wanted.items()):
                parser.error(f"--resume: the exit after {k} has no adapter of this kind (--attend and --intermediate must match)")
            with torch.no_grad():
                for name, value in wanted.items():
                    value.copy_(existing[name])
    for adapter in adapters.values():
        for p in adapter.parameters():
            p.requires_grad_(True)
    params = [p for a in adapters.values() for p in a.parameters()]
    log(f"exits {exits} (attending: {args.attend}): adapters of width {width}, {sum(p.numel() for p in params)} parameters")

    train_ids = encoded_split(model_dir, args.corpus, "train")
    valid_ids = encoded_split(model_dir, args.corpus, "valid")
    log(f"tokens: train {len(train_ids)}, valid {len(valid_ids)}")
    groups = [
        {"params": [p for k, a in adapters.items() for p in a.parameters() if (k in args.attend) == attends], "base_lr": lr}
        for attends, lr in ((False, args.lr), (True, args.attend_lr))
    ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    rng = np.random.default_rng(args.seed)
    seq, batch = args.seq, args.batch
    start = time.time()
    for step in range(args.steps):
        scale = min(1.0, (step + 1) / args.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * scale
        offsets = rng.integers(0, len(train_ids) - seq - 1, size=batch)
        x = torch.from_numpy(np.stack([train_ids[o:o + seq] for o in offsets]).astype(np.int64))
        y = torch.from_numpy(np.stack([train_ids[o + 1:o + seq + 1] for o in offsets]).astype(np.int64)).reshape(-1)
        with torch.no_grad():
            teacher = model(x, exits)[final_layer].reshape(-1, config["vocab_size"])
            states = {k: model.exit_states[k] for k in trained}
        loss, parts = 0.0, {}
        for k in trained:
            # A plain adapter works row by row (flattened as it always was); one that attends
            # needs the sequence.
            if k in args.attend:
                adapted = adapters[k](states[k], model.cos[:seq], model.sin[:seq])
            else:
                adapted = adapters[k](states[k].reshape(-1, hidden))
            student = model.lm_head(model.norm(adapted)).reshape(-1, config["vocab_size"])
            kl = distillation_loss(student, teacher, args.temperature)
            ce = F.cross_entropy(student, y)
            loss = loss + kl + args.ce_weight * ce
            parts[k] = (kl.item(), ce.item())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if (step + 1) % 50 == 0 or step == 0:
            detail = " ".join(f"exit{k} kl {kl:.3f} ce {ce:.3f}" for k, (kl, ce) in parts.items())
            rates = " / ".join(f"{group['lr']:.2e}" for group in optimizer.param_groups)
            log(f"step {step + 1}/{args.steps} {detail} lr {rates} {(time.time() - start) / (step + 1):.2f} s/step")
    wall = time.time() - start

    out_dir = os.path.abspath(args.out) if args.out else model_dir
    if out_dir != model_dir:
        shutil.copytree(model_dir, out_dir, dirs_exist_ok=True)
    tensors = dict(kept)
    for k, adapter in adapters.items():
        tensors.update({name: value.detach() for name, value in adapter.tensors(k).items()})
    write_safetensors(os.path.join(out_dir, ADAPTERS_FILE), tensors, "F16")
    tandem_path = os.path.join(out_dir, "tandem.json")
    tandem = json.load(open(tandem_path))
    tandem["exit_adapters"] = ADAPTERS_FILE
    json.dump(tandem, open(tandem_path, "w"), indent=2)
    stats = {
        "exits": exits,
        "intermediate_size": width,
        "parameters": sum(v.numel() for v in tensors.values()),
        "parameters_trained": sum(p.numel() for p in params),
        "steps": args.steps,
        "batch_size": batch,
        "sequence_length": seq,
        "learning_rate": args.lr,
        "trained": trained,
        "attending": args.attend,
        "attending_learning_rate": args.attend_lr,
        "ce_weight": args.ce_weight,
        "temperature": args.temperature,
        "seed": args.seed,
        "resumed": args.resume,
        "corpus": args.corpus,
        "wall_minutes": round(wall / 60, 1),
        "command": " ".join(["tools/train/train_exit_adapters.py"] + sys.argv[1:]),
    }
    json.dump(stats, open(os.path.join(out_dir, "exit-adapters-stats.json"), "w"), indent=2)
    # The exits' argmax in reference-logits.json now comes through the adapters, as saved (F16).
    reference_path = os.path.join(out_dir, "reference-logits.json")
    if os.path.exists(reference_path):
        reference = json.load(open(reference_path))
        model.add_exit_adapters(read_safetensors(os.path.join(out_dir, ADAPTERS_FILE)))
        with torch.no_grad():
            outputs = model(torch.tensor([reference["ids"]]), exits)
        reference["exit_argmax"] = {str(k): outputs[k][0].argmax(-1).tolist() for k in exits}
        json.dump(reference, open(reference_path, "w"))
    log(f"trained {args.steps} steps in {wall / 60:.1f} min; wrote {os.path.join(out_dir, ADAPTERS_FILE)}")


if __name__ == "__main__":
    main()
