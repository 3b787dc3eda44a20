"""Llama and Mixtral in plain PyTorch with Hugging Face transformers' exact semantics
(RMSNorm, rotate_half RoPE, grouped-query attention, SwiGLU, Mixtral top-k routing), so a
checkpoint written from it loads in Tandem's TypeScript runtime unchanged. Exit heads
share the final norm and LM head: exit k reads the hidden state after k layers, through
its exit adapter first where the model has one (train_exit_adapters.py).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, size, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotary_tables(head_dim, theta, length):
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    emb = torch.cat([angles, angles], dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = c["num_attention_heads"], c["num_key_value_heads"], c["hidden_size"] // c["num_attention_heads"]
        h = c["hidden_size"]
        self.q_proj = nn.Linear(h, self.heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(h, self.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(h, self.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.heads * self.head_dim, h, bias=False)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        repeat = self.heads // self.kv_heads
        k = k.repeat_interleave(repeat, dim=1)
        v = v.repeat_interleave(repeat, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        mask = torch.ones(t, t, dtype=torch.bool).triu(1)
        scores = scores.masked_fill(mask, float("-inf"))
        out = scores.softmax(-1) @ v
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, hidden, intermediate):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class SparseMoE(nn.Module):
    """Mixtral's block: softmax over all experts, top-k, renormalised weights."""

    def __init__(self, c):
        super().__init__()
        self.num_experts, self.top_k = c["num_local_experts"], c["num_experts_per_tok"]
        self.gate = nn.Linear(c["hidden_size"], self.num_experts, bias=False)
        self.experts = nn.ModuleList([MLP(c["hidden_size"], c["intermediate_size"]) for _ in range(self.num_experts)])
        self.last_balance_loss = torch.tensor(0.0)

    def forward(self, x):
        b, t, h = x.shape
        flat = x.reshape(-1, h)
        probs = self.gate(flat).softmax(-1)
        weights, chosen = probs.topk(self.top_k, dim=-1)
        weights = weights / weights.sum(-1, keepdim=True)
        out = torch.zeros_like(flat)
        for e in range(self.num_experts):
            rows, slot = (chosen == e).nonzero(as_tuple=True)
            if rows.numel():
                out.index_add_(0, rows, self.experts[e](flat[rows]) * weights[rows, slot].unsqueeze(-1))
        # Switch/Mixtral load-balancing loss: fraction routed × mean router probability
        # (transformers' load_balancing_loss_func divided by top_k: 1.0 when balanced).
        routed = F.one_hot(chosen, self.num_experts).float().sum(1).mean(0) / self.top_k
        self.last_counts = torch.bincount(chosen.reshape(-1), minlength=self.num_experts).detach()
        self.last_balance_loss = self.num_experts * (routed * probs.mean(0)).sum()
        return out.view(b, t, h)


class ExitAdapter(nn.Module):
    """A pre-norm SwiGLU block with a residual, of the exit's own: x + mlp(norm(x)). The
    final layer never reads it, so training it moves nothing the full model computes.
    down_proj starts at zero: an untrained adapter is the identity (the plain exit).

    With `attention` (the model's config), the adapter attends too, before its MLP: a whole
    decoder layer on the exit's path, x + attn(input_layernorm(x)) first, with the model's
    heads and rotary embedding (the runtime keeps its keys and values at the edge)."""

    def __init__(self, hidden, intermediate, eps, attention=None):
        super().__init__()
        self.norm = RMSNorm(hidden, eps)
        self.mlp = MLP(hidden, intermediate)
        for linear in (self.mlp.gate_proj, self.mlp.up_proj):
            nn.init.normal_(linear.weight, std=0.02)
        nn.init.zeros_(self.mlp.down_proj.weight)
        if attention is not None:
            self.input_layernorm = RMSNorm(hidden, eps)
            self.self_attn = Attention(attention)
            for linear in (self.self_attn.q_proj, self.self_attn.k_proj, self.self_attn.v_proj):
                nn.init.normal_(linear.weight, std=0.02)
            nn.init.zeros_(self.self_attn.o_proj.weight)

    @property
    def attends(self):
        return hasattr(self, "self_attn")

    @staticmethod
    def from_layer(layer, config, intermediate):
        """An attending adapter that starts as a copy of a decoder layer (the next one: the
        exit then starts as the plain exit one layer deeper). Its MLP is copied when the
        widths agree, else drawn as a fresh adapter's."""
        adapter = ExitAdapter(config["hidden_size"], intermediate, config["rms_norm_eps"], attention=config)
        with torch.no_grad():
            adapter.input_layernorm.weight.copy_(layer.input_layernorm.weight)
            adapter.self_attn.load_state_dict(layer.self_attn.state_dict())
            adapter.norm.weight.copy_(layer.post_attention_layernorm.weight)
            if intermediate == config["intermediate_size"]:
                adapter.mlp.load_state_dict(layer.mlp.state_dict())
        return adapter

    def forward(self, x, cos=None, sin=None):
        if self.attends:
            x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.norm(x))

    def tensors(self, layer):
        """Its tensors under the names of exit-adapters.safetensors."""
        p = f"exit_adapters.{layer}"
        out = {
            f"{p}.norm.weight": self.norm.weight,
            **{f"{p}.mlp.{n}.weight": getattr(self.mlp, n).weight for n in ("gate_proj", "up_proj", "down_proj")},
        }
        if self.attends:
            out[f"{p}.input_layernorm.weight"] = self.input_layernorm.weight
            out.update({f"{p}.self_attn.{n}.weight": getattr(self.self_attn, n).weight for n in ("q_proj", "k_proj", "v_proj", "o_proj")})
        return out


class DecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        if c["model_type"] == "mixtral":
            self.block_sparse_moe = SparseMoE(c)
        else:
            self.mlp = MLP(c["hidden_size"], c["intermediate_size"])

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        ffn = self.block_sparse_moe if hasattr(self, "block_sparse_moe") else self.mlp
        return x + ffn(self.post_attention_layernorm(x))


class CausalLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.config = c
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList([DecoderLayer(c) for _ in range(c["num_hidden_layers"])])
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)
        if c["tie_word_embeddings"]:
            self.lm_head.weight = self.embed_tokens.weight
        self.apply(self._init)
        # exit layer (as a string) -> ExitAdapter; empty for models trained without them
        self.exit_adapters = nn.ModuleDict()
        cos, sin = rotary_tables(c["hidden_size"] // c["num_attention_heads"], c["rope_theta"], c["max_position_embeddings"])
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    @staticmethod
    def _init(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, ids, exit_layers=()):
        """Returns {layers_run: logits} for each exit layer and for the full depth."""
        t = ids.shape[1]
        cos, sin = self.cos[:t], self.sin[:t]
        x = self.embed_tokens(ids)
        outputs = {}
        # Each exit's hidden state before the shared norm, for a distillation loss that must
        # not reach the shared norm and head (train.py, `distill_through_head: false`).
        self.exit_states = {}
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin)
            if (i + 1) in exit_layers:
                self.exit_states[i + 1] = x
                adapter = self.exit_adapters[str(i + 1)] if str(i + 1) in self.exit_adapters else None
                outputs[i + 1] = self.lm_head(self.norm(adapter(x, cos, sin) if adapter is not None else x))
        outputs[len(self.layers)] = self.lm_head(self.norm(x))
        return outputs

    def add_exit_adapters(self, tensors):
        """Exit adapters from exit-adapters.safetensors' tensors (name -> tensor)."""
        layers = sorted({int(name.split(".")[1]) for name in tensors if name.startswith("exit_adapters.")})
        for layer in layers:
            gate = tensors[f"exit_adapters.{layer}.mlp.gate_proj.weight"]
            attends = f"exit_adapters.{layer}.self_attn.q_proj.weight" in tensors
            adapter = ExitAdapter(gate.shape[1], gate.shape[0], self.config["rms_norm_eps"], attention=self.config if attends else None)
            with torch.no_grad():
                for name, value in adapter.tensors(layer).items():
                    value.copy_(tensors[name])
            self.exit_adapters[str(layer)] = adapter
        return layers

    def balance_loss(self):
        losses = [l.block_sparse_moe.last_balance_loss for l in self.layers if hasattr(l, "block_sparse_moe")]
        return sum(losses) / len(losses) if losses else torch.tensor(0.0)

    def hf_state_dict(self):
        """Tensors under Hugging Face names (Mixtral experts as w1/w2/w3)."""
        out = {"model.embed_tokens.weight": self.embed_tokens.weight, "model.norm.weight": self.norm.weight}
        for i, layer in enumerate(self.layers):
            p = f"model.layers.{i}"
            out[f"{p}.input_layernorm.weight"] = layer.input_layernorm.weight
            out[f"{p}.post_attention_layernorm.weight"] = layer.post_attention_layernorm.weight
            for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
                out[f"{p}.self_attn.{n}.weight"] = getattr(layer.self_attn, n).weight
            if hasattr(layer, "block_sparse_moe"):
                moe = layer.block_sparse_moe
                out[f"{p}.block_sparse_moe.gate.weight"] = moe.gate.weight
                for e, expert in enumerate(moe.experts):
                    out[f"{p}.block_sparse_moe.experts.{e}.w1.weight"] = expert.gate_proj.weight
                    out[f"{p}.block_sparse_moe.experts.{e}.w2.weight"] = expert.down_proj.weight
                    out[f"{p}.block_sparse_moe.experts.{e}.w3.weight"] = expert.up_proj.weight
            else:
                for n in ("gate_proj", "up_proj", "down_proj"):
                    out[f"{p}.mlp.{n}.weight"] = getattr(layer.mlp, n).weight
        if not self.config["tie_word_embeddings"]:
            out["lm_head.weight"] = self.lm_head.weight
        return {k: v.detach() for k, v in out.items()}
