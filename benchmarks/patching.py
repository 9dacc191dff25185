"""A residual-stream patching sweep (L layers × P positions) on a tiny GPT: seethrough against its limits and peers.

The model: a GPT with 4 pre-norm blocks, d_model 128, 4 heads, d_mlp 512, 64 tokens, 32 positions,
written in plain PyTorch (``embed → blocks.0..3 → ln_final → unembed``). One clean/corrupted pair
of random 32-token sequences (one example each); the metric is the last position's logit difference
between tokens 3 and 5. The sweep patches ``resid_pre`` (the input of each block) at every
position: L·P = 128 patched copies. Candidates, timed interleaved in one run (DESIGN §8):

- ``forward``: one plain single-example forward: the unit (every time is quoted in units of 128 of
  these, i.e. of the sweep run as 128 separate forwards);
- ``seethrough batched``: ``activation_patching(model, clean, corrupted, sites, metric)`` (all its
  work: the corrupted and clean runs and the stacked copies);
- ``one batched forward``: the floor of the plain path: one forward of all 128 patched copies,
  written by hand (each block's input set at its copies' position; corrupted values given);
- ``seethrough prefix``: the same call with ``blocks=["blocks.0", ..., "ln_final", "unembed"]``
  (each copy joins the batch at its block);
- ``prefix limit``: the physical limit, by hand: the clean run once, then one staircase pass in
  which the copies patched at block l join at block l (the blocks before it equal the clean run);
- ``naive hook loop``: 128 single-example forwards, each with a forward pre-hook that patches one
  position of one block's input;
- ``transformer-lens``: ``run_with_cache`` of the corrupted tokens plus
  ``patching.get_act_patch_resid_pre`` on a ``HookedTransformer`` holding the same weights (the peer;
  skipped with a note when it is not importable: install it beside the project, never as its
  dependency, e.g. ``pip install --target /tmp/tlpeer --no-deps transformer-lens==3.9.0 einops
  fancy-einsum typeguard better-abc datasets dill xxhash multiprocess`` and run with
  ``PYTHONPATH=/tmp/tlpeer``; TransformerLens 4 has no ``HookedTransformer``);
- ``attribution``: ``attribution_patching`` (one corrupted forward, one clean forward and backward),
  with its correlation to the exact sweep printed.

Before timing, every exact candidate's 4×32 grid is checked equal to seethrough's (the peer's is
normalised the same way: it patches clean values into the corrupted run, so it is compared with
seethrough's call on the swapped pair), and the peer's logits with the toolkit model's.

Goals (issue #12): seethrough batched ≤ 1.2× one batched forward; seethrough prefix ≤ 1.2× the
prefix limit and ≥ 15× faster than the peer; attribution ≤ 0.05× the exact sweep.

Run: ``OMP_NUM_THREADS=1 python benchmarks/patching.py [--repeats N] [--quick]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import statistics
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from _timing import environment, interleaved, ratio
from torch import Tensor, nn

from seethrough import Site
from seethrough.subnetworks import activation_patching, attribution_patching

N_LAYERS, D_MODEL, N_HEADS, D_MLP, VOCAB, SEQ = 4, 128, 4, 512, 64, 32


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(D_MODEL, 3 * D_MODEL)
        self.out = nn.Linear(D_MODEL, D_MODEL)

    def forward(self, x: Tensor) -> Tensor:
        b, s, _ = x.shape
        q, k, v = (t.view(b, s, N_HEADS, -1).transpose(1, 2) for t in self.qkv(x).chunk(3, dim=-1))
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(z.transpose(1, 2).reshape(b, s, D_MODEL))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(D_MODEL), Attention()
        self.ln2 = nn.LayerNorm(D_MODEL)
        self.mlp = nn.Sequential(nn.Linear(D_MODEL, D_MLP), nn.GELU(), nn.Linear(D_MLP, D_MODEL))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Embed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, D_MODEL)
        self.positions = nn.Parameter(torch.randn(SEQ, D_MODEL) * 0.1)

    def forward(self, ids: Tensor) -> Tensor:
        return self.tokens(ids) + self.positions[: ids.shape[1]]


class GPT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = Embed()
        self.blocks = nn.ModuleList(Block() for _ in range(N_LAYERS))
        self.ln_final, self.unembed = nn.LayerNorm(D_MODEL), nn.Linear(D_MODEL, VOCAB)

    def forward(self, ids: Tensor) -> Tensor:
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x)
        return self.unembed(self.ln_final(x))


def metric(logits: Tensor) -> Tensor:
    return logits[:, -1, 3] - logits[:, -1, 5]


SITES = [Site(f"blocks.{layer}", point="input", positions=list(range(SEQ))) for layer in range(N_LAYERS)]
CHAIN = [f"blocks.{layer}" for layer in range(N_LAYERS)] + ["ln_final", "unembed"]


def grid(result: Any) -> Tensor:
    return torch.stack([result.effects[s] for s in SITES])


# -- the hand-written references ------------------------------------------------------------------


def resid_pre(model: GPT, ids: Tensor) -> list[Tensor]:
    """Each block's input on ``ids``."""
    out, x = [], model.embed(ids)
    for block in model.blocks:
        out.append(x)
        x = block(x)
    return out


