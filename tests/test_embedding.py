"""The embedding task: identities split by identity, batches of m images per identity, metrics equal to
pytorch-metric-learning's and scikit-learn's, every loss learning, the default job reaching its stated
verification numbers on unseen identities, and the checkpoint served through predict, export and the report."""

from __future__ import annotations

import csv
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import TrainedEmbedder, check_report_page, compose_config
from visionkit.data import IdentitySource, VisionDataModule
from visionkit.data.resumable import GroupedSampler
from visionkit.errors import VisionkitError
from visionkit.tasks import EmbeddingTask
from visionkit.tasks.embedding_metrics import (
    gallery_query_split,
    pair_distances,
    retrieval,
    sampled_pairs,
    verify_pairs,
)


def _clustered(
    n: int = 400, identities: int = 25, noise: float = 1.0, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, identities, (n,), generator=g)
    centres = torch.randn(identities, 16, generator=g)
    return torch.nn.functional.normalize(centres[labels] + noise * torch.randn(n, 16, generator=g), dim=1), labels


def _write_identities(root: Path, identities: int, per_identity: int, seed: int = 0) -> Path:
    from visionkit.data.glyphs import glyph_identities

    images, ids = glyph_identities(identities, per_identity, seed=seed)
    for i, (image, identity) in enumerate(zip(images, ids)):
        folder = root / f"id{identity:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"id{identity:02d}_{i % per_identity + 1:04d}.png")
    return root


def test_retrieval_metrics_equal_pytorch_metric_learnings() -> None:
    """precision@1 and mAP@R against AccuracyCalculator, leave-one-out and with a separate gallery."""
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    embeddings, labels = _clustered()
    calculator = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r"), k="max_bin_count")
    ours = retrieval(embeddings, labels, embeddings, labels, same_set=True)
    theirs = calculator.get_accuracy(embeddings, labels)
    assert ours["precision_at_1"] == pytest.approx(theirs["precision_at_1"], abs=1e-6)
    assert ours["map_at_r"] == pytest.approx(theirs["mean_average_precision_at_r"], abs=1e-6)
    gallery, query = gallery_query_split(labels.numpy(), seed=0)
    ours = retrieval(embeddings[query], labels[query], embeddings[gallery], labels[gallery])
    theirs = calculator.get_accuracy(embeddings[query], labels[query], embeddings[gallery], labels[gallery])
    assert ours["precision_at_1"] == pytest.approx(theirs["precision_at_1"], abs=1e-6)
    assert ours["map_at_r"] == pytest.approx(theirs["mean_average_precision_at_r"], abs=1e-6)
    assert ours["recall_at_1"] == ours["precision_at_1"] <= ours["recall_at_5"] <= ours["recall_at_10"] <= 1
    assert set(gallery.tolist()).isdisjoint(query.tolist())
    assert 0.3 < ours["precision_at_1"] < 1  # neither trivial nor hopeless: the comparison means something


def test_verification_roc_auc_eer_and_the_threshold_for_a_far() -> None:
    """AUC equals scikit-learn's; the threshold for a FAR accepts at most that share of different pairs and the
    TAR it reports is the share of same pairs it accepts; the EER is where FAR and FRR meet."""
    from sklearn.metrics import roc_auc_score

    embeddings, labels = _clustered(noise=1.3)
    pairs = sampled_pairs(labels.numpy(), 4000, seed=3)
    same = pairs[:, 2].astype(bool)
    assert same.sum() == (~same).sum() == 2000  # balanced
    assert (labels[pairs[same, 0]] == labels[pairs[same, 1]]).all()
    assert (labels[pairs[~same, 0]] != labels[pairs[~same, 1]]).all()
    assert len({tuple(p) for p in pairs[:, :2].tolist()}) == len(pairs)  # no pair twice
    assert np.array_equal(pairs, sampled_pairs(labels.numpy(), 4000, seed=3))  # seeded
    distances = pair_distances(embeddings, pairs)
    result = verify_pairs(distances, same)
    assert result.auc == pytest.approx(roc_auc_score(same, -distances), abs=1e-9)
    for far in (1e-3, 1e-2, 1e-1):
        threshold = result.threshold_at(far)
        accepted = distances <= threshold
        assert accepted[~same].mean() <= far + 1e-12
        assert accepted[same].mean() == pytest.approx(result.tar_at(far), abs=1e-9)
    accepted = distances <= result.eer_threshold
    far_at, frr_at = accepted[~same].mean(), 1 - accepted[same].mean()
    assert abs(far_at - frr_at) < 0.02 and result.eer == pytest.approx((far_at + frr_at) / 2, abs=0.01)
    with pytest.raises(ValueError, match="same identity"):
        verify_pairs(distances[same], same[same])


