"""The index-type registry (index/faiss/types.py): every registered type is built, sized and checked alike."""

from __future__ import annotations

import pytest

from index import INDEX_TYPE_REGISTRY, INDEX_TYPES, IndexSpec, index_type, register_index_type
from index.factory import MIN_TRAIN_VECTORS, build_faiss_index, estimated_bytes, spec_for, train_sample_size
from index.faiss.types import Flat
from tests.helpers.vectors import DIM

N = 10 * MIN_TRAIN_VECTORS


@pytest.mark.parametrize("name", INDEX_TYPES)
def test_each_type_builds_an_empty_index_of_its_spec(name: str) -> None:
    spec = spec_for(name, N, DIM)
    assert spec.type == name and spec.kind is index_type(name)
    index = build_faiss_index(spec, DIM)
    assert index.d == DIM and index.ntotal == 0
    assert index.is_trained is not spec.needs_training
    assert (train_sample_size(spec) > 0) is spec.needs_training
    assert estimated_bytes(spec, N, DIM) > 0 and spec.description()
    assert IndexSpec.from_header(spec.type, spec.params()) == spec


@pytest.mark.parametrize("name", INDEX_TYPES)
def test_each_type_takes_its_own_search_knob_only(name: str) -> None:
    spec = spec_for(name, N, DIM)
    knob = spec.kind.search_knob
    moved = spec.with_search_defaults(nprobe=7, ef_search=9)
    changed = {field for field in ("nprobe", "ef_search") if getattr(moved, field) != getattr(spec, field)}
    assert changed == ({knob} if knob else set())


def test_types_are_listed_from_exact_to_most_compressed_and_unknown_ones_named() -> None:
    assert INDEX_TYPES[0] == "flat" and set(INDEX_TYPES) == set(INDEX_TYPE_REGISTRY.names())
    with pytest.raises(ValueError, match="index type 'annoy' is not one of " + ", ".join(INDEX_TYPES)):
        IndexSpec("annoy")


def test_a_type_name_is_registered_once() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_index_type("flat")(Flat)
