"""A transfer's copies with their edits located from B's own decoding (`located_edits`,
`free_run(edits=...)`, `transfer_run`): a bar B repeats with a change takes the new source's
notes where it agreed with its old source and keeps B's change where it did not, whatever edit
chances the latents give."""

from __future__ import annotations

import pytest
import torch

from tests.model.test_model import tiny
from tvae.model.decoding import MODEL_EDITS, located_edits

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_located_edits_mark_a_near_copys_changed_steps_and_leave_the_rest_to_the_model() -> None:
    own = torch.tensor([[[1, 2, 3, 4],  # bar 0
                         [1, 2, 3, 5],  # copies bar 0, one step changed
                         [6, 6, 6, 6],  # generated
                         [1, 9, 3, 8],  # copies bar 0 (3 back), two steps changed
                         [7, 7, 7, 6]]])  # copies bar 2, three steps changed: too many
    choices = torch.tensor([[0, 1, 0, 3, 2]])  # offsets back; 0 generates
    got = located_edits(own, choices)
    assert got.dtype == torch.int8 and got.shape == own.shape
    assert got[0, 1].tolist() == [0, 0, 0, 1]
    assert got[0, 3].tolist() == [0, 1, 0, 1]
    for bar in (0, 2, 4):
        assert (got[0, bar] == MODEL_EDITS).all()
    exact = located_edits(own, torch.tensor([[0, 0, 2, 0, 0]]))  # bar 2 "copies" bar 0: 4 differ
    assert (exact[0, 2] == MODEL_EDITS).all()
    past = located_edits(own, torch.tensor([[0, 5, 0, 0, 0]]))  # bar 1 cannot copy 5 back
    assert (past[0, 1] == MODEL_EDITS).all()
    mine = torch.tensor([[True, False, True, True, True]])  # bar 1's latent was transferred
    theirs = located_edits(own, choices, mine)
    assert (theirs[0, 1] == MODEL_EDITS).all() and torch.equal(theirs[0, 3], got[0, 3])


def _copies_one_back_regenerating_every_step(seed: int = 4) -> torch.nn.Module:
    """A tiny model whose every bar copies the bar 1 back, with an edit chance of ~1 at every
    step: left to itself, it regenerates each copy from its latent (the way the bundled model
    decodes most near-repeats)."""
    model = tiny(seed=seed)
    with torch.no_grad():
        model.pointer.weight.zero_()
        model.pointer.bias.fill_(-30.0)
        model.pointer.bias[1] = 30.0
        model.edit.weight.zero_()
        model.edit.bias.fill_(30.0)
    return model


def test_located_edits_keep_the_sources_notes_and_take_the_generators_at_the_edits() -> None:
    model = _copies_one_back_regenerating_every_step()
    meters = torch.zeros(2, 4, dtype=torch.long)
    torch.manual_seed(5)
    z = torch.randn(2, 4, 8)
    S = model.grid.steps_per_bar
    free = model.free_run(z, meters)
    assert not (free[:, 1:] == free[:, :-1]).all(-1).any()  # every copy regenerated
    assert torch.equal(model.free_run(z, meters, edits=torch.full_like(free, MODEL_EDITS,
                                                                      dtype=torch.int8)), free)
    edits = torch.zeros(2, 4, S, dtype=torch.int8)
    edits[:, 2, 3] = 1  # bar 2 edits its step 3 only; bars 1 and 3 copy as they are
    out = model.free_run(z, meters, edits=edits)
    assert torch.equal(out[:, 0], free[:, 0])  # bar 0 has nothing to copy
    assert torch.equal(out[:, 1], out[:, 0]) and torch.equal(out[:, 3], out[:, 2])
    keep = torch.arange(S) != 3
    assert torch.equal(out[:, 2, keep], out[:, 1, keep])
    gen = model.free_run(z[:, :3], meters[:, :3],
                         edits=torch.cat([edits[:, :2], torch.ones_like(edits[:, 2:3])], 1))
    assert torch.equal(out[:, 2, 3], gen[:, 2, 3])  # the edit is the generator's token


def test_transfer_run_develops_the_new_source_with_bs_change() -> None:
    """Every bar copies the bar 2 back where it can (bar 1 cannot: it is generated), and B's own
    decoding says bar 2 is bar 0 with step 5 changed: in the transfer, bar 2 is the decoded bar
    0 with a change at step 5 only, where free running with the model's own edit chances
    regenerates it."""
    model = _copies_one_back_regenerating_every_step(seed=6)
    with torch.no_grad():
        model.pointer.bias[1] = -30.0
        model.pointer.bias[2] = 30.0  # every bar copies the bar 2 back where it can
    meters = torch.zeros(1, 3, dtype=torch.long)
    torch.manual_seed(7)
    z = torch.randn(1, 3, 8)
    own = torch.randint(1, model.grid.vocab_size, (1, 3, model.grid.steps_per_bar))
    own[0, 2] = own[0, 0]
    own[0, 2, 5] = (own[0, 0, 5] % (model.grid.vocab_size - 1)) + 1  # a different token
    out = model.transfer_run(z, own, meters)
    others = torch.arange(model.grid.steps_per_bar) != 5
    assert torch.equal(out[0, 2, others], out[0, 0, others])
    free = model.free_run(z, meters)
    assert not torch.equal(free[0, 2, others], free[0, 0, others])
