"""Generation: the KV-cache engine against full forwards, sampling rules, batching, the command."""

import json
import os

import numpy as np
import pytest
from child_process import UNDER_ASAN

from femtogpt import GPT, GPTConfig, _core
from femtogpt import generate as gen
from femtogpt.cli import main as cli_main
from femtogpt.graph import no_grad

ISAS = _core.available_isas()
SMALL = dict(vocab_size=37, block_size=16, n_layer=2, n_head=2, n_embd=24)


@pytest.fixture(autouse=True)
def _restore_isa_and_threads():
    isa, nt, team = _core.cpu_isa(), _core.get_num_threads(), _core.get_decode_team()
    yield
    _core.set_cpu_isa(isa)
    _core.set_num_threads(nt)
    _core.set_decode_team(team)


def make_model(seed=0, noise=0.5, **overrides):
    """A GPT with large random weights: logits far from uniform, so sampling rules matter."""
    cfg = GPTConfig(**{**SMALL, **overrides})
    model = GPT(cfg, seed=seed)
    rng = np.random.default_rng(seed + 100)
    for _, p in model.named_parameters():
        p.numpy()[...] += (rng.standard_normal(p.shape) * noise).astype(np.float32)
    return model.eval()


def engine(model, batch, slide=1):
    params = {n: p._impl for n, p in model.named_parameters()}
    return _core.InferenceEngine(params, model.config.n_head, batch, slide)


def t64(a):
    return _core.from_numpy(np.ascontiguousarray(a, dtype=np.int64))


def prefill(eng, prompts):
    lengths = np.array([len(p) for p in prompts])
    tokens = np.zeros((len(prompts), lengths.max()), np.int64)
    for b, p in enumerate(prompts):
        tokens[b, :len(p)] = p
    return np.asarray(eng.prefill(t64(tokens), t64(lengths)))


def full_logits(model, context):
    with no_grad():
        return model(np.asarray(context, np.int64)[None])[0].numpy()[0, -1]


# ---- the cached path equals full forwards -----------------------------------------------

@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("slide, bias", [(1, True), (5, False), (16, True)])
@pytest.mark.parametrize("team", ["never", "always"])
def test_cached_logits_equal_full_forward_at_every_step(rng, isa, slide, bias, team):
    """100 tokens from prompts of different lengths in one batch, across several window
    slides: at every step each row's logits equal a full forward over that row's context
    (logits up to ~6 in magnitude here). Decode steps on one thread, or on a team of two."""
    _core.set_cpu_isa(isa)
    _core.set_num_threads(2)
    _core.set_decode_team(team)
    model = make_model(seed=1, bias=bias, noise=0.3)
    S = model.config.block_size
    prompts = [rng.integers(0, 37, n) for n in (1, 7, 16, 23)]  # 23 > block_size: cropped
    eng = engine(model, len(prompts), slide)
    logits = prefill(eng, prompts)
    seqs = [list(p) for p in prompts]
    ctxs = [list(p[-S:]) for p in prompts]
    state = t64(np.asarray(_core.rng_state(7, len(prompts))).view(np.int64))
    for step in range(101):
        for b in range(len(prompts)):
            ref = full_logits(model, ctxs[b])
            np.testing.assert_allclose(logits[b], ref, rtol=0, atol=1e-5, err_msg=f"step {step} row {b}")
        ctx = np.asarray(eng.context())
        lens = np.asarray(eng.lengths())
        for b in range(len(prompts)):
            assert lens[b] == len(ctxs[b]) and list(ctx[b, :lens[b]]) == ctxs[b]
            assert (ctx[b, lens[b]:] == -1).all()
        if step == 100:
            break
        tok = np.asarray(_core.sample_tokens(_core.from_numpy(logits), 1.0, 0, 1.0, state))
        logits = np.asarray(eng.step(t64(tok)))
        for b in range(len(prompts)):
            seqs[b].append(int(tok[b]))
            if len(ctxs[b]) == S:
                del ctxs[b][:slide]
            ctxs[b].append(int(tok[b]))


