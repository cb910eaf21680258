"""BERT's forward on a batch's text tokens only: the padding of a batch is carried through attention alone.

A padded batch of mixed lengths is mostly padding where it matters least: the linear layers, nearly all of a
small BERT's work on short sentences, cost the same for a padding token as for a word. Here the embeddings,
projections, layer norms and feed-forward run on the batch's text tokens packed into one [tokens, hidden]
matrix; only attention, which needs each sentence's tokens side by side, gathers them into the padded
[rows, tokens] layout and back. The outputs are padded again at the end, so pooling reads them as it reads
Hugging Face's (whose values at padding are as meaningless: pooling masks them).

Row by row the arithmetic is Hugging Face's: the same kernels on the same values (the projections of
query, key and value are one matrix product, which computes each output column as before). On the bundled
model in bf16 the last hidden states are bitwise those of the padded forward; every engine checks its packed
graph against Hugging Face's forward when it loads (models/runners.py: best_layout) and runs the padded one
if they differ.
Measured in docs/performance.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class PackedBert(torch.nn.Module):
    """A BertModel's transformer run on packed tokens; returns (last hidden state, [first layer's hidden
    state], [pooler output]) as runners._Transformer does."""

    def __init__(self, model: torch.nn.Module, first: bool, pooler: bool) -> None:
        super().__init__()
        self.embeddings = model.embeddings
        self.layers = model.encoder.layer
        self.pooler = model.pooler if pooler else None
        self.first = first
        attention = self.layers[0].attention.self
        self.heads, self.head_size = attention.num_attention_heads, attention.attention_head_size
        self.scale = float(getattr(attention, "scaling", self.head_size ** -0.5))
        for i, layer in enumerate(self.layers):
            s = layer.attention.self
            self.register_buffer(f"qkv_weight_{i}", torch.cat([s.query.weight, s.key.weight, s.value.weight]).detach())
            self.register_buffer(f"qkv_bias_{i}", torch.cat([s.query.bias, s.key.bias, s.value.bias]).detach())

    @staticmethod
    def fits(model: torch.nn.Module) -> bool:
        """Whether `model` is a plain BERT encoder this forward reproduces: a BertModel (whose layers have the
        layout used here) with absolute positions (what transformers 4.x may set otherwise), no decoder, at
        least one layer. Anything else runs Hugging Face's own forward; what passes is still checked against
        it when an engine loads."""
        from transformers import BertModel

        if not isinstance(model, BertModel) or getattr(model.config, "is_decoder", False):
            return False
        absolute = getattr(model.config, "position_embedding_type", "absolute") == "absolute"
        return absolute and len(model.encoder.layer) > 0

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        rows, length, where, back = places(attention_mask)
        h = self.embed(input_ids, where, length)
        h, first = self.run(h, self.bias(attention_mask, h.dtype), where, back, 0, len(self.layers))
        return self.outputs(h, first if self.first else None, rows, length, back)

    def embed(self, input_ids: torch.Tensor, where: torch.Tensor, length: int) -> torch.Tensor:
        """The embeddings of the text tokens, packed: [1 + text tokens, hidden]."""
        e = self.embeddings
        h = e.word_embeddings(input_ids.reshape(-1).index_select(0, where)) + e.token_type_embeddings.weight[0]
        return e.LayerNorm(h + e.position_embeddings(where % length))

    @staticmethod
    def bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Attention's mask as [rows, 1, 1, tokens]: 0 where a key is text, the dtype's lowest where it is padding
        (as Hugging Face's mask; filled, not multiplied, so a bf16 kernel never sees 0 × -inf)."""
        rows, length = attention_mask.shape
        return torch.zeros(rows, 1, 1, length, dtype=dtype).masked_fill(attention_mask[:, None, None, :] == 0,
                                                                        torch.finfo(dtype).min)

    def layer(self, i: int, h: torch.Tensor, bias: torch.Tensor, where: torch.Tensor, back: torch.Tensor) -> torch.Tensor:
        """Layer `i` on the packed hidden state; attention alone on the padded layout."""
        rows, length, hidden = bias.shape[0], bias.shape[-1], h.shape[-1]
        layer = self.layers[i]
        qkv = F.linear(h, getattr(self, f"qkv_weight_{i}"), getattr(self, f"qkv_bias_{i}"))
        padded = qkv.index_select(0, back)
        q, k, v = padded.view(rows, length, 3, self.heads, self.head_size).permute(2, 0, 3, 1, 4).unbind(0)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        a = a.transpose(1, 2).reshape(rows * length, hidden).index_select(0, where)
        a = layer.attention.output(a, h)
        return layer.output(layer.intermediate(a), a)

    def run(self, h: torch.Tensor, bias: torch.Tensor, where: torch.Tensor, back: torch.Tensor, start: int,
            stop: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Layers start..stop-1 on the packed hidden state: (the state after them, the first layer's output when
        it is among them)."""
        first = None
        for i in range(start, stop):
            h = self.layer(i, h, bias, where, back)
            if i == 0:
                first = h
        return h, first

    def outputs(self, h: torch.Tensor, first: torch.Tensor | None, rows: int, length: int,
                back: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(last hidden state, [first layer's], [pooler output]), padded again for pooling."""
        hidden = h.shape[-1]
        last = h.index_select(0, back).view(rows, length, hidden)
        outs = [last]
        if first is not None:
            outs.append(first.index_select(0, back).view(rows, length, hidden))
        if self.pooler is not None:
            outs.append(self.pooler(last))
        return tuple(outs)


def places(attention_mask: torch.Tensor) -> tuple[int, int, torch.Tensor, torch.Tensor]:
    """(rows, tokens, where, back) of a padded batch. The packed matrix is a spare copy of the first token, then
    every text token: `where` are their places in the flattened padded batch; for each place of the padded
    batch, `back` is its token's row (1 + its rank), or the spare (0) for padding. Padding, which attention
    masks and pooling never read, is then one gather away, with no zero-filled scatter (a scatter ran slowly
    in ONNX Runtime) and no copy of the packed matrix per layer."""
    rows, length = attention_mask.shape
    flat = attention_mask.reshape(-1)
    where = flat.nonzero().squeeze(1)
    where = torch.cat([where[:1], where])
    back = (flat.cumsum(0) * flat).to(torch.long)
    return rows, length, where, back


class PackedFront(torch.nn.Module):
    """PackedBert's embeddings and its first `stop` layers as a graph of its own: (input ids, attention mask) →
    (packed hidden state [1 + text tokens, hidden], [the first layer's, padded]). With PackedBack, an engine
    runs the two parts at different precisions (docs/performance.md: bf16 everywhere but the first layer)."""

    def __init__(self, bert: PackedBert, stop: int) -> None:
        super().__init__()
        if not 1 <= stop < len(bert.layers):
            raise ValueError(f"a front of {stop} layers leaves no back of a {len(bert.layers)}-layer model")
        self.bert, self.stop = bert, stop
        self.outputs = ["hidden"] + (["first"] if bert.first else [])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        rows, length, where, back = places(attention_mask)
        h = self.bert.embed(input_ids, where, length)
        h, first = self.bert.run(h, self.bert.bias(attention_mask, h.dtype), where, back, 0, self.stop)
        if not self.bert.first:
            return (h,)
        return h, first.index_select(0, back).view(rows, length, h.shape[-1])


class PackedBack(torch.nn.Module):
    """PackedBert's layers from `start` on: (packed hidden state, attention mask) → (last hidden state,
    [pooler output]), padded again."""

    def __init__(self, bert: PackedBert, start: int) -> None:
        super().__init__()
        self.bert, self.start = bert, start
        self.outputs = ["last"] + (["pooler"] if bert.pooler is not None else [])

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        rows, length, where, back = places(attention_mask)
        h, _ = self.bert.run(hidden, self.bert.bias(attention_mask, hidden.dtype), where, back, self.start,
                             len(self.bert.layers))
        return self.bert.outputs(h, None, rows, length, back)
