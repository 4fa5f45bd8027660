"""The PyTorch eager reference for the training benchmarks: the same GPT as a femtogpt preset in
nanoGPT's layout, trained on random tokens as train_step_script.py does; prints JSON with
tokens/s (median step) and peak RSS.

Run by bench_train.TrainVsPyTorch in a subprocess, only when torch is installed in the
benchmark's environment (it is not a femtogpt dependency): the issue's speed targets are set
against PyTorch on the same machine, and this measures that reference in the same run.

    python torch_reference_script.py '{"preset": "small", "threads": 2, "steps": 4}'
"""

import json
import statistics
import sys
import time

try:
    import torch
    import torch.nn.functional as F  # noqa: N812
    from torch import nn
except (ImportError, OSError):  # asv imports every benchmark module, also where torch is missing or broken
    torch = None

if __package__:  # imported by asv's discovery, as benchmarks.<this module>
    from ._util import peak_rss_bytes
else:  # run as a script: its directory is sys.path[0]
    from _util import peak_rss_bytes

# femtogpt.model.PRESETS, copied so that this script imports nothing of femtogpt
PRESETS = {
    "femto": dict(block_size=64, n_layer=4, n_head=4, n_embd=64, batch_size=32),
    "small": dict(block_size=256, n_layer=6, n_head=6, n_embd=384, batch_size=16),
}
VOCAB = 76  # as train_step_script.py


if torch is not None:

    class Block(nn.Module):
        """Pre-LayerNorm block: x + attn(ln_1(x)), then + mlp(ln_2(x)); biases on, no dropout."""

        def __init__(self, n_embd: int, n_head: int):
            super().__init__()
            self.n_head = n_head
            self.ln_1, self.ln_2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)
            self.c_attn = nn.Linear(n_embd, 3 * n_embd)
            self.attn_proj = nn.Linear(n_embd, n_embd)
            self.c_fc = nn.Linear(n_embd, 4 * n_embd)
            self.mlp_proj = nn.Linear(4 * n_embd, n_embd)

        def forward(self, x):  # (B, T, C) -> (B, T, C)
            B, T, C = x.shape  # noqa: N806
            q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
            q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
            x = x + self.attn_proj(y)
            return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


    class GPT(nn.Module):
        def __init__(self, block_size: int, n_layer: int, n_head: int, n_embd: int):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(VOCAB, n_embd), nn.Embedding(block_size, n_embd)
            self.h = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
            self.ln_f = nn.LayerNorm(n_embd)
            self.lm_head = nn.Linear(n_embd, VOCAB, bias=False)
            self.lm_head.weight = self.wte.weight  # tied, as femtogpt's

        def forward(self, idx, targets):  # (B, T), (B, T) -> loss
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for block in self.h:
                x = block(x)
            logits = self.lm_head(self.ln_f(x))
            return F.cross_entropy(logits.view(-1, VOCAB), targets.view(-1))


def main(preset: str, threads: int, steps: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    p = PRESETS[preset]
    model = GPT(p["block_size"], p["n_layer"], p["n_head"], p["n_embd"])
    # decay on 2-D weights only, as femtogpt.AdamW and nanoGPT's configure_optimizers
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.95))
    B, T = p["batch_size"], p["block_size"]  # noqa: N806
    x, y = torch.randint(0, VOCAB, (B, T)), torch.randint(0, VOCAB, (B, T))
    times = []
    for i in range(steps + 2):  # two warm-up steps, as train_step_script.py
        t0 = time.perf_counter()
        model(x, y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    return {"tokens_per_second": B * T / step, "step_seconds": step, "peak_rss_bytes": peak_rss_bytes(),
            "torch": torch.__version__}


if __name__ == "__main__":
    print(json.dumps(main(**json.loads(sys.argv[1]))))