def one_batched_forward(model: GPT, clean: Tensor, corrupted_pre: list[Tensor]) -> Tensor:
    """All L·P copies in one forward: copy (l, p) has block l's input at position p from the corrupted run."""
    n_copies = N_LAYERS * SEQ
    x = model.embed(clean.repeat(n_copies, 1))
    copies = torch.arange(n_copies)
    for layer, block in enumerate(model.blocks):
        mine = copies[layer * SEQ:(layer + 1) * SEQ]
        x = x.clone()
        x[mine, torch.arange(SEQ)] = corrupted_pre[layer][0]  # copy (layer, p) takes position p
        x = block(x)
    return metric(model.unembed(model.ln_final(x))).view(N_LAYERS, SEQ)


def prefix_limit(model: GPT, clean: Tensor, corrupted_pre: list[Tensor]) -> Tensor:
    """The clean run once, then one staircase pass: the copies patched at block l join at block l."""
    clean_pre = resid_pre(model, clean)
    x = None
    for layer, block in enumerate(model.blocks):
        new = clean_pre[layer].repeat(SEQ, 1, 1)
        new[torch.arange(SEQ), torch.arange(SEQ)] = corrupted_pre[layer][0]
        x = new if x is None else torch.cat([x, new])
        x = block(x)
    assert x is not None
    return metric(model.unembed(model.ln_final(x))).view(N_LAYERS, SEQ)


def hook_loop(model: GPT, clean: Tensor, corrupted_pre: list[Tensor]) -> Tensor:
    """One single-example forward per (layer, position), each with a pre-hook on that block."""
    out = torch.empty(N_LAYERS, SEQ)
    for layer, block in enumerate(model.blocks):
        for p in range(SEQ):
            def pre(module: nn.Module, args: tuple[Tensor, ...], p: int = p, layer: int = layer) -> tuple[Tensor]:
                x = args[0].clone()
                x[:, p] = corrupted_pre[layer][:, p]
                return (x,)

            handle = block.register_forward_pre_hook(pre)
            try:
                out[layer, p] = metric(model(clean))[0]
            finally:
                handle.remove()
    return out


def normalise(raw: Tensor, base: float, other: float) -> Tensor:
    return (raw.double() - base) / (other - base)


# -- the peer ---------------------------------------------------------------------------------