def test_identities_are_split_by_identity_seeded_and_counted(tmp_path: Path) -> None:
    """Folders: validation and test identities never train, training ids are 0..K-1, the others above; the
    same seed gives the same split; the scan summary counts identities and images per split."""
    root = _write_identities(tmp_path / "people", identities=20, per_identity=3)
    source = IdentitySource(str(root), val_fraction=0.2, test_fraction=0.3, seed=1)
    splits = source.splits(0.2, 0.3, 1)
    names = {split: {Path(p).parent.name for p in s.images} for split, s in splits.items()}
    assert len(names["train"]) == 10 and len(names["val"]) == 4 and len(names["test"]) == 6
    assert names["train"].isdisjoint(names["val"]) and names["train"].isdisjoint(names["test"])
    assert names["val"].isdisjoint(names["test"])
    assert sorted(set(splits["train"].targets.tolist())) == list(range(10))
    assert splits["test"].targets.min() >= 10 and set(splits["val"].targets).isdisjoint(splits["test"].targets)
    assert source.class_names() == sorted(names["train"])
    assert source.reports["test"].summary() == "test: 6 identities, 18 images"
    again = IdentitySource(str(root), val_fraction=0.2, test_fraction=0.3, seed=1).splits(0.2, 0.3, 1)
    assert list(again["test"].images) == list(splits["test"].images)
    other = IdentitySource(str(root), val_fraction=0.2, test_fraction=0.3, seed=2).splits(0.2, 0.3, 2)
    assert list(other["test"].images) != list(splits["test"].images)


def test_a_split_that_cannot_give_both_kinds_of_pair_is_named(tmp_path: Path) -> None:
    """12 identities with data.val_fraction=0.1 leave one identity to validate on: no pair of two identities, so
    no validation metric (the monitored one among them); named before training with the fix."""
    root = _write_identities(tmp_path / "people", identities=12, per_identity=3)
    with pytest.raises(VisionkitError, match=r"the val split holds 1 identity \(3 images\).*raise data.val_fraction"):
        IdentitySource(str(root), val_fraction=0.1, test_fraction=0.2).splits(0.1, 0.2, 0)
    assert len(IdentitySource(str(root), val_fraction=0.2, test_fraction=0.2).splits(0.2, 0.2, 0)["val"]) == 6