def test_window_policy_slide_one_is_nanogpts_crop(rng):
    model = make_model(seed=2)
    S = model.config.block_size
    prompt = rng.integers(0, 37, 5)
    out = model.generate(prompt[None], 40, temperature=0.0, slide=1)[0]
    for t in range(len(prompt), len(out)):  # each token is the argmax over the last S tokens before it
        ctx = out[max(0, t - S):t]
        assert out[t] == int(np.argmax(full_logits(model, ctx)))


@pytest.mark.parametrize("slide", [1, 3, None])
def test_cached_and_uncached_paths_give_the_same_tokens(rng, slide):
    model = make_model(seed=3)
    prompts = [rng.integers(0, 37, n) for n in (2, 11, 30)]
    for kw in (dict(temperature=0.0), dict(temperature=1.0, seed=[4, 5, 6]), dict(top_k=3, seed=9),
               dict(top_p=0.8, seed=2)):
        a = model.generate(prompts, 45, slide=slide, **kw)
        b = model.generate(prompts, 45, slide=slide, cache=False, **kw)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


def test_float64_models_take_the_uncached_path(rng):
    model = make_model(seed=4)
    idx = rng.integers(0, 37, (2, 4))
    a = model.generate(idx, 20, temperature=0.0)
    b = make_model(seed=4).to_dtype(np.float64).generate(idx, 20, temperature=0.0)
    np.testing.assert_array_equal(a, b)


# ---- sampling rules ---------------------------------------------------------------------

def test_greedy_is_deterministic_and_argmax(rng):
    model = make_model(seed=5)
    idx = rng.integers(0, 37, (3, 6))
    a = model.generate(idx, 30, temperature=0.0)
    b = model.generate(idx, 30, temperature=0.0, seed=123)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (3, 36) and a.dtype == np.int64
    np.testing.assert_array_equal(a[:, :6], idx)
    for b_ in range(3):
        for t in range(6, 16):  # inside the first window: the context is the whole prefix
            assert a[b_, t] == int(np.argmax(full_logits(model, a[b_, :t])))


def drive(model, k, p, temperature, steps=150, B=4, seed=0):
    """Yields (logits, token) per row and step, through the engine."""
    rng = np.random.default_rng(seed)
    eng = engine(model, B, slide=8)
    prefill(eng, [rng.integers(0, 37, 3) for _ in range(B)])
    state = t64(np.asarray(_core.rng_state(seed, B)).view(np.int64))
    for _ in range(steps):
        logits = np.asarray(eng.logits())
        tok = np.asarray(eng.generate(1, temperature, k, p, state))[:, 0]
        for b in range(B):
            yield logits[b], int(tok[b])


@pytest.mark.parametrize("k", [1, 2, 5])
def test_top_k_never_samples_outside_the_k_largest(k):
    seen = set()
    for logits, tok in drive(make_model(seed=6, noise=0.2), k, 1.0, 1.3):
        kth = np.sort(logits)[-k]
        assert logits[tok] >= kth
        seen.add(int(np.sum(logits > logits[tok])))
    assert seen == set(range(k))  # and every rank within the k is drawn


@pytest.mark.parametrize("top_p", [0.3, 0.75, 0.95])
def test_top_p_never_samples_outside_the_nucleus(top_p):
    temperature = 0.9
    outside_mass = []
    for logits, tok in drive(make_model(seed=7, noise=0.2), 0, top_p, temperature):
        z = logits.astype(np.float64) / temperature
        p = np.exp(z - z.max())
        p /= p.sum()
        order = np.argsort(-p, kind="stable")
        before = np.cumsum(p[order]) - p[order]  # mass of the tokens ranked above each
        rank = int(np.nonzero(order == tok)[0][0])
        assert before[rank] < top_p + 1e-9, (rank, before[rank])
        outside_mass.append(before[rank])
    assert max(outside_mass) > 0  # not only the argmax


