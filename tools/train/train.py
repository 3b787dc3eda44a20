"""Trains a Tandem demo model and writes it in Hugging Face layout.

    /usr/bin/python3 tools/train/train.py --config tools/train/configs/tandem-demo.json

Steps: build the corpus if missing (make_corpus.py; the config's `corpus`, default
python-docs), train or reuse the byte-level BPE tokenizer (.cache/corpus/tokenizer-4096.json;
the config's `tokenizer_corpus` names another corpus's), train the model with auxiliary losses at the
early-exit layers (LayerSkip / EE-LLM style), optionally self-distillation of each exit
towards the final layer's distribution (CALM / "Jump to Conclusions": the config's
`distill_weight`, KL(final ‖ exit) at `distill_temperature`, the final layer's side
detached), plus Mixtral's load-balancing loss, then
write config.json, model.safetensors (F16), tokenizer.json, tandem.json, the model card
and reference logits under the config's output directory.
"""
import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bpe  # noqa: E402
import make_corpus  # noqa: E402
import model_card  # noqa: E402
from model import CausalLM  # noqa: E402
from safetensors_io import read_safetensors, write_safetensors  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CORPUS = os.path.join(ROOT, ".cache", "corpus")


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def corpus_dir(name):
    """python-docs, the shipped models' corpus, keeps its old place: .cache/corpus."""
    return CORPUS if name == "python-docs" else f"{CORPUS}-{name}"


def ensure_corpus(name):
    directory = corpus_dir(name)
    if not os.path.exists(os.path.join(directory, "train.txt")):
        script = os.path.join(os.path.dirname(__file__), "make_corpus.py")
        subprocess.run([sys.executable, script, "--corpus", name, "--out", directory], check=True)
    return directory


def load_tokens(vocab_size, corpus="python-docs", tokenizer_corpus=None):
    """Token arrays of a corpus's splits, with the BPE tokenizer trained on
    `tokenizer_corpus` (default: the same corpus). docs-v2 keeps python-docs' tokenizer,
    so its models' perplexities compare with the shipped ones' on the same held-out text."""
    directory = ensure_corpus(corpus)
    tokenizer_dir = ensure_corpus(tokenizer_corpus or corpus)
    tokenizer_path = os.path.join(tokenizer_dir, f"tokenizer-{vocab_size}.json")
    train_text = open(os.path.join(directory, "train.txt"), encoding="utf-8").read()
    valid_text = open(os.path.join(directory, "valid.txt"), encoding="utf-8").read()
    if os.path.exists(tokenizer_path):
        model = json.load(open(tokenizer_path, encoding="utf-8"))["model"]
        vocab, merges = model["vocab"], [tuple(m.split(" ")) for m in model["merges"]]
    else:
        log(f"training BPE tokenizer, vocab {vocab_size}")
        tokenizer_text = open(os.path.join(tokenizer_dir, "train.txt"), encoding="utf-8").read()
        vocab, merges = bpe.train(tokenizer_text, vocab_size)
        bpe.save(tokenizer_path, vocab, merges)
    encoder = bpe.Encoder(vocab, merges)
    eot = vocab[bpe.END_OF_TEXT]
    arrays = {}
    for split, text in (("train", train_text), ("valid", valid_text)):
        cache = os.path.join(directory, f"{split}-{vocab_size}.npy")
        if os.path.exists(cache):
            arrays[split] = np.load(cache)
            continue
        if corpus == "python-docs":
            # The whole split as one text (documents are separated by a blank line only, so
            # the model is not trained to emit <|endoftext|>), with one <|endoftext|> at the end.
            ids = encoder.encode(text) + [eot]
        else:
            # Each document followed by <|endoftext|>: the model learns where a text ends.
            ids = []
            for document in text.split(make_corpus.DOCUMENT_SEPARATOR):
                if document.strip():
                    ids += encoder.encode(document) + [eot]
        arrays[split] = np.array(ids, dtype=np.int32)
        np.save(cache, arrays[split])
    return tokenizer_path, arrays["train"], arrays["valid"], eot


def corpus_stats(spec):
    """The corpus and its sources, for training-stats.json and the model card (python-docs,
    the shipped models' corpus, is left out: their files are frozen and their cards say it)."""
    name = spec.get("corpus", "python-docs")
    if name == "python-docs":
        return {}
    sources = [{"name": s[0], "package": s[1], "licence": s[4]} for s in make_corpus.CORPORA[name]["sources"]]
    return {"corpus": {"name": name, "tokenizer_corpus": spec.get("tokenizer_corpus", name), "sources": sources}}


