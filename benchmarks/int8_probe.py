"""The int8 engines against the retrieval contract: speed, and what search results lose against fp32.

    pip install -e '.[bench]'
    python benchmarks/int8_probe.py [--repeat 3] [--variants fp32 int8 int8-rr ...] [--out /tmp/whitevec-int8]
    python benchmarks/int8_probe.py --tiny        # a smoke run (CI): 200 sentences, two variants
    python benchmarks/int8_probe.py --speed-only --variants fp32 bf16 openvino-bf16   # speed alone (a repeat)

Every variant runs the bundled model's transformer exported to ONNX, with mean pooling and Normalize
in numpy as the engine would. Per variant:

- speed: sentences/s, median of --repeat runs over 1,024 STS-B en dev sentences, batch 32, 2 threads;
- the **retrieval contract** (the gate `auto` applies before it may pick an int8 engine), on the corpora
  of every sentence of STS-B en (train + dev) and Chinese STS-B (train + valid), each variant searching
  its own vectors (a version is built and served with one engine) by exact inner product:
  mean overlap of each query's top-10 (itself excluded) with fp32's top-10 >= 0.95 (queries: every
  sentence of en dev and zh valid); paraphrase hit@1 (queries: sentences of held-out pairs scored >= 4;
  a hit = the nearest other sentence is a paraphrase) at most 0.5 points under fp32's; Spearman on en
  dev and zh valid at most 0.3 under fp32's;
- per-sentence cosine with fp32's vector (min, 1st percentile), reported, not gated.

Whitening is left out: the service's default (beta = gamma = 0, all dims) is a rotation, which keeps every
inner product, so these are the rankings the default server returns.

Variants (--variants): fp32; bf16 (the torch-half engine on the CPU); int8 (per-channel int8 weights, the `onnx-int8` engine); int8-rr (7-bit
weights, `reduce_range`: the `onnx-int8-rr` engine); int8-ffn (int8 with the FFN down-projections fp32);
int8-rr-first (int8-rr with the first layer fp32); static (int8 weights and activations calibrated on 512
STS-B train sentences, QDQ); openvino, openvino-bf16 and openvino-mixed (the OpenVINO engines: Encoder.embed_tokens, as bf16);
openvino-int8 (the openvino engine's IR quantised by NNCF post-training, ModelType.TRANSFORMER, calibrated on the
same 512 sentences; weights and activations int8, the rest f32). `--sensitivity` adds the cosine error of int8-rr with each single layer
left fp32, the data for a per-layer mix.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from _util import SHARED, read_tsv
from whitevec.models.encoder import Encoder
from whitevec.models.runners import quantize_int8
from whitevec.models.evaluation import cosine_spearman

Embed = Callable[[list[list[int]]], np.ndarray]
CONTRACT = {"overlap": 0.95, "hit1": 0.5, "spearman": 0.3}
FILES = {"en": ("sts-b-en/train.tsv", "sts-b-en/dev.tsv"), "zh": ("sts-b-zh/train.tsv", "sts-b-zh/valid.tsv")}


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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about shapes: the axes are declared dynamic
        torch.onnx.export(_LastHidden(encoder.model).eval(), (ids, ids), str(path), input_names=["input_ids", "attention_mask"],
                          output_names=["last"], dynamic_axes={"input_ids": axes, "attention_mask": axes, "last": axes},
                          opset_version=17, dynamo=False)
    return path


def layer_matmuls(path: Path) -> dict[str, list[str]]:
    """MatMul node names by group: `layer<i>` for each transformer layer, `ffn_down` for the FFN outputs."""
    import onnx

    names = [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "MatMul"]
    groups: dict[str, list[str]] = {"ffn_down": [n for n in names if "/output/dense/" in n and "attention" not in n]}
    for name in names:
        if "/layer." in name:
            groups.setdefault("layer" + name.split("/layer.")[1].split("/")[0], []).append(name)
    return groups


def quantize_static(src: Path, dst: Path, encoder: Encoder, texts: list[str]) -> Path:
    """int8 weights and activations, ranges calibrated (min/max) on `texts`; MatMuls only."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_static

    ids, _ = encoder.tokenize(texts)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(ids[i:i + 32] for i in range(0, len(ids), 32))

        def get_next(self) -> dict | None:
            rows = next(self.batches, None)
            if rows is None:
                return None
            batch = encoder.tokenizer.pad(rows, encoder.max_length)
            return {"input_ids": batch.input_ids.numpy(), "attention_mask": batch.attention_mask.numpy()}

    ort_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
               activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
               extra_options={"ActivationSymmetric": False})
    return dst


