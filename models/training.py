"""AM-Softmax fine-tuning: sentences of one meaning form a class, and each sits closer
to its own class centre than to any other by a margin.

    logits_j = s · (cos θ_j − m·[j = y]),   cos θ_j = ê · ĉ_j   (ê, ĉ L2-normalised)

Run in-process (`train(...)`, used by `whitevec train`) or as a worker process
(`python -m whitevec.models.training CONFIG.json`, used by the service's training job), which
prints one JSON line per event on stdout.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import WhitevecError
from .evaluation import cosine_spearman, encode_unique, read_pairs
from .files import check_unicode, fsync_path, iter_jsonl

log = logging.getLogger(__name__)


class TrainingDataError(WhitevecError):
    """The training data cannot form at least two classes of two or more sentences."""


# --- the loss -------------------------------------------------------------------------------

def am_softmax_logits(embeddings: torch.Tensor, centres: torch.Tensor, labels: torch.Tensor,
                      scale: float, margin: float) -> torch.Tensor:
    """s · (cos − m on the true class), cosines between normalised sentences and centres."""
    cos = F.normalize(embeddings, dim=-1) @ F.normalize(centres, dim=-1).T
    return scale * (cos - margin * F.one_hot(labels, centres.shape[0]).to(cos.dtype))


def am_softmax_loss(embeddings: torch.Tensor, centres: torch.Tensor, labels: torch.Tensor,
                    scale: float = 30.0, margin: float = 0.35) -> torch.Tensor:
    return F.cross_entropy(am_softmax_logits(embeddings, centres, labels, scale, margin), labels)


# --- data -----------------------------------------------------------------------------------

@dataclass
class TrainingData:
    texts: list[str]
    labels: list[int]  # class index per text
    n_classes: int
    dropped: int = 0  # sentences in one-member classes
    warnings: list[str] = field(default_factory=list)


def _check_text(text: object, where: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise TrainingDataError(f"{where}: text must be a non-empty string")
    check_unicode(text, where)
    return text


def classes_from_examples(examples: list[dict]) -> TrainingData:
    """`[{"text", "label"}]`: same label, same meaning. Labels compare as text, so 1 and "1" are one class."""
    groups: dict[str, list[str]] = {}
    for i, ex in enumerate(examples):
        text = _check_text(ex.get("text"), f"examples[{i}]")
        label = ex.get("label")
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise TrainingDataError(f"examples[{i}]: label must be a string or an integer")
        groups.setdefault(str(label), []).append(text)
    return _finish(list(groups.values()))


def classes_from_pairs(pairs: list[dict], threshold: float) -> TrainingData:
    """Join pairs scoring ≥ threshold; each connected group of sentences is one class."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, p in enumerate(pairs):
        a = _check_text(p.get("text_a"), f"pairs[{i}].text_a")
        b = _check_text(p.get("text_b"), f"pairs[{i}].text_b")
        score = p.get("score")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise TrainingDataError(f"pairs[{i}].score must be a finite number")
        find(a), find(b)
        if float(score) >= threshold:
            parent[find(a)] = find(b)
    groups: dict[str, list[str]] = {}
    for text in parent:
        groups.setdefault(find(text), []).append(text)
    return _finish(list(groups.values()))


def _finish(groups: list[list[str]]) -> TrainingData:
    groups = [list(dict.fromkeys(g)) for g in groups]
    kept = [g for g in groups if len(g) >= 2]
    dropped = sum(len(g) for g in groups if len(g) < 2)
    warnings = []
    if dropped:
        warnings.append(f"dropped {dropped} sentence(s) in classes of one sentence only")
        log.warning(warnings[-1])
    if len(kept) < 2:
        raise TrainingDataError(
            f"training needs at least 2 classes of 2 or more sentences; found {len(kept)} "
            f"({dropped} sentences were alone in their class): add paraphrases, or lower pair_threshold"
        )
    texts = [t for g in kept for t in g]
    labels = [c for c, g in enumerate(kept) for _ in g]
    return TrainingData(texts, labels, len(kept), dropped, warnings)


def read_training_file(path: Path) -> tuple[list[dict] | None, list[dict] | None]:
    """JSONL of examples or pairs, or a TSV of sentence1<TAB>sentence2<TAB>score → (examples, pairs)."""
    if path.suffix.lower() in (".tsv", ".txt"):
        sts = read_pairs(path)
        return None, [{"text_a": a, "text_b": b, "score": s} for a, b, s in zip(sts.a, sts.b, sts.scores)]
    rows = [obj for _, obj in iter_jsonl(path)]
    if rows and all(isinstance(r, dict) and {"text", "label"} <= r.keys() for r in rows):
        return rows, None
    if rows and all(isinstance(r, dict) and {"text_a", "text_b", "score"} <= r.keys() for r in rows):
        return None, rows
    raise TrainingDataError(f"{path.name}: every line must be {{\"text\", \"label\"}} or "
                            "{\"text_a\", \"text_b\", \"score\"}")


