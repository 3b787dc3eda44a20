"""Checks an exported checkpoint independently of the training code.

    /usr/bin/python3 tools/train/check_checkpoint.py models/tandem-demo [models/tandem-demo-moe ...]

A separate safetensors reader and a plain numpy forward written from Hugging Face
transformers' Llama / Mixtral semantics (nothing imported from model.py or
safetensors_io.py for this part) recompute the logits of the saved F16 weights in
float32 and compare them with
  1. `reference-logits.json` (what PyTorch's training model computed at export), and
  2. the training model (tools/train/model.py) loaded with the same weights, on a
     128-token window of held-out text, at the exits and at the last layer;
and they check the file itself: names, shapes and dtypes against config.json, no stray
or missing tensors, offsets contiguous. Exits with status 1 on any failure.
"""
import json
import math
import os
import struct
import sys

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NP_DTYPES = {"F16": np.float16, "F32": np.float32}


# --- safetensors, read byte by byte from the spec ------------------------------------------
def read_safetensors(path):
    raw = open(path, "rb").read()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length].decode("utf-8"))
    header.pop("__metadata__", None)
    data = raw[8 + length:]
    tensors, spans = {}, []
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        dtype = entry["dtype"]
        if dtype == "BF16":
            bits = np.frombuffer(data[begin:end], dtype="<u2").astype(np.uint32) << 16
            array = bits.view(np.float32)
        else:
            array = np.frombuffer(data[begin:end], dtype=np.dtype(NP_DTYPES[dtype]).newbyteorder("<"))
        if array.size != math.prod(entry["shape"]):
            raise ValueError(f"{name}: {array.size} values for shape {entry['shape']}")
        tensors[name] = (dtype, array.reshape(entry["shape"]).astype(np.float32))
        spans.append((begin, end, name))
    spans.sort()
    position = 0
    for begin, end, name in spans:
        if begin != position:
            raise ValueError(f"{name}: data starts at {begin}, expected {position} (gap or overlap)")
        position = end
    if position != len(data):
        raise ValueError(f"data section has {len(data)} bytes, tensors cover {position}")
    return tensors


def expected_shapes(c):
    h, heads, kv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    d = c.get("head_dim") or h // heads
    shapes = {"model.embed_tokens.weight": [c["vocab_size"], h], "model.norm.weight": [h]}
    if not c["tie_word_embeddings"]:
        shapes["lm_head.weight"] = [c["vocab_size"], h]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}"
        shapes.update({
            f"{p}.input_layernorm.weight": [h], f"{p}.post_attention_layernorm.weight": [h],
            f"{p}.self_attn.q_proj.weight": [heads * d, h], f"{p}.self_attn.k_proj.weight": [kv * d, h],
            f"{p}.self_attn.v_proj.weight": [kv * d, h], f"{p}.self_attn.o_proj.weight": [h, heads * d],
        })
        inter = c["intermediate_size"]
        if c["model_type"] == "mixtral":
            shapes[f"{p}.block_sparse_moe.gate.weight"] = [c["num_local_experts"], h]
            for e in range(c["num_local_experts"]):
                q = f"{p}.block_sparse_moe.experts.{e}"
                shapes.update({f"{q}.w1.weight": [inter, h], f"{q}.w3.weight": [inter, h], f"{q}.w2.weight": [h, inter]})
        else:
            shapes.update({f"{p}.mlp.gate_proj.weight": [inter, h], f"{p}.mlp.up_proj.weight": [inter, h], f"{p}.mlp.down_proj.weight": [h, inter]})
    return shapes


# --- the forward, from transformers' modeling_llama.py / modeling_mixtral.py --------------
def rms_norm(x, weight, eps):
    variance = np.mean(x * x, axis=-1, keepdims=True)
    return weight * (x / np.sqrt(variance + eps))


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def silu(x):
    return x / (1.0 + np.exp(-x))


def softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def forward(c, w, ids, exit_layers=(), dtype=np.float32):
    """Logits [T, vocab] after each exit layer and after the last layer: {layers_run: logits}.
    An exit with an adapter in `w` (exit_adapters.K.*, from exit-adapters.safetensors) runs
    it first: h + down(silu(gate(n)) * up(n)), n = RMSNorm(h), after its attention half
    where it attends."""
    W = lambda name: w[name].astype(dtype)  # noqa: E731
    T = len(ids)
    h, heads, kv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    d = c.get("head_dim") or h // heads
    eps = dtype(c["rms_norm_eps"])
    inv_freq = 1.0 / (c["rope_theta"] ** (np.arange(0, d, 2, dtype=np.int64).astype(np.float32) / d))
    freqs = np.outer(np.arange(T, dtype=np.float32), inv_freq)
    emb = np.concatenate([freqs, freqs], axis=-1)
    cos, sin = np.cos(emb).astype(dtype), np.sin(emb).astype(dtype)  # [T, d]
    causal = np.triu(np.ones((T, T), dtype=bool), 1)
    head_w = W("model.embed_tokens.weight") if c["tie_word_embeddings"] else W("lm_head.weight")

    def head(x):
        return rms_norm(x, W("model.norm.weight"), eps) @ head_w.T

    def attention_half(x, p):
        """x + o_proj(attention(input_layernorm(x))) of the block whose tensors start with p."""
        a = rms_norm(x, W(f"{p}.input_layernorm.weight"), eps)
        q = (a @ W(f"{p}.self_attn.q_proj.weight").T).reshape(T, heads, d).transpose(1, 0, 2)
        k = (a @ W(f"{p}.self_attn.k_proj.weight").T).reshape(T, kv, d).transpose(1, 0, 2)
        v = (a @ W(f"{p}.self_attn.v_proj.weight").T).reshape(T, kv, d).transpose(1, 0, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        attn = np.empty((heads, T, d), dtype=dtype)
        for j in range(heads):
            g = j // (heads // kv)  # repeat_kv: query head j reads KV head j // n_rep
            scores = (q[j] @ k[g].T) / np.sqrt(dtype(d))
            scores[causal] = -np.inf
            attn[j] = softmax(scores) @ v[g]
        return x + attn.transpose(1, 0, 2).reshape(T, heads * d) @ W(f"{p}.self_attn.o_proj.weight").T

    x = W("model.embed_tokens.weight")[np.asarray(ids)]
    outputs = {}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}"
        x = attention_half(x, p)
        m = rms_norm(x, W(f"{p}.post_attention_layernorm.weight"), eps)
        if c["model_type"] == "mixtral":
            probs = softmax(m @ W(f"{p}.block_sparse_moe.gate.weight").T)  # over all experts
            top = np.argsort(-probs, axis=-1, kind="stable")[:, : c["num_experts_per_tok"]]
            chosen = np.take_along_axis(probs, top, axis=-1)
            chosen = chosen / chosen.sum(-1, keepdims=True)  # renormalised top-k
            ffn = np.zeros_like(m)
            for t in range(T):
                for slot in range(top.shape[1]):
                    e = f"{p}.block_sparse_moe.experts.{top[t, slot]}"
                    y = (silu(m[t] @ W(f"{e}.w1.weight").T) * (m[t] @ W(f"{e}.w3.weight").T)) @ W(f"{e}.w2.weight").T
                    ffn[t] += chosen[t, slot] * y
        else:
            ffn = (silu(m @ W(f"{p}.mlp.gate_proj.weight").T) * (m @ W(f"{p}.mlp.up_proj.weight").T)) @ W(f"{p}.mlp.down_proj.weight").T
        x = x + ffn
        if i + 1 in exit_layers:
            a = f"exit_adapters.{i + 1}"
            if f"{a}.norm.weight" in w:
                # An adapter that attends runs its attention half first.
                y = attention_half(x, a) if f"{a}.self_attn.q_proj.weight" in w else x
                n = rms_norm(y, W(f"{a}.norm.weight"), eps)
                outputs[i + 1] = head(y + (silu(n @ W(f"{a}.mlp.gate_proj.weight").T) * (n @ W(f"{a}.mlp.up_proj.weight").T)) @ W(f"{a}.mlp.down_proj.weight").T)
            else:
                outputs[i + 1] = head(x)
    outputs[c["num_hidden_layers"]] = head(x)
    return outputs