def test_a_csv_split_column_and_an_lfw_pairs_file_decide_the_splits(tmp_path: Path) -> None:
    root = _write_identities(tmp_path / "people", identities=8, per_identity=3)
    rows = [(p.relative_to(tmp_path), p.parent.name) for p in sorted(root.rglob("*.png"))]
    table = tmp_path / "ids.csv"
    table.write_text(
        "path,identity,split\n" + "".join(f"{p},{i},{'test' if i in ('id06', 'id07') else ''}\n" for p, i in rows)
    )
    table.write_text(table.read_text().replace(",\n", ",train\n"))
    source = IdentitySource(csv=str(table), val_fraction=0.0, test_fraction=0.0)
    splits = source.splits(0, 0, 0)
    assert {Path(p).parent.name for p in splits["test"].images} == {"id06", "id07"} and len(splits["train"]) == 18
    lines = table.read_text().splitlines()
    lines.append(f"{rows[0][0]},{rows[0][1]},test")  # id00 already in train
    table.write_text("\n".join(lines) + "\n")
    with pytest.raises(VisionkitError, match=r"ids\.csv:26: identity 'id00' is in split train"):
        IdentitySource(csv=str(table)).class_names()

    pairs = tmp_path / "pairs.txt"
    pairs.write_text("1\t3\nid01\t1\t2\nid02\t1\t3\nid01\t3\tid02\t2\n")
    source = IdentitySource(str(root), pairs=str(pairs), val_fraction=0.4)  # 2 of the 6 not in pairs
    splits = source.splits(0.4, 0.2, 0)
    assert {Path(p).parent.name for p in splits["test"].images} == {"id01", "id02"}
    named = source.pairs("test")
    assert [(Path(a).name, Path(b).name, same) for a, b, same in named] == [
        ("id01_0001.png", "id01_0002.png", True),
        ("id02_0001.png", "id02_0003.png", True),
        ("id01_0003.png", "id02_0002.png", False),
    ]
    dm = VisionDataModule(source, image_size=32, augment="none")
    rows_ = dm.pairs("test")
    test_paths = dm._load_splits()["test"].images
    assert [Path(test_paths[i]).name for i in rows_[0, :2]] == ["id01_0001.png", "id01_0002.png"]
    pairs.write_text("id01 1 9\n")
    with pytest.raises(VisionkitError, match=r"pairs.txt:1: id01 has 3 images, no image number 9"):
        IdentitySource(str(root), pairs=str(pairs)).class_names()
    pairs.write_text("id01 1\n")
    with pytest.raises(VisionkitError, match=r"pairs.txt:1: expected 'name n1 n2'"):
        IdentitySource(str(root), pairs=str(pairs)).class_names()


def test_training_batches_hold_m_images_of_each_identity_on_every_rank_and_resume_exactly() -> None:
    labels = np.repeat(np.arange(12), [5, 4, 7, 4, 4, 9, 4, 4, 6, 4, 4, 8])
    dataset = list(range(len(labels)))
    shares = []
    for rank in (0, 1):
        sampler = _two_rank_sampler(dataset, labels, rank)
        sampler.set_epoch(1)
        keys = list(iter(sampler))
        indices = [i for i, _ in keys]
        assert len(indices) % 4 == 0 and len(indices) == len(sampler)
        groups = [labels[indices[k : k + 4]] for k in range(0, len(indices), 4)]
        assert all(len(set(group)) == 1 for group in groups)  # m = 4 images of one identity
        pairs = [(groups[k][0], groups[k + 1][0]) for k in range(0, len(groups) - 1, 2)]  # batches of 2 identities
        assert sum(a != b for a, b in pairs) >= len(pairs) - 1, pairs  # two different ones wherever possible
        shares.append(indices)
        resumed = _two_rank_sampler(dataset, labels, rank)
        resumed.resume(1, batches_done=1, batch_size=8)
        assert [i for i, _ in iter(resumed)] == indices[8:]
    groups = [frozenset(s[k : k + 4]) for s in shares for k in range(0, len(s), 4)]
    assert len(set(groups)) >= len(groups) - 1  # ranks take different groups (one may repeat as padding)
    epoch2 = _two_rank_sampler(dataset, labels, 0)
    epoch2.set_epoch(2)
    assert [i for i, _ in iter(epoch2)] != shares[0]
    with pytest.raises(VisionkitError, match=r"not a multiple of data\.per_identity=4"):
        VisionDataModule(IdentitySource(), batch_size=30, per_identity=4)


