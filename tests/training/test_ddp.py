"""Multi-process training: 2 CPU processes (gloo) follow 1, resume across ranks, one writer;
the pieces: batch shares, noise by global row, the one step and its device-side skip."""

from __future__ import annotations

import csv
import shutil
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import tvae.training.distributed as ddp
from tests.tiny import TINY_ARGS as TINY_FLAGS
from tests.tiny import TINY_MODEL
from tvae.config import PAD, Configs, DataConfig, GridConfig, ModelConfig, TrainConfig
from tvae.data.dataset import load_folder
from tvae.errors import TvaeError
from tvae.model.forward import Noise
from tvae.model.vae import TransformerVAE
from tvae.training.guard import StepGuard
from tvae.training.objective import vae_objective
from tvae.training.run import train
from tvae.training.schedules import beta_at, lr_at, pointer_at, repeat_beta_at, tf_at
from tvae.training.step import UpdateUndo, apply_update
from tvae.training.trainer import Trainer

TINY = replace(TINY_MODEL, dropout=0.0)
TINY_ARGS = [*TINY_FLAGS, "--dropout", "0"]
# An odd global batch (split 3 + 4), scheduled sampling, a KL warm-up and a supervised head.
RUN = dict(batch_size=7, epochs=1, max_steps=10, warmup_steps=3, log_every=1,
           checkpoint_every=4, eval_windows=8, tf_schedule="linear", tf_min=0.5, tf_steps=10,
           beta_steps=5, num_threads=1)
RUN_ARGS = ["--bars", "4", "--batch-size", "7", "--epochs", "1", "--max-steps", "10",
            "--warmup-steps", "3", "--log-every", "1", "--checkpoint-every", "4",
            "--eval-windows", "8", "--tf-schedule", "linear", "--tf-min", "0.5", "--tf-steps",
            "10", "--beta-steps", "5", "--num-threads", "1", "--label-column", "collection",
            "--quiet"]