def ort_encoder(path: Path, encoder: Encoder) -> Embed:
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


def encode(embed: Embed, encoder: Encoder, texts: list[str]) -> tuple[np.ndarray, float]:
    ids, _ = encoder.tokenize(texts)
    order = sorted(range(len(texts)), key=lambda i: -len(ids[i]))
    out = np.zeros((len(texts), encoder.dim), np.float32)
    started = time.perf_counter()
    for start in range(0, len(texts), 32):
        idx = order[start : start + 32]
        out[idx] = embed([ids[i] for i in idx])
    return out, time.perf_counter() - started


class Corpus:
    """One language's sentences, its top-10 queries, paraphrase queries and Spearman pairs."""

    def __init__(self, lang: str, limit: int | None) -> None:
        train, held_out = (read_tsv(SHARED / f) for f in FILES[lang])
        self.lang = lang
        self.sentences = list(dict.fromkeys(s for a, b, _ in train + held_out for s in (a, b) if s))[:limit]
        where = {s: i for i, s in enumerate(self.sentences)}
        held_out = [(a, b, s) for a, b, s in held_out if a in where and b in where]
        self.queries = np.array(sorted({where[s] for a, b, _ in held_out for s in (a, b)}))
        self.partners: dict[int, set[int]] = {}
        for a, b, score in held_out:
            if score >= 4 and a != b:
                self.partners.setdefault(where[a], set()).add(where[b])
                self.partners.setdefault(where[b], set()).add(where[a])
        self.pairs = (np.array([where[a] for a, _, _ in held_out]), np.array([where[b] for _, b, _ in held_out]),
                      np.array([s for _, _, s in held_out]))

    def top(self, vectors: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
        """Each row's k nearest other sentences (exact inner product, itself excluded)."""
        out = np.empty((len(rows), k), np.int64)
        for start in range(0, len(rows), 512):
            chunk = rows[start:start + 512]
            scores = vectors[chunk] @ vectors.T
            scores[np.arange(len(chunk)), chunk] = -np.inf
            best = np.argpartition(-scores, k, axis=1)[:, :k]
            order = np.argsort(-np.take_along_axis(scores, best, 1), axis=1)
            out[start:start + len(chunk)] = np.take_along_axis(best, order, 1)
        return out

    def hit_at_1(self, vectors: np.ndarray) -> float:
        queries = np.array(sorted(self.partners))
        if not len(queries):
            return float("nan")
        first = self.top(vectors, queries, 1)[:, 0]
        return 100.0 * float(np.mean([int(f) in self.partners[int(q)] for q, f in zip(queries, first)]))

    def spearman(self, vectors: np.ndarray) -> float:
        a, b, scores = self.pairs
        return cosine_spearman(vectors[a], vectors[b], list(scores))


def variants(names: list[str], fp32: Path, encoder: Encoder, out: Path, calib: list[str]) -> dict[str, Embed]:
    groups = layer_matmuls(fp32)
    recipes: dict[str, Callable[[], Path]] = {
        "fp32": lambda: fp32,
        "int8": lambda: quantize_int8(fp32, out / "int8.onnx", reduce_range=False),
        "int8-rr": lambda: quantize_int8(fp32, out / "int8-rr.onnx", reduce_range=True),
        "int8-ffn": lambda: quantize_int8(fp32, out / "int8-ffn.onnx", reduce_range=False, exclude=groups["ffn_down"]),
        "int8-rr-first": lambda: quantize_int8(fp32, out / "int8-rr-first.onnx", reduce_range=True,
                                               exclude=groups["layer0"]),
        "static": lambda: quantize_static(fp32, out / "static.onnx", encoder, calib),
    }
    engines: dict[str, Callable[[], Embed]] = {
        "bf16": lambda: engine_encoder("torch-half", out),
        "openvino": lambda: engine_encoder("openvino", out),
        "openvino-bf16": lambda: engine_encoder("openvino-bf16", out),
        "openvino-mixed": lambda: engine_encoder("openvino-mixed", out),
        "openvino-int8": lambda: openvino_int8(encoder, out, calib),
    }
    unknown = sorted(set(names) - set(recipes) - set(engines))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}: choose from {', '.join([*recipes, *engines])}")
    return {name: engines[name]() if name in engines else ort_encoder(recipes[name](), encoder) for name in names}