# --- training -------------------------------------------------------------------------------

def initial_centres(vectors: np.ndarray, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Each class centre starts at the normalised mean of its members' normalised vectors: unit
    length for every class, so Adam moves large and small classes alike (a sum would not)."""
    unit = F.normalize(torch.from_numpy(np.asarray(vectors, dtype=np.float32)), dim=-1)
    sums = torch.zeros(n_classes, unit.shape[1]).index_add_(0, labels, unit)
    return F.normalize(sums, dim=-1)


@dataclass
class TrainConfig:
    scale: float = 30.0
    margin: float = 0.35
    # Defaults tuned on sts-b-zh train → valid (benchmarks/train_tune.py): Spearman 46.30 → 55.41,
    # paraphrase hit@1 44.51 → 48.98; the old 2e-5 / 1e-3 / 1 epoch reached 51.23 / 47.76.
    epochs: int = 3
    batch_size: int = 32
    lr: float = 5e-5  # encoder
    centre_lr: float = 1e-2  # class centres
    warmup: float = 0.1  # fraction of steps with a linear warm-up
    grad_accum: int = 1
    max_length: int = 64
    seed: int = 0
    max_steps: int | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum", "max_length"):
            if getattr(self, name) < 1:
                raise WhitevecError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise WhitevecError(f"max_steps must be ≥ 1 or null, got {self.max_steps}")
        if not (self.scale > 0 and 0 <= self.margin < 1 and self.lr > 0 and self.centre_lr > 0
                and 0 <= self.warmup < 1):
            raise WhitevecError("need scale > 0, 0 ≤ margin < 1, lr > 0, centre_lr > 0, 0 ≤ warmup < 1")


StepFn = Callable[[dict], None]


#: Pairs scoring at least this are paraphrases for hit@1.
PARAPHRASE_SCORE = 4.0


def paraphrase_hit_at_1(texts_a: list[str], texts_b: list[str], scores: np.ndarray, vectors_a: np.ndarray,
                        vectors_b: np.ndarray, threshold: float = PARAPHRASE_SCORE) -> float | None:
    """Share of paraphrase queries whose nearest other sentence (among all of the file's
    sentences, by cosine) is one of its paraphrases; both directions of each pair ≥ threshold.
    None when the file has no such pair."""
    corpus: dict[str, np.ndarray] = {}
    for text, vec in zip(texts_a + texts_b, np.concatenate([vectors_a, vectors_b])):
        corpus.setdefault(text, vec)
    names = list(corpus)
    where = {t: i for i, t in enumerate(names)}
    matrix = np.stack([corpus[t] for t in names]).astype(np.float64)
    matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    partners: dict[str, set[str]] = {}
    for a, b, score in zip(texts_a, texts_b, scores):
        if score >= threshold and a != b:
            partners.setdefault(a, set()).add(b)
            partners.setdefault(b, set()).add(a)
    if not partners:
        return None
    queries = list(partners)
    sims = matrix[[where[q] for q in queries]] @ matrix.T
    sims[np.arange(len(queries)), [where[q] for q in queries]] = -np.inf  # not itself
    best = sims.argmax(axis=1)
    hits = sum(names[j] in partners[q] for q, j in zip(queries, best))
    return round(100.0 * hits / len(queries), 2)


def evaluate_pairs(encoder, eval_path: Path) -> dict:
    """Spearman ×100 of cosine vs gold, and paraphrase hit@1 (%), on a pairs file."""
    pairs = read_pairs(eval_path)
    n = len(pairs.scores)
    was_training = encoder.model.training
    encoder.model.eval()
    vectors = encode_unique(encoder, pairs.a + pairs.b)
    encoder.model.train(was_training)
    a, b = vectors[:n], vectors[n:]
    return {"spearman": round(cosine_spearman(a, b, pairs.scores), 4),
            "hit_at_1": paraphrase_hit_at_1(pairs.a, pairs.b, pairs.scores, a, b)}


def train(encoder, data: TrainingData, config: TrainConfig, out_dir: Path, eval_path: Path | None = None,
          on_event: StepFn | None = None, should_stop: Callable[[], bool] | None = None,
          progress: bool = False) -> dict:
    """Fine-tune `encoder` in place, save it to out_dir (HF format + pooling/tokenizer config), return the report."""
    from tqdm.auto import tqdm

    if encoder.engine != "torch":  # float32 torch: gradients
        raise WhitevecError(f"training needs the torch engine (gradients); this encoder runs {encoder.engine}")
    emit = on_event or (lambda event: None)
    started = time.time()
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    steps_per_epoch = math.ceil(len(data.texts) / (config.batch_size * config.grad_accum))
    total = steps_per_epoch * config.epochs
    if config.max_steps:
        total = min(total, config.max_steps)
    report: dict = {"settings": asdict(config), "n_texts": len(data.texts), "n_classes": data.n_classes,
                    "dropped": data.dropped, "warnings": data.warnings, "steps": total, "loss": []}
    if eval_path is not None:
        before = evaluate_pairs(encoder, eval_path)
        report["eval_before"], report["hit_at_1_before"] = before["spearman"], before["hit_at_1"]
        emit({"event": "eval", "when": "before", **before})

    encoder.model.eval()
    labels_all = torch.tensor(data.labels)
    centres = torch.nn.Parameter(initial_centres(encoder.encode(data.texts, batch_size=64).vectors,
                                                 labels_all, data.n_classes).to(encoder.device))

    optimizer = torch.optim.AdamW([{"params": encoder.model.parameters(), "lr": config.lr},
                                   {"params": [centres], "lr": config.centre_lr, "weight_decay": 0.0}])
    warmup_steps = int(total * config.warmup)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: (step + 1) / max(1, warmup_steps) if step < warmup_steps
        else max(0.0, (total - step) / max(1, total - warmup_steps)))
    tokenizer = encoder.tokenizer
    ids_all = tokenizer.encode(data.texts)
    max_length = min(config.max_length, encoder.max_length)
    encoder.model.train()
    step = 0
    loop_started = time.time()
    bar = tqdm(total=total, disable=not progress, desc="training", unit="step")
    try:
        while step < total:
            order = list(range(len(data.texts)))
            rng.shuffle(order)
            micro = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
            for start in range(0, len(micro), config.grad_accum):
                if step >= total:
                    break
                if should_stop is not None and should_stop():
                    raise InterruptedError("training was cancelled")
                optimizer.zero_grad()
                loss_sum = 0.0
                chunk = micro[start : start + config.grad_accum]
                for idx in chunk:
                    batch = tokenizer.pad([ids_all[i] for i in idx], max_length)
                    pooled = encoder.forward(batch)
                    labels = labels_all[idx].to(encoder.device)
                    loss = am_softmax_loss(pooled, centres, labels, config.scale, config.margin) / len(chunk)
                    loss.backward()
                    loss_sum += loss.item()
                torch.nn.utils.clip_grad_norm_(encoder.model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                step += 1
                report["loss"].append(round(loss_sum, 5))
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum:.3f}")
                emit({"event": "step", "step": step, "total": total, "loss": loss_sum})
    finally:
        bar.close()
        encoder.model.eval()
    report["train_seconds"] = round(time.time() - loop_started, 2)
    if eval_path is not None:
        after = evaluate_pairs(encoder, eval_path)
        report["eval_after"], report["hit_at_1_after"] = after["spearman"], after["hit_at_1"]
        emit({"event": "eval", "when": "after", **after})
    report["seconds"] = round(time.time() - started, 2)
    report["steps_per_second"] = round(step / max(report["train_seconds"], 1e-9), 3)  # the loop alone
    save_model(encoder, out_dir, report)
    return report


def save_model(encoder, out_dir: Path, report: dict) -> None:
    """Hugging Face folder + whitevec pooling/tokenizer configs + report.json + loss.png.

    Atomic: written and fsynced under a temp name beside out_dir, then renamed into place
    (an existing out_dir is renamed away first and removed after), so a crash leaves either
    the old folder or the new one, never a mix.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{random.getrandbits(24):06x}"
    tmp = out_dir.with_name(f".tmp-{out_dir.name}-{tag}")
    tmp.mkdir()
    try:
        encoder.model.save_pretrained(str(tmp))
        encoder.tokenizer.save(tmp)
        encoder.pooling.save(tmp)
        encoder.save_modules(tmp)
        (tmp / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": encoder.max_length}))
        (tmp / "report.json").write_text(json.dumps(report, indent=2))
        plot_loss(report, tmp / "loss.png")
        for path in tmp.rglob("*"):
            if path.is_file():
                fsync_path(path)
        old = out_dir.with_name(f".old-{out_dir.name}-{tag}")
        if out_dir.exists():
            os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        fsync_path(out_dir.parent)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise



def plot_loss(report: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loss = np.asarray(report["loss"], dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(np.arange(1, len(loss) + 1), loss, alpha=0.4, label="loss per step")
    if len(loss) >= 10:
        w = max(len(loss) // 20, 5)
        ax.plot(np.arange(w, len(loss) + 1), np.convolve(loss, np.ones(w) / w, mode="valid"), label=f"mean of {w}")
    title = f"AM-Softmax (s={report['settings']['scale']}, m={report['settings']['margin']}), {report['n_classes']} classes"
    if "eval_before" in report and "eval_after" in report:
        title += f"\nSpearman {report['eval_before']:.2f} → {report['eval_after']:.2f}"
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