@pytest.mark.parametrize(
    ("overrides", "identities_per_batch"),
    [([], None), (["loss=triplet"], 16), (["loss=ms"], 16), (["data.per_identity=2"], 32)],
)
def test_margin_losses_train_on_shuffled_batches_and_pair_losses_on_groups(
    tmp_path: Path, overrides: list[str], identities_per_batch: int | None
) -> None:
    """`data.per_identity=auto` (the default): ArcFace's batches are shuffled (many identities, rarely two images
    of one), the pair losses' hold 4 images of each of 16 identities; an integer groups by it for any loss."""
    from visionkit.training.fit import build_datamodule

    cfg = compose_config(tmp_path / "run", ["task=embedding", "seed=0", *overrides])
    dm = build_datamodule(cfg.data, cfg.augment, mean=cfg.model.mean, std=cfg.model.std, loss=cfg.get("loss"))
    dm.setup("fit")
    labels = next(iter(dm.train_dataloader()))["label"]
    counts = np.bincount(np.asarray(labels))
    counts = counts[counts > 0]
    assert len(labels) == 64
    if identities_per_batch is None:
        assert len(counts) > 40 and counts.max() <= 4, counts  # 112 training identities drawn at random
    else:
        assert len(counts) == identities_per_batch and set(counts) == {64 // identities_per_batch}, counts


def test_each_batch_holds_different_identities_where_it_can() -> None:
    """PK sampling: 12 identities × 4 groups in batches of 8 groups: the shuffled order repeats identities within
    batches, the reordered one does not (the tail may, when only a few identities are left)."""
    from visionkit.data.resumable import distinct_batches, grouped_order

    labels = np.repeat(np.arange(12), 16)
    groups = grouped_order(labels, 4, seed=0, epoch=0)

    def distinct(order: list[np.ndarray]) -> int:
        return sum(len({int(labels[g[0]]) for g in order[k : k + 8]}) == 8 for k in range(0, len(order), 8))

    spread = distinct_batches(groups, labels, 8)
    assert sorted(map(tuple, spread)) == sorted(map(tuple, groups))  # the same groups, each once
    assert distinct(spread) >= 5 > distinct(groups), (distinct(spread), distinct(groups))


def _two_rank_sampler(dataset: list[int], labels: np.ndarray, rank: int) -> GroupedSampler:
    """A GroupedSampler as rank `rank` of 2 DDP processes sees it."""
    import torch.distributed as dist

    original = dist.is_initialized
    dist.is_initialized = lambda: True  # the sampler asks the process group for world size and rank
    get_size, get_rank = dist.get_world_size, dist.get_rank
    dist.get_world_size, dist.get_rank = (lambda *a: 2), (lambda *a: rank)
    try:
        return GroupedSampler(dataset, labels, per_group=4, per_batch=2, seed=3)
    finally:
        dist.is_initialized, dist.get_world_size, dist.get_rank = original, get_size, get_rank


@pytest.mark.parametrize("loss", ["cosface", "subcenter_arcface", "triplet", "contrastive", "ms"])
def test_every_loss_learns_identities_it_never_saw(loss: str, tmp_path: Path) -> None:
    """Four epochs of each pytorch-metric-learning loss: the training loss falls and validation mAP@R on unseen
    identities is far above chance (about 0.07 for random embeddings of these 16 identities)."""
    from visionkit import run

    cfg = compose_config(tmp_path, ["task=embedding", f"loss={loss}", "trainer.max_epochs=4", "test_after_fit=false"])
    metrics = run.train(cfg)
    rows = list(csv.DictReader(next(tmp_path.rglob("metrics.csv")).open()))
    losses = [float(r["train_loss_epoch"]) for r in rows if r.get("train_loss_epoch")]
    assert losses[-1] < losses[0], losses
    assert metrics["val_map_at_r"] > 0.35, metrics


def test_the_default_job_reaches_its_stated_metrics_on_unseen_identities(trained_embedder: TrainedEmbedder) -> None:
    """README: TAR@FAR=1e-2 ≥ 0.8 and precision@1 ≥ 0.95 on the 32 test identities after 12 epochs (30 by
    default); the threshold for FAR 1e-3 stored in the checkpoint keeps the test FAR small; the report holds
    every picture."""
    metrics = trained_embedder.metrics
    assert metrics["test_tar_far_1e-2"] >= 0.8, metrics
    assert metrics["test_precision_at_1"] >= 0.95 and metrics["test_auc"] >= 0.97, metrics
    assert metrics["test_far_at_threshold"] <= 0.01, metrics
    checkpoint = torch.load(trained_embedder.ckpt, weights_only=True, map_location="cpu")
    assert 0 < float(checkpoint["state_dict"]["threshold"]) < 2
    run = trained_embedder.run
    for name in ("roc", "distances", "embedding_map", "retrieval"):
        assert (run / "plots" / f"{name}.png").stat().st_size > 5000, name
    report = (run / "report.html").read_text()
    assert report.count("<img") >= 5 and "test_tar_far_1e-2" in report
    check_report_page(run, run.parent / "report.png")  # 1280 px wide, no error, short numbers
    roc = list(csv.DictReader((run / "tables" / "roc_curve.csv").open()))
    assert float(roc[-1]["far"]) == 1.0 and float(roc[-1]["tar"]) == 1.0


def test_margin_loss_weights_stay_out_of_the_exported_network(
    trained_embedder: TrainedEmbedder, tmp_path: Path
) -> None:
    """The ArcFace class weights are in the checkpoint (to resume) but not in the export; the ONNX embeddings
    of the validation images have cosine similarity ≥ 0.9999 with PyTorch's."""
    import onnxruntime

    from visionkit import run
    from visionkit.checkpoints import load_checkpoint

    task, _ = load_checkpoint(str(trained_embedder.ckpt))
    assert isinstance(task, EmbeddingTask) and task.loss_fn.loss.W.shape == (128, 112)
    network, outputs, _ = task.export_module()
    assert outputs == ["embedding"]
    assert sum(p.numel() for p in network.parameters()) == sum(p.numel() for p in task.model.parameters())
    cfg = compose_config(tmp_path, [f"ckpt_path={trained_embedder.ckpt}", "formats=[onnx]", "check=true"], "export")
    metrics = run.export(cfg)
    assert metrics["onnx_max_diff"] < 1e-4
    session = onnxruntime.InferenceSession(str(next(tmp_path.rglob("*.onnx"))))
    dm = VisionDataModule(IdentitySource(), image_size=32, augment="none", mean=(0.5,) * 3, std=(0.5,) * 3)
    dm.setup("fit")
    batch = dm.normalize_batch(next(iter(dm.val_dataloader())))
    ours = task(batch["image"]).detach().numpy()
    theirs = session.run(None, {session.get_inputs()[0].name: batch["image"].numpy()})[0]
    cosine = (ours * theirs).sum(1) / np.linalg.norm(theirs, axis=1)
    assert cosine.min() >= 0.9999


def test_predict_writes_embeddings_and_their_sources(trained_embedder: TrainedEmbedder, tmp_path: Path) -> None:
    """Unit float32 embeddings equal to the task's; embeddings.npy rows follow embeddings.csv; a bad file is
    listed with its error and no row."""
    from visionkit import run
    from visionkit.inference import load_predictor

    predictor = load_predictor(trained_embedder.ckpt, device="cpu")
    results = predictor(trained_embedder.people)
    vectors = np.stack([r.embedding for r in results])
    assert vectors.dtype == np.float32 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    images = [np.asarray(Image.open(r.source)) for r in results[:3]]
    x = (torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    assert np.allclose(predictor.model(x).detach().numpy(), vectors[:3], atol=1e-5)
    source = tmp_path / "in"
    source.mkdir()
    for path in sorted(trained_embedder.people.rglob("*.png"))[:4]:
        (source / path.name).write_bytes(path.read_bytes())
    (source / "broken.png").write_bytes(b"not an image")
    cfg = compose_config(tmp_path / "out", [f"ckpt_path={trained_embedder.ckpt}", f"source={source}"], "predict")
    cfg.skip_bad_images = True
    metrics = run.predict(cfg)
    assert metrics == {"images": 4.0, "skipped": 1.0}
    array = np.load(tmp_path / "out" / "embeddings.npy")
    index = list(csv.DictReader((tmp_path / "out" / "embeddings.csv").open()))
    assert array.shape == (4, 128)
    broken = [r for r in index if r["path"].endswith("broken.png")]
    assert broken[0]["row"] == "" and broken[0]["error"]
    first = next(r for r in index if r["row"] == "0")
    assert np.allclose(array[0], predictor([first["path"]])[0].embedding, atol=1e-6)
    keys = [f"ckpt_path={trained_embedder.ckpt}", f"source={source}", f"gallery={tmp_path}"]
    with pytest.raises(VisionkitError, match="gallery= names detected boxes"):
        run.predict(compose_config(tmp_path / "g", keys, "predict"))


def test_gallery_build_search_add_and_verify(
    trained_embedder: TrainedEmbedder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Known identities are found in a gallery of identities the network never saw, an identity left out is
    `unknown`, `add` grows the gallery without repeating images, and verify says same / not the same."""
    from visionkit import run
    from visionkit.inference import load_predictor
    from visionkit.inference.gallery import Gallery

    people, queries, ckpt = trained_embedder.people, trained_embedder.queries, trained_embedder.ckpt
    partial, more = tmp_path / "partial", tmp_path / "more"
    for i, folder in enumerate(sorted(people.iterdir())):  # person5 stays out of the gallery at first
        target = (partial if i < 5 else more) / folder.name
        target.mkdir(parents=True)
        for image in folder.iterdir():
            (target / image.name).write_bytes(image.read_bytes())
    out = tmp_path / "gallery"

    def gallery(action: str, *overrides: str) -> dict[str, float]:
        keys = [f"action={action}", f"out={out}", *overrides]
        return run.gallery(compose_config(tmp_path / f"run_{action}", keys, "gallery"))

    assert gallery("build", f"ckpt_path={ckpt}", f"source={partial}") == {"images": 20.0, "identities": 5.0}
    gallery("search", f"source={queries}", "k=3")
    found = {
        Path(r["path"]).stem.split("_")[0]: r for r in json.loads((tmp_path / "run_search" / "search.json").read_text())
    }
    known = [found[f"person{i}"]["identity"] == f"person{i}" for i in range(5)]
    assert sum(known) >= 4, found
    assert found["person5"]["identity"] == "unknown", found["person5"]
    assert gallery("add", f"source={more}") == {"images": 24.0, "added": 4.0}
    assert gallery("add", f"source={more}")["added"] == 0.0
    grown = Gallery.load(out)
    assert grown.identities.count("person5") == 4 and len(grown) == 24
    gallery("search", f"source={queries}")
    again = json.loads((tmp_path / "run_search" / "search.json").read_text())
    assert sum(r["identity"] == Path(r["path"]).stem.split("_")[0] for r in again) >= 5
    a, b = sorted((people / "person1").iterdir())[:2]
    other = next((people / "person2").iterdir())

    def verify(first: Path, second: Path, *overrides: str) -> dict[str, float]:
        keys = [f"images=['{first}','{second}']", f"ckpt_path={ckpt}", *overrides]
        return run.verify(compose_config(tmp_path / "v", keys, "verify"))

    same, different = verify(a, b), verify(a, other)
    assert same["distance"] < different["distance"] and same["threshold"] == grown.threshold
    for answer in (same, different):
        assert answer["same"] == float(answer["distance"] <= answer["threshold"])
    assert different["same"] == 0.0
    assert verify(a, b, f"threshold={same['distance'] + 1e-3}")["same"] == 1.0
    assert verify(a, b, f"threshold={same['distance'] - 1e-3}")["same"] == 0.0
    with pytest.raises(VisionkitError, match="give two images"):
        run.verify(compose_config(tmp_path / "v", [f"images=['{a}']", f"ckpt_path={ckpt}"], "verify"))
    missing = tmp_path / "nobody.png"
    with pytest.raises(VisionkitError, match=re.escape(f"{missing} does not exist") + "$"):  # no skip hint
        verify(a, missing)
    bad = tmp_path / "bad.jpg"
    bad.write_text("not a picture")
    skipping = load_predictor(ckpt, device="cpu", skip_bad_images=True)
    caplog.clear()
    with caplog.at_level(logging.WARNING), pytest.raises(VisionkitError, match=r"bad\.jpg is not a readable image"):
        skipping.embed([a, bad, b])  # not a row short
    assert f"skipped {bad}" not in caplog.text  # it was not skipped: it stopped
    assert skipping.embed([a, b]).shape == (2, 128)  # the default job's task.embedding_dim


def test_faiss_search_agrees_with_brute_force() -> None:
    """Flat search is exact (the same neighbours as NumPy); HNSW and IVF find ≥ 95 % of the true 10 nearest."""
    from visionkit.inference.gallery import faiss_index

    vectors, _ = _clustered(n=5000, identities=200, noise=0.8, seed=1)
    vectors = vectors.numpy()
    queries = vectors[:200] + 0.01
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    for kind, floor in (("flat", 1.0), ("hnsw", 0.95), ("ivf", 0.95)):
        _, found = faiss_index(vectors, kind).search(queries.astype(np.float32), 10)
        recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])
        assert recall >= floor, (kind, recall)


def test_serve_answers_embeddings_and_gallery_searches(trained_embedder: TrainedEmbedder, tmp_path: Path) -> None:
    """`/predict` gives the predictor's embeddings; `/search?k=` gives the gallery's nearest identities, and
    `unknown` beyond the threshold; the console scripts take their positional words (build, two images)."""
    import subprocess

    import httpx

    from tests.serve_requests import BIN, encoded, running_server
    from visionkit.inference import load_predictor

    out = tmp_path / "gallery"
    build = subprocess.run(
        [str(BIN / "visionkit-gallery"), "build", f"ckpt_path={trained_embedder.ckpt}",
         f"source={trained_embedder.people}", f"out={out}", f"hydra.run.dir={tmp_path / 'b'}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert build.returncode == 0 and (out / "index.faiss").is_file(), build.stderr[-2000:]
    a, b = sorted((trained_embedder.people / "person3").iterdir())[:2]
    verify = subprocess.run(
        [str(BIN / "visionkit-verify"), str(a), str(b), f"ckpt_path={trained_embedder.ckpt}", "threshold=1.5"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert verify.returncode == 0 and "the same identity (distance" in verify.stdout, verify.stderr[-2000:]
    query = next(trained_embedder.queries.glob("person2_*"))
    expected = load_predictor(trained_embedder.ckpt, device="cpu")([query])[0].embedding
    with running_server(trained_embedder.ckpt, tmp_path, f"gallery={out}") as server, httpx.Client(timeout=60) as c:
        files = [("image", (query.name, query.read_bytes()))]
        record = c.post(f"{server.url}/predict", files=files).json()[0]
        assert record["task"] == "embedding" and np.allclose(record["embedding"], expected, atol=1e-5)
        found = c.post(f"{server.url}/search?k=3", files=files).json()[0]
        assert found["identity"] == "person2" and len(found["matches"]) == 3 and "embedding" not in found
        assert found["matches"][0]["distance"] == pytest.approx(found["distance"], abs=1e-6)
        noise = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
        stranger = c.post(f"{server.url}/search?k=2", files=[("image", ("noise.png", encoded(noise)))]).json()[0]
        assert stranger["identity"] == "unknown" and stranger["distance"] > stranger["threshold"]
        assert c.post(f"{server.url}/search?k=0", files=files).status_code == 422
        log = server.log_text()
    assert "Traceback" not in log, log[-3000:]


def test_explain_shows_what_makes_two_images_alike(trained_embedder: TrainedEmbedder, tmp_path: Path) -> None:
    """Grad-CAM of the cosine similarity with a reference image (the title gives the predictor's distance) and
    of the identity features; `reference=` on a classifier is refused."""
    from visionkit import run
    from visionkit.inference import load_predictor

    image, reference = sorted((trained_embedder.people / "person4").iterdir())[:2]
    keys = [f"ckpt_path={trained_embedder.ckpt}", f"source={image}", f"reference={reference}"]
    run.explain(compose_config(tmp_path, [*keys, f"output_dir={tmp_path / 'x'}"], "explain"))
    report = json.loads(next((tmp_path / "x").rglob("explain.json")).read_text())
    titles = [cam["title"] for cam in report["gradcam"]]
    distance = load_predictor(trained_embedder.ckpt, device="cpu").verify(image, reference)["distance"]
    assert titles[0].startswith(f"like {reference.name}") and f"distance {distance:.2f}" in titles[0]
    for cam in report["gradcam"]:
        heat = np.asarray(Image.open(next((tmp_path / "x").rglob(cam["file"]))).convert("L"), dtype=float)
        assert heat.std() > 5, cam  # a map with structure, not a blank (zero-gradient) one


def test_embedding_training_under_ddp_evaluates_every_image_once(tmp_path: Path) -> None:
    """2 CPU processes (gloo): each rank embeds its share of the validation images; the gathered set is the whole
    split, once each, so the logged metrics equal a single process's evaluation of the same checkpoint."""
    import subprocess

    from tests.serve_requests import BIN
    from visionkit import run

    folder = tmp_path / "ddp"
    args = ["task=embedding", "trainer=ddp_cpu", "trainer.max_epochs=2", "test_after_fit=false", "logger=csv"]
    quiet = ["~callbacks.progress_bar", "~callbacks.model_summary", f"hydra.run.dir={folder}"]
    proc = subprocess.run([str(BIN / "visionkit-train"), *args, *quiet], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [r for r in csv.DictReader(next(folder.rglob("metrics.csv")).open()) if r.get("val_map_at_r")]
    last = folder / "checkpoints" / "last.ckpt"
    single = run.evaluate(compose_config(tmp_path / "eval", [f"ckpt_path={last}", "split=val"], "eval"))
    assert single["val_map_at_r"] == pytest.approx(float(rows[-1]["val_map_at_r"]), abs=1e-4)
    assert single["val_auc"] == pytest.approx(float(rows[-1]["val_auc"]), abs=1e-4)


def test_a_detector_finds_the_boxes_and_each_gets_its_embedding_and_identity(
    trained_embedder: TrainedEmbedder, trained_detector, tmp_path: Path
) -> None:
    """predict with detector= on a photo: one embedding per box, equal to the embedding of its crop; with a
    gallery of those crops, each box is named by its own crop. On a video with track=true every box keeps a track
    id and has its embedding."""
    from visionkit import run
    from visionkit.inference import load_predictor
    from visionkit.inference.faces import crop_box
    from visionkit.utils.video_writer import VideoWriter

    detector = load_predictor(trained_detector.ckpt, device="cpu", conf=0.05)
    photos = sorted((trained_detector.data_yaml.parent / "images" / "train").glob("*"))[:60]
    found = [(float(r.scores.max()), Path(r.source)) for r in detector(photos) if len(r) >= 2]
    photo = max(found)[1]  # the clearest: ByteTrack starts tracks at scores of 0.25 and more
    boxes = detector([photo])[0].boxes
    image = np.asarray(Image.open(photo).convert("RGB"))
    known = tmp_path / "known"
    for i, box in enumerate(boxes.tolist()):
        (known / f"object{i}").mkdir(parents=True)
        Image.fromarray(crop_box(image, box, 0.2)).save(known / f"object{i}" / "crop.png")
    gallery = tmp_path / "gallery"
    keys = ["action=build", f"ckpt_path={trained_embedder.ckpt}", f"source={known}", f"out={gallery}"]
    run.gallery(compose_config(tmp_path / "g", keys, "gallery"))
    common = [f"ckpt_path={trained_embedder.ckpt}", f"detector={trained_detector.ckpt}", "conf=0.05"]
    keys = [*common, f"source={photo}", f"gallery={gallery}", "threshold=0.05"]
    metrics = run.predict(compose_config(tmp_path / "photo", keys, "predict"))
    assert metrics["objects"] == len(boxes)
    (record,) = json.loads((tmp_path / "photo" / "predictions.json").read_text())
    assert record["task"] == "identities" and [d["identity"] for d in record["detections"]] == [
        f"object{i}" for i in range(len(boxes))
    ]
    embedder = load_predictor(trained_embedder.ckpt, device="cpu")
    crop = np.asarray(Image.open(known / "object1" / "crop.png"))
    assert np.allclose(record["detections"][1]["embedding"], embedder([crop])[0].embedding, atol=1e-4)
    assert (tmp_path / "photo" / "images" / photo.name).is_file()

    clip = tmp_path / "clip.mp4"
    with VideoWriter(clip, 12) as video:  # the photo drifting right by 2 px a frame
        for shift in range(12):
            video.write(np.roll(image, 2 * shift, axis=1))
    counts = run.predict(compose_config(tmp_path / "video", [*common, f"source={clip}", "track=true"], "predict"))
    frames = json.loads((tmp_path / "video" / "clip.json").read_text())
    boxes_seen = [d for r in frames for d in r["detections"]]
    assert counts["frames"] == 12 and boxes_seen and counts["tracks"] >= 1
    assert all("track_id" in d and len(d["embedding"]) == 128 for d in boxes_seen)
    with pytest.raises(VisionkitError, match=r"detector: .* not a detector"):
        run.predict(
            compose_config(
                tmp_path / "bad", [*common[:1], f"detector={trained_embedder.ckpt}", f"source={photo}"], "predict"
            )
        )