def engine_encoder(engine: str, out: Path) -> Embed:
    """A whitevec engine as the service runs it (torch-half: bf16 weights and activations, AMX-BF16 / AVX-512
    BF16 where present; the OpenVINO engines, their IR cached under `out`)."""
    return normalized(Encoder(device="cpu", engine=engine, engine_cache=out / "engines"))


def openvino_int8(encoder: Encoder, out: Path, calib: list[str]) -> Embed:
    """The openvino engine's IR quantised by NNCF (static int8, ranges from `calib`), compiled as the engine
    compiles (f32 for what stays unquantised)."""
    from whitevec.models.offline import decline_openvino_telemetry

    decline_openvino_telemetry()  # before nncf's import, which starts its usage counter
    import nncf
    import openvino as ov

    from whitevec.models.openvino_runner import compile_config

    ov_encoder = Encoder(device="cpu", engine="openvino", engine_cache=out / "engines")
    runner = ov_encoder._runner
    ids, _ = encoder.tokenize(calib)
    items = [{"input_ids": np.array([row], np.int64), "attention_mask": np.ones((1, len(row)), np.int64)} for row in ids]
    core = ov.Core()
    quantized = nncf.quantize(core.read_model(runner.path), nncf.Dataset(items), subset_size=len(items),
                              model_type=nncf.ModelType.TRANSFORMER)
    runner.compiled = [core.compile_model(quantized, "CPU", compile_config("f32", torch.get_num_threads()))]
    runner._local = type(runner._local)()  # requests of the int8 model from now on
    return normalized(ov_encoder)


def normalized(engine: Encoder) -> Embed:
    """The engine's pooled vectors, normalised (the bundled model's Normalize, as ort_encoder does)."""

    def embed(ids: list[list[int]]) -> np.ndarray:
        vectors = engine.embed_tokens(ids)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    return embed


