"""The GPT model: shapes, loss at initialisation, whole-model gradients, config checks, checkpoints."""

import json
import math
import os

import numpy as np
import pytest

import femtogpt as fg
from femtogpt import GPT, GPTConfig
from femtogpt.checkpoint import CheckpointError, save_safetensors
from femtogpt.testing import gradcheck

TINY = dict(vocab_size=7, block_size=5, n_layer=2, n_head=2, n_embd=4)


def batch(rng, cfg, B=2, T=None):
    T = T or cfg.block_size
    return rng.integers(0, cfg.vocab_size, (B, T)), rng.integers(0, cfg.vocab_size, (B, T))


def test_forward_shapes_and_initial_loss(rng):
    cfg = GPTConfig(vocab_size=76, block_size=16, n_layer=2, n_head=2, n_embd=32)
    model = GPT(cfg, seed=0)
    x, y = batch(rng, cfg, B=3)
    logits, loss = model(x, y)
    assert logits.shape == (3, 16, 76)
    # Small initial weights give near-uniform predictions: the loss starts near ln(V).
    assert abs(loss.item() - math.log(76)) < 0.1
    logits2, none = model(x[:, :5])
    assert none is None and logits2.shape == (3, 5, 76)


def test_logits_do_not_see_the_future(rng):
    cfg = GPTConfig(**TINY)
    model = GPT(cfg, seed=1)
    x, _ = batch(rng, cfg)
    a = model(x)[0].numpy().copy()
    x2 = x.copy()
    x2[:, -1] = (x2[:, -1] + 1) % cfg.vocab_size
    b = model(x2)[0].numpy()
    np.testing.assert_array_equal(a[:, :-1], b[:, :-1])


