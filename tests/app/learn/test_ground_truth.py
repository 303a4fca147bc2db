"""`cbir evaluate --ground-truth`: instance retrieval scored by AP, P@k and R@k against listed matches."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from app.cli import app as cli
from app.files.decoding import list_files
from app.learn.ground_truth import GroundTruthReport, evaluate_ground_truth, read_ground_truth
from app.search.reranking import RerankOptions
from models import Encoder, build_encoder, decode_image
from tests.helpers.images import image_bytes


def resaved(data: bytes, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Three photographed "objects", each as an original and two re-saved copies, among ten other images."""
    root = tmp_path / "instances"
    (root / "sub").mkdir(parents=True)
    for seed in (1, 2, 3):
        (root / f"obj{seed}.jpg").write_bytes(image_bytes(seed))
        (root / f"obj{seed}-a.jpg").write_bytes(resaved(image_bytes(seed), 70))
        (root / "sub" / f"obj{seed}-b.jpg").write_bytes(resaved(image_bytes(seed), 40))
    for seed in range(10, 20):
        (root / f"other{seed}.jpg").write_bytes(image_bytes(seed))
    return root


@pytest.fixture
def encoder() -> Encoder:
    return build_encoder("tiny_random", "gap", max_side=64, device="cpu")


def write(path: Path, truth: object) -> Path:
    path.write_text(json.dumps(truth))
    return path


def evaluate(
    folder: Path, encoder: Encoder, tmp_path: Path, truth: object, rerank: RerankOptions
) -> GroundTruthReport:
    return evaluate_ground_truth(
        encoder, folder, write(tmp_path / "gt.json", truth), workers=2, max_pixels=10**8, rerank=rerank
    )


def test_scores_match_a_direct_computation(folder: Path, encoder: Encoder, tmp_path: Path) -> None:
    truth = {
        "obj1.jpg": ["obj1-a.jpg", "sub/obj1-b.jpg"],
        "obj2-a.jpg": ["obj2.jpg", "obj2-b.jpg", "other12.jpg"],  # bare names resolve when unique
    }
    report = evaluate(folder, encoder, tmp_path, truth, RerankOptions.off())
    assert (report.images, report.queries) == (19, 2)
    names = [p.relative_to(folder).as_posix() for p in list_files(folder)]
    vectors = encoder.embed([decode_image(p.read_bytes(), max_side=64).image for p in list_files(folder)])
    aps, p5, r5 = [], [], []
    for query, relevant in (
        ("obj1.jpg", {"obj1-a.jpg", "sub/obj1-b.jpg"}),
        ("obj2-a.jpg", {"obj2.jpg", "sub/obj2-b.jpg", "other12.jpg"}),
    ):
        q = names.index(query)
        order = [i for i in np.argsort(-(vectors @ vectors[q]), kind="stable") if i != q]
        hits = np.array([names[i] in relevant for i in order])
        aps.append((np.cumsum(hits) / np.arange(1, len(hits) + 1))[hits].sum() / len(relevant))
        p5.append(hits[:5].mean())
        r5.append(hits[:5].sum() / len(relevant))
    assert report.mean_ap == pytest.approx(np.mean(aps))
    assert report.precision[5] == pytest.approx(np.mean(p5))
    assert report.recall[5] == pytest.approx(np.mean(r5))
    assert report.recall[1] == pytest.approx(0.5 * (1 / 2 + 1 / 3))  # the copies come first
    assert report.as_dict()["R@10"] == pytest.approx(report.recall[10], abs=1e-4)


def test_a_query_may_search_for_a_region(folder: Path, encoder: Encoder, tmp_path: Path) -> None:
    truth = {"obj3.jpg": {"relevant": ["obj3-a.jpg", "obj3-b.jpg"], "box": [0, 0, 96, 64]}}
    report = evaluate(folder, encoder, tmp_path, truth, RerankOptions())
    assert report.recall[5] == 1.0


@pytest.mark.parametrize(
    ("truth", "message"),
    [
        ({"nope.jpg": ["obj1.jpg"]}, "'nope.jpg' is not under the folder"),
        ({"obj1.jpg": []}, "non-empty list"),
        ({"obj1.jpg": {"relevant": ["obj1-a.jpg"], "box": [1, 2]}}, r"\[x0, y0, x1, y1\]"),
        ([["obj1.jpg"]], "JSON object"),
    ],
)
def test_bad_ground_truths_say_what_is_wrong(
    folder: Path, encoder: Encoder, tmp_path: Path, truth: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate_ground_truth(
            encoder,
            folder,
            write(tmp_path / "gt.json", truth),
            workers=2,
            max_pixels=10**8,
            rerank=RerankOptions(),
        )
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read"):
        read_ground_truth(tmp_path / "broken.json")


def test_cli_evaluates_a_ground_truth(folder: Path, tmp_path: Path) -> None:
    truth = write(
        tmp_path / "gt.json", {f"obj{s}.jpg": [f"obj{s}-a.jpg", f"obj{s}-b.jpg"] for s in (1, 2, 3)}
    )
    env = {
        "CBIR_BACKBONE": "tiny_random",
        "CBIR_MAX_SIDE": "64",
        "CBIR_DEVICE": "cpu",
        "CBIR_DATA_DIR": str(tmp_path),
    }
    result = CliRunner().invoke(cli, ["evaluate", str(folder), "--ground-truth", str(truth)], env=env)
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    assert figures["queries"] == 3
    assert {"mAP", "P@1", "R@1", "R@5", "R@10", "rerank"} <= set(figures)
    assert figures["R@5"] == 1.0