def transformer_lens(model: GPT) -> tuple[Any, Any] | None:
    """A HookedTransformer with ``model``'s weights and TransformerLens's patching module, or None."""
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig, patching
    except Exception as err:  # an absent or broken peer install: skip its row
        print(f"note: skipping transformer-lens ({type(err).__name__}: {str(err)[:160]})")
        return None
    cfg = HookedTransformerConfig(n_layers=N_LAYERS, d_model=D_MODEL, n_ctx=SEQ, d_head=D_MODEL // N_HEADS,
                                  n_heads=N_HEADS, d_mlp=D_MLP, d_vocab=VOCAB, act_fn="gelu",
                                  normalization_type="LN", positional_embedding_type="standard", device="cpu")
    peer = HookedTransformer(cfg).eval()
    d_head = D_MODEL // N_HEADS
    weights = {"embed.W_E": model.embed.tokens.weight, "pos_embed.W_pos": model.embed.positions,
               "ln_final.w": model.ln_final.weight, "ln_final.b": model.ln_final.bias,
               "unembed.W_U": model.unembed.weight.T, "unembed.b_U": model.unembed.bias}
    for i, block in enumerate(model.blocks):
        w, b = block.attn.qkv.weight, block.attn.qkv.bias
        for j, name in enumerate("QKV"):
            weights[f"blocks.{i}.attn.W_{name}"] = w[j * D_MODEL:(j + 1) * D_MODEL].view(N_HEADS, d_head, D_MODEL
                                                                                        ).transpose(1, 2)
            weights[f"blocks.{i}.attn.b_{name}"] = b[j * D_MODEL:(j + 1) * D_MODEL].view(N_HEADS, d_head)
        weights[f"blocks.{i}.attn.W_O"] = block.attn.out.weight.T.reshape(N_HEADS, d_head, D_MODEL)
        weights[f"blocks.{i}.attn.b_O"] = block.attn.out.bias
        for ln in ("ln1", "ln2"):
            weights[f"blocks.{i}.{ln}.w"] = getattr(block, ln).weight
            weights[f"blocks.{i}.{ln}.b"] = getattr(block, ln).bias
        weights[f"blocks.{i}.mlp.W_in"] = block.mlp[0].weight.T
        weights[f"blocks.{i}.mlp.b_in"] = block.mlp[0].bias
        weights[f"blocks.{i}.mlp.W_out"] = block.mlp[2].weight.T
        weights[f"blocks.{i}.mlp.b_out"] = block.mlp[2].bias
    own = peer.state_dict()
    missing = sorted(set(weights) - set(own))
    assert not missing, f"transformer-lens has no parameters {missing}"
    peer.load_state_dict({k: v.detach().clone().contiguous() for k, v in weights.items()}, strict=False)
    return peer, patching


