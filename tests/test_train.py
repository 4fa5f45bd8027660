"""Training end to end: convergence on the bundled corpus, determinism, exact resume,
atomic checkpoints, the plot, and the command's errors."""

import json
import os
import re

import numpy as np
import pytest

import femtogpt as fg
from femtogpt import checkpoint
from femtogpt.cli import main
from femtogpt.model import GPT
from femtogpt.train import TrainConfig, Trainer

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n") * 40


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(TEXT)
    return str(path)


def tiny_cfg(corpus, out, **kw):
    base = dict(data=corpus, preset="femto", steps=12, batch_size=4, block_size=16, lr=3e-3, min_lr=3e-4,
                warmup_steps=3, eval_every=4, eval_iters=2, out=str(out), seed=0, progress=False, dropout=0.1)
    base.update(kw)
    return TrainConfig(**base)


def losses(trainer):
    return [loss for _, loss in trainer.history["train"]]


def test_convergence_on_the_bundled_corpus(tmp_path):
    """300 steps of the femto preset on Shakespeare, seed 0. The unigram entropy of the corpus's
    characters (the best a model that ignores context can do) is 3.36 nats on the validation
    split, and a bigram model reaches about 2.49: a validation loss below 2.75 means the model
    learned to use context, and is what a correct model reaches in 300 steps (about 2.5)
    while a broken gradient leaves the loss near ln(76) = 4.33. Flash and standard attention
    must reach the same loss within 2%."""
    results = {}
    for attention in ("flash", "standard"):
        cfg = TrainConfig(steps=300, eval_every=300, eval_iters=10, out="", seed=0, progress=False,
                          attention=attention)
        results[attention] = Trainer(cfg).run()["val_loss"]
    assert results["flash"] < 2.75, results
    assert abs(results["flash"] - results["standard"]) / results["flash"] < 0.02, results


def test_same_seed_same_losses(corpus, tmp_path):
    a = Trainer(tiny_cfg(corpus, tmp_path / "a"))
    a.run()
    b = Trainer(tiny_cfg(corpus, tmp_path / "b"))
    b.run()
    assert losses(a) == losses(b)
    c = Trainer(tiny_cfg(corpus, tmp_path / "c", seed=1))
    c.run()
    assert losses(a) != losses(c)


def test_resume_gives_the_losses_of_the_uninterrupted_run(corpus, tmp_path):
    full = Trainer(tiny_cfg(corpus, tmp_path / "full", grad_accum=2))
    full.run()
    part = Trainer(tiny_cfg(corpus, tmp_path / "part", grad_accum=2, steps=12))
    part.run(stop_at=8)  # as if interrupted after the checkpoint at step 8
    resumed = Trainer.resume(str(tmp_path / "part"), steps=12)
    assert resumed.step == 8
    resumed.run()
    assert losses(resumed) == losses(full)
    final_a = GPT.load(tmp_path / "full").state_dict()
    final_b = GPT.load(tmp_path / "part").state_dict()
    for k in final_a:
        np.testing.assert_array_equal(final_a[k], final_b[k], err_msg=k)


def test_resume_may_switch_the_memory_options(corpus, tmp_path):
    """--checkpoint-every and --recompute-attention change what backward keeps, not what it computes:
    a run resumed with them switched gives the uninterrupted run's losses, and its configs say so."""
    common = ["--data", corpus, "--batch-size", "4", "--block-size", "16", "--dropout", "0.1", "--eval-every", "2",
              "--no-progress", "--sample-tokens", "0"]
    assert main(["train", *common, "--steps", "4", "--out", str(tmp_path / "full")]) == 0
    assert main(["train", *common, "--steps", "2", "--out", str(tmp_path / "part")]) == 0
    assert main(["train", "--resume", str(tmp_path / "part"), "--steps", "4", "--no-progress", "--sample-tokens",
                 "0", "--recompute-attention", "--checkpoint-every", "1"]) == 0
    full, part = (json.loads((tmp_path / d / "history.json").read_text()) for d in ("full", "part"))
    assert part["train"] == full["train"] and len(part["train"]) == 4
    config = json.loads((tmp_path / "part" / "config.json").read_text())
    train_config = json.loads((tmp_path / "part" / "train_config.json").read_text())
    for c in (config, train_config):
        assert c["recompute_attention"] is True and c["checkpoint_every"] == 1
    assert main(["train", "--resume", str(tmp_path / "part"), "--steps", "5", "--no-progress", "--sample-tokens",
                 "0", "--no-recompute-attention"]) == 0
    assert json.loads((tmp_path / "part" / "config.json").read_text())["recompute_attention"] is False


