"""Training batches: the default order is the seeded permutation cut in order; length buckets keep every
sample once per epoch and cut padding; a batch's loss does not depend on its padding."""
import random

import pytest
import torch

from unifybench.training import Sample, collate, epoch_batches, padding_fraction, sequence_loss


def _lengths(n=101, seed=0):
    rng = random.Random(seed)
    return [rng.choice([12, 40, 300, 1050]) + rng.randrange(8) for _ in range(n)]


def test_default_batches_are_the_seeded_permutation_cut_in_order():
    lengths = _lengths()
    order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(3)).tolist()
    want = [order[i:i + 4] for i in range(0, len(order), 4)]
    assert epoch_batches(lengths, 4, torch.Generator().manual_seed(3)) == want


def test_length_buckets_visit_every_sample_once_and_cut_padding():
    lengths = _lengths()
    random_batches = epoch_batches(lengths, 4, torch.Generator().manual_seed(3))
    bucketed = epoch_batches(lengths, 4, torch.Generator().manual_seed(3), length_buckets=8)
    assert sorted(i for b in bucketed for i in b) == list(range(len(lengths)))
    assert sorted(map(len, bucketed)) == sorted(map(len, random_batches))
    assert bucketed == epoch_batches(lengths, 4, torch.Generator().manual_seed(3), length_buckets=8)
    assert bucketed != epoch_batches(lengths, 4, torch.Generator().manual_seed(4), length_buckets=8)
    assert padding_fraction(lengths, bucketed) < 0.5 * padding_fraction(lengths, random_batches)
    # by hand: lengths 1, 3 in one batch of 2 pad 2 of 6 positions
    assert padding_fraction([1, 3], [[0, 1]]) == pytest.approx(2 / 6)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    from unifybench.models.chameleon.backbone import ChameleonBackbone
    from unifybench.models.chameleon.tiny import tiny_chameleon_path
    return ChameleonBackbone.load(tiny_chameleon_path(tmp_path_factory.mktemp("tiny")))


def test_a_batch_loss_does_not_depend_on_its_padding(backbone):
    g = torch.Generator().manual_seed(0)
    short = Sample(torch.randint(10, 900, (9,), generator=g).tolist(), [False] * 5 + [True] * 4)
    long = Sample(torch.randint(10, 900, (30,), generator=g).tolist(), [False] * 10 + [True] * 20)
    wider = Sample(torch.randint(10, 900, (80,), generator=g).tolist(), [False] * 80)   # no targets: only pads
    with torch.no_grad():
        tight = sequence_loss(backbone, *collate([short, long], backbone.pad_id, "cpu"))
        ids, mask, targets = collate([short, long, wider], backbone.pad_id, "cpu")
        padded = sequence_loss(backbone, ids[:2], mask[:2], targets[:2])     # same members, 50 more pads each
    assert ids.shape[1] == 80 and torch.equal(tight, padded)
