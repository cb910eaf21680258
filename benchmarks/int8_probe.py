"""Groundwork for the int8 engine (issue 9): the bundled model through torch fp32, ONNX Runtime fp32 and
ONNX Runtime dynamic int8, compared on speed and on agreement with torch.

    pip install onnxruntime onnx          # not project dependencies (yet)
    python benchmarks/int8_probe.py [--repeat 3] [--out /tmp/whitevec-int8]

For each engine: sentences/s (median of --repeat runs over 1,024 STS-B en dev sentences, batch 32,
2 threads), per-sentence cosine with torch's vector (min, 1st percentile, mean, share below 0.99),
and Spearman on ../shared/data/sts-b-en/dev.tsv and sts-b-zh/valid.tsv. Variants: dynamic int8 as shipped
(`onnx-int8`), with the FFN down-projections left fp32, with 7-bit weights (`reduce_range`, ORT's advice
for CPUs without VNNI), with uint8 weights, and blockwise 8-bit weights with int8 compute (MatMulNBits). The ONNX export keeps the
encoder only (last_hidden_state); pooling and the model's Normalize run in numpy, as the engine would.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from _util import SHARED
from whitevec.models.encoder import Encoder
from whitevec.models.evaluation import cosine_spearman, read_pairs


class _LastHidden(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state


def export(encoder: Encoder, out: Path) -> Path:
    path = out / "model.onnx"
    ids = torch.ones(2, 16, dtype=torch.long)
    axes = {0: "batch", 1: "tokens"}
    torch.onnx.export(_LastHidden(encoder.model).eval(), (ids, ids), str(path), input_names=["input_ids", "attention_mask"],
                      output_names=["last"], dynamic_axes={"input_ids": axes, "attention_mask": axes, "last": axes},
                      opset_version=17, dynamo=False)
    return path


def quantize(src: Path, dst: Path, exclude: list[str], reduce_range: bool = False, unsigned: bool = False) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QUInt8 if unsigned else QuantType.QInt8,
                     per_channel=True, reduce_range=reduce_range, op_types_to_quantize=["MatMul"],
                     nodes_to_exclude=exclude)
    return dst


def quantize_blockwise(src: Path, dst: Path, block: int) -> Path:
    """8-bit weights in blocks of `block` input channels, int8 compute (MatMulNBits, accuracy_level 4)."""
    import logging

    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    config = DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=True, accuracy_level=4, bits=8)
    quantizer = MatMulNBitsQuantizer(str(src), bits=8, block_size=block, is_symmetric=True, accuracy_level=4,
                                     algo_config=config)
    quantizer.process()
    quantizer.model.save_model_to_file(str(dst), True)
    return dst


def ort_encoder(path: Path, encoder: Encoder):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def embed(ids: list[list[int]]) -> np.ndarray:
        batch = encoder.tokenizer.pad(ids, encoder.max_length)
        mask = batch.attention_mask.numpy()
        last = session.run(None, {"input_ids": batch.input_ids.numpy(), "attention_mask": mask})[0]
        pooled = (last * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)  # the bundled model's Normalize

    return embed


def encode(embed, encoder: Encoder, texts: list[str]) -> tuple[np.ndarray, float]:
    ids, _ = encoder.tokenize(texts)
    order = sorted(range(len(texts)), key=lambda i: -len(ids[i]))
    out = np.zeros((len(texts), encoder.dim), np.float32)
    started = time.perf_counter()
    for start in range(0, len(texts), 32):
        idx = order[start : start + 32]
        out[idx] = embed([ids[i] for i in idx])
    return out, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("/tmp/whitevec-int8"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)
    encoder = Encoder(device="cpu")
    fp32 = export(encoder, args.out)
    import onnx

    matmuls = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "MatMul"]
    ffn_down = [n for n in matmuls if "/output/dense/" in n and "attention" not in n]
    engines = {
        "torch fp32": encoder.embed_tokens,
        "onnxruntime fp32": ort_encoder(fp32, encoder),
        "onnxruntime int8 (per-channel)": ort_encoder(quantize(fp32, args.out / "int8.onnx", []), encoder),
        "onnxruntime int8, FFN down fp32": ort_encoder(quantize(fp32, args.out / "int8-ffn.onnx", ffn_down), encoder),
        "onnxruntime int8, reduce_range": ort_encoder(quantize(fp32, args.out / "int8-rr.onnx", [], True), encoder),
        "onnxruntime uint8 weights": ort_encoder(quantize(fp32, args.out / "uint8.onnx", [], False, True), encoder),
        "onnxruntime 8-bit blockwise (32)": ort_encoder(quantize_blockwise(fp32, args.out / "nbits.onnx", 32), encoder),
    }
    dev = read_pairs(SHARED / "sts-b-en" / "dev.tsv")
    speed_texts = list(dict.fromkeys(dev.a + dev.b))[:1024]
    evals = {name: read_pairs(SHARED / name / file) for name, file in (("sts-b-en", "dev.tsv"), ("sts-b-zh", "valid.tsv"))}
    reference: dict[str, np.ndarray] = {}
    print("| engine | sentences/s | ratio | cos min | cos p1 | cos mean | < 0.99 (en / zh) | Spearman en | Spearman zh |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = None
    for name, embed in engines.items():
        speed = statistics.median(len(speed_texts) / encode(embed, encoder, speed_texts)[1] for _ in range(args.repeat))
        base = base or speed
        row, worst, p1, mean, low = [], 1.0, [], [], []
        for set_name, pairs in evals.items():
            unique = list(dict.fromkeys(pairs.a + pairs.b))
            where = {t: i for i, t in enumerate(unique)}
            vectors, _ = encode(embed, encoder, unique)
            ref = reference.setdefault(set_name, vectors)
            cos = (vectors * ref).sum(1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(ref, axis=1)
            worst, low = min(worst, float(cos.min())), low + [float((cos < 0.99).mean())]
            p1.append(float(np.percentile(cos, 1)))
            mean.append(float(cos.mean()))
            a, b = vectors[[where[t] for t in pairs.a]], vectors[[where[t] for t in pairs.b]]
            row.append(cosine_spearman(a, b, pairs.scores))
        print(f"| {name} | {speed:.0f} | {speed / base:.2f}× | {worst:.4f} | {min(p1):.4f} | {min(mean):.4f} | "
              f"{low[0]:.1%} / {low[1]:.1%} | {row[0]:.2f} | {row[1]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