# -- the run ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed repetitions per candidate (default 15)")
    parser.add_argument("--quick", action="store_true", help="3 repetitions: a smoke test")
    args = parser.parse_args()
    repeats = 3 if args.quick else args.repeats

    torch.manual_seed(0)
    model = GPT().eval()
    gen = torch.Generator().manual_seed(1)
    clean = torch.randint(0, VOCAB, (1, SEQ), generator=gen)
    corrupted = torch.randint(0, VOCAB, (1, SEQ), generator=gen)
    print(f"{environment()}  repeats={repeats}")
    print(f"tiny GPT: {N_LAYERS} layers, d_model {D_MODEL}, {N_HEADS} heads, d_mlp {D_MLP}, vocab {VOCAB}; "
          f"one pair of {SEQ}-token sequences; sweep = resid_pre at {N_LAYERS} layers x {SEQ} positions "
          f"= {N_LAYERS * SEQ} copies\n")

    with torch.no_grad():
        base, other = float(metric(model(clean))), float(metric(model(corrupted)))
        corrupted_pre = resid_pre(model, corrupted)
        ours = grid(activation_patching(model, clean, corrupted, SITES, metric)).double()
        prefix = activation_patching(model, clean, corrupted, SITES, metric, blocks=CHAIN)
        assert prefix.prefix
        checks = {"one batched forward": normalise(one_batched_forward(model, clean, corrupted_pre), base, other),
                  "seethrough prefix": grid(prefix).double(),
                  "prefix limit": normalise(prefix_limit(model, clean, corrupted_pre), base, other),
                  "naive hook loop": normalise(hook_loop(model, clean, corrupted_pre), base, other)}
    for name, values in checks.items():
        err = float((values - ours).abs().max())
        assert err < 1e-4, f"{name} differs from seethrough batched by {err}"
        print(f"check: {name} equals seethrough batched (max |diff| {err:.1e})")
    approx = grid(attribution_patching(model, clean, corrupted, SITES, metric)).double()
    corr = float(torch.corrcoef(torch.stack([approx.flatten(), ours.flatten()]))[0, 1])

    cands: dict[str, Callable[[], Any]] = {
        "forward": lambda: model(clean),
        "seethrough batched": lambda: activation_patching(model, clean, corrupted, SITES, metric),
        "one batched forward": lambda: one_batched_forward(model, clean, corrupted_pre),
        "seethrough prefix": lambda: activation_patching(model, clean, corrupted, SITES, metric, blocks=CHAIN),
        "prefix limit": lambda: prefix_limit(model, clean, corrupted_pre),
        "naive hook loop": lambda: hook_loop(model, clean, corrupted_pre),
    }
    peer = transformer_lens(model)
    if peer is not None:
        tl, patching = peer
        with torch.no_grad():
            gap = float((tl(clean) - model(clean)).abs().max())
            assert gap < 1e-4, f"transformer-lens logits differ from the toolkit model's by {gap}"
            print(f"check: transformer-lens logits equal the toolkit model's (max |diff| {gap:.1e})")

            def run_peer(source: Tensor = clean, run: Tensor = corrupted) -> Tensor:
                with contextlib.redirect_stderr(io.StringIO()):  # its sweep draws a progress bar per call
                    _, cache = tl.run_with_cache(source)
                    return patching.get_act_patch_resid_pre(tl, run, cache, lambda logits: metric(logits)[0])

            swapped = grid(activation_patching(model, corrupted, clean, SITES, metric)).double()
            theirs = normalise(run_peer(), other, base)
            err = float((theirs - swapped).abs().max())
            assert err < 1e-4, f"transformer-lens's grid differs from seethrough's by {err}"
            print(f"check: transformer-lens's grid equals seethrough's on the swapped pair (max |diff| {err:.1e})")
        cands["transformer-lens"] = run_peer
    cands["attribution"] = lambda: attribution_patching(model, clean, corrupted, SITES, metric)

    def no_grad(fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with torch.no_grad():
                return fn()
        return run

    timed = {name: (fn if name == "attribution" else no_grad(fn)) for name, fn in cands.items()}
    times = interleaved(timed, repeats, warmup=1)
    unit = N_LAYERS * SEQ
    print(f"\n{'candidate':<22} {'median ms':>10} {'units':>7}   (units: 128 single-example forwards)")
    for name, ts in times.items():
        print(f"{name:<22} {statistics.median(ts) * 1e3:>10.2f} {ratio(times, name, 'forward') / unit:>7.3f}")
    print()
    rows = [("seethrough batched / one batched forward", ratio(times, "seethrough batched", "one batched forward"),
             "<= 1.2"),
            ("seethrough prefix / prefix limit", ratio(times, "seethrough prefix", "prefix limit"), "<= 1.2"),
            ("attribution / seethrough batched", ratio(times, "attribution", "seethrough batched"), "<= 0.05"),
            ("attribution / naive hook loop", ratio(times, "attribution", "naive hook loop"), "")]
    if "transformer-lens" in times:
        rows += [("transformer-lens / seethrough batched", ratio(times, "transformer-lens", "seethrough batched"),
                  ">= 10 (about)"),
                 ("transformer-lens / seethrough prefix", ratio(times, "transformer-lens", "seethrough prefix"),
                  ">= 15")]
    for name, value, goal in rows:
        print(f"{name:<42} {value:>7.3f}   goal {goal}" if goal else f"{name:<42} {value:>7.3f}")
    print(f"attribution's correlation to the exact sweep (Pearson, {unit} effects): {corr:.3f}")
    if not math.isfinite(corr):
        raise SystemExit("attribution's correlation is not finite")


if __name__ == "__main__":
    main()
