"""The runtime setting through the app: `cbir optimize`, a service on its cached int8 model, /stats."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import models.runtimes.openvino as ov_runtime
from app.cli import app as cli
from app.collection.versions import FINGERPRINT_RUNTIMES, encoder_spec, settings_for
from app.main import create_app
from models.runtimes import available_runtimes, get_runtime
from tests.helpers.images import image_bytes
from tests.helpers.settings import tiny_settings

runner = CliRunner()


def pictures(folder: Path, count: int = 12) -> Path:
    folder.mkdir(parents=True)
    for seed in range(count):
        (folder / f"p{seed}.jpg").write_bytes(image_bytes(seed))
    return folder


def test_the_spec_records_exactly_the_runtimes_that_change_the_fingerprint() -> None:
    tagged = {name for name in available_runtimes() if get_runtime(name).fingerprint_tag is not None}
    assert set(FINGERPRINT_RUNTIMES) == tagged


def test_an_int8_spec_rebuilds_int8_and_an_fp32_spec_leaves_it(tmp_path: Path) -> None:
    int8 = tiny_settings(tmp_path).model_copy(update={"runtime": "openvino_int8"})
    assert encoder_spec(int8)["runtime"] == "openvino_int8"
    assert "runtime" not in encoder_spec(int8.model_copy(update={"runtime": "openvino_bf16"}))
    assert settings_for(tiny_settings(tmp_path), encoder_spec(int8)).runtime == "openvino_int8"
    assert settings_for(int8, encoder_spec(tiny_settings(tmp_path))).runtime == "auto"


def test_stats_shows_the_runtime_auto_chose(tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path).model_copy(update={"runtime": "auto"})
    with TestClient(create_app(settings)) as client:
        runtime = client.get("/stats").json()["runtime"]
    assert runtime in available_runtimes() and get_runtime(runtime).missing() is None


def test_a_service_on_a_cached_int8_model_answers_without_converting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if get_runtime("openvino_int8").missing() is not None:
        pytest.skip(str(get_runtime("openvino_int8").missing()))
    data = tmp_path / "data"
    folder = pictures(tmp_path / "mine")
    args = ["optimize", str(folder), "--data-dir", str(data), "--backbone", "tiny_random", "--max-side", "64"]
    done = runner.invoke(cli, args, catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert "calibrated on 12 pictures" in done.output

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the service converted or quantised at start instead of using the cache")

    import nncf

    monkeypatch.setattr(ov_runtime, "convert", refuse)
    monkeypatch.setattr(nncf, "quantize", refuse)
    settings = tiny_settings(tmp_path).model_copy(update={"runtime": "openvino_int8"})
    with TestClient(create_app(settings)) as client:
        stats = client.get("/stats").json()
        assert stats["runtime"] == "openvino_int8" and "/rt-ov-int8#" in stats["encoder"]
        added = client.post("/images", files={"file": ("a.jpg", image_bytes(3), "image/jpeg")})
        assert added.status_code in (200, 201), added.text
        found = client.post("/search", files={"file": ("q.jpg", image_bytes(3))}, data={"k": "1"})
        assert found.status_code == 200, found.text
        assert found.json()["results"][0]["id"] == added.json()["id"]


def test_optimize_with_too_few_pictures_says_so(tmp_path: Path) -> None:
    if get_runtime("openvino_int8").missing() is not None:
        pytest.skip(str(get_runtime("openvino_int8").missing()))
    folder = pictures(tmp_path / "few", count=3)
    args = ["optimize", str(folder), "--data-dir", str(tmp_path / "d"), "--backbone", "tiny_random"]
    done = runner.invoke(cli, args)
    assert done.exit_code != 0
    assert "at least 8 pictures" in done.output
    assert not list((tmp_path / "d").rglob("*.json"))  # nothing half-written
