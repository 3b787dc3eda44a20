"""Rotary inverse frequencies as transformers computes them (modeling_rope_utils:
_compute_default_rope_parameters, _compute_linear_scaling_rope_parameters,
_compute_llama3_parameters), re-stated with numpy float32 for the cases in
rope-frequencies.json, which rope-frequencies.test.ts checks the TypeScript against.
Run: python3 runtime/test-data/rope_frequencies.py > runtime/test-data/rope-frequencies.json
"""
import json
import math

import numpy as np

f32 = np.float32


def default(head_dim, theta):
    exponent = np.arange(0, head_dim, 2, dtype=np.int64).astype(f32) / f32(head_dim)
    return f32(1.0) / (f32(theta) ** exponent)


def linear(head_dim, theta, factor):
    return default(head_dim, theta) / f32(factor)


def llama3(head_dim, theta, factor, low_freq_factor, high_freq_factor, old_context_len):
    inv_freq = default(head_dim, theta)
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = f32(2 * math.pi) / inv_freq
    inv_freq_llama = np.where(wavelen > low_freq_wavelen, inv_freq / f32(factor), inv_freq)
    smooth_factor = (f32(old_context_len) / wavelen - f32(low_freq_factor)) / f32(high_freq_factor - low_freq_factor)
    smoothed = (f32(1) - smooth_factor) * inv_freq_llama / f32(factor) + smooth_factor * inv_freq_llama
    is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return np.where(is_medium, smoothed, inv_freq_llama).astype(f32)


cases = [
    # Llama-3.2-1B's config.json: head_dim 64, rope_theta 500000, llama3 32 / 1 / 4 / 8192.
    {"name": "llama3 (Llama-3.2-1B)", "headDim": 64, "ropeTheta": 500000.0,
     "ropeScaling": {"type": "llama3", "factor": 32.0, "lowFreqFactor": 1.0, "highFreqFactor": 4.0, "originalMaxPositions": 8192},
     "expected": llama3(64, 500000.0, 32.0, 1.0, 4.0, 8192)},
    # Llama-3.1-8B's: head_dim 128, llama3 8 / 1 / 4 / 8192.
    {"name": "llama3 (Llama-3.1-8B)", "headDim": 128, "ropeTheta": 500000.0,
     "ropeScaling": {"type": "llama3", "factor": 8.0, "lowFreqFactor": 1.0, "highFreqFactor": 4.0, "originalMaxPositions": 8192},
     "expected": llama3(128, 500000.0, 8.0, 1.0, 4.0, 8192)},
    {"name": "linear 4", "headDim": 64, "ropeTheta": 10000.0,
     "ropeScaling": {"type": "linear", "factor": 4.0},
     "expected": linear(64, 10000.0, 4.0)},
    {"name": "unscaled", "headDim": 64, "ropeTheta": 10000.0, "expected": default(64, 10000.0)},
]
for case in cases:
    case["expected"] = [float(x) for x in case["expected"]]
print(json.dumps(cases, indent=1))
