"""The deployment files, checked where a typo would otherwise only show in production: every CBIR_ variable
they set is a real setting, the compose services share the named volume, and the Dockerfiles keep the
properties the README promises (non-root, volume, health check, dependency layer before the source).

Building and running the image is docker/smoke.sh's job (too slow for CI)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.config import Settings

DOCKER = Path(__file__).resolve().parents[2] / "docker"
DOCKERFILES = ("Dockerfile", "Dockerfile.cuda")


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return loaded


def setting_names() -> set[str]:
    return {f"CBIR_{name.upper()}" for name in Settings.model_fields}


def test_compose_services_share_the_named_volume_and_set_only_real_settings() -> None:
    spec = compose()
    services = spec["services"]
    assert set(spec["volumes"]) == {"cbir-data", "postgres-data", "etcd-data", "minio-data", "milvus-data"}
    cbir_services = {name: s for name, s in services.items() if str(s.get("image", "")).startswith("cbir:")}
    for name, service in cbir_services.items():
        assert "cbir-data:/data" in service["volumes"], name
        unknown = {key for key in service["environment"] if key.startswith("CBIR_")} - setting_names()
        assert not unknown, (name, unknown)
        assert service["environment"]["CBIR_DATA_DIR"] == "/data"
    assert "profiles" not in services["cbir"]
    index = services["index"]
    assert index["profiles"] == ["index"]
    assert index["command"] == ["index", "/import"]
    assert index["restart"] == "no"
    assert services["cbir-gpu"]["profiles"] == ["gpu"]


def test_the_scale_profile_shares_postgres_milvus_and_the_files_behind_nginx() -> None:
    services = compose()["services"]
    scale = {name for name, s in services.items() if s.get("profiles") == ["scale"]}
    assert {"postgres", "etcd", "minio", "milvus", "replica", "nginx", "index-ray"} <= scale
    replica = services["replica"]
    assert replica["deploy"]["replicas"] >= 2
    for name in ("replica", "index-ray"):
        env = services[name]["environment"]
        assert env["CBIR_VECTOR_STORE"] == "milvus"
        assert env["CBIR_MILVUS_URI"] == "http://milvus:19530"
        assert env["CBIR_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "--ray" in services["index-ray"]["command"]
    assert services["milvus"]["environment"]["ETCD_ENDPOINTS"] == "etcd:2379"
    nginx = (DOCKER / "nginx.conf").read_text()
    assert (
        "server replica:8000" in nginx
        and "./nginx.conf:/etc/nginx/nginx.conf:ro" in services["nginx"]["volumes"]
    )


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_runs_as_a_user_with_a_volume_health_check_and_cached_dependencies(name: str) -> None:
    text = (DOCKER / name).read_text()
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r'^VOLUME \["/data"\]', text, flags=re.M)
    assert re.search(r"^HEALTHCHECK .*cbir-healthcheck", text, flags=re.M)
    assert re.search(r'^ENTRYPOINT \["cbir-entrypoint"\]', text, flags=re.M)
    assert re.search(r'^CMD \["serve"\]', text, flags=re.M)
    # Dependencies are installed from pyproject.toml alone, before any source is copied in.
    dependencies = text.index("-r /tmp/build/requirements.txt")
    assert text.index("COPY pyproject.toml /tmp/build/") < dependencies < text.index("COPY app ")
    unknown = set(re.findall(r"\b(CBIR_[A-Z_]+)=", text)) - setting_names()
    assert not unknown


def test_build_context_leaves_out_the_virtualenv_and_data() -> None:
    lines = (DOCKER.parent / ".dockerignore").read_text().splitlines()
    patterns = [line for line in lines if line and not line.startswith("#")]
    # Everything is ignored, then only what the image needs is let back in.
    assert patterns[0] == "*"
    assert not [p for p in patterns if p.startswith("!") and any(w in p for w in (".venv", "data", "tests"))]