def sensitivity(fp32: Path, encoder: Encoder, out: Path, texts: list[str], reference: np.ndarray) -> None:
    """Cosine error of int8-rr with one layer at a time left fp32 (which layer's quantisation costs most)."""
    print("\n| int8-rr with fp32 | cos min | cos p1 | mean 1 - cos |")
    print("|---|---:|---:|---:|")
    groups = layer_matmuls(fp32)
    for group in ["none"] + sorted(g for g in groups if g.startswith("layer")):
        path = quantize_int8(fp32, out / f"sens-{group}.onnx", reduce_range=True, exclude=groups.get(group, []))
        vectors, _ = encode(ort_encoder(path, encoder), encoder, texts)
        cos = (vectors * reference).sum(1)
        print(f"| {group} | {cos.min():.4f} | {np.percentile(cos, 1):.4f} | {np.mean(1 - cos):.5f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=["fp32", "bf16", "int8", "int8-rr", "int8-ffn"])
    parser.add_argument("--sensitivity", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="a smoke run: 200 sentences per corpus, fp32, bf16 and int8-rr")
    parser.add_argument("--speed-only", action="store_true", help="sentences/s only, no contract (minutes less)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/whitevec-int8"))
    args = parser.parse_args()
    limit = 200 if args.tiny else None
    names = ["fp32", "bf16", "int8-rr"] if args.tiny else args.variants
    names = ["fp32"] + [n for n in names if n != "fp32"]
    torch.set_num_threads(2)
    logging.getLogger().setLevel(logging.ERROR)  # ORT's quantiser advises pre-processing at WARNING
    args.out.mkdir(parents=True, exist_ok=True)
    encoder = Encoder(device="cpu")
    fp32 = export(encoder, args.out)
    calib = [a for a, _, _ in read_tsv(SHARED / FILES["en"][0])[:256]] + [a for a, _, _ in read_tsv(SHARED / FILES["zh"][0])[:256]]
    engines = variants(names, fp32, encoder, args.out, calib)
    corpora = [Corpus(lang, limit) for lang in FILES]
    speed_texts = corpora[0].sentences[-1024:]
    for corpus in corpora:
        print(f"{corpus.lang}: {len(corpus.sentences)} sentences, {len(corpus.queries)} top-10 queries, "
              f"{len(corpus.partners)} paraphrase queries, {len(corpus.pairs[0])} Spearman pairs")
    print(f"\ncontract: top-10 overlap >= {CONTRACT['overlap']}, hit@1 >= fp32 - {CONTRACT['hit1']}, "
          f"Spearman >= fp32 - {CONTRACT['spearman']} (en / zh each)\n")
    print("| variant | sentences/s | × fp32 | top-10 overlap en / zh | hit@1 en / zh | Spearman en / zh | "
          "cos min | cos p1 | contract |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    reference: dict[str, tuple[np.ndarray, np.ndarray, float, float]] = {}
    base = None
    for name, embed in engines.items():
        speed = statistics.median(len(speed_texts) / encode(embed, encoder, speed_texts)[1] for _ in range(args.repeat))
        base = base or speed
        if args.speed_only:
            print(f"| {name} | {speed:.0f} | {speed / base:.2f} | | | | | | not measured |", flush=True)
            continue
        overlap, hits, rhos, cos_all, failed = [], [], [], [], []
        for corpus in corpora:
            vectors, _ = encode(embed, encoder, corpus.sentences)
            top = corpus.top(vectors, corpus.queries, 10)
            hit, rho = corpus.hit_at_1(vectors), corpus.spearman(vectors)
            ref = reference.setdefault(corpus.lang, (vectors, top, hit, rho))
            overlap.append(float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, ref[1])])))
            hits.append(hit)
            rhos.append(rho)
            cos_all.append((vectors * ref[0]).sum(1))
            if overlap[-1] < CONTRACT["overlap"]:
                failed.append(f"overlap {corpus.lang}")
            if hit < ref[2] - CONTRACT["hit1"]:
                failed.append(f"hit@1 {corpus.lang}")
            if rho < ref[3] - CONTRACT["spearman"]:
                failed.append(f"Spearman {corpus.lang}")
        cos = np.concatenate(cos_all)
        print(f"| {name} | {speed:.0f} | {speed / base:.2f} | {overlap[0]:.3f} / {overlap[1]:.3f} | "
              f"{hits[0]:.2f} / {hits[1]:.2f} | {rhos[0]:.2f} / {rhos[1]:.2f} | {cos.min():.4f} | "
              f"{np.percentile(cos, 1):.4f} | {'holds' if not failed else 'misses: ' + ', '.join(failed)} |", flush=True)
    if args.sensitivity:
        texts = corpora[1].sentences[:2000]
        reference_vectors, _ = encode(engines["fp32"], encoder, texts)
        sensitivity(fp32, encoder, args.out, texts, reference_vectors)


if __name__ == "__main__":
    main()
