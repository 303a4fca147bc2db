"""Settings of the fast test collections: small pictures, small batches, a test backbone, on the CPU."""

from __future__ import annotations

from pathlib import Path

from app.config import Settings


def tiny_settings(tmp_path: Path, database_url: str | None = None, backbone: str = "tiny_random") -> Settings:
    """A collection in tmp_path on a test backbone: fast, and the code path of any encoder."""
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        backbone=backbone,
        head="gap",
        max_side=64,
        batch_size=4,
        commit_every=4,
        workers=2,
        device="cpu",
    )


def cli_env(settings: Settings) -> dict[str, str]:
    """The environment that makes `cbir` (in a subprocess) open the collection of `settings`."""
    env = {
        "CBIR_DATA_DIR": str(settings.data_dir),
        "CBIR_BACKBONE": settings.backbone,
        "CBIR_HEAD": settings.head,
        "CBIR_MAX_SIDE": str(settings.max_side),
        "CBIR_BATCH_SIZE": str(settings.batch_size),
        "CBIR_DEVICE": settings.device,
    }
    if settings.database_url:
        env["CBIR_DATABASE_URL"] = settings.database_url
    return env
