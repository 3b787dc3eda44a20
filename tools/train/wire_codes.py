"""How well wire codes for the edge's hidden states keep the cloud's answers, at a given
number of bits per value: the int4-rotated codec as shipped, and learned transform codes
fitted on held-out hidden states. A measuring tool for issue 14's "int4 on the wire
without loss" (≥ 99.5% agreement at ≤ 0.6 bytes, 4.8 bits, per value), not a codec.

    /usr/bin/python3 tools/train/wire_codes.py models/tandem-demo --split 3

The hidden states after `--split` layers of 128-token windows of heldout.txt (teacher-forced):
codes are fitted on the first half of the windows and tested on the second, every position
of a window coded (the cloud's context as well as the answered position). Agreement: the
cloud's arg max (the upper layers and head run on the decoded states) against its arg max
on the exact states.

Codes:
- `int4-rotated`: a randomized Hadamard rotation, then per group of 32 an fp16 scale
  (absmax / 7) and 4-bit values in [-7, 7] (runtime/src/codec; 4.5 bits per value).
- `klt`: the mean removed, the Karhunen–Loève transform (eigenvectors of the states'
  covariance), the components divided by the token's RMS (sent in fp16), then integer bits
  per component by greedy reverse water-filling on the components' variances (at most 8)
  and a uniform quantizer per component with a Gaussian-optimal step, widened to cover
  ±`--coverage` σ; fixed size per token.
- `fisher-klt`: the same in a basis weighted by the cloud's sensitivity: the states are
  multiplied by F^1/2 before the transform (F: the mean outer product of the gradients of
  the cloud's log-probability of its own answer with respect to the state), so bits go
  where an error moves the answer, not where the variance is.
- `fisher-klt-entropy`: `fisher-klt`'s steps without its range limit, at the ideal
  entropy-coded rate (the empirical entropy of each component's symbols on the test half):
  a lower bound for any variable-size code built on it.
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from exit_share import load  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# Step of an optimal uniform quantizer of a unit Gaussian with 2^b levels (Max 1960).
GAUSSIAN_STEP = {1: 1.596, 2: 0.9957, 3: 0.5860, 4: 0.3352, 5: 0.1881, 6: 0.1041, 7: 0.0569, 8: 0.0308}
MAX_BITS = 8
RMS_BITS = 16


def hidden_states(model, ids, split, seq=128):
    """[windows, seq, hidden] states after `split` layers, and the cos/sin tables."""
    windows = (len(ids) - 1) // seq
    x = torch.stack([torch.from_numpy(ids[i * seq:(i + 1) * seq]) for i in range(windows)])
    cos, sin = model.cos[:seq], model.sin[:seq]
    with torch.no_grad():
        h = model.embed_tokens(x)
        for layer in model.layers[:split]:
            h = layer(h, cos, sin)
    return h, cos, sin


def upper_logits(model, h, split, cos, sin):
    for layer in model.layers[split:]:
        h = layer(h, cos, sin)
    return model.lm_head(model.norm(h))


def answers(model, h, split, cos, sin, batch=16):
    with torch.no_grad():
        return torch.cat([upper_logits(model, h[i:i + batch], split, cos, sin).argmax(-1) for i in range(0, len(h), batch)])


def fisher(model, h, split, cos, sin, batch=8):
    """Mean outer product of d log p(answer) / d state over every position of `h`."""
    dim = h.shape[-1]
    total = torch.zeros(dim, dim, dtype=torch.float64)
    count = 0
    for i in range(0, len(h), batch):
        x = h[i:i + batch].clone().requires_grad_(True)
        logp = upper_logits(model, x, split, cos, sin).log_softmax(-1)
        chosen = logp.gather(-1, logp.argmax(-1, keepdim=True)).sum()
        (grad,) = torch.autograd.grad(chosen, x)
        g = grad.reshape(-1, dim).double()
        total += g.T @ g
        count += g.shape[0]
    return total / count


def hadamard(n):
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h / math.sqrt(n)


def int4_rotated(h, seed=0):
    """The shipped recipe (another sign pattern; the rotation's seed does not matter here)."""
    dim = h.shape[-1]
    signs = torch.where(torch.rand(dim, generator=torch.Generator().manual_seed(seed)) < 0.5, -1.0, 1.0)
    rotation = hadamard(dim) * signs[None, :]
    y = (h @ rotation.T).reshape(*h.shape[:-1], -1, 32)
    scale = (y.abs().amax(-1, keepdim=True) / 7).half().float().clamp_min(1e-12)
    q = torch.round(y / scale).clamp(-7, 7) * scale
    return q.reshape(h.shape) @ rotation, 4.5


class TransformCode:
    """Mean, transform and per-component bits fitted on `fit` (rows of states)."""

    def __init__(self, fit, bits_per_value, weight=None, coverage=4.0):
        fit = fit.double()
        self.coverage = coverage
        self.dim = fit.shape[1]
        self.mean = fit.mean(0)
        self.weight = weight if weight is not None else torch.eye(self.dim, dtype=torch.float64)
        self.unweight = torch.linalg.inv(self.weight)
        centred = (fit - self.mean) @ self.weight
        values, vectors = torch.linalg.eigh(centred.T @ centred / len(centred))
        order = values.argsort(descending=True)
        self.basis = vectors[:, order]
        components, _ = self.normalised(fit)
        self.sigma = components.std(0).clamp_min(1e-12)
        self.bits = self.allocate(bits_per_value * self.dim - RMS_BITS)

    def normalised(self, states):
        c = ((states.double() - self.mean) @ self.weight) @ self.basis
        rms = c.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-12)
        rms = rms.half().double()
        return c / rms, rms

    def allocate(self, budget):
        """Integer bits per component: each next bit where it cuts the most distortion (σ²·4^-b)."""
        bits = torch.zeros(self.dim, dtype=torch.long)
        distortion = self.sigma.pow(2).clone()
        for _ in range(int(budget)):
            gain = torch.where(bits < MAX_BITS, distortion * 0.75, torch.zeros_like(distortion))
            k = int(gain.argmax())
            if gain[k] <= 0:
                break
            bits[k] += 1
            distortion[k] /= 4
        return bits

    def symbols(self, states, clamp=True):
        """Each component's quantizer index; unclamped (clamp=False) for an entropy coder, which needs no range."""
        c, rms = self.normalised(states)
        # The Gaussian-optimal step, widened where it would clip inside ±coverage·σ: the
        # components have heavier tails than a Gaussian, and a clipped value costs more
        # than a coarser step.
        factor = [max(GAUSSIAN_STEP.get(int(b), 1.0), 2 * self.coverage / 2 ** int(b)) for b in self.bits]
        step = torch.tensor(factor, dtype=torch.float64) * self.sigma
        levels = 2 ** self.bits
        # Midrise: levels (k + 1/2)·step for k in [-L/2, L/2); zero bits send nothing.
        k = torch.floor(c / step)
        if clamp:
            k = k.clamp(-levels // 2, levels // 2 - 1)
        k = torch.where(self.bits > 0, k, torch.zeros_like(k))
        return k, step, rms

    def decode(self, k, step, rms):
        c = torch.where(self.bits > 0, (k + 0.5) * step, torch.zeros_like(k)) * rms
        return (c @ self.basis.T) @ self.unweight + self.mean

    def round_trip(self, states, clamp=True):
        shape = states.shape
        k, step, rms = self.symbols(states.reshape(-1, self.dim), clamp)
        return self.decode(k, step, rms).float().reshape(shape), k

    def entropy_bits_per_value(self, k):
        total = RMS_BITS
        for j in range(self.dim):
            if self.bits[j] == 0:
                continue
            _, counts = torch.unique(k[:, j], return_counts=True)
            p = counts.double() / counts.sum()
            total += float(-(p * p.log2()).sum())
        return total / self.dim


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", default=os.path.join(ROOT, "models", "tandem-demo"))
    parser.add_argument("--split", type=int, default=3)
    parser.add_argument("--bits", type=float, nargs="+", default=[4.5, 4.8, 5.2], help="bits per value of the learned codes")
    parser.add_argument("--coverage", type=float, default=4.0, help="σ each fixed-size component's quantizer covers at least")
    parser.add_argument("--text", default=os.path.join(ROOT, "models", "tandem-demo", "heldout.txt"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, _, _, encoder = load(args.model)
    ids = np.array(encoder.encode(open(args.text, encoding="utf-8").read()), dtype=np.int64)
    h, cos, sin = hidden_states(model, ids, args.split)
    half = len(h) // 2
    fit, test = h[:half], h[half:]
    reference = answers(model, test, args.split, cos, sin)
    dim = h.shape[-1]

    def agreement(decoded):
        return float((answers(model, decoded, args.split, cos, sin) == reference).double().mean())

    rows = []
    decoded, bits = int4_rotated(test)
    rows.append({"code": "int4-rotated", "bits_per_value": bits, "agreement": agreement(decoded)})
    f = fisher(model, fit, args.split, cos, sin)
    values, vectors = torch.linalg.eigh(f)
    sqrt_f = vectors @ torch.diag(values.clamp_min(values.max() * 1e-6).sqrt()) @ vectors.T
    for b in args.bits:
        for name, weight in (("klt", None), ("fisher-klt", sqrt_f)):
            code = TransformCode(fit.reshape(-1, dim), b, weight, args.coverage)
            decoded, _ = code.round_trip(test)
            rows.append({"code": name, "bits_per_value": b, "agreement": agreement(decoded)})
            if name == "fisher-klt":
                decoded, k = code.round_trip(test, clamp=False)
                rows.append({
                    "code": "fisher-klt-entropy",
                    "bits_per_value": round(code.entropy_bits_per_value(k), 3),
                    "agreement": agreement(decoded),
                })
        print(json.dumps(rows[-3:]), file=sys.stderr, flush=True)
    print(json.dumps({
        "model": os.path.relpath(os.path.abspath(args.model), ROOT),
        "split": args.split,
        "fit_positions": fit.shape[0] * fit.shape[1],
        "test_positions": int(reference.numel()),
        "rows": rows,
    }, indent=2))


if __name__ == "__main__":
    main()