@pytest.mark.parametrize("attention", ["flash", "standard"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("recompute_attention", [False, True])
def test_whole_model_gradients_against_finite_differences(rng, attention, bias, recompute_attention):
    cfg = GPTConfig(**TINY, bias=bias, attention=attention, recompute_attention=recompute_attention)
    model = GPT(cfg, seed=2).to_dtype(np.float64)
    x, y = batch(rng, cfg)
    params = model.parameters()
    gradcheck(lambda *ps: model(x, y)[1], params, atol=1e-6, rtol=1e-4)


def test_flash_and_standard_models_agree(rng):
    cfg = GPTConfig(vocab_size=11, block_size=33, n_layer=2, n_head=2, n_embd=16)
    x, y = batch(rng, cfg)
    a = GPT(cfg, seed=3)
    b = GPT(GPTConfig(**{**cfg.to_dict(), "attention": "standard"}), seed=3)
    la, lb = a(x, y)[1], b(x, y)[1]
    assert abs(la.item() - lb.item()) < 1e-5
    la.backward()
    lb.backward()
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-3, atol=1e-6, err_msg=n)


def test_parameter_names_follow_gpt2():
    model = GPT(GPTConfig(**TINY))
    names = [n for n, _ in model.named_parameters()]
    assert names[:2] == ["wte.weight", "wpe.weight"]
    assert "h.1.attn.c_attn.weight" in names and "h.0.mlp.c_proj.bias" in names and names[-1] == "ln_f.bias"
    sd = model.state_dict()
    C = TINY["n_embd"]
    assert sd["h.0.attn.c_attn.weight"].shape == (C, 3 * C)
    assert sd["h.0.mlp.c_fc.weight"].shape == (C, 4 * C)
    assert sd["h.0.mlp.c_proj.weight"].shape == (4 * C, C)
    n = model.num_parameters()
    assert n == sum(v.size for v in sd.values())
    assert model.num_parameters(exclude_embeddings=True) == n - TINY["block_size"] * C


@pytest.mark.parametrize("config", [TINY, dict(vocab_size=13, block_size=17, n_layer=3, n_head=3, n_embd=24,
                                                bias=False)])
def test_flops_per_token_counts_the_products_a_training_step_runs(monkeypatch, config):
    """The linear part of flops_per_token (everything but causal attention's 6 L C (T + 1)) equals
    2 M N K summed over the products a forward and backward actually run, counted as they are
    called, at the full length and a shorter one."""
    counted = []
    matmul, gelu_backward = fg._core.matmul, fg._core.gelu_linear_backward_input_

    def counting_matmul(a, b, trans_a=False, trans_b=False, *args, **kw):
        out = matmul(a, b, trans_a, trans_b, *args, **kw)
        counted.append(2 * math.prod(out.shape) * (a.shape[-2] if trans_a else a.shape[-1]))
        return out

    def counting_gelu_backward(h, g, w, *args):  # (g (N,O) @ w (O,K)) * gelu'(h (N,K))
        counted.append(2 * h.shape[0] * g.shape[1] * h.shape[1])
        return gelu_backward(h, g, w, *args)

    monkeypatch.setattr(fg._core, "matmul", counting_matmul)
    monkeypatch.setattr(fg._core, "gelu_linear_backward_input_", counting_gelu_backward)
    cfg = GPTConfig(**config)
    model = GPT(cfg, seed=0)
    C, L, B = cfg.n_embd, cfg.n_layer, 3
    for T in (cfg.block_size, 2):
        idx = np.random.default_rng(0).integers(0, cfg.vocab_size, (B, T))
        counted.clear()
        model(idx, idx)[1].backward()
        attention = 6 * L * C * (T + 1)
        assert sum(counted) == B * T * (model.flops_per_token(T) - attention)
    assert model.flops_per_token() == model.flops_per_token(cfg.block_size)
    assert model.flops_per_token(np.int64(2)) == model.flops_per_token(2)
    for bad in (0, cfg.block_size + 1):
        with pytest.raises(ValueError, match=f"seq_len must be in \\[1, block_size={cfg.block_size}\\]"):
            model.flops_per_token(bad)
    for bad in (2.5, True, "3"):
        with pytest.raises(TypeError, match="seq_len must be an integer"):
            model.flops_per_token(bad)


def test_gpt2_initialisation_scales_residual_projections():
    cfg = GPTConfig(vocab_size=50, block_size=8, n_layer=8, n_head=4, n_embd=128)
    sd = GPT(cfg).state_dict()
    assert abs(sd["h.0.mlp.c_fc.weight"].std() - 0.02) < 0.002
    assert abs(sd["h.0.mlp.c_proj.weight"].std() - 0.02 / math.sqrt(16)) < 0.001


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (1536, 384), (3, 9000), (0, 4), (4, 0)])
def test_normal_parameters_are_drawn_in_rows_with_the_one_call_values(shape):
    """Weights are drawn a few rows at a time into the tensor (no float64 copy of the whole weight),
    with exactly the values of one call: (rng.standard_normal(shape) * std).astype(float32)."""
    from femtogpt.nn import normal_parameter
    got = normal_parameter(np.random.default_rng(5), shape, 0.02)
    assert got.requires_grad and got.dtype == np.float32
    want = (np.random.default_rng(5).standard_normal(shape) * 0.02).astype(np.float32)
    np.testing.assert_array_equal(got.numpy(), want)