def cross_entropy(logits, targets):
    logits = logits.astype(np.float64)
    lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    return float(np.mean(lse - logits[np.arange(len(targets)), targets]))


def check(model_dir):
    failures = []

    def expect(ok, message):
        print(("  ok   " if ok else "  FAIL ") + message)
        if not ok:
            failures.append(message)

    print(model_dir)
    c = json.load(open(os.path.join(model_dir, "config.json")))
    deployment = json.load(open(os.path.join(model_dir, "tandem.json")))
    exits = deployment["exit_layers"]
    tensors = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    shapes = expected_shapes(c)
    expect(set(tensors) == set(shapes), f"tensor names are exactly the {len(shapes)} Hugging Face names for {c['model_type']}"
           + (f" (missing {sorted(set(shapes) - set(tensors))[:3]}, extra {sorted(set(tensors) - set(shapes))[:3]})" if set(tensors) != set(shapes) else ""))
    bad = [n for n in shapes if n in tensors and list(tensors[n][1].shape) != shapes[n]]
    expect(not bad, f"shapes match config.json{f' (wrong: {bad[:3]})' if bad else ''}")
    dtypes = {dt for dt, _ in tensors.values()}
    expect(dtypes <= {"F16", "BF16"} and c["torch_dtype"] in ("float16", "bfloat16"), f"weights stored as {sorted(dtypes)}, torch_dtype {c['torch_dtype']}")
    expect(all(np.isfinite(a).all() for _, a in tensors.values()), "all weights finite")
    expect(all(1 <= k < c["num_hidden_layers"] for k in exits) and 1 <= deployment["recommended_split"] < c["num_hidden_layers"], f"tandem.json exits {exits}, split {deployment['recommended_split']} inside 1..{c['num_hidden_layers'] - 1}")
    weights = {n: a for n, (_, a) in tensors.items()}
    adapters = {}
    if "exit_adapters" in deployment:
        adapters = read_safetensors(os.path.join(model_dir, deployment["exit_adapters"]))
        h = c["hidden_size"]
        layers = sorted({int(n.split(".")[1]) for n in adapters})
        expect(all(1 <= k < c["num_hidden_layers"] for k in layers), f"{deployment['exit_adapters']}: adapters after {layers}, each an exit's layer (1..{c['num_hidden_layers'] - 1})")
        widths = {k: adapters[f"exit_adapters.{k}.mlp.gate_proj.weight"][1].shape[0] for k in layers}
        attending = [k for k in layers if f"exit_adapters.{k}.self_attn.q_proj.weight" in adapters]
        d = c.get("head_dim") or h // c["num_attention_heads"]
        q_dim, kv_dim = c["num_attention_heads"] * d, c["num_key_value_heads"] * d
        want = {}
        for k in layers:
            want.update({f"exit_adapters.{k}.norm.weight": [h], f"exit_adapters.{k}.mlp.gate_proj.weight": [widths[k], h],
                         f"exit_adapters.{k}.mlp.up_proj.weight": [widths[k], h], f"exit_adapters.{k}.mlp.down_proj.weight": [h, widths[k]]})
            if k in attending:
                want.update({f"exit_adapters.{k}.input_layernorm.weight": [h], f"exit_adapters.{k}.self_attn.q_proj.weight": [q_dim, h],
                             f"exit_adapters.{k}.self_attn.k_proj.weight": [kv_dim, h], f"exit_adapters.{k}.self_attn.v_proj.weight": [kv_dim, h],
                             f"exit_adapters.{k}.self_attn.o_proj.weight": [h, q_dim]})
        expect({n: list(a.shape) for n, (_, a) in adapters.items()} == want, f"{deployment['exit_adapters']}: four tensors per adapter, nine where it attends (after {attending}), shapes as the model's config implies (widths {widths})")
        expect(all(np.isfinite(a).all() for _, a in adapters.values()), f"{deployment['exit_adapters']}: all weights finite")
        weights.update({n: a for n, (_, a) in adapters.items()})

    # 1. Against the logits written at export.
    reference = json.load(open(os.path.join(model_dir, "reference-logits.json")))
    ours = forward(c, weights, reference["ids"], exits)
    final = ours[c["num_hidden_layers"]]
    diff = float(np.abs(final[-1] - np.asarray(reference["last_logits"], dtype=np.float32)).max())
    expect(diff < 1e-3, f"reference-logits.json: last-position logits within {diff:.2e} (numpy float32 vs PyTorch float32)")
    expect(final.argmax(-1).tolist() == reference["argmax"], "reference-logits.json: argmax at all 16 positions equal")
    for k in exits:
        expect(ours[k].argmax(-1).tolist() == reference["exit_argmax"][str(k)], f"reference-logits.json: argmax after {k} layers equal")
    wide = forward(c, weights, reference["ids"], exits, dtype=np.float64)[c["num_hidden_layers"]]
    print(f"       (float32 vs float64 numpy on the same weights: {float(np.abs(final - wide).max()):.2e})")

    # 2. Against the training model (model.py) on a 128-token window of held-out text.
    import torch  # only here: the forward above does not use it
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from model import CausalLM

    heldout_path = os.path.join(model_dir, "heldout.txt")
    if not os.path.exists(heldout_path):
        heldout_path = os.path.join(ROOT, "models", "tandem-demo", "heldout.txt")
    import bpe
    tok = json.load(open(os.path.join(model_dir, "tokenizer.json"), encoding="utf-8"))["model"]
    encoder = bpe.Encoder(tok["vocab"], [tuple(m.split(" ")) for m in tok["merges"]])
    window = encoder.encode(open(heldout_path, encoding="utf-8").read()[:20000])[:129]
    torch.set_num_threads(1)
    model = CausalLM(dict(c))
    own = model.hf_state_dict()
    with torch.no_grad():
        for name, value in own.items():
            value.copy_(torch.from_numpy(weights[name]))
        if c["tie_word_embeddings"]:
            model.lm_head.weight = model.embed_tokens.weight
        if adapters:
            model.add_exit_adapters({n: torch.from_numpy(a.astype(np.float32)) for n, (_, a) in adapters.items()})
        theirs = {k: v[0].numpy() for k, v in model(torch.tensor([window[:128]]), exits).items()}
    ours = forward(c, weights, window[:128], exits)
    targets = np.asarray(window[1:129])
    for k in sorted(ours):
        diff = float(np.abs(ours[k] - theirs[k]).max())
        agree = float((ours[k].argmax(-1) == theirs[k].argmax(-1)).mean())
        loss_np, loss_pt = cross_entropy(ours[k], targets), cross_entropy(theirs[k], targets)
        what = "last layer" if k == c["num_hidden_layers"] else f"exit after {k}"
        expect(diff < 1e-3 and agree == 1.0, f"training model, 128 held-out tokens, {what}: max |Δlogit| {diff:.2e}, argmax agreement {agree:.3f}, loss {loss_np:.4f} vs {loss_pt:.4f}")
    return failures


def main():
    dirs = sys.argv[1:] or [os.path.join(ROOT, "models", "tandem-demo"), os.path.join(ROOT, "models", "tandem-demo-moe")]
    failures = sum((check(d) for d in dirs), [])
    print("all checks passed" if not failures else f"{len(failures)} checks failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
