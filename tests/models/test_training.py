import json
import math

import numpy as np
import pytest
import torch

from whitevec.models.encoder import Encoder
from whitevec.models.errors import WhitevecError
from whitevec.models.training import (TrainConfig, TrainingDataError, am_softmax_logits, am_softmax_loss,
                             classes_from_examples, classes_from_pairs, read_training_file, train)
from tests.conftest import TRAIN_EXAMPLES as EXAMPLES

def test_loss_matches_hand_computation():
    e = torch.tensor([[3.0, 4.0, 0.0], [0.0, 1.0, 1.0]])
    c = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 5.0]])
    y = torch.tensor([1, 2])
    s, m = 30.0, 0.35
    # By hand: ê0 = (.6, .8, 0), ê1 = (0, .7071, .7071); ĉ = unit axes.
    cos = [[0.6, 0.8, 0.0], [0.0, 1 / math.sqrt(2), 1 / math.sqrt(2)]]
    total = 0.0
    for i, yi in enumerate([1, 2]):
        logits = [s * (cos[i][j] - (m if j == yi else 0.0)) for j in range(3)]
        total += -(logits[yi] - math.log(sum(math.exp(v) for v in logits)))
    assert am_softmax_loss(e, c, y, s, m).item() == pytest.approx(total / 2, rel=1e-5)


def test_margin_lowers_only_the_true_class_logit_by_s_times_m():
    torch.manual_seed(0)
    e, c, y = torch.randn(5, 8), torch.randn(4, 8), torch.tensor([0, 3, 1, 1, 2])
    with_margin = am_softmax_logits(e, c, y, 30.0, 0.35)
    without = am_softmax_logits(e, c, y, 30.0, 0.0)
    diff = without - with_margin
    expected = torch.zeros_like(diff)
    expected[torch.arange(5), y] = 30.0 * 0.35
    torch.testing.assert_close(diff, expected)


def test_groups_from_pairs_are_connected_components():
    pairs = [
        {"text_a": "a", "text_b": "b", "score": 5.0},
        {"text_a": "b", "text_b": "c", "score": 4.0},  # joins c to a-b: overlap
        {"text_a": "d", "text_b": "e", "score": 4.5},
        {"text_a": "c", "text_b": "d", "score": 3.9},  # below the threshold: stays apart
        {"text_a": "f", "text_b": "g", "score": 1.0},  # f, g alone: dropped
    ]
    data = classes_from_pairs(pairs, threshold=4.0)
    groups = {}
    for text, label in zip(data.texts, data.labels):
        groups.setdefault(label, set()).add(text)
    assert sorted(map(sorted, groups.values())) == [["a", "b", "c"], ["d", "e"]]
    assert data.dropped == 2 and "dropped 2" in data.warnings[0]


def test_examples_need_two_classes_of_two():
    with pytest.raises(TrainingDataError, match="at least 2 classes"):
        classes_from_examples([{"text": "a", "label": 1}, {"text": "b", "label": 1}])
    with pytest.raises(TrainingDataError, match="at least 2 classes"):
        classes_from_examples([{"text": "a", "label": 1}, {"text": "b", "label": 2}])
    with pytest.raises(TrainingDataError, match="examples\\[1\\]: text"):
        classes_from_examples([{"text": "a", "label": 1}, {"text": " ", "label": 1}])
    data = classes_from_examples(EXAMPLES + [{"text": "alone", "label": "solo"}])
    assert data.n_classes == 3 and data.dropped == 1 and "alone" not in data.texts


def test_config_validation():
    with pytest.raises(WhitevecError, match="epochs must be ≥ 1"):
        TrainConfig(epochs=0)
    with pytest.raises(WhitevecError, match="margin"):
        TrainConfig(margin=1.5)


def test_training_files(tmp_path):
    tsv = tmp_path / "p.tsv"
    tsv.write_text("a\tb\t5\nc\td\t1\n")
    assert read_training_file(tsv) == (None, [{"text_a": "a", "text_b": "b", "score": 5.0},
                                             {"text_a": "c", "text_b": "d", "score": 1.0}])
    jl = tmp_path / "e.jsonl"
    jl.write_text("\n".join(json.dumps(e) for e in EXAMPLES[:2]))
    assert read_training_file(jl) == (EXAMPLES[:2], None)
    jl.write_text('{"text": "a"}\n')
    with pytest.raises(TrainingDataError, match="every line must be"):
        read_training_file(jl)