def test_dropout_is_seeded_and_off_in_eval(rng):
    cfg = GPTConfig(**{**TINY, "dropout": 0.2})
    x, y = batch(rng, cfg)
    l1 = GPT(cfg, seed=4)(x, y)[1].item()
    l2 = GPT(cfg, seed=4)(x, y)[1].item()
    assert l1 == l2
    m = GPT(cfg, seed=4).eval()
    assert m(x, y)[1].item() == m(x, y)[1].item()


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_embd=10, n_head=3), "divisible"),
    (dict(n_layer=0), "positive"),
    (dict(attention="sparse"), "attention"),
    (dict(device="tpu"), "device"),
    (dict(dropout=1.0), "dropout"),
    (dict(checkpoint_every=-1), "checkpoint_every must be an integer >= 0"),
    (dict(recompute_attention="yes"), "recompute_attention must be True or False"),
    (dict(bias="no"), "bias must be True or False, got 'no'"),
    (dict(bias=1), "bias must be True or False"),
    (dict(dropout="0.1"), "dropout must be a number in"),
    (dict(dropout=float("nan")), "dropout must be a number in"),
    (dict(attention=["flash"]), "attention"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GPTConfig(**{**TINY, **kwargs})


def test_input_errors(rng):
    model = GPT(GPTConfig(**TINY))
    with pytest.raises(ValueError, match="longer than block_size 5"):
        model(np.zeros((1, 6), np.int64))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(np.full((1, 3), 7))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(np.full((1, 3), -1))
    with pytest.raises(TypeError, match="integer"):
        model(np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        model(np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="targets"):
        model(np.zeros((1, 3), np.int64), np.zeros((1, 2), np.int64))
    with pytest.raises(ValueError, match="preset"):
        GPTConfig.from_preset("huge")


# ---- checkpoints -------------------------------------------------------------------------------


def test_save_load_round_trip_is_bit_exact(tmp_path, rng):
    cfg = GPTConfig(**TINY)
    model = GPT(cfg, seed=5)
    for p in model.parameters():  # make every tensor distinct from its initialisation
        p.numpy()[...] += rng.standard_normal(p.shape).astype(np.float32)
    model.save(tmp_path / "ck")
    loaded = GPT.load(tmp_path / "ck")
    assert loaded.config == cfg
    for (n, p), (_, q) in zip(model.named_parameters(), loaded.named_parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=n)


def test_checkpoint_tensors_have_the_gpt2_layouts_on_disk(tmp_path):
    """save() writes from views, four of them transposed: read the file itself, not through GPT.load."""
    from safetensors.numpy import load_file

    cfg = GPTConfig(**TINY)
    model = GPT(cfg, seed=3)
    model.save(tmp_path / "ck")
    disk = load_file(str(tmp_path / "ck" / "model.safetensors"))
    C = cfg.n_embd  # noqa: N806
    block = model.h[0]
    for name, want, shape in [("wte.weight", model.wte.weight, (cfg.vocab_size, C)),
                              ("h.0.attn.c_attn.weight", block.attn.c_attn.weight, (C, 3 * C)),
                              ("h.0.attn.c_proj.weight", block.attn.c_proj.weight, (C, C)),
                              ("h.0.mlp.c_fc.weight", block.mlp.c_fc.weight, (C, 4 * C)),
                              ("h.0.mlp.c_proj.weight", block.mlp.c_proj.weight, (4 * C, C))]:
        assert disk[name].shape == shape, name
        got = disk[name] if name == "wte.weight" else disk[name].T  # Conv1D (in, out); ours (out, in)
        np.testing.assert_array_equal(got, want.numpy(), err_msg=name)


def test_config_of_numpy_scalars_saves_as_json(tmp_path):
    cfg = GPTConfig(**{**TINY, "n_layer": np.int64(2), "dropout": np.float32(0.5),
                       "recompute_attention": np.bool_(True), "checkpoint_every": np.int32(1)})
    GPT(cfg).save(tmp_path / "ck")
    assert GPT.load(tmp_path / "ck").config == cfg
    assert type(cfg.n_layer) is int and type(cfg.recompute_attention) is bool


def test_load_errors(tmp_path):
    cfg = GPTConfig(**TINY)
    GPT(cfg).save(tmp_path / "ck")
    with pytest.raises(FileNotFoundError):
        GPT.load(tmp_path / "missing")
    # A config that does not match the tensors.
    bad = json.loads((tmp_path / "ck" / "config.json").read_text())
    bad["n_embd"] = 8
    (tmp_path / "ck" / "config.json").write_text(json.dumps(bad))
    with pytest.raises(CheckpointError, match="shape|missing"):
        GPT.load(tmp_path / "ck")
    # A truncated tensor file.
    GPT(cfg).save(tmp_path / "ck2")
    f = tmp_path / "ck2" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(CheckpointError):
        GPT.load(tmp_path / "ck2")
    os.remove(tmp_path / "ck2" / "model.safetensors")
    with pytest.raises(FileNotFoundError):
        GPT.load(tmp_path / "ck2")


@pytest.mark.parametrize("key, value, match", [
    ("n_layer", 20000, "holds 1 layers, the config has n_layer=20000"),
    ("n_layer", 10**9, "holds 1 layers, the config has n_layer=1000000000"),
    ("vocab_size", 10**12, r"wte.weight: \(7, 4\) \(expected \(1000000000000, 4\)\)"),
    ("block_size", 10**9, r"wpe.weight: \(5, 4\) \(expected \(1000000000, 4\)\)"),
])
def test_load_checks_the_tensors_against_the_config_before_making_the_model(tmp_path, key, value, match):
    """A config that the tensors do not match is an error before the model it describes is allocated
    (n_layer 20000 took 8.6 s and 466 MB before saying the tensors were missing; 10**12 tokens failed
    with a MemoryError)."""
    GPT(GPTConfig(**{**TINY, "n_layer": 1})).save(tmp_path / "ck")
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    (tmp_path / "ck" / "config.json").write_text(json.dumps({**cfg, key: value}))
    fg.reset_peak_memory_stats()
    before = fg.memory_stats()["current_bytes"]
    with pytest.raises(CheckpointError, match=match):
        GPT.load(tmp_path / "ck")
    assert fg.memory_stats()["peak_bytes"] - before < 1 << 20


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_, np.complex64])
def test_load_state_dict_takes_floating_point_tensors_only(tmp_path, dtype):
    """An I32 tensor in model.safetensors loaded as integer-valued floats, a complex one lost its
    imaginary part with a warning; a state dict is checked whole before any parameter changes."""
    model = GPT(GPTConfig(**TINY))
    before = model.state_dict()
    bad = {**before, "h.1.ln_2.weight": before["h.1.ln_2.weight"].astype(dtype)}
    bad["wte.weight"] = bad["wte.weight"] + 1  # comes first: must not be loaded either
    with pytest.raises(TypeError, match=f"tensor 'h.1.ln_2.weight' has dtype {np.dtype(dtype)}; expected a "
                                        r"floating point dtype \(float16, float32 or float64\)"):
        model.load_state_dict(bad)
    for name, arr in model.state_dict().items():
        np.testing.assert_array_equal(arr, before[name], err_msg=name)
    if dtype is not np.complex64:  # safetensors has no complex dtype
        model.save(tmp_path / "ck")
        save_safetensors(tmp_path / "ck" / "model.safetensors", bad)
        with pytest.raises(CheckpointError, match=r"model.safetensors: tensor 'h.1.ln_2.weight' has dtype"):
            GPT.load(tmp_path / "ck")
    model.load_state_dict({k: v.astype(np.float16) for k, v in before.items()})  # floats convert