def test_same_seed_same_text_other_seed_other_text(rng):
    model = make_model(seed=8)
    idx = rng.integers(0, 37, (2, 3))
    a = model.generate(idx, 60, temperature=1.0, top_k=20, top_p=0.95, seed=11)
    b = model.generate(idx, 60, temperature=1.0, top_k=20, top_p=0.95, seed=11)
    c = model.generate(idx, 60, temperature=1.0, top_k=20, top_p=0.95, seed=12)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    assert (a[0, 3:] != a[1, 3:]).any()  # rows of one seed draw different streams


@pytest.mark.parametrize("threads", [1, 2])
def test_batched_generation_equals_per_prompt_generation(rng, threads):
    _core.set_num_threads(threads)
    model = make_model(seed=9)
    prompts = [rng.integers(0, 37, n) for n in (1, 4, 9, 16, 20)]
    for kw in (dict(temperature=0.0), dict(temperature=0.8, top_k=10, seed=[3, 1, 4, 1, 5]),
               dict(temperature=1.1, top_p=0.9, seed=[9, 2, 6, 5, 3], slide=1)):
        batched = model.generate(prompts, 50, **kw)
        for i, p in enumerate(prompts):
            one = dict(kw, seed=kw["seed"][i]) if "seed" in kw else kw
            np.testing.assert_array_equal(batched[i], model.generate(p, 50, **one))
    # and logits agree bit for bit: rows never see each other
    eng_b, eng_1 = engine(model, len(prompts), 5), engine(model, 1, 5)
    lb = prefill(eng_b, prompts)
    np.testing.assert_array_equal(lb[3], prefill(eng_1, [prompts[3]])[0])
    for _ in range(20):
        tok = np.argmax(lb, axis=1)
        lb = np.asarray(eng_b.step(t64(tok)))
        np.testing.assert_array_equal(lb[3], np.asarray(eng_1.step(t64(tok[3:4])))[0])


@pytest.mark.parametrize("B", [1, 8])
@pytest.mark.parametrize("n_embd, n_head", [(256, 4), (264, 3), (264, 2)])
def test_results_do_not_depend_on_the_thread_count(rng, B, n_embd, n_head):
    """Wide enough that a decode step splits over a team (the engine times one thread
    against the team on its first steps, so both paths run), with slides. Heads of 64,
    88 and 132 columns: a team splits attention by head only where the heads split evenly
    and a head's columns are whole tiles of 8."""
    model = make_model(seed=10, n_embd=n_embd, n_head=n_head, noise=0.05)
    idx = rng.integers(0, 37, (B, 7))
    seeds = list(range(10, 10 + B))
    outs = []
    for nt, team in ((1, "auto"), (2, "never"), (2, "always"), (2, "auto")):
        _core.set_num_threads(nt)
        _core.set_decode_team(team)
        outs.append(model.generate(idx, 40, temperature=1.0, seed=seeds, slide=5))
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])
    alone = model.generate(idx[B - 1], 40, temperature=1.0, seed=seeds[-1], slide=5)
    np.testing.assert_array_equal(outs[-1][B - 1], alone)


def test_decode_team_policy_is_checked():
    with pytest.raises(ValueError, match="'auto', 'always' or 'never'"):
        _core.set_decode_team("sometimes")


def test_stream_yields_the_tokens_of_generate(rng):
    model = make_model(seed=11)
    idx = rng.integers(0, 37, (3, 5))
    kw = dict(temperature=0.9, top_k=8, seed=21)
    steps = list(model.stream(idx, 33, **kw))
    assert len(steps) == 33 and all(s.shape == (3,) for s in steps)
    np.testing.assert_array_equal(np.stack(steps, axis=1), model.generate(idx, 33, **kw)[:, 5:])
    single = list(model.stream(idx[0], 10, temperature=0.0))
    assert all(isinstance(t, int) for t in single)
    assert single == list(model.generate(idx[0], 10, temperature=0.0)[5:])
    assert list(model.stream(idx, 0)) == []
    uncached = list(model.stream(idx, 33, cache=False, **kw))
    np.testing.assert_array_equal(np.stack(uncached, axis=1), np.stack(steps, axis=1))


