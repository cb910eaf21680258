"""PackedBert against Hugging Face's own forward: the same hidden states at every text token, any padding."""

import pytest
import torch
from transformers import BertConfig, BertModel

from whitevec.models.packed import PackedBert
from whitevec.models.runners import _Transformer


def _batch(lengths: list[int], vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(1, vocab, (n,), generator=gen)
        mask[row, :n] = 1
    return ids, mask


@pytest.mark.parametrize("first, pooler", [(False, False), (True, False), (False, True), (True, True)])
def test_packed_equals_hugging_faces_forward_at_every_text_token(tiny_model_dir, first, pooler):
    model = BertModel.from_pretrained(str(tiny_model_dir)).eval()
    assert PackedBert.fits(model)
    packed, reference = PackedBert(model, first, pooler).eval(), _Transformer(model, first, pooler).eval()
    for seed, lengths in enumerate([[7], [3, 9, 1, 9], [12, 2, 2, 5, 11, 1], [4, 4]]):
        ids, mask = _batch(lengths, model.config.vocab_size, seed)
        with torch.inference_mode():
            want, got = reference(ids, mask), packed(ids, mask)
        assert len(got) == len(want) == 1 + first + pooler
        text = mask.bool()
        for w, g in zip(want, got):
            assert g.shape == w.shape
            if w.dim() == 3:
                torch.testing.assert_close(g[text], w[text], atol=1e-5, rtol=1e-5)
            else:
                torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


def test_models_it_does_not_reproduce_run_their_own_forward(tiny_model_dir):
    """Another architecture (RoBERTa counts positions from its padding id), or a decoder, is not what PackedBert
    computes: those models are traced as Hugging Face's forward."""
    from transformers import RobertaConfig, RobertaModel

    from whitevec.models.runners import TracedRunner, best_layout

    base = BertConfig.from_pretrained(str(tiny_model_dir))
    assert PackedBert.fits(BertModel(base))
    assert not PackedBert.fits(BertModel(BertConfig.from_pretrained(str(tiny_model_dir), is_decoder=True)))
    assert not PackedBert.fits(torch.nn.Linear(2, 2))
    roberta = RobertaModel(RobertaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=64, max_position_embeddings=64))
    assert not PackedBert.fits(roberta)
    roberta = roberta.eval().to(torch.bfloat16)
    runner = best_layout(roberta, "last-avg", lambda packed: TracedRunner(roberta, "last-avg", packed), "roberta")
    assert not runner.packed
    ids, mask = _batch([5, 2, 8], 50, 0)
    ids[mask == 0] = 1  # RoBERTa's padding id
    with torch.inference_mode():
        want = roberta(input_ids=ids, attention_mask=mask).last_hidden_state
        got = runner(ids, mask).last_hidden_state
    torch.testing.assert_close(got[mask.bool()], want[mask.bool()])


@pytest.mark.parametrize("first, pooler", [(False, False), (True, False), (False, True), (True, True)])
def test_a_front_and_back_cut_after_the_first_layer_are_packed_bert(tiny_model_dir, first, pooler):
    """PackedFront then PackedBack (an engine's two graphs at two precisions) give PackedBert's outputs exactly:
    the cut only hands the packed hidden state over, and the first layer's state comes from the front."""
    from whitevec.models.packed import PackedBack, PackedFront

    model = BertModel.from_pretrained(str(tiny_model_dir)).eval()
    bert = PackedBert(model, first, pooler).eval()
    front, back = PackedFront(bert, 1), PackedBack(bert, 1)
    assert front.outputs == ["hidden"] + (["first"] if first else []) and back.outputs == ["last"] + (["pooler"] if pooler else [])
    for seed, lengths in enumerate([[7], [3, 9, 1, 9], [12, 2, 2, 5, 11, 1]]):
        ids, mask = _batch(lengths, model.config.vocab_size, seed)
        with torch.inference_mode():
            want = bert(ids, mask)
            head = front(ids, mask)
            assert head[0].shape == (1 + int(mask.sum()), model.config.hidden_size)
            got = back(head[0], mask)
        got = (got[0], *head[1:], *got[1:])  # PackedBert's order: last, [first], [pooler]
        assert len(got) == len(want)
        for w, g in zip(want, got):
            torch.testing.assert_close(g, w, atol=0, rtol=0)


def test_a_front_must_leave_a_back(tiny_model_dir):
    from whitevec.models.packed import PackedFront

    bert = PackedBert(BertModel.from_pretrained(str(tiny_model_dir)).eval(), False, False)
    for stop in (0, len(bert.layers)):
        with pytest.raises(ValueError, match="leaves no back"):
            PackedFront(bert, stop)
