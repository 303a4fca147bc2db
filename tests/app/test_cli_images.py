"""`cbir images …`, several sources for `cbir index`, --json on stats and keys, progress lines, ports."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from app.config import Settings
from tests.app.test_cli import env as env  # the fixture
from tests.app.test_cli import invoke
from tests.helpers.images import image_bytes


def photos(root: Path, n: int, seed: int = 0) -> Path:
    for i in range(n):
        folder = root / ("cat" if i % 2 == 0 else "truck")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "0014.jpg" if i < 2 else folder / f"{i}.jpg").write_bytes(image_bytes(seed + i))
    return root


def lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_index_several_sources_keeps_paths_relative(env: dict[str, str], tmp_path: Path) -> None:
    a = photos(tmp_path / "a", 4)
    b = photos(tmp_path / "b", 2, seed=50)
    done = invoke(env, "index", str(a), str(b / "cat" / "0014.jpg"), str(tmp_path / "b" / "truck" / "*.jpg"))
    assert done.exit_code == 0, done.output
    assert "added 6" in done.output
    listed = lines(invoke(env, "images", "list", "--json").output)
    paths = sorted(image["path"] for image in listed)
    assert paths == ["0014.jpg", "0014.jpg", "cat/0014.jpg", "cat/2.jpg", "truck/0014.jpg", "truck/3.jpg"]


def test_images_list_show_update_delete(env: dict[str, str], tmp_path: Path) -> None:
    invoke(env, "index", str(photos(tmp_path / "p", 6)))
    first = lines(invoke(env, "images", "list", "--json", "--limit", "2").output)
    assert len(first) == 2
    everything = lines(invoke(env, "images", "list", "--json", "--limit", "2", "--all").output)
    assert len(everything) == 6
    cats = lines(invoke(env, "images", "list", "--json", "--path-prefix", "cat/").output)
    assert len(cats) == 3
    target = cats[0]["id"]
    updated = invoke(env, "images", "update", str(target), "--set", "price=12", "--set", "sku=A-1", "--json")
    assert json.loads(updated.output)["metadata"] == {"price": 12, "sku": "A-1"}
    invoke(env, "images", "update", str(target), "--unset", "sku")
    shown = json.loads(invoke(env, "images", "show", str(target), "--json").output)
    assert shown["metadata"] == {"price": 12}
    priced = lines(invoke(env, "images", "list", "--json", "--filter", '{"price": {"$gte": 10}}').output)
    assert [image["id"] for image in priced] == [target]
    refused = invoke(env, "images", "delete", "--path-prefix", "truck/")
    assert refused.exit_code == 1 and "would delete 3" in refused.output
    gone = json.loads(invoke(env, "images", "delete", "--path-prefix", "truck/", "--yes", "--json").output)
    assert gone["deleted"] == 3
    assert json.loads(invoke(env, "images", "delete", str(target), "--json").output)["deleted"] == 1
    stats = json.loads(invoke(env, "stats", "--json").output)
    assert stats["count"] == stats["indexed"] == 2
    missing = invoke(env, "images", "show", "999999")
    assert missing.exit_code == 1 and "no image with id 999999" in missing.output


def test_export_and_import_reuse_vectors_of_the_same_encoder(
    env: dict[str, str], tmp_path: Path, settings: Settings
) -> None:
    invoke(env, "index", str(photos(tmp_path / "p", 5)))
    invoke(env, "images", "update", "1", "--set", "sku=A-1")
    out = tmp_path / "export.jsonl"
    assert invoke(env, "images", "export", str(out), "--vectors").exit_code == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 5 and len(records[0]["vector"]) > 0 and records[0]["metadata"] == {"sku": "A-1"}
    other = {**env, "CBIR_DATA_DIR": str(tmp_path / "other"), "CBIR_DATABASE_URL": ""}
    other.pop("CBIR_DATABASE_URL")
    imported = invoke(other, "images", "import", str(out), "--json")
    assert json.loads(imported.output.splitlines()[-1]) == {
        "added": 5,
        "duplicates": 0,
        "reused_vectors": 5,
        "embedded": 0,
        "skipped": [],
    }
    again = lines(invoke(other, "images", "list", "--json").output)
    assert sorted(i["path"] for i in again) == sorted(r["path"] for r in records)
    assert {json.dumps(i["metadata"]) for i in again} >= {json.dumps({"sku": "A-1"})}
    plain = tmp_path / "plain.jsonl"
    invoke(env, "images", "export", str(plain))
    third = {**other, "CBIR_DATA_DIR": str(tmp_path / "third")}
    report = json.loads(invoke(third, "images", "import", str(plain), "--json").output.splitlines()[-1])
    assert report["embedded"] == 5 and report["reused_vectors"] == 0


def test_index_away_from_a_terminal_prints_progress_lines(env: dict[str, str], tmp_path: Path) -> None:
    done = invoke(env, "index", str(photos(tmp_path / "p", 6)), "--progress-every", "0")
    assert done.exit_code == 0
    progress = [line for line in done.output.splitlines() if line.startswith("indexing:")]
    assert progress and "6/6 files, 6 added" in progress[-1] and "files/s" in progress[-1]


def test_strict_index_exits_3_when_files_were_skipped(env: dict[str, str], tmp_path: Path) -> None:
    root = photos(tmp_path / "p", 2)
    (root / "cat" / "broken.jpg").write_bytes(b"not a picture")
    assert invoke(env, "index", str(root)).exit_code == 0
    assert invoke(env, "index", str(root), "--strict").exit_code == 3


def test_keys_list_json(env: dict[str, str]) -> None:
    invoke(env, "keys", "create", "--role", "read", "--name", "ci")
    [key] = lines(invoke(env, "keys", "list", "--json").output)
    assert key["name"] == "ci" and key["role"] == "read" and key["revoked_at"] is None


def test_serve_on_a_port_in_use_says_so_before_loading(env: dict[str, str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = invoke(env, "serve", "--port", str(port))
    assert done.exit_code == 2
    assert f"port {port} on 127.0.0.1 is already in use" in done.output
    assert len(done.output.strip().splitlines()) == 1