RUN_FILES = {"config.json", "command.txt", "metrics.csv", "split.csv", "skipped.csv", "best.json",
             "best.safetensors", "last.json", "last.safetensors", "plots",
             "before_late.json", "before_late.safetensors"}  # the defaults' last stage starts at 9


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _losses(run: Path) -> dict[tuple[str, str], float]:
    return {(r["step"], r["split"]): float(r["loss"]) for r in _rows(run)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tvae_train(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "tvae", "train", *args], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def reference(folk_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A one-process distributed run (a gloo group of one, in this process), and a copy of
    its run folder as it was after step 4 (for resuming)."""
    run, snapshot = tmp_path_factory.mktemp("ref") / "run", tmp_path_factory.mktemp("snap")
    saved = Trainer.save

    def save_and_copy(self: Trainer, name: str) -> None:
        saved(self, name)
        if name == "last" and self.state.step == 4:
            for path in run.iterdir():
                if path.is_file():
                    shutil.copy(path, snapshot / path.name)

    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port())}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        patch.setattr(Trainer, "save", save_and_copy)
        trainer = train(folk_corpus, run, model_config=TINY, data_config=DataConfig(bars=4),
                        train_config=TrainConfig(**RUN), label_column="collection", progress=False)
    assert trainer.dist is not None
    assert not torch.distributed.is_initialized()
    assert (snapshot / "last.json").is_file()
    return run, snapshot


def test_two_processes_follow_one_and_write_once(reference: tuple[Path, Path],
                                                 folk_corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "two"
    _tvae_train(str(folk_corpus), "--out", str(run), "--nproc", "2", *TINY_ARGS, *RUN_ARGS)
    expected, got = _losses(reference[0]), _losses(run)
    assert set(got) == set(expected) and len(got) == 11  # 10 steps and one validation
    for key, loss in expected.items():
        assert got[key] == pytest.approx(loss, rel=1e-4), key
    assert {p.name for p in run.iterdir()} == RUN_FILES  # one checkpoint set, no rank copies
    steps = [r["step"] for r in _rows(run) if r["split"] == "train"]
    assert steps == [str(s) for s in range(1, 11)]  # each step logged by one process only


def test_resume_with_two_processes_continues_a_one_process_run(
        reference: tuple[Path, Path], folk_corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "resumed"
    shutil.copytree(reference[1], run)
    _tvae_train(str(folk_corpus), "--out", str(run), "--resume", "--nproc", "2", "--quiet")
    expected, got = _losses(reference[0]), _losses(run)
    assert set(got) == set(expected)
    later = [key for key in expected if int(key[0]) > 4]
    assert len(later) == 7
    for key in later:
        assert got[key] == pytest.approx(expected[key], rel=1e-4), key


def test_one_process_without_torchrun_follows_the_distributed_run(
        reference: tuple[Path, Path], folk_corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "single"
    trainer = train(folk_corpus, run, model_config=TINY, data_config=DataConfig(bars=4),
                    train_config=TrainConfig(**RUN), label_column="collection", progress=False)
    assert trainer.dist is None
    expected, got = _losses(reference[0]), _losses(run)
    assert set(got) == set(expected)
    for key, loss in expected.items():
        assert got[key] == pytest.approx(loss, rel=1e-5), key


# --- the pieces --------------------------------------------------------------------------------


def test_shares_cover_the_batch_and_weigh_it_whole() -> None:
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, 20, (7, 4, 16))
    tokens[2, 1:] = PAD  # a short window: fewer real bars
    labels = np.array([0, -1, 1, 1, -1, 2, 0])
    shares = [ddp.share_of(tokens, labels, rank, 3) for rank in range(3)]
    rows = np.concatenate([np.arange(7)[s.rows] for s in shares])
    assert rows.tolist() == list(range(7))
    assert sum(s.bars for s in shares) == pytest.approx(1.0)
    assert sum(s.labelled for s in shares) == pytest.approx(1.0)
    assert shares[0].bars == pytest.approx((4 + 4) / (7 * 4 - 3))  # rows 0, 1 of 25 real bars
    last = [ddp.share_of(tokens[:2], labels[:2], r, 3) for r in range(3)]  # 2 rows, 3 ranks
    assert [s.real for s in last] == [0.0, 1.0, 1.0]  # rank 0 trains on a stand-in row...
    assert last[0].bars == last[0].labelled == 0.0 and last[0].rows == slice(0, 1)  # ...weight 0


def test_noise_depends_on_the_global_row_only() -> None:
    """A rank's rows of the batch, with its rows of the step's noise, get the outputs those rows
    get in the whole batch: the latent sample and scheduled sampling follow the global row."""
    torch.manual_seed(0)
    model = TransformerVAE(ModelConfig(**{**TINY.__dict__, "bar_decoder": "gru"})).eval()
    tokens = torch.randint(3, 20, (7, 4, 16))
    meters = torch.zeros(7, 4, dtype=torch.long)
    noise = Noise.draw((7, 4, 16), TINY.d_latent, torch.Generator().manual_seed(5))
    again = Noise.draw((7, 4, 16), TINY.d_latent, torch.Generator().manual_seed(5))
    assert torch.equal(noise.latent, again.latent) and torch.equal(noise.steps, again.steps)
    with torch.no_grad():
        whole = model(tokens, meters, p_tf=0.5, noise=noise)
        part = model(tokens[2:5], meters[2:5], p_tf=0.5, noise=noise.map(lambda t: t[2:5]))
        other = model(tokens, meters, p_tf=0.5,
                      noise=Noise.draw((7, 4, 16), TINY.d_latent, torch.Generator().manual_seed(6)))
    assert torch.allclose(part.log_lik, whole.log_lik[2:5], atol=1e-5)
    assert not torch.allclose(other.log_lik, whole.log_lik, atol=1e-5)  # the noise matters


def _undone_update(optimizer: torch.optim.Optimizer, ok: torch.Tensor) -> None:
    """The accelerator's way (step, then take back on the device), here on CPU tensors."""
    undo = UpdateUndo()
    undo.save(optimizer)
    optimizer.step()
    undo.restore_unless(optimizer, ok)


@pytest.mark.parametrize("how", ["on the device", "on the host"])
@pytest.mark.parametrize("fused", [False, True])
def test_a_refused_update_changes_nothing(fused: bool, how: str) -> None:
    param = torch.nn.Parameter(torch.ones(4))
    optimizer = torch.optim.AdamW([param], lr=0.1, fused=fused)
    for ok in (True, False):
        optimizer.zero_grad()
        (param * 2).sum().backward()
        before = (param.detach().clone(), optimizer.state[param].get("step"))
        if how == "on the device":
            _undone_update(optimizer, torch.tensor(ok))
        else:
            apply_update(optimizer, torch.tensor(ok), UpdateUndo())  # a CPU tensor: the host
        changed = not torch.equal(param.detach(), before[0])
        assert changed == ok
    assert float(optimizer.state[param]["step"]) == 1.0
    assert not hasattr(optimizer, "found_inf")


def test_a_refused_first_update_leaves_a_fresh_optimizer() -> None:
    """A first step that is refused leaves state equal to none at all: the next (good) step
    moves the parameter exactly as a fresh optimizer's first step does."""
    params = [torch.nn.Parameter(torch.ones(4)) for _ in range(2)]
    optimizers = [torch.optim.AdamW([p], lr=0.1) for p in params]
    undo = UpdateUndo()
    for ok in (False, True):
        optimizers[0].zero_grad()
        (params[0] * float("nan") if not ok else params[0] * 2).sum().backward()
        undo.save(optimizers[0])
        optimizers[0].step()
        undo.restore_unless(optimizers[0], torch.tensor(ok))  # the accelerator's way
    (params[1] * 2).sum().backward()
    optimizers[1].step()
    assert torch.equal(params[0].detach(), params[1].detach())
    assert float(optimizers[0].state[params[0]]["step"]) == 1.0


def test_step_guard_counts_runs_of_bad_steps() -> None:
    guard = StepGuard(torch.device("cpu"))
    for ok in (True, False, False, True, False):
        guard.record(torch.tensor(ok))
    report = guard.check()
    assert (report.skipped, report.worst) == (3, 2)
    guard.record(torch.tensor(False))
    report = guard.check()
    assert (report.skipped, report.worst) == (1, 2)  # the run continued the one before
    # spikes are counted apart: a spike breaks a run of non-finite steps, and the other way
    for ok, spike in ((False, True), (False, True), (False, False), (False, True), (True, False)):
        guard.record(torch.tensor(ok), torch.tensor(spike))
    report = guard.check()
    assert (report.skipped, report.spikes, report.worst_spikes) == (4, 3, 2)
    assert report.worst == 2  # the run of 2 from before the check, broken by the first spike


@pytest.fixture(scope="module")
def songs(folk_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> object:
    cache = tmp_path_factory.mktemp("cache")
    return load_folder(folk_corpus, GridConfig(), DataConfig(bars=4), progress=False,
                       cache_dir=cache)[0]


def _trainer(songs: object, run: Path, **kw: object) -> Trainer:
    cfg = TrainConfig(**{**RUN, "max_steps": 6, "checkpoint_every": 100, **kw})
    run.mkdir()
    return Trainer(songs, run, Configs(GridConfig(), TINY, DataConfig(bars=4), cfg), False)


def _plain_losses(trainer: Trainer) -> list[float]:
    """The reference: a plain step (host checks, optimizer.step()) on the trainer's batches."""
    cfg, losses = trainer.cfg, []
    order = trainer.train_windows.epoch_order(cfg.batch_size,
                                              np.random.default_rng([cfg.seed, 1_000_000]))
    for s in range(trainer.total_steps):
        trainer.state.step = s
        batch = trainer._batch(order, s)
        torch.manual_seed(ddp.mix_seed(cfg.seed, s, 0))
        for group in trainer.optimizer.param_groups:
            group["lr"] = lr_at(s, cfg, trainer.total_steps)
        trainer.model.train()
        p_tf = tf_at(s, cfg, trainer.batches)
        out = vae_objective(trainer.model(batch.tokens, batch.meters, p_tf=p_tf,
                                          noise=batch.noise), batch.tokens,
                            beta=beta_at(s, cfg), free_bits=cfg.free_bits,
                            recon_weight=cfg.recon_weight, pointer_weight=pointer_at(s, cfg),
                            pointer_edits=cfg.pointer_edits, pointer_cap=cfg.pointer_cap,
                            edit_weight=cfg.edit_weight,
                            repeat_beta=repeat_beta_at(s, cfg, trainer.total_steps),
                            source_weight=cfg.source_weight)
        trainer.optimizer.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), cfg.grad_clip)
        trainer.optimizer.step()
        losses.append(round(float(out.loss.detach()), 6))
    return losses


@pytest.mark.parametrize("repeats", [{}, {"repeat_beta": 3.0, "repeat_beta_from": 0.5}])
def test_sync_free_step_matches_the_plain_step(songs: object, tmp_path: Path, repeats: dict,
                                               torch_one_thread: None) -> None:
    trainer = _trainer(songs, tmp_path / "sync_free", **repeats)
    trainer.fit()
    got = [float(r["loss"]) for r in _rows(tmp_path / "sync_free") if r["split"] == "train"]
    assert got == _plain_losses(_trainer(songs, tmp_path / "plain", **repeats))


def test_repeat_beta_from_switches_the_weight_at_its_share_of_the_run(
        songs: object, tmp_path: Path, torch_one_thread: None) -> None:
    """A run whose --repeat-beta starts halfway takes the plain run's steps up to there (same
    losses, same weights), then weighs its repeats' KL more: its losses are higher after."""
    runs = {}
    for name, kw in (("plain", {"repeat_beta": 1.0}),
                     ("late", {"repeat_beta": 3.0, "repeat_beta_from": 0.5})):
        _trainer(songs, tmp_path / name, **kw).fit()
        runs[name] = [float(r["loss"]) for r in _rows(tmp_path / name) if r["split"] == "train"]
    assert len(runs["late"]) == 6
    assert runs["late"][:3] == runs["plain"][:3]
    after = zip(runs["late"][3:], runs["plain"][3:], strict=True)
    assert all(late > plain for late, plain in after)


@pytest.mark.parametrize("path", ["unfused", "fused"])
def test_non_finite_steps_are_skipped_counted_and_stop_training(
        songs: object, tmp_path: Path, path: str, torch_one_thread: None) -> None:
    trainer = _trainer(songs, tmp_path / "run", max_bad_steps=3)
    if path == "fused":
        trainer.optimizer = torch.optim.AdamW(trainer.model.parameters(), fused=True)
    with torch.no_grad():
        trainer.model.mu.weight[0, 0] = float("nan")  # every loss is NaN from now on
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(TvaeError, match="not finite for 3 steps"):
        trainer.fit()
    assert trainer.state.step == 3 and trainer.state.skipped == 3
    after = trainer.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k != "mu.weight")
    assert (tmp_path / "run" / "last.json").is_file()

