"""Multi-process training: 2 CPU processes (gloo) follow 1, resume across ranks, one writer;
the pieces: batch shares, noise by global row, the sync-free step and its device-side skip."""

from __future__ import annotations

import csv
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import tvae.training.distributed as ddp
from tvae.config import PAD, DataConfig, GridConfig, ModelConfig, TrainConfig
from tvae.data.dataset import load_folder
from tvae.errors import TvaeError
from tvae.training.run import Trainer, train

TINY = ModelConfig(d_model=32, d_latent=8, n_heads=2, enc_layers=1, dec_layers=1, d_ff=64,
                   bar_hidden=32, dropout=0.0)
TINY_ARGS = ["--d-model", "32", "--d-latent", "8", "--n-heads", "2", "--enc-layers", "1",
             "--dec-layers", "1", "--d-ff", "64", "--bar-hidden", "32", "--dropout", "0"]
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
             "best.safetensors", "last.json", "last.safetensors", "plots"}


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
        trainer = train(folk_corpus, run, model=TINY, data=DataConfig(bars=4),
                        train=TrainConfig(**RUN), label_column="collection", progress=False)
    assert trainer.dist is not None and trainer.sync_free
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
    def draws(share: ddp.Share) -> tuple[torch.Tensor, torch.Tensor]:
        local = share.rows.stop - share.rows.start
        with ddp.SampleNoise(seed=3, step=5, share=share):
            z = torch.randn_like(torch.zeros(local, 4, 8))
            keep = torch.rand((local, 4), device="cpu")
            other = torch.rand(2, 3)  # not batch-shaped: torch's own generator
        assert other.shape == (2, 3)
        return z, keep

    whole = draws(ddp.Share(slice(0, 7), 7, 1.0, 1.0, 1.0))
    part = draws(ddp.Share(slice(2, 5), 7, 0.5, 0.5, 1.0))
    assert torch.equal(part[0], whole[0][2:5]) and torch.equal(part[1], whole[1][2:5])
    later = draws(ddp.Share(slice(0, 7), 7, 1.0, 1.0, 1.0))
    assert torch.equal(later[0], whole[0])  # seeded by (seed, step, call), not by history


@pytest.mark.parametrize("fused", [False, True])
def test_a_refused_update_changes_nothing(fused: bool) -> None:
    param = torch.nn.Parameter(torch.ones(4))
    optimizer = torch.optim.AdamW([param], lr=0.1, fused=fused)
    for ok in (True, False):
        optimizer.zero_grad()
        (param * 2).sum().backward()
        before = (param.detach().clone(), optimizer.state[param].get("step"))
        ddp.apply_update(optimizer, torch.tensor(ok))
        changed = not torch.equal(param.detach(), before[0])
        assert changed == ok
    assert float(optimizer.state[param]["step"]) == 1.0
    assert not hasattr(optimizer, "found_inf")


def test_step_guard_counts_runs_of_bad_steps() -> None:
    guard = ddp.StepGuard(torch.device("cpu"))
    for ok in (True, False, False, True, False):
        guard.record(torch.tensor(ok))
    assert guard.check() == (3, 2)
    guard.record(torch.tensor(False))
    assert guard.check() == (1, 2)  # the run of 1 continued the run of 1 before the check


@pytest.fixture(scope="module")
def songs(folk_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> object:
    cache = tmp_path_factory.mktemp("cache")
    return load_folder(folk_corpus, GridConfig(), DataConfig(bars=4), progress=False,
                       cache_dir=cache)[0]


def _trainer(songs: object, run: Path, sync_free: bool, **kw: object) -> Trainer:
    cfg = TrainConfig(**{**RUN, "max_steps": 6, "checkpoint_every": 100, **kw})
    run.mkdir()
    return Trainer(songs, run, GridConfig(), TINY, DataConfig(bars=4), cfg, False,
                   sync_free=sync_free)


def test_sync_free_step_matches_the_plain_step(songs: object, tmp_path: Path,
                                               torch_one_thread: None) -> None:
    for name, sync_free in (("plain", False), ("sync_free", True)):
        trainer = _trainer(songs, tmp_path / name, sync_free)
        trainer.fit()
    assert _losses(tmp_path / "plain") == _losses(tmp_path / "sync_free")


@pytest.mark.parametrize("path", ["plain", "sync_free", "sync_free_fused"])
def test_non_finite_steps_are_skipped_counted_and_stop_training(
        songs: object, tmp_path: Path, path: str, torch_one_thread: None) -> None:
    trainer = _trainer(songs, tmp_path / "run", path != "plain", max_bad_steps=3)
    if path.endswith("fused"):
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

