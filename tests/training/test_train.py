"""End-to-end training on a tiny folk export: run folder, metrics, checkpoints, resume, evaluate."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tests.tiny import TINY_ARGS, TINY_MODEL
from tests.training.fake_clock import run_on_fake_clock
from tvae.config import Configs, DataConfig, GridConfig, ModelConfig, TrainConfig
from tvae.inference import load_model
from tvae.training.run import train

TINY = TINY_MODEL


def _train_cfg(**kw: object) -> TrainConfig:
    base = dict(batch_size=8, epochs=2, warmup_steps=5, log_every=1, checkpoint_every=4,
                eval_windows=16, tf_schedule="linear", tf_min=0.5, tf_steps=10, beta_steps=10,
                num_threads=1)
    return TrainConfig(**{**base, **kw})


def _rows(run: Path, split: str = "train") -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as handle:
        return [r for r in csv.DictReader(handle) if r["split"] == split]


@pytest.fixture(scope="module")
def tiny_run(folk_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run")
    train(folk_corpus, run, model_config=TINY, data_config=DataConfig(bars=4, stride=2),
          train_config=_train_cfg(), progress=False, command=["tvae", "train"])
    return run


def test_run_folder_has_everything(tiny_run: Path) -> None:
    for name in ("config.json", "command.txt", "metrics.csv", "split.csv", "best.json",
                 "best.safetensors", "last.json", "last.safetensors"):
        assert (tiny_run / name).is_file(), name
    for name in ("losses.png", "accuracy.png", "kl.png", "schedules.png"):
        assert (tiny_run / "plots" / name).stat().st_size > 1000
    saved = json.loads((tiny_run / "config.json").read_text())
    assert saved["model"]["d_model"] == 32 and saved["data"]["bars"] == 4
    assert not list(tiny_run.glob("*.tmp")) and not list(tiny_run.glob(".*.tmp"))


def test_metrics_log_schedules_and_validation(tiny_run: Path) -> None:
    rows = _rows(tiny_run)
    assert [int(r["step"]) for r in rows] == list(range(1, len(rows) + 1))
    p_tf = [float(r["p_tf"]) for r in rows]
    assert p_tf[0] > p_tf[-1] >= 0.5  # linear decay towards tf_min
    assert all(float(r["kl_bits"]) >= 0 for r in rows)
    valid = _rows(tiny_run, "valid")
    assert len(valid) == 2  # one per epoch
    for row in valid:
        assert 0 <= float(row["tf_accuracy"]) <= 1 and 0 <= float(row["free_accuracy"]) <= 1


def test_checkpoint_rebuilds_model_and_state(tiny_run: Path) -> None:
    model = load_model(tiny_run / "last.json")
    assert model.model.config == replace(TINY, trained_bars=4)  # training records its window
    assert model.window == 4
    meta = json.loads((tiny_run / "last.json").read_text())
    assert meta["state"]["finished"] is True
    assert meta["state"]["epoch"] == 2


def test_refuses_to_overwrite_a_run(tiny_run: Path, folk_corpus: Path) -> None:
    from tvae.errors import TvaeError

    with pytest.raises(TvaeError, match="--resume"):
        train(folk_corpus, tiny_run, model_config=TINY, train_config=_train_cfg(), progress=False)


def test_evaluate_json_has_the_promised_keys(tiny_run: Path, folk_corpus: Path) -> None:
    from click.testing import CliRunner

    from tvae.cli.main import main

    result = CliRunner().invoke(main, ["evaluate", str(folk_corpus), "--model",
                                       str(tiny_run / "best.json"), "--bars", "4", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("tf_accuracy", "free_accuracy", "kl_bits_per_bar", "kl_bits_repeated",
                "kl_bits_new", "windows", "bars"):
        assert key in data
    assert data["split"] == "test" and data["windows"] > 0


def _cli_train(corpus: Path, run: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "tvae", "train", str(corpus), "--out", str(run), *TINY_ARGS,
            "--bars", "4", "--batch-size", "4", "--epochs", "2", "--warmup-steps", "5",
            "--log-every", "1", "--checkpoint-every", "3", "--eval-windows", "8",
            "--num-threads", "1", "--quiet", *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Ctrl-C as a terminal sends it: the run must see SIGINT even when these tests were started
    # in the background (which starts every child with SIGINT ignored).
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            text=True, preexec_fn=_sigint_default)


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_checkpoint(run: Path, min_step: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            state = json.loads((run / "last.json").read_text())["state"]
            if state["step"] >= min_step:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    pytest.fail("the training process never wrote the expected checkpoint")


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(folk_corpus: Path,
                                                          tmp_path: Path) -> None:
    whole = _cli_train(folk_corpus, tmp_path / "whole")
    assert whole.wait(timeout=300) == 0, whole.stderr.read()
    killed_run = tmp_path / "killed"
    proc = _cli_train(folk_corpus, killed_run)
    _wait_for_checkpoint(killed_run, 6, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    stopped_at = json.loads((killed_run / "last.json").read_text())["state"]["step"]
    resumed = subprocess.run([sys.executable, "-m", "tvae", "train", str(folk_corpus), "--out",
                              str(killed_run), "--resume", "--quiet"], capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    expected = {r["step"]: r["loss"] for r in _rows(tmp_path / "whole")}
    got = {r["step"]: r["loss"] for r in _rows(killed_run)}
    assert set(got) == set(expected)
    later = [s for s in expected if int(s) > stopped_at]
    assert later, "the kill came too late to test anything"
    assert [got[s] for s in later] == [expected[s] for s in later]


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(folk_corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "interrupted"
    proc = _cli_train(folk_corpus, run, "--epochs", "50")
    _wait_for_checkpoint(run, 3, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in err and "--resume" in err
    state = json.loads((run / "last.json").read_text())["state"]
    assert state["step"] >= 3 and not state["finished"]


def test_init_from_starts_from_the_checkpoint_weights(tiny_run: Path, folk_corpus: Path,
                                                       tmp_path: Path) -> None:
    import torch

    from tvae.errors import TvaeError
    from tvae.model.checkpoint import load_checkpoint
    from tvae.training.trainer import Trainer

    seen = {}
    original = Trainer.fit

    def check_then_fit(self: Trainer) -> None:
        seen["weights"] = {k: v.clone() for k, v in self.model.state_dict().items()}
        original(self)

    source = load_checkpoint(tiny_run / "best.json")[0].state_dict()
    try:
        Trainer.fit = check_then_fit  # type: ignore[method-assign]
        train(folk_corpus, tmp_path / "tuned", model_config=TINY, data_config=DataConfig(bars=4),
              train_config=_train_cfg(epochs=1, beta=0.5, beta_schedule="constant"),
              init_from=tiny_run / "best.json", progress=False)
    finally:
        Trainer.fit = original  # type: ignore[method-assign]
    assert all(torch.equal(seen["weights"][k], v) for k, v in source.items())
    assert json.loads((tmp_path / "tuned" / "config.json").read_text())["init_from"]
    other = ModelConfig(d_model=16, d_latent=8, n_heads=2, d_ff=32, bar_hidden=16)
    with pytest.raises(TvaeError, match="same model"):
        train(folk_corpus, tmp_path / "bad", model_config=other, train_config=_train_cfg(),
              init_from=tiny_run / "best.json", progress=False)


def test_resume_extends_the_limits_and_refuses_other_changes(folk_corpus: Path,
                                                             tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tvae.cli.main import main

    run = tmp_path / "run"
    train(folk_corpus, run, model_config=TINY, data_config=DataConfig(bars=4, stride=2),
          train_config=_train_cfg(epochs=1), progress=False)
    steps = len(_rows(run))
    result = CliRunner().invoke(main, ["train", str(folk_corpus), "--out", str(run), "--resume",
                                       "--lr", "0.1", "--quiet"])
    assert result.exit_code == 2 and "--lr" in result.stderr and "--epochs" in result.stderr
    result = CliRunner().invoke(main, ["train", str(folk_corpus), "--out", str(run), "--resume",
                                       "--epochs", "2", "--num-threads", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    assert len(_rows(run)) == 2 * steps  # a second epoch was trained
    saved = json.loads((run / "config.json").read_text())["train"]
    assert saved["epochs"] == 2 and saved["num_threads"] == 1  # a machine setting may change


def test_a_run_folder_takes_one_run_at_a_time(folk_corpus: Path, tmp_path: Path) -> None:
    import subprocess as sp

    from tvae.errors import TvaeError
    from tvae.training.runfolder import LOCK_NAME

    run = tmp_path / "run"
    run.mkdir()
    holder = sp.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time; f = open(sys.argv[1], 'a+'); "
        "fcntl.flock(f.fileno(), fcntl.LOCK_EX); f.write(f'{os.getpid()}\\n'); f.flush(); "
        "print('locked', flush=True); time.sleep(60)"), str(run / LOCK_NAME)],
        stdout=sp.PIPE, text=True)
    try:  # a live run holds the lock: refused, nothing written
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(TvaeError, match=f"another training run \\(process {holder.pid}\\)"):
            train(folk_corpus, run, model_config=TINY, data_config=DataConfig(bars=4),
                  train_config=_train_cfg(), progress=False)
        assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]
    finally:
        holder.kill()
        holder.wait()
    # its owner is gone (killed): the lock went with it
    train(folk_corpus, run, model_config=TINY, data_config=DataConfig(bars=4),
          train_config=_train_cfg(epochs=1), progress=False)
    assert (run / "last.json").is_file() and not (run / LOCK_NAME).exists()  # released
    (tmp_path / "file").write_text("x")
    with pytest.raises(TvaeError, match="must be a folder"):
        train(folk_corpus, tmp_path / "file", model_config=TINY, train_config=_train_cfg(),
              progress=False)


def test_train_from_a_config_file_with_overrides(folk_corpus: Path, tmp_path: Path,
                                                 tiny_run: Path) -> None:
    from click.testing import CliRunner

    from tvae.cli.main import main

    result = CliRunner().invoke(main, ["train", "--config", str(tiny_run / "config.json"),
                                       "--out", str(tmp_path / "again"), "--epochs", "1",
                                       "--d-latent", "4", "--quiet"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "again" / "config.json").read_text())
    before = json.loads((tiny_run / "config.json").read_text())
    assert saved["data_dir"] == before["data_dir"]  # MIDI_DIR came from the config
    assert saved["model"] == {**before["model"], "d_latent": 4}  # options override it
    assert saved["train"] == {**before["train"], "epochs": 1}
    assert saved["data"] == before["data"]
    (tmp_path / "bad.json").write_text('{"model": {"d_model": "wide"}}')
    result = CliRunner().invoke(main, ["train", str(folk_corpus), "--config",
                                       str(tmp_path / "bad.json"), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "config section 'model'" in result.stderr
    assert not (tmp_path / "x").exists()


def test_max_minutes_bounds_wall_time_validation_included(folk_corpus: Path,
                                                          tmp_path: Path) -> None:
    """On a clock that moves 1 s per training step and 5 s per validation, --max-minutes 1
    stops early enough that the final validation still ends within the 60 s."""
    from tvae.data.dataset import load_folder
    from tvae.training.trainer import Trainer

    songs, _ = load_folder(folk_corpus, progress=False)
    cfg = _train_cfg(epochs=100, max_minutes=1.0, checkpoint_every=1000)
    trainer = Trainer(songs, tmp_path / "run", Configs(GridConfig(), TINY, DataConfig(bars=4), cfg),
                      progress=False)
    (tmp_path / "run").mkdir()
    run_on_fake_clock(trainer)
    assert trainer.batches < trainer.state.step  # more than one epoch ran
    assert 60.0 - 7.0 <= trainer.state.seconds <= 60.0  # used the time, and kept within it
    assert _rows(tmp_path / "run", "valid")[-1]["step"] == str(trainer.state.step)


def test_tiny_data_is_warned_about(folk_corpus: Path, tmp_path: Path) -> None:
    from tvae.data.dataset import load_folder
    from tvae.errors import TvaeWarning
    from tvae.training.trainer import Trainer

    songs, _ = load_folder(folk_corpus, progress=False)  # 40 tunes: one window each
    with pytest.warns(TvaeWarning, match=r"tiny data: \d+ training and \d+ validation windows"):
        Trainer(songs, tmp_path, Configs(GridConfig(), TINY, DataConfig(bars=4, stride=1000),
                                         _train_cfg()), progress=False)


def test_num_threads_applies_to_the_run_only(folk_corpus: Path, tmp_path: Path) -> None:
    import torch

    before = torch.get_num_threads()
    train(folk_corpus, tmp_path / "run", model_config=TINY, data_config=DataConfig(bars=4),
          train_config=_train_cfg(epochs=1, num_threads=before + 1), progress=False)
    assert torch.get_num_threads() == before


def test_resume_refuses_the_options_it_would_ignore(tiny_run: Path, folk_corpus: Path,
                                                    tmp_path: Path) -> None:
    """--label-column, --init-from, --config and another MIDI_DIR with --resume are one line,
    nothing rewritten; the run's own folder may be given."""
    import shutil

    from click.testing import CliRunner

    from tvae.cli.main import main

    tiny_run = Path(shutil.copytree(tiny_run, tmp_path / "run"))  # the fixture stays as it is
    before = (tiny_run / "config.json").read_bytes()
    other = tmp_path / "other"
    other.mkdir()
    for extra in (["--label-column", "folder"], ["--init-from", str(tiny_run / "best.json")],
                  ["--config", str(tiny_run / "config.json")]):
        got = CliRunner().invoke(main, ["train", "--out", str(tiny_run), "--resume", *extra])
        assert got.exit_code == 2 and extra[0] in got.stderr, got.output
    got = CliRunner().invoke(main, ["train", str(other), "--out", str(tiny_run), "--resume"])
    assert got.exit_code == 2 and "own data" in got.stderr, got.output
    assert (tiny_run / "config.json").read_bytes() == before
    got = CliRunner().invoke(main, ["train", str(folk_corpus), "--out", str(tiny_run),
                                    "--resume", "--quiet"])
    assert got.exit_code == 0, got.output  # its own folder: fine (the run had finished)


def test_no_validation_windows_keep_training_and_the_last_weights(tmp_path: Path) -> None:
    """A folder whose split has no validation songs (any folder of under 20 songs may) used to
    validate to a loss of 0 every epoch: epoch 1 stayed the best, and the run stopped early
    at `patience` with best.json the barely trained weights. Each epoch is now the best."""
    import shutil

    from tvae.errors import TvaeWarning

    data = tmp_path / "songs"
    data.mkdir()
    for name in ("mary.mid", "ode.mid", "jingle.mid", "twinkle.mid"):
        shutil.copy(Path(__file__).resolve().parents[2] / "data" / name, data / name)
    with pytest.warns(TvaeWarning, match="no early stopping"):
        trainer = train(data, tmp_path / "run", model_config=TINY,
                        data_config=DataConfig(bars=4, stride=4, valid_fraction=0.0,
                                               test_fraction=0.0),
                        train_config=_train_cfg(epochs=3, patience=1), progress=False)
    assert trainer.state.epoch == 3 and len(trainer.valid_windows) == 0
    best, last = (json.loads((tmp_path / "run" / f"{n}.json").read_text())["state"]
                  for n in ("best", "last"))
    assert best["step"] == last["step"] == trainer.state.step