def test_a_failed_save_leaves_the_previous_checkpoint_intact(corpus, tmp_path, monkeypatch):
    t = Trainer(tiny_cfg(corpus, tmp_path / "run", steps=4))
    t.run()
    before = GPT.load(tmp_path / "run").state_dict()
    t.train_step()

    real_write = checkpoint.atomic_write_bytes

    def failing(path, data, *a, **k):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", failing)
    def half_write(f, arrays, metadata):
        f.write(b"\x00" * 10)
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(checkpoint, "_write_safetensors", half_write)
    with pytest.raises(OSError, match="disk full"):
        t.save(str(tmp_path / "run"))
    monkeypatch.setattr(checkpoint, "atomic_write_bytes", real_write)
    after = GPT.load(tmp_path / "run").state_dict()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])
    assert Trainer.resume(str(tmp_path / "run")).step == 4
    leftovers = [f for f in os.listdir(tmp_path / "run") if "tmp" in f]
    assert not leftovers


def test_a_save_failing_at_its_last_file_leaves_the_previous_step_whole(corpus, tmp_path, monkeypatch):
    """The weights, history and config of a failed save are not left beside the previous save's
    training state: all files of a run directory change together or not at all. (Before staged
    saves, the step-4 weights were renamed into place before the training state failed, and
    resume mixed step-4 weights with the step-2 optimizer state without a word.)"""
    full = Trainer(tiny_cfg(corpus, tmp_path / "full", steps=4))
    full.run()
    t = Trainer(tiny_cfg(corpus, tmp_path / "run", steps=4))
    t.run(stop_at=2)
    before = {f: (tmp_path / "run" / f).read_bytes() for f in os.listdir(tmp_path / "run")}
    real = checkpoint.save_safetensors

    def failing_state(path, *a, **k):
        if os.path.basename(path) == "training_state.safetensors":
            raise OSError("disk full (simulated)")
        return real(path, *a, **k)

    monkeypatch.setattr(checkpoint, "save_safetensors", failing_state)
    with pytest.raises(OSError, match="disk full"):
        t.run()  # steps 3 and 4; the save at step 4 writes everything but the training state
    monkeypatch.setattr(checkpoint, "save_safetensors", real)
    assert t.step == 4
    assert {f: (tmp_path / "run" / f).read_bytes() for f in os.listdir(tmp_path / "run")} == before
    (tmp_path / "run" / ".model.safetensors.abc123.tmp").write_bytes(b"a killed save's")  # removed by the next save
    Trainer.resume(str(tmp_path / "run")).save(str(tmp_path / "run"))
    assert sorted(os.listdir(tmp_path / "run")) == sorted(before)
    resumed = Trainer.resume(str(tmp_path / "run"))
    assert resumed.step == 2
    resumed.run()
    assert losses(resumed) == losses(full)


def test_resume_drops_history_past_the_saved_step(corpus, tmp_path):
    """A run directory mixed by a save interrupted before staged saves existed: history.json ahead of
    the training state. Resume keeps the history up to the state's step only."""
    t = Trainer(tiny_cfg(corpus, tmp_path / "run", steps=4))
    t.run(stop_at=2)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    history["train"] += [[3, 1.5], [4, 1.25]]
    history["val"] += [[4, 1.75]]
    (tmp_path / "run" / "history.json").write_text(json.dumps(history))
    resumed = Trainer.resume(str(tmp_path / "run"))
    assert resumed.step == 2 and all(e[0] <= 2 for split in ("train", "val") for e in resumed.history[split])


