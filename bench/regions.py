"""Region queries on Corel-1K: an object cut from one photo, pasted into a photo of another class, searched by
its box (plain and re-ranked) and by the whole composite picture.

The default encoder over the first 20 photos of each class; two objects per class (its 6th and 8th photo).
tests/app/test_roi_corel.py runs ten of these queries with ``composite`` and ``rank_of`` from here. Prints
each query's rank of the photo the object came from (None: not in the top 100) and how many are in the top
5; the last line is JSON.

    python bench/regions.py
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from app.collection.facade import Collection, Hit  # noqa: E402
from app.config import Settings  # noqa: E402
from app.encoders import encoder_from_settings  # noqa: E402
from app.jobs import bulk  # noqa: E402
from app.search.reranking import RerankOptions  # noqa: E402

COREL = ROOT.parent / "shared" / "datasets" / "corel1k"
PER_CLASS = 20
WAYS = ("region_plain", "region_reranked", "whole")


def composite(object_photo: Path, background_photo: Path) -> tuple[bytes, tuple[int, int, int, int]]:
    """The background photo with the middle half (each way) of the object photo pasted at its lower right."""
    source = Image.open(object_photo).convert("RGB")
    background = Image.open(background_photo).convert("RGB")
    w, h = source.size
    part = source.crop((w // 4, h // 4, w * 3 // 4, h * 3 // 4))
    x, y = background.width - part.width - 8, background.height - part.height - 8
    background.paste(part, (x, y))
    buffer = io.BytesIO()
    background.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue(), (x, y, x + part.width, y + part.height)


def rank_of(name: str, hits: list[Hit]) -> int | None:
    names = [Path(hit.image.original_name).name for hit in hits]  # as indexed: class/file
    return names.index(name) + 1 if name in names else None


def main() -> None:
    settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="cbir-regions-")) / "data", device="cpu")
    collection = Collection.open(settings, encoder_from_settings(settings))
    classes = sorted(folder for folder in COREL.iterdir() if folder.is_dir())
    bulk.index_files(
        collection, [p for f in classes for p in sorted(f.iterdir())[:PER_CLASS]], copy_files=False
    )
    ranks: dict[str, dict[str, int | None]] = {}
    for position, folder in enumerate(classes):
        for object_index, background_index in ((5, 1), (7, 3)):
            photo = sorted(folder.iterdir())[object_index]
            background = sorted(classes[(position + 3) % len(classes)].iterdir())[background_index]
            query, box = composite(photo, background)
            ranks[photo.name] = {
                "region_plain": rank_of(photo.name, collection.search_image(query, 100, box=box)),
                "region_reranked": rank_of(
                    photo.name, collection.search_image(query, 100, RerankOptions(), box)
                ),
                "whole": rank_of(photo.name, collection.search_image(query, 100)),
            }
            print(photo.name, ranks[photo.name])
    collection.close()
    top5 = {way: sum(1 for r in ranks.values() if (r[way] or 101) <= 5) for way in WAYS}
    for way in WAYS:
        print(f"{way:<16} top 5: {top5[way]} of {len(ranks)}")
    print(json.dumps({"queries": len(ranks), "top5": top5}))


if __name__ == "__main__":
    main()