def test_prompt_forms(rng):
    model = make_model(seed=12)
    p = rng.integers(0, 37, 4)
    a = model.generate(p, 5, temperature=0.0)
    assert a.shape == (9,)
    assert model.generate([p], 5, temperature=0.0)[0].tolist() == a.tolist()
    assert model.generate(p.tolist(), 5, temperature=0.0).tolist() == a.tolist()
    assert model.generate(p[None], 0).tolist() == [p.tolist()]
    from femtogpt import tensor
    assert model.generate(tensor(p[None]), 5, temperature=0.0)[0].tolist() == a.tolist()


# ---- errors --------------------------------------------------------------------------

@pytest.mark.parametrize("kw, msg", [
    (dict(temperature=-0.1), "temperature"),
    (dict(temperature=float("nan")), "temperature"),
    (dict(top_k=0), "top_k"),
    (dict(top_k=-3), "top_k"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(top_p=-0.2), "top_p"),
    (dict(max_new_tokens=-1), "max_new_tokens"),
    (dict(slide=0), "slide"),
    (dict(slide=17), "slide"),
    (dict(seed=[1, 2]), "seed"),
])
def test_bad_arguments_raise_clear_errors(kw, msg):
    model = make_model(seed=13)
    kw = dict(dict(max_new_tokens=5), **kw)
    with pytest.raises(ValueError, match=msg):
        model.generate(np.zeros((3, 2), np.int64), **kw)
    with pytest.raises(ValueError, match=msg):
        model.stream(np.zeros((3, 2), np.int64), **kw)


def test_bad_prompts_raise_clear_errors():
    model = make_model(seed=14)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.generate([[1, 2], [3, 37]], 3)
    with pytest.raises(ValueError, match="empty"):
        model.generate([[1, 2], []], 3)
    with pytest.raises(ValueError, match="empty"):
        model.generate(np.zeros((2, 0), np.int64), 3)
    with pytest.raises(TypeError, match="integer"):
        model.generate(np.zeros((2, 3), np.float32), 3)
    with pytest.raises(TypeError, match="top_k"):
        model.generate([1], 3, top_k=2.5)


def test_engine_checks_its_inputs():
    model = make_model(seed=15)
    params = {n: p._impl for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match="missing"):
        _core.InferenceEngine({k: v for k, v in params.items() if k != "ln_f.weight"}, 2, 1)
    with pytest.raises(ValueError, match="unexpected parameter 'h.2.ln_1.bias'"):
        _core.InferenceEngine({**params, "h.2.ln_1.bias": params["ln_f.bias"]}, 2, 1)
    with pytest.raises(ValueError, match="shape"):
        _core.InferenceEngine({**params, "h.1.mlp.c_fc.weight": _core.from_numpy(np.zeros((3, 3), np.float32))}, 2, 1)
    with pytest.raises(TypeError, match="float32"):
        _core.InferenceEngine({**params, "ln_f.bias": _core.from_numpy(np.zeros(24))}, 2, 1)
    with pytest.raises(ValueError, match="n_head"):
        _core.InferenceEngine(params, 5, 1)
    with pytest.raises(ValueError, match="slide"):
        _core.InferenceEngine(params, 2, 1, slide=0)
    eng = _core.InferenceEngine(params, 2, 2)
    with pytest.raises(ValueError, match="prefill"):
        eng.step(t64([1, 2]))
    with pytest.raises(ValueError, match="lengths"):
        eng.prefill(t64([[1, 2], [3, 4]]), t64([2, 0]))
    with pytest.raises(ValueError, match="vocabulary"):
        eng.prefill(t64([[1, 2], [3, 99]]), t64([2, 2]))
    eng.prefill(t64([[1, 2], [3, 99]]), t64([2, 1]))  # padding is never read
    with pytest.raises(ValueError, match="one token per row"):
        eng.step(t64([1, 2, 3]))
    with pytest.raises(ValueError, match="rng_state"):
        eng.generate(3, 1.0)
    with pytest.raises(ValueError, match="top_p"):
        eng.generate(3, 0.0, 0, 0.0)