@pytest.mark.parametrize("text, match", [
    ("[]", "config.json: expected a JSON object, got list"),
    ("5", "config.json: expected a JSON object, got int"),
    ("null", "config.json: expected a JSON object, got NoneType"),
    ("[" * 100_000 + "]" * 100_000, "config.json: .*nested too deeply"),
    (json.dumps({**TINY, "bias": "no"}), "config.json is not a valid GPTConfig: GPTConfig.bias must be True or False"),
    # n_head 2 -> the default: every shape still fits, and the model loaded with other heads
    (json.dumps({k: v for k, v in TINY.items() if k != "n_head"}), "config.json lacks n_head: a checkpoint's"),
    (json.dumps({"vocab_size": 7}), "config.json lacks block_size, n_layer, n_head, n_embd"),
])
def test_load_of_a_config_json_that_is_not_a_config(tmp_path, text, match):
    """A list, a number or null raised AttributeError ('list' object has no attribute 'update'), deep
    nesting RecursionError, and "bias": "no" made a model with biases (a non-empty str is true)."""
    GPT(GPTConfig(**TINY)).save(tmp_path / "ck")
    (tmp_path / "ck" / "config.json").write_text(text)
    with pytest.raises(CheckpointError, match=match):
        GPT.load(tmp_path / "ck")


def test_load_of_a_file_says_it_is_not_a_directory(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match="is a file, not a directory"):
        GPT.load(tmp_path / "model.safetensors")


def test_seed_must_be_a_non_negative_integer():
    for seed in (-1, 1.5, True):
        with pytest.raises(ValueError, match=f"GPT: seed must be an integer >= 0, got {seed!r}"):
            GPT(GPTConfig(**TINY), seed=seed)