def training_state_path(config_path, spec, total_steps, out_dir):
    """Where a run's training state lives: per config content, step count and output, so a
    changed config or another --steps never resumes from the wrong run."""
    key = hashlib.sha256(json.dumps([spec, total_steps, out_dir], sort_keys=True).encode()).hexdigest()[:16]
    name = os.path.splitext(os.path.basename(config_path))[0]
    return os.path.join(ROOT, ".cache", "train-state", f"{name}-{total_steps}-{key}.pt")


def save_training_state(path, model, optimizer, rng, step):
    """Everything the next step depends on, written whole or not at all."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    state = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "numpy_rng": rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(),
    }
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)


def load_training_state(path, model, optimizer, rng):
    state = torch.load(path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    rng.bit_generator.state = state["numpy_rng"]
    torch.set_rng_state(state["torch_rng"])
    return state["step"]


def evaluate(model, valid, seq, exits, batch=32):
    model.eval()
    windows = (len(valid) - 1) // seq
    totals = {k: 0.0 for k in list(exits) + [model.config["num_hidden_layers"]]}
    moe = [layer.block_sparse_moe for layer in model.layers if hasattr(layer, "block_sparse_moe")]
    expert_counts = [torch.zeros(m.num_experts, dtype=torch.long) for m in moe]
    count = 0
    with torch.no_grad():
        for start in range(0, windows, batch):
            idx = range(start, min(start + batch, windows))
            x = torch.stack([torch.from_numpy(valid[i * seq:(i + 1) * seq].astype(np.int64)) for i in idx])
            y = torch.stack([torch.from_numpy(valid[i * seq + 1:(i + 1) * seq + 1].astype(np.int64)) for i in idx])
            outputs = model(x, exits)
            for counts, m in zip(expert_counts, moe):
                counts += m.last_counts
            for k, logits in outputs.items():
                totals[k] += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
            count += y.numel()
    model.train()
    # Share of the top-k assignments each expert received, per layer (Mixtral only).
    load = [[round(int(c) / int(counts.sum()), 4) for c in counts] for counts in expert_counts]
    return {k: {"loss": v / count, "perplexity": math.exp(v / count)} for k, v in totals.items()}, count, load


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--minutes", type=float, help="override the config's wall-clock budget")
    parser.add_argument("--steps", type=int, help="train exactly this many steps (no wall-clock sizing)")
    parser.add_argument("--sized-at", type=int, default=0, help=(
        "with --steps: the cosine horizon is the config's max_steps before this step and --steps from it on; "
        "reproduces runs sized by the earlier in-run wall-clock logic (the shipped tandem-demo-moe: --steps 401 --sized-at 20)"))
    parser.add_argument("--out", help="write the model here instead of the config's output directory")
    parser.add_argument("--state-every", type=int, default=50, help=(
        "with --steps: save the training state (weights, optimizer, random generators, step) every this "
        "many steps, so a run stopped by the end of a session goes on with --resume"))
    parser.add_argument("--resume", action="store_true", help=(
        "go on from the saved training state of this config and step count (same weights as an unbroken run)"))
    parser.add_argument("--stop-after", type=int, help="save the state and stop after this many steps (tests --resume)")
    args = parser.parse_args()
    spec = json.load(open(args.config))
    torch.manual_seed(spec["seed"])
    torch.set_num_threads(1)
    model_config = spec["model"]
    exits = spec["exit_layers"]
    out_dir = os.path.abspath(args.out) if args.out else os.path.join(ROOT, spec["output"])
    if args.sized_at and not args.steps:
        parser.error("--sized-at needs --steps")

    tokenizer_path, train_ids, valid_ids, eot = load_tokens(
        model_config["vocab_size"], spec.get("corpus", "python-docs"), spec.get("tokenizer_corpus"))
    log(f"tokens: train {len(train_ids)}, valid {len(valid_ids)}")
    model_config = dict(model_config, bos_token_id=eot, eos_token_id=eot)
    model = CausalLM(model_config)
    params = sum(p.numel() for p in model.parameters())
    log(f"parameters: {params}")

    seq, batch = spec["sequence_length"], spec["batch_size"]
    budget = (args.minutes or spec["minutes"]) * 60
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec["learning_rate"], betas=(0.9, 0.95), weight_decay=0.1)
    rng = np.random.default_rng(spec["seed"])
    warmup = spec["warmup_steps"]
    total_steps = args.steps or spec["max_steps"]
    exit_weight = spec["exit_loss_weight"]
    balance_weight = spec.get("balance_loss_weight", 0.0)
    # 0 (the shipped demo models' training): next-token losses alone.
    distill_weight = spec.get("distill_weight", 0.0)
    distill_temperature = spec.get("distill_temperature", 1.0)
    # The share of a batch's positions the distillation loss reads (sampled each step):
    # KL over the whole vocabulary at every position made a step ~3× slower here.
    distill_share = spec.get("distill_positions", 1.0)
    # true (the distilled A/B's run): the KL's gradient reaches the norm and LM head that the
    # exits share with the final layer; false: it stops at the exit's hidden state.
    distill_through_head = spec.get("distill_through_head", True)
    if not args.steps:
        # Size the run to the wall-clock budget from the step time measured on a throwaway
        # copy, so the real run is exactly the one `--steps <printed count>` reproduces.
        per_step = time_steps(model, spec, train_ids, exits, balance_weight=spec.get("balance_loss_weight", 0.0))
        total_steps = min(total_steps, max(40, int(budget / per_step)))
        log(f"{per_step:.2f} s/step -> {total_steps} steps (reproduce with --steps {total_steps})")
    state_path = training_state_path(args.config, spec, total_steps, out_dir)
    start = time.time()
    step = 0
    if args.resume:
        if not os.path.exists(state_path):
            raise SystemExit(f"no training state to resume at {state_path}")
        step = load_training_state(state_path, model, optimizer, rng)
        log(f"resumed at step {step}/{total_steps} from {state_path}")
    first_step = step
    while step < total_steps:
        horizon = spec["max_steps"] if step < args.sized_at else total_steps
        lr_scale = min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, horizon)))))
        for group in optimizer.param_groups:
            group["lr"] = spec["learning_rate"] * lr_scale
        offsets = rng.integers(0, len(train_ids) - seq - 1, size=batch)
        x = torch.from_numpy(np.stack([train_ids[o:o + seq] for o in offsets]).astype(np.int64))
        y = torch.from_numpy(np.stack([train_ids[o + 1:o + seq + 1] for o in offsets]).astype(np.int64))
        outputs = model(x, exits)
        losses = {k: F.cross_entropy(v.reshape(-1, v.shape[-1]), y.reshape(-1)) for k, v in outputs.items()}
        final = losses[model_config["num_hidden_layers"]]
        loss = final + sum(exit_weight * losses[k] for k in exits) + balance_weight * model.balance_loss()
        if distill_weight:
            vocab = model_config["vocab_size"]
            rows = torch.from_numpy(rng.choice(batch * seq, size=max(1, int(distill_share * batch * seq)), replace=False))
            teacher = outputs[model_config["num_hidden_layers"]].detach().reshape(-1, vocab)[rows]
            for k in exits:
                if distill_through_head:
                    student = outputs[k].reshape(-1, vocab)[rows]
                else:
                    # The exit's logits through a frozen copy of the shared norm and head: the
                    # KL moves only the layers below the exit, not what the final layer reads out with.
                    hidden = model.exit_states[k].reshape(-1, model_config["hidden_size"])[rows]
                    normed = hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + model.norm.eps) * model.norm.weight.detach()
                    student = F.linear(normed, model.lm_head.weight.detach())
                loss = loss + distill_weight * distillation_loss(student, teacher, distill_temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        if args.steps and (step % args.state_every == 0 or step == args.stop_after) and step < total_steps:
            save_training_state(state_path, model, optimizer, rng, step)
        if args.stop_after and step == args.stop_after and step < total_steps:
            log(f"stopped after step {step}; go on with --resume")
            return
        if step % 50 == 0 or step == 1:
            parts = " ".join(f"L{k}={v.item():.3f}" for k, v in sorted(losses.items()))
            rate = (step - first_step) * batch * seq / (time.time() - start)
            log(f"step {step}/{total_steps} loss {loss.item():.3f} {parts} lr {spec['learning_rate'] * lr_scale:.2e} {rate:.0f} tokens/s")
    wall = time.time() - start
    if os.path.exists(state_path):
        os.remove(state_path)  # the run is whole: its weights are written below
    log(f"trained {step} steps in {wall / 60:.1f} min" + (f" (this process: from step {first_step})" if first_step else ""))

    metrics, eval_tokens, expert_load = evaluate(model, valid_ids, seq, exits)
    for k, m in sorted(metrics.items()):
        log(f"validation after {k} layers: loss {m['loss']:.4f} perplexity {m['perplexity']:.2f}")
    for i, shares in enumerate(expert_load):
        log(f"layer {i} expert load on validation: {' '.join(f'{s:.3f}' for s in shares)}")

    os.makedirs(out_dir, exist_ok=True)
    tensors = model.hf_state_dict()
    write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors, "F16")
    hf_config = {
        "architectures": ["MixtralForCausalLM" if model_config["model_type"] == "mixtral" else "LlamaForCausalLM"],
        **{k: v for k, v in model_config.items()},
        "hidden_act": "silu",
        "torch_dtype": "float16",
        "attention_bias": False,
    }
    json.dump(hf_config, open(os.path.join(out_dir, "config.json"), "w"), indent=2)
    json.dump({"bos_token_id": eot, "eos_token_id": eot}, open(os.path.join(out_dir, "generation_config.json"), "w"), indent=2)
    with open(tokenizer_path, encoding="utf-8") as src, open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as dst:
        dst.write(src.read())
    json.dump({"exit_layers": exits, "recommended_split": spec["recommended_split"]}, open(os.path.join(out_dir, "tandem.json"), "w"), indent=2)

    write_reference_logits(out_dir, model_config, valid_ids, exits)
    stats = {
        "parameters": params,
        "active_parameters": active_parameters(model_config, params),
        "steps": step,
        "batch_size": batch,
        "sequence_length": seq,
        "tokens_seen": step * batch * seq,
        "wall_minutes": round(wall / 60, 1),
        "tokens_per_second": round((step - first_step) * batch * seq / wall),
        **({"resumed_at_step": first_step} if first_step else {}),
        **corpus_stats(spec),
        "train_tokens": int(len(train_ids)),
        "valid_tokens": int(len(valid_ids)),
        "eval_tokens": eval_tokens,
        "validation": {str(k): {"loss": round(m["loss"], 4), "perplexity": round(m["perplexity"], 2)} for k, m in sorted(metrics.items())},
        "config": os.path.relpath(os.path.abspath(args.config), ROOT),
    }
    if expert_load:
        stats["expert_load"] = expert_load
    if args.sized_at:
        stats["sized_at"] = args.sized_at
    json.dump(stats, open(os.path.join(out_dir, "training-stats.json"), "w"), indent=2)
    model_card.main(out_dir)
    log(f"wrote {out_dir}")


def distillation_loss(student, teacher, temperature):
    """KL(teacher ‖ student) per token at `temperature`, scaled by its square (Hinton et al.)."""
    t = temperature
    vocab = student.shape[-1]
    return F.kl_div(
        F.log_softmax(student.reshape(-1, vocab) / t, dim=-1),
        F.log_softmax(teacher.reshape(-1, vocab) / t, dim=-1),
        log_target=True,
        reduction="batchmean",
    ) * t * t


def time_steps(model, spec, train_ids, exits, balance_weight, steps=8):
    """Seconds per training step, measured on a copy (the real model, optimizer and data order stay untouched)."""
    import copy
    clone = copy.deepcopy(model)
    optimizer = torch.optim.AdamW(clone.parameters(), lr=1e-4)
    rng = np.random.default_rng(0)
    seq, batch = spec["sequence_length"], spec["batch_size"]
    times = []
    for _ in range(steps):
        begin = time.time()
        offsets = rng.integers(0, len(train_ids) - seq - 1, size=batch)
        x = torch.from_numpy(np.stack([train_ids[o:o + seq] for o in offsets]).astype(np.int64))
        y = torch.from_numpy(np.stack([train_ids[o + 1:o + seq + 1] for o in offsets]).astype(np.int64))
        outputs = clone(x, exits)
        loss = sum(F.cross_entropy(v.reshape(-1, v.shape[-1]), y.reshape(-1)) for v in outputs.values()) + balance_weight * clone.balance_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.time() - begin)
    return float(np.median(times[1:]))


def active_parameters(c, total):
    if c["model_type"] != "mixtral":
        return total
    expert = 3 * c["hidden_size"] * c["intermediate_size"]
    return total - c["num_hidden_layers"] * (c["num_local_experts"] - c["num_experts_per_tok"]) * expert


def write_reference_logits(out_dir, config, valid_ids, exits):
    """Logits of the saved (F16-rounded) weights in fp32, for cross-checking the TypeScript engine."""
    model = CausalLM(config)
    tensors = read_safetensors(os.path.join(out_dir, "model.safetensors"))
    own = model.hf_state_dict()
    with torch.no_grad():
        for name, value in own.items():
            value.copy_(tensors[name])
        if config["tie_word_embeddings"]:
            model.lm_head.weight = model.embed_tokens.weight
        ids = [int(i) for i in valid_ids[1000:1016]]
        outputs = model(torch.tensor([ids]), exits)
    final = outputs[config["num_hidden_layers"]][0]
    json.dump({
        "ids": ids,
        "argmax": final.argmax(-1).tolist(),
        "last_logits": [round(v, 6) for v in final[-1].tolist()],
        "exit_argmax": {str(k): outputs[k][0].argmax(-1).tolist() for k in exits},
    }, open(os.path.join(out_dir, "reference-logits.json"), "w"))


if __name__ == "__main__":
    main()