# ---- kernels ---------------------------------------------------------------------------

@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("M, N, K", [(1, 1, 1), (1, 37, 13), (2, 9, 64), (3, 8, 7), (5, 17, 100), (8, 33, 257)])
def test_linear_rows_matches_the_reference_and_is_row_independent(rng, isa, M, N, K):
    _core.set_cpu_isa(isa)
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = rng.standard_normal((N, K)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    out = np.asarray(_core.linear_rows(_core.from_numpy(x), _core.from_numpy(w), _core.from_numpy(b)))
    ref = x.astype(np.float64) @ w.astype(np.float64).T + b
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * np.sqrt(K))
    ref32 = np.asarray(_core.linear_rows(_core.from_numpy(x.astype(np.float64)), _core.from_numpy(w.astype(np.float64)),
                                         _core.from_numpy(b.astype(np.float64)), reference=True))
    np.testing.assert_allclose(out, ref32, rtol=1e-5, atol=1e-5 * np.sqrt(K))
    for m in range(M):  # each row alone gives the same bits
        alone = np.asarray(_core.linear_rows(_core.from_numpy(x[m:m + 1].copy()), _core.from_numpy(w),
                                             _core.from_numpy(b)))
        np.testing.assert_array_equal(alone[0], out[m])


@pytest.mark.skipif("avx2" not in ISAS, reason="the packed kernel is AVX2")
@pytest.mark.parametrize("M, N, K", [(1, 8, 8), (1, 24, 16), (2, 16, 64), (3, 8, 24), (4, 40, 384), (8, 72, 96)])
def test_linear_packed_gives_the_bits_of_linear_rows(rng, M, N, K):
    """The decode step's packed weights change where the kernel reads, not what it sums."""
    _core.set_cpu_isa("avx2")
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = rng.standard_normal((N, K)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    for threads in (1, 2):
        _core.set_num_threads(threads)
        rows = np.asarray(_core.linear_rows(_core.from_numpy(x), _core.from_numpy(w), _core.from_numpy(b)))
        packed = np.asarray(_core.linear_rows(_core.from_numpy(x), _core.from_numpy(w), _core.from_numpy(b),
                                              packed=True))
        np.testing.assert_array_equal(packed, rows)
    with pytest.raises(ValueError, match="multiples of 8"):
        _core.linear_rows(_core.from_numpy(x), _core.from_numpy(w[:N - 1].copy()), packed=True)


# ---- the command ------------------------------------------------------------------------

def save_char_checkpoint(tmp_path, text="hello world, the cat sat on the mat.\n"):
    from femtogpt.tokenizer import CharTokenizer

    tok = CharTokenizer.from_text(text)
    model = make_model(seed=16, vocab_size=tok.vocab_size)
    d = tmp_path / "run"
    model.save(d, tokenizer=tok)
    return d, model, tok


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmRSS, Linux's")
@pytest.mark.skipif(UNDER_ASAN, reason="ASan's quarantine keeps freed memory resident")
def test_empty_cache_frees_the_packed_weights_a_generation_left():
    """An engine leaves its packed weights (the model's size) cached for the next one; empty_cache()
    gives them back, so that `femtogpt train` does not hold them through training. In a child process,
    for a clean resident size: a 48 MiB model."""
    from child_process import run_python

    child = run_python("""
        import numpy as np, femtogpt as fg
        from femtogpt import GPT, GPTConfig
        def rss():
            return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmRSS"))
        m = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=4, n_head=4, n_embd=512), seed=0)
        size = sum(p.nbytes for p in m.parameters())
        before = rss()
        m.generate(np.zeros((1, 1), np.int64), 2, seed=0)
        after = rss()
        fg.empty_cache()
        print((after - before) / size, (rss() - before) / size)
    """, timeout=120)
    assert child.returncode == 0, child.stderr
    kept, left = map(float, child.stdout.split())
    assert kept > 0.8 and left < 0.1, (kept, left)


def test_cli_streams_samples(tmp_path, capsys):
    d, model, tok = save_char_checkpoint(tmp_path)
    assert cli_main(["generate", "--checkpoint", str(d), "--prompt", "the ", "--max-new-tokens", "20",
                     "--temperature", "0", "--num-samples", "2"]) == 0
    out = capsys.readouterr().out
    expected = tok.decode(model.generate(tok.encode("the "), 20, temperature=0.0))
    assert out == f"{expected}\n---\n{expected}\n---\n"


def test_cli_prompt_file_and_seeds(tmp_path, capsys):
    d, model, tok = save_char_checkpoint(tmp_path)
    pf = tmp_path / "prompts.txt"
    pf.write_text("hello\n\nthe mat\n")
    assert cli_main(["generate", "--checkpoint", str(d), "--prompt-file", str(pf), "--max-new-tokens", "15",
                     "--num-samples", "2", "--seed", "5", "--top-p", "0.9"]) == 0
    out = capsys.readouterr().out
    samples = out.split("\n---\n")[:-1]
    assert len(samples) == 4
    for i, (prompt, seed) in enumerate([("hello", 5), ("hello", 6), ("the mat", 5), ("the mat", 6)]):
        ids = model.generate(tok.encode(prompt), 15, temperature=0.8, top_p=0.9, seed=seed)
        assert samples[i] == tok.decode(ids)


@pytest.mark.parametrize("args, msg", [
    (["--prompt", "héllo"], "not in the vocabulary"),
    (["--prompt", ""], "prompt is empty"),
    (["--temperature", "-1"], "temperature"),
    (["--top-k", "0"], "top_k"),
    (["--top-p", "2"], "top_p"),
    (["--max-new-tokens", "-5"], "max_new_tokens"),
    (["--num-samples", "0"], "num-samples"),
    (["--max-new-tokens", str(2**63)], "fit in 64 bits"),  # the old code streamed without end
    (["--slide", "0"], "--slide: slide must be an integer in [1, block_size"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, args, msg):
    from child_process import deadline

    d, _, _ = save_char_checkpoint(tmp_path)
    with deadline(60):
        assert cli_main(["generate", "--checkpoint", str(d), *args]) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert msg in err and err.count("\n") == 1 and err.startswith("femtogpt generate: error:")
    assert captured.out == ""  # the error comes before the prompt is printed


def test_cli_top_k_past_any_vocabulary_is_no_limit(tmp_path, capsys):
    d, model, tok = save_char_checkpoint(tmp_path)
    assert cli_main(["generate", "--checkpoint", str(d), "--prompt", "the ", "--max-new-tokens", "10",
                     "--seed", "3", "--top-k", str(2**64)]) == 0
    expected = tok.decode(model.generate(tok.encode("the "), 10, temperature=0.8, seed=3))  # the CLI's default
    assert capsys.readouterr().out == expected + "\n---\n"


def test_cli_refuses_a_tokenizer_larger_than_the_model(tmp_path, capsys):
    """A byte tokenizer (256) beside a char model: the prompt's low bytes fit the model, and it used
    to generate garbage and exit 0."""
    from femtogpt.tokenizer import ByteTokenizer

    d, _, _ = save_char_checkpoint(tmp_path)
    ByteTokenizer().save(d)
    assert cli_main(["generate", "--checkpoint", str(d), "--prompt", " !"]) == 2
    captured = capsys.readouterr()
    assert "tokenizer has 256 tokens but its model a vocabulary of" in captured.err and captured.out == ""


def test_cli_missing_checkpoint_and_prompt_file(tmp_path, capsys):
    assert cli_main(["generate", "--checkpoint", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and err.count("\n") == 1
    d, _, _ = save_char_checkpoint(tmp_path)
    assert cli_main(["generate", "--checkpoint", str(d), "--prompt-file", str(tmp_path / "none.txt")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_says_what_a_checkpoint_or_prompt_file_is_instead(tmp_path, capsys):
    """A directory as --prompt-file and a file as --checkpoint both said "does not exist"; a prompt file
    that is not UTF-8 gave a bare UnicodeDecodeError (a traceback)."""
    d, _, _ = save_char_checkpoint(tmp_path)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    for args, msg in [(["--checkpoint", str(d / "config.json")], "config.json' is a file, not a directory"),
                      (["--checkpoint", str(d), "--prompt-file", str(tmp_path)],
                       f"prompt file {tmp_path} is a directory; expected a UTF-8 text file"),
                      (["--checkpoint", str(d), "--prompt-file", str(tmp_path / "latin1.txt")],
                       "latin1.txt is not UTF-8 text: byte 0xe9 is invalid")]:
        assert cli_main(["generate", *args]) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err


def write_gpt2_dir(tmp_path, tokenizer_files):
    """A tiny Hugging Face GPT-2 directory: transformers' names and layouts, a byte-level
    BPE trained here and saved as GPT-2's vocab.json + merges.txt (or as tokenizer.json)."""
    from safetensors.numpy import save_file

    from femtogpt.tokenizer import BPETokenizer

    text = "the quick brown fox jumps over the lazy dog. " * 20 + "héllo wörld ünïcode " * 5
    bpe = BPETokenizer.train(text, vocab_size=300)
    V = bpe.vocab_size
    C, T, L = 16, 12, 2
    ours = make_model(seed=17, vocab_size=V, block_size=T, n_layer=L, n_embd=C, n_head=2, noise=0.3)
    sd = {f"transformer.{k}": v for k, v in ours.state_dict().items()}
    for i in range(L):
        sd[f"transformer.h.{i}.attn.bias"] = np.tril(np.ones((T, T), np.float32))[None, None]
    sd["lm_head.weight"] = sd["transformer.wte.weight"].copy()
    d = tmp_path / "gpt2"
    d.mkdir()
    save_file(sd, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps(dict(model_type="gpt2", architectures=["GPT2LMHeadModel"], n_embd=C,
                                                   n_layer=L, n_head=2, n_positions=T, vocab_size=V)))
    if tokenizer_files == "vocab+merges":
        bpe.backend.model.save(str(d))
        assert (d / "vocab.json").is_file() and (d / "merges.txt").is_file()
    else:
        bpe.backend.save(str(d / "tokenizer.json"))
    return d, ours, bpe


@pytest.mark.parametrize("tokenizer_files", ["vocab+merges", "tokenizer.json"])
def test_cli_generates_from_a_hugging_face_gpt2_directory(tmp_path, capsys, tokenizer_files):
    d, ours, bpe = write_gpt2_dir(tmp_path, tokenizer_files)
    prompt = "the lazy wörld"
    assert cli_main(["generate", "--checkpoint", str(d), "--prompt", prompt, "--max-new-tokens", "30",
                     "--temperature", "0.7", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    ids = ours.generate(bpe.encode(prompt), 30, temperature=0.7, seed=3)
    assert out == bpe.decode(ids) + "\n---\n"
    assert out.startswith(prompt) and len(out) > len(prompt) + 5


def test_text_stream_holds_back_partial_characters():
    import io

    from femtogpt.tokenizer import ByteTokenizer

    buf = io.StringIO()
    s = gen._TextStream(ByteTokenizer(), buf)
    for b in "aé€".encode():
        s.add(b)
        assert "\ufffd" not in buf.getvalue()
    s.finish()
    assert buf.getvalue() == "aé€"
