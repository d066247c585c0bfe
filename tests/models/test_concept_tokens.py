"""Concept tokens spliced into frozen modules: only their rows learn; save/load is exact."""
import torch
from torch import nn

from unifybench.errors import UserError
from unifybench.models.concept_tokens import ConceptTokens, attach, detach
from unifybench.models.contract import Backbone


class ToyBackbone(Backbone):
    """The contract's concept-token slots on a plain embedding + head (the Chameleon version is tested elsewhere)."""

    takes_concept_tokens = True

    def __init__(self, vocab=50, hidden=8):
        torch.manual_seed(0)
        self.emb = nn.Embedding(vocab, hidden)
        self.head = nn.Linear(hidden, vocab, bias=True)
        for p in [*self.emb.parameters(), *self.head.parameters()]:
            p.requires_grad_(False)

    def input_embeddings(self): return self.emb
    def set_input_embeddings(self, m): self.emb = m
    def output_head(self): return self.head
    def set_output_head(self, m): self.head = m

    def logits(self, ids):
        return self.head(torch.tanh(self.emb(ids)))


def test_rows_are_substituted_and_head_columns_computed():
    b = ToyBackbone()
    ids = [40, 41, 42]
    tokens = ConceptTokens(ids, torch.ones(3, 8), [40, 42], torch.full((2, 8), 2.0), torch.zeros(2))
    attach(b, tokens)
    x = torch.tensor([[1, 40, 2, 42]])
    e = b.emb(x)
    assert torch.equal(e[0, 1], torch.ones(8)) and torch.equal(e[0, 3], torch.ones(8))
    assert torch.equal(e[0, 0], b.emb.base.weight[1])
    h = torch.randn(1, 8)
    logits = b.head(h)
    assert torch.allclose(logits[0, 40], (h * 2).sum()) and torch.allclose(logits[0, 42], (h * 2).sum())
    # Column 41 is an input-only row: its logit is the base head's.
    assert torch.allclose(logits[0, 41], b.head.base(h)[0, 41])
    detach(b)
    assert isinstance(b.emb, nn.Embedding) and isinstance(b.head, nn.Linear)


def test_training_changes_only_concept_rows_and_base_stays_bit_identical():
    b = ToyBackbone()
    before = {k: v.clone() for k, v in [*b.emb.state_dict().items(), *b.head.state_dict().items()]}
    tokens = ConceptTokens.from_base(b.emb, b.head, [45, 46], [45, 46])
    start = [p.detach().clone() for p in tokens.parameters()]
    attach(b, tokens)
    opt = torch.optim.AdamW(tokens.parameters(), lr=0.1)
    ids = torch.tensor([[3, 45, 46, 7]])
    losses = []
    for _ in range(20):
        loss = nn.functional.cross_entropy(b.logits(ids)[0, :-1], torch.tensor([45, 46, 7]))
        opt.zero_grad(); loss.backward(); opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert any(not torch.equal(a, p) for a, p in zip(start, tokens.parameters()))
    after = {k: v for k, v in [*b.emb.base.state_dict().items(), *b.head.base.state_dict().items()]}
    assert all(torch.equal(before[k], after[k]) for k in before)
    # Gradient and optimizer state exist only for the concept rows.
    n_state = sum(t.numel() for s in opt.state.values() for t in s.values() if torch.is_tensor(t) and t.dim())
    assert n_state == 2 * sum(p.numel() for p in tokens.parameters())


def test_save_load_roundtrip_gives_identical_outputs(tmp_path):
    b = ToyBackbone()
    tokens = ConceptTokens([40, 41], torch.randn(2, 8), [40], torch.randn(1, 8), torch.randn(1),
                           token_names=["<sks>", "<t0>"])
    attach(b, tokens)
    x = torch.tensor([[1, 40, 41, 2]])
    ref = b.logits(x)
    tokens.save(tmp_path / "c.safetensors", {"method": "test", "backbone_sha256": "abc"})
    loaded, header = ConceptTokens.load(tmp_path / "c.safetensors")
    assert header["method"] == "test" and header["token_names"] == ["<sks>", "<t0>"]
    b2 = ToyBackbone()
    attach(b2, loaded)
    assert torch.equal(b2.logits(x), ref)


def test_loading_a_foreign_file_is_a_user_error(tmp_path):
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    for name in ("other.safetensors", "junk.safetensors"):
        try:
            ConceptTokens.load(tmp_path / name)
        except UserError as e:
            assert name in str(e)
        else:
            raise AssertionError("no error")