def test_loads_a_hugging_face_gpt2_directory(tmp_path, rng):
    """A GPT-2 directory as transformers writes it: Conv1D layouts, a `transformer.` prefix,
    attention-mask buffers, a tied lm_head."""
    from safetensors.numpy import save_file

    C, V, T, L = 8, 13, 6, 2
    ours = GPT(GPTConfig(vocab_size=V, block_size=T, n_layer=L, n_head=2, n_embd=C), seed=6)
    sd = {f"transformer.{k}": v for k, v in ours.state_dict().items()}
    for i in range(L):
        sd[f"transformer.h.{i}.attn.bias"] = np.tril(np.ones((T, T), np.float32))[None, None]
        sd[f"transformer.h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
    sd["lm_head.weight"] = sd["transformer.wte.weight"].copy()
    d = tmp_path / "gpt2"
    d.mkdir()
    save_file(sd, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps(dict(model_type="gpt2", n_embd=C, n_layer=L, n_head=2,
                                                   n_positions=T, vocab_size=V)))
    model = GPT.load(d)
    x = rng.integers(0, V, (2, T))
    np.testing.assert_array_equal(model(x)[0].numpy(), ours(x)[0].numpy())


@pytest.mark.parametrize("every", [1, 2, 3])
@pytest.mark.parametrize("dropout", [0.0, 0.2])
@pytest.mark.parametrize("attention", ["flash", "standard"])
def test_checkpointed_gradients_are_bitwise_equal(rng, every, dropout, attention):
    base = dict(vocab_size=11, block_size=9, n_layer=4, n_head=2, n_embd=8, dropout=dropout,  # every=3: 3 + 1
                attention=attention)
    x, y = batch(rng, GPTConfig(**base), B=3)
    _assert_same_losses_and_gradients(GPT(GPTConfig(**base), seed=7),
                                      GPT(GPTConfig(**base, checkpoint_every=every), seed=7), x, y)


def _assert_same_losses_and_gradients(plain, other, x, y):
    """Two steps' losses and the accumulated gradients of two models are bitwise equal."""
    for _ in range(2):  # twice: the dropout counters must advance identically
        lp, lo = plain(x, y)[1], other(x, y)[1]
        assert lp.item() == lo.item()
        lp.backward()
        lo.backward()
    for (n, p), (_, q) in zip(plain.named_parameters(), other.named_parameters()):
        np.testing.assert_array_equal(p.grad.numpy(), q.grad.numpy(), err_msg=n)


@pytest.mark.parametrize("every, vocab", [
    (0, 11), (2, 11),  # segments [0, 1] and [2]: the last keeps its activations
    (1, 11),           # every block a segment, the last one kept
    (1, 50),           # vocab > 4 * n_embd: the last block too is checkpointed, recomputed in backward
])
@pytest.mark.parametrize("dropout", [0.0, 0.2])
@pytest.mark.parametrize("attention", ["flash", "standard"])
def test_recompute_attention_gives_bitwise_equal_gradients(rng, every, vocab, dropout, attention):
    base = dict(vocab_size=vocab, block_size=9, n_layer=3, n_head=2, n_embd=8, dropout=dropout,
                attention=attention, checkpoint_every=every)
    x, y = batch(rng, GPTConfig(**base), B=3)
    plain = GPT(GPTConfig(**base), seed=7)
    lean = GPT(GPTConfig(**base, recompute_attention=True), seed=7)
    _assert_same_losses_and_gradients(plain, lean, x, y)
    lean.eval()  # and without the graph: the same logits
    with fg.no_grad():
        np.testing.assert_array_equal(plain.eval()(x)[0].numpy(), lean(x)[0].numpy())


def _without_the_embeddings_recomputed(model):
    """model, its first block made to keep its input (GPT._embed without the x_again function)."""
    model._embed = lambda idx, T: (GPT._embed(model, idx, T)[0], None)  # noqa: N803
    return model


@pytest.mark.parametrize("recompute_attention", [False, True])
@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_recomputing_the_embeddings_gives_bitwise_equal_gradients(rng, recompute_attention, dropout):
    """GPT._embed's x_again rebuilds the first block's input from the token ids in backward, dropout mask
    included: the same losses and gradients as a first block that keeps it."""
    cfg = GPTConfig(vocab_size=11, block_size=9, n_layer=2, n_head=2, n_embd=8, dropout=dropout,
                    recompute_attention=recompute_attention)
    x, y = batch(rng, cfg, B=3)
    _assert_same_losses_and_gradients(_without_the_embeddings_recomputed(GPT(cfg, seed=7)), GPT(cfg, seed=7), x, y)


@pytest.mark.parametrize("change", ["dropout_p", "module"])
def test_recomputed_embeddings_use_what_forward_used(rng, change):
    """x_again takes the dropout probability and the embedding weights at forward: changing the modules
    between forward and backward (a dropout schedule, a swapped embedding) changes no gradient."""
    cfg = GPTConfig(vocab_size=11, block_size=9, n_layer=2, n_head=2, n_embd=8, dropout=0.2)
    x, y = batch(rng, cfg, B=3)
    plain, lean = _without_the_embeddings_recomputed(GPT(cfg, seed=7)), GPT(cfg, seed=7)
    for model in (plain, lean):
        loss = model(x, y)[1]
        if change == "dropout_p":
            model.drop.p = 0.0
        else:
            model.wpe = type(model.wpe)(cfg.block_size, cfg.n_embd, np.random.default_rng(1))
        loss.backward()
    for (n, p), (_, q) in zip(plain.named_parameters(), lean.named_parameters()):
        if p.grad is not None or q.grad is not None:
            np.testing.assert_array_equal(p.grad.numpy(), q.grad.numpy(), err_msg=n)
    assert lean.h[0].attn.c_attn.weight.grad is not None


def test_the_first_block_does_not_keep_the_embeddings():
    """After forward, exactly one (B, T, C) activation less is held than when the first block keeps its
    input. Measured with FEMTOGPT_POOL=0 in a child process, where the pool's statistics count the bytes
    asked for (pooling may grant a request all of a free block a little bigger than it). The cyclic
    garbage of the previous models is collected before each measurement and never during one: on
    Python 3.12 a collection inside forward freed a whole earlier model there (-414,720 bytes)."""
    from child_process import run_python

    child = run_python("""
        import gc, json, numpy as np, femtogpt as fg
        from femtogpt import GPT, GPTConfig
        from test_model import _without_the_embeddings_recomputed
        rng = np.random.default_rng(0)
        out = []
        gc.disable()
        for recompute in (False, True):
            for dropout in (0.0, 0.2):
                cfg = GPTConfig(vocab_size=11, block_size=64, n_layer=2, n_head=2, n_embd=32, dropout=dropout,
                                recompute_attention=recompute)
                x, y = rng.integers(0, 11, (4, 64)), rng.integers(0, 11, (4, 64))
                held = []
                for model in (GPT(cfg, seed=3), _without_the_embeddings_recomputed(GPT(cfg, seed=3))):
                    gc.collect()
                    base = fg.memory_stats()["current_bytes"]
                    loss = model(x, y)[1]
                    held.append(fg.memory_stats()["current_bytes"] - base)
                    loss.backward()
                    del loss
                out.append(held[1] - held[0])
        print(json.dumps(out))
    """, timeout=120, env={"FEMTOGPT_POOL": "0"})
    assert child.returncode == 0, child.stderr
    assert json.loads(child.stdout) == [4 * 64 * 32 * 4] * 4


@pytest.mark.parametrize("vocab, every, segments_checkpointed", [
    (11, 1, 2),   # small head: the last of 3 segments keeps its activations
    (40, 1, 3),   # vocab > 4 * n_embd: the head's peak comes first, every segment is checkpointed
    (11, 3, 1),   # one segment (every = n_layer) is always checkpointed
    (11, 2, 1),   # segments [0, 1] and [2]: the last keeps its activations
])
def test_which_segments_are_checkpointed(rng, monkeypatch, vocab, every, segments_checkpointed):
    import femtogpt.model as model_module

    calls = []
    real = model_module.checkpoint
    monkeypatch.setattr(model_module, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = GPTConfig(vocab_size=vocab, block_size=9, n_layer=3, n_head=2, n_embd=8, checkpoint_every=every)
    x, y = batch(rng, cfg, B=2)
    GPT(cfg, seed=0)(x, y)[1].backward()
    assert len(calls) == segments_checkpointed


def _step_peak_bytes(rng, **config) -> int:
    """The pool's peak over one forward and backward, above what was in use before it."""
    cfg = GPTConfig(vocab_size=11, block_size=128, n_layer=4, n_head=2, n_embd=64, **config)
    model = GPT(cfg, seed=0)
    x, y = batch(rng, cfg, B=8)
    fg.reset_peak_memory_stats()
    base = fg.memory_stats()["current_bytes"]
    model(x, y)[1].backward()
    return fg.memory_stats()["peak_bytes"] - base


def test_checkpointing_lowers_peak_memory(rng):
    assert _step_peak_bytes(rng, checkpoint_every=1) < 0.7 * _step_peak_bytes(rng, checkpoint_every=0)


def test_recompute_attention_lowers_peak_memory(rng):
    """Per block it keeps x, qkv and the MLP's h (1 + 3 + 4 widths) instead of also the attention output
    and the mid-block residual (2 more): about 8/10 of the activations."""
    assert _step_peak_bytes(rng, recompute_attention=True) < 0.9 * _step_peak_bytes(rng, recompute_attention=False)