def test_cli_train_and_generate(corpus, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["train", "--data", corpus, "--steps", "6", "--batch-size", "4", "--block-size", "16",
               "--eval-every", "3", "--eval-iters", "1", "--out", str(out), "--no-progress", "--sample-tokens", "20",
               "--plot"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "sample before training" in text and "sample after training" in text
    assert {"model.safetensors", "config.json", "tokenizer.json", "training_state.safetensors",
            "train_config.json", "history.json", "loss.png"} <= set(os.listdir(out))
    rc = main(["train", "--resume", str(out), "--steps", "8", "--no-progress"])
    assert rc == 0
    assert json.loads((out / "history.json").read_text())["train"][-1][0] == 8
    capsys.readouterr()
    rc = main(["generate", "--checkpoint", str(out), "--prompt", "First", "--max-new-tokens", "10", "--seed", "1"])
    assert rc == 0
    assert capsys.readouterr().out.startswith("First")


@pytest.mark.parametrize("args, message", [
    (["--data", "/nonexistent/file.txt"], "nonexistent"),
    (["--preset", "huge"], "preset"),
    (["--steps", "0"], "--steps"),
    (["--attention", "sparse"], "attention"),
    (["--tokenizer", "words"], "tokenizer"),
    (["--dropout", "1.5"], "dropout"),
    (["--lr", "-1"], "lr"),
    (["--tokenizer", "bpe", "--vocab-size", "1000000000"], "at most 1,048,576"),
    (["--tokenizer", "bpe", "--vocab-size", "100"], "vocab_size >= 256"),
    (["--tokenizer", "char", "--vocab-size", "100"], "--vocab-size applies only to --tokenizer bpe"),
    (["--tokenizer", "byte", "--vocab-size", "300"], "--vocab-size applies only to --tokenizer bpe"),
    (["--lr", "nan"], "--lr must be a finite number, got nan"),
    (["--lr", "inf"], "--lr must be a finite number, got inf"),
    (["--min-lr", "nan"], "--min-lr must be a finite number"),
    (["--grad-clip", "nan"], "--grad-clip must be a finite number, got nan"),
    (["--weight-decay", "inf"], "--weight-decay must be a finite number"),
    (["--seed", "-1"], "--seed must be >= 0, got -1"),
])
def test_cli_train_errors_are_one_line_and_exit_2(args, message, tmp_path, capsys):
    rc = main(["train", "--out", str(tmp_path / "o"), "--no-progress", "--sample-tokens", "0"] + args)
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and "Traceback" not in err


def test_cli_data_errors(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    short = tmp_path / "short.txt"
    short.write_text("abcdefghij" * 3)
    for path in (empty, short):
        rc = main(["train", "--data", str(path), "--out", str(tmp_path / "o"), "--no-progress"])
        assert rc == 2
    err = capsys.readouterr().err
    assert "empty" in err and "block_size" in err


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
@pytest.mark.parametrize("tokenizer", ["char", "bpe"])
def test_cli_data_that_is_not_a_regular_file_is_refused_before_the_tokenizer_reads_it(tokenizer, tmp_path, capsys):
    """The tokenizer was built from /dev/zero (forever) before load_tokens said it needs a regular file."""
    rc = main(["train", "--data", "/dev/zero", "--tokenizer", tokenizer, "--out", str(tmp_path / "o"),
               "--no-progress", "--sample-tokens", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "/dev/zero is not a regular file" in err and "Traceback" not in err


def test_a_block_longer_than_the_data_is_an_error_before_the_model_is_made(corpus, tmp_path):
    """The data's size is checked against block_size first: the model for a 200,000-token block
    (a 51 MB position embedding, more with the optimizer) was made before TokenDataset refused it."""
    fg.reset_peak_memory_stats()
    before = fg.memory_stats()["current_bytes"]
    with pytest.raises(ValueError, match="need at least .* for block_size 200000"):
        Trainer(tiny_cfg(corpus, tmp_path / "o", block_size=200_000))
    assert fg.memory_stats()["peak_bytes"] - before < 1 << 20


def test_train_config_checks_its_types():
    """train_config.json may hold anything: a str where a number goes failed with "'<' not supported"."""
    for kw, match in [(dict(steps="5"), "--steps must be an int, got '5'"), (dict(steps=2.5), "--steps must be an int"),
                      (dict(batch_size=True), "--batch-size must be an int or None"),
                      (dict(lr="0.1"), "--lr must be a float, got '0.1'"), (dict(plot=1), "--plot must be a bool"),
                      (dict(tokenizer=None), "--tokenizer must be a str, got None")]:
        with pytest.raises(TypeError, match=match):
            TrainConfig(**kw).validate()
    TrainConfig(lr=1, steps=np.int64(3)).validate()  # an int is a float; numpy's scalars are numbers


def test_adamw_checks_its_arguments_and_loads_a_state_whole():
    p = fg.tensor(np.ones(3, np.float32), requires_grad=True)
    for kw, match in [(dict(lr=float("nan")), "must be finite"), (dict(lr=float("inf")), "must be finite"),
                      (dict(eps=float("nan")), "must be finite"), (dict(betas=(0.9,)), "betas must be a pair"),
                      (dict(betas=0.9), "betas must be a pair"), (dict(betas=(0.9, "0.9")), "betas must be a pair")]:
        with pytest.raises(ValueError, match=match):
            fg.AdamW([p], **kw)
    with pytest.raises(TypeError, match="lr must be a number"):
        fg.AdamW([p], lr="0.1")
    with pytest.raises(ValueError, match="eps must be > 0"):  # a 0 gradient's step would be 0 / 0
        fg.AdamW([p], eps=0.0)
    for bad in (float("nan"), "1", None):  # nan used to turn clipping off without a word
        with pytest.raises(ValueError, match="max_norm must be a number"):
            fg.clip_grad_norm_([p], bad)
    opt = fg.AdamW([p])
    p.grad = fg.tensor(np.ones(3, np.float32))
    opt.step()
    state = opt.state_dict()
    for bad, match in [({k: v for k, v in state.items() if k != "step"}, "missing 'step'"),
                       ({**state, "step": np.array(-1)}, "'step' must be an integer >= 0"),
                       ({**state, "step": np.array([1, 2])}, "'step' must be an integer >= 0"),
                       ({**state, "exp_avg_sq.0": np.ones(4, np.float32)}, r"shape \(4,\)"),
                       ({**state, "exp_avg_sq.0": np.ones(3, np.int64)}, "dtype int64")]:
        fresh = fg.AdamW([p])
        with pytest.raises(ValueError, match=match):
            fresh.load_state_dict({k: v * 2 if k.startswith("exp_avg.") else v for k, v in bad.items()})
        # nothing was assigned: the moments are the fresh ones
        assert fresh.step_count == 0 and not np.asarray(fresh.exp_avg[0]).any()


def _small_run(corpus, out, steps=4):
    assert main(["train", "--data", corpus, "--steps", str(steps), "--batch-size", "4", "--block-size", "16",
                 "--eval-every", "2", "--eval-iters", "1", "--out", str(out), "--no-progress",
                 "--sample-tokens", "0"]) == 0


def test_cli_resume_refuses_the_flags_that_make_the_run(corpus, tmp_path, capsys):
    """--resume used to ignore --lr, --preset, --batch-size, ... silently (even invalid ones)."""
    out = tmp_path / "run"
    _small_run(corpus, out)
    capsys.readouterr()
    rc = main(["train", "--resume", str(out), "--steps", "6", "--lr", "5", "--preset", "small", "--grad-accum", "0",
               "--data", corpus, "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "--data, --preset, --lr, --grad-accum cannot change it" in err and err.count("\n") == 1
    # what does not change the losses may: evaluation, samples, memory options
    assert main(["train", "--resume", str(out), "--steps", "6", "--eval-every", "3", "--sample-tokens", "0",
                 "--no-progress"]) == 0
    history = json.loads((out / "history.json").read_text())
    assert [s for s, _ in history["val"]] == [2, 4, 6]  # eval_every 2 to step 4, then 3: step 6


def test_cli_resume_into_out_even_when_it_is_named_out(corpus, tmp_path, monkeypatch):
    """--out's default used to be the string "out", so --resume took an explicit --out out for no --out."""
    _small_run(corpus, tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--resume", "run", "--steps", "6", "--out", "out", "--no-progress",
                 "--sample-tokens", "0"]) == 0
    assert json.loads((tmp_path / "out" / "history.json").read_text())["train"][-1][0] == 6
    assert json.loads((tmp_path / "run" / "history.json").read_text())["train"][-1][0] == 4


def test_cli_resume_on_data_that_changed(corpus, tmp_path, capsys):
    _small_run(corpus, tmp_path / "run")
    with open(corpus, "a") as f:
        f.write("the cat sat on the mat\n" * 20)
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "run"), "--steps", "6", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "is not what this run was saved with (n_tokens: saved" in err and "has the file changed?" in err
    assert "strict=False" not in err and "corrupt" not in err


def test_cli_resume_from_another_directory(corpus, tmp_path, monkeypatch, capsys):
    """train_config.json keeps --data absolute: a run started with a relative path resumes from anywhere."""
    monkeypatch.chdir(os.path.dirname(corpus))
    assert main(["train", "--data", os.path.basename(corpus), "--steps", "2", "--batch-size", "4",
                 "--block-size", "16", "--eval-every", "2", "--eval-iters", "1", "--out", str(tmp_path / "run"),
                 "--no-progress", "--sample-tokens", "0"]) == 0
    assert json.loads((tmp_path / "run" / "train_config.json").read_text())["data"] == corpus
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["train", "--resume", str(tmp_path / "run"), "--steps", "3", "--no-progress"]) == 0


def test_cli_out_that_cannot_be_a_directory_fails_before_training(corpus, tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    rc = main(["train", "--data", corpus, "--steps", "2", "--batch-size", "4", "--block-size", "16",
               "--out", str(tmp_path / "afile"), "--no-progress", "--sample-tokens", "0"])
    captured = capsys.readouterr()
    assert rc == 2 and "exists and is not a directory" in captured.err
    assert "step 2:" not in captured.out  # it used to train, then fail at the first save
    rc = main(["train", "--data", corpus, "--steps", "2", "--sample-tokens", "-1", "--no-progress"])
    assert rc == 2 and "--sample-tokens must be >= 0" in capsys.readouterr().err


def test_cli_resume_errors(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    _small_run(corpus, out)
    summary = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("step 4:"))
    assert re.fullmatch(r"step 4: train loss [\d.]+, val loss [\d.]+, [\d,]+ tokens/s \([\d,.]+ GFLOP/s in the "
                        r"model's products\)", summary), summary

    def resume(*extra):
        rc = main(["train", "--resume", str(out), "--no-progress", "--sample-tokens", "0", *extra])
        err = capsys.readouterr().err
        assert rc == 2 and "Traceback" not in err
        return err

    # nothing to train ("unsupported format string passed to NoneType.__format__" with no val loss saved)
    assert "is at step 4 already, and --steps is 4: nothing to train" in resume()
    history = (out / "history.json").read_text()
    (out / "history.json").write_text('{"train": [], "val": []}')
    assert "is at step 4 already, and --steps is 2" in resume("--steps", "2")
    for text, match in [('{"train": 5, "val": []}', "history.json: 'train' must be a list of [step, loss] pairs"),
                        ('{"train": [], "val": [[1, "x"]]}', "history.json: 'val' must be a list"),
                        ("[]", "history.json: expected a JSON object, got list")]:
        (out / "history.json").write_text(text)
        assert match in resume("--steps", "6")
    (out / "history.json").write_text(history)
    config = (out / "train_config.json").read_text()
    for text, match in [("[]", "train_config.json: expected a JSON object, got list"),
                        (json.dumps({**json.loads(config), "lr": "fast"}), "train_config.json: --lr must be a float")]:
        (out / "train_config.json").write_text(text)
        assert match in resume("--steps", "6")
    (out / "train_config.json").write_text(config)
    # a tokenizer with more tokens than the model's vocabulary failed mid-training
    (out / "tokenizer.json").write_text('{"type": "byte"}')
    assert "the tokenizer has 256 tokens but the model's vocabulary only" in resume("--steps", "6")
    assert main(["train", "--resume", str(out / "history.json")]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err


def test_cli_checkpoint_errors(corpus, tmp_path, capsys):
    assert main(["generate", "--checkpoint", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
    out = tmp_path / "ck"
    Trainer(tiny_cfg(corpus, out, steps=2)).run()
    (out / "model.safetensors").write_bytes(b"garbage")
    assert main(["generate", "--checkpoint", str(out)]) == 2
    assert main(["train", "--resume", str(out)]) == 2
    err = capsys.readouterr().err
    assert "model.safetensors" in err
    os.remove(out / "training_state.safetensors")
    assert main(["train", "--resume", str(out)]) == 2


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert fg.cpu_isa() in out and "threads" in out and "pool" in out
    # the first line names the version: the wheel's, or 0.0.0+dev from a plain CMake build (which
    # once printed an empty string there)
    assert re.fullmatch(r"femtogpt \d+\.\d+\.\d+\S*", out.splitlines()[0]), out.splitlines()[0]
    assert "fma peak" not in out  # measured only when asked


@pytest.mark.skipif(not fg._core.openmp_enabled(), reason="without OpenMP there is one thread to measure")
def test_info_peak(capsys, threads):
    fg.set_num_threads(2)
    assert main(["info", "--peak"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert re.fullmatch(rf"fma peak \({fg.cpu_isa()}\): [\d,.]+ GFLOP/s on 2 threads, [\d,.]+ on 1 thread", last), last


@pytest.mark.parametrize("command", ["train", "generate"])
def test_every_flag_says_what_it_does_and_its_default(command):
    """`femtogpt train --help` and `generate --help` document each flag; those taking a value name
    their default (--resume and --prompt-file have none)."""
    import argparse

    from femtogpt.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for action in sub.choices[command]._actions:
        if not action.option_strings or action.dest == "help":
            continue
        assert action.help, f"{action.option_strings[0]} has no help"
        takes_value = action.nargs != 0 and not isinstance(action, argparse.BooleanOptionalAction)
        if takes_value and action.dest not in ("resume", "prompt_file"):
            assert "default" in action.help, f"{action.option_strings[0]}: {action.help!r} names no default"


def test_python_dash_m_runs_the_command():
    """`python -m femtogpt` is the `femtogpt` command (for a venv whose scripts are not on PATH),
    exit status included."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    info = subprocess.run([sys.executable, "-m", "femtogpt", "info"], capture_output=True, text=True, env=env)
    assert info.returncode == 0 and f"cpu isa: {fg.cpu_isa()}" in info.stdout, info.stderr
    bad = subprocess.run([sys.executable, "-m", "femtogpt", "generate", "--checkpoint", "/nonexistent/ckpt"],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "femtogpt generate: error" in bad.stderr, bad.stderr
    # importing the module (pydoc, tools that import every module) runs nothing
    imported = subprocess.run([sys.executable, "-c", "import femtogpt.__main__"], capture_output=True, text=True,
                              env=env)
    assert imported.returncode == 0 and imported.stdout == imported.stderr == "", imported.stderr


@pytest.mark.parametrize("checkpoint_every, recompute_attention", [(0, False), (1, False), (0, True)])
def test_a_step_after_warm_up_allocates_nothing_from_the_os(corpus, tmp_path, checkpoint_every, recompute_attention):
    t = Trainer(tiny_cfg(corpus, tmp_path / "w", checkpoint_every=checkpoint_every, grad_accum=2,
                         recompute_attention=recompute_attention))
    t.train_step()
    t.train_step()
    before = fg.memory_stats()
    for _ in range(3):
        t.train_step()
    after = fg.memory_stats()
    assert after["os_allocations"] == before["os_allocations"]
    requests = after["alloc_requests"] - before["alloc_requests"]
    assert requests > 0 and after["pool_hits"] - before["pool_hits"] == requests


def test_recompute_attention_from_the_command_line_gives_the_same_run(corpus, tmp_path):
    """--recompute-attention changes what backward keeps, not what it computes: identical losses and weights."""
    runs = []
    for flag in ([], ["--recompute-attention"]):
        out = tmp_path / ("lean" if flag else "plain")
        assert main(["train", "--data", corpus, "--steps", "3", "--batch-size", "4", "--block-size", "16",
                     "--dropout", "0.1", "--out", str(out), "--no-progress", "--sample-tokens", "0", *flag]) == 0
        runs.append((json.loads((out / "history.json").read_text()), GPT.load(out)))
    (h0, m0), (h1, m1) = runs
    assert h0["train"] == h1["train"]
    assert m1.config.recompute_attention and not m0.config.recompute_attention
    for (n, p), (_, q) in zip(m0.named_parameters(), m1.named_parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=n)


def test_memory_report(corpus, tmp_path, capsys):
    rc = main(["train", "--data", corpus, "--steps", "3", "--batch-size", "4", "--block-size", "16", "--out",
               str(tmp_path / "m"), "--no-progress", "--sample-tokens", "0", "--memory-report", "--checkpoint-every",
               "2"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "memory: parameters" in out and "activations (peak)" in out and "OS allocations" in out
    assert "process peak RSS" in out


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="VmHWM is Linux's")
def test_process_peak_rss_is_this_programs_own():
    """A process started from a larger one reports its own peak, not its parent's (Linux carries
    ru_maxrss across exec, so a `femtogpt train --memory-report` run from a big Python process,
    or a benchmark script from asv, would have read its parent's peak)."""
    import subprocess
    import sys

    from femtogpt.train import process_peak_rss

    held = np.ones(400 * 2**20 // 8)  # 400 MiB, touched: this process's peak is at least that
    assert process_peak_rss() >= held.nbytes
    code = "from femtogpt.train import process_peak_rss; print(process_peak_rss())"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert 0 < int(child.stdout) < 200 * 2**20  # Python, numpy and femtogpt: tens of MiB