def test_short_training_run_lowers_the_loss_and_saves_a_loadable_model(tiny_model_dir, tmp_path, pairs_file):
    encoder = Encoder(tiny_model_dir, device="cpu")
    data = classes_from_examples(EXAMPLES)
    config = TrainConfig(epochs=40, batch_size=12, lr=1e-3, centre_lr=1e-2, warmup=0.0, seed=0)
    out = tmp_path / "trained"
    events = []
    report = train(encoder, data, config, out, eval_path=pairs_file, on_event=events.append)
    losses = report["loss"]
    assert len(losses) == report["steps"] == 40
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert "eval_before" in report and "eval_after" in report
    assert [e["event"] for e in events].count("step") == 40
    saved = json.loads((out / "report.json").read_text())
    assert saved["n_classes"] == 3 and (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    # The saved folder loads through the same loader, keeps the pooling, and encodes like the trained model.
    reloaded = Encoder(out, device="cpu")
    assert reloaded.pooling.mode == encoder.pooling.mode
    assert reloaded.identity.fingerprint != Encoder(tiny_model_dir, device="cpu").identity.fingerprint
    np.testing.assert_allclose(reloaded.encode(["a red cat"]).vectors, encoder.encode(["a red cat"]).vectors,
                               atol=1e-5)
    # Trained vectors separate the classes: same-class cosine above cross-class cosine.
    v = reloaded.encode(data.texts).vectors
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    sims, labels = v @ v.T, np.array(data.labels)
    same = sims[(labels[:, None] == labels[None]) & ~np.eye(len(labels), dtype=bool)].mean()
    assert same > sims[labels[:, None] != labels[None]].mean() + 0.2


def test_max_steps_caps_the_run(tiny_model_dir, tmp_path):
    report = train(Encoder(tiny_model_dir, device="cpu"), classes_from_examples(EXAMPLES),
                   TrainConfig(epochs=5, batch_size=4, max_steps=3), tmp_path / "m")
    assert report["steps"] == 3 and len(report["loss"]) == 3


def test_centres_start_at_unit_length_whatever_the_class_size():
    from whitevec.models.training import initial_centres

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(13, 8)).astype(np.float32) * 5
    labels = torch.tensor([0] * 10 + [1] * 3)
    centres = initial_centres(vectors, labels, 2)
    np.testing.assert_allclose(centres.norm(dim=1).numpy(), 1.0, atol=1e-6)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    want = unit[:10].mean(axis=0)
    np.testing.assert_allclose(centres[0].numpy(), want / np.linalg.norm(want), atol=1e-6)


def test_labels_compare_as_text():
    from whitevec.models.training import classes_from_examples

    data = classes_from_examples([{"text": "a", "label": 1}, {"text": "b", "label": "1"},
                                  {"text": "c", "label": 2}, {"text": "d", "label": "2"}])
    assert data.n_classes == 2 and data.labels == [0, 0, 1, 1]
    with pytest.raises(TrainingDataError, match="label must be"):
        classes_from_examples([{"text": "a", "label": [1]}, {"text": "b", "label": 1}])


def test_paraphrase_hit_at_1_against_brute_force():
    from whitevec.models.training import paraphrase_hit_at_1

    rng = np.random.default_rng(1)
    a = [f"a{i}" for i in range(30)]
    b = [f"b{i}" for i in range(30)]
    scores = rng.uniform(0, 5, 30)
    va, vb = rng.normal(size=(30, 6)), rng.normal(size=(30, 6))
    vb[:15] = va[:15] + 0.05 * rng.normal(size=(15, 6))  # half the pairs are near each other
    got = paraphrase_hit_at_1(a, b, scores, va, vb)
    vecs = np.concatenate([va, vb])
    vecs = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    hits = total = 0
    for i in range(30):
        if scores[i] < 4:
            continue
        for q, partner in ((i, 30 + i), (30 + i, i)):
            sims = vecs @ vecs[q]
            sims[q] = -np.inf
            hits += int(np.argmax(sims) == partner)
            total += 1
    assert got == pytest.approx(100 * hits / total, abs=0.01)
    assert paraphrase_hit_at_1(a, b, np.zeros(30), va, vb) is None


def test_a_crash_while_saving_leaves_the_old_model_whole(tiny_model_dir, tmp_path, monkeypatch):
    import whitevec.models.training as training
    from whitevec.models.training import save_model

    encoder = Encoder(tiny_model_dir, device="cpu")
    out = tmp_path / "models" / "m"
    report = {"loss": [1.0, 0.5], "settings": {"scale": 30, "margin": 0.35}, "n_classes": 2}
    save_model(encoder, out, report)
    before = Encoder(out, device="cpu").encode(["hello"]).vectors

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(training, "plot_loss", crash)
    with torch.no_grad():
        for p in encoder.model.parameters():
            p.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        save_model(encoder, out, report)
    assert sorted(p.name for p in out.parent.iterdir()) == ["m"]  # no temp folder left
    np.testing.assert_allclose(Encoder(out, device="cpu").encode(["hello"]).vectors, before)


def test_a_long_loss_curve_is_thinned_to_its_shape():
    from whitevec.models.training_worker import thinned

    assert thinned([0.5, 0.25, float("nan")]) == [[1, 0.5], [2, 0.25], [3, None]]  # diverged: JSON has no NaN
    curve = [float(i % 7) for i in range(2500)]
    short = thinned(curve)
    assert len(short) <= 1000 and short[-1][0] == 2500
    steps = [s for s, _ in short]
    assert steps == sorted(set(steps))  # increasing: each point is the end of its run of steps
    assert abs(np.mean([v for _, v in short]) - np.mean(curve)) < 0.05
