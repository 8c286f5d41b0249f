"""Router logic without Ray: model resolution, the weighted split, chunking."""

from collections import Counter

import pytest

from serving.config import AppConfig
from serving.routing import ModelTable, UnknownModelError, chunks, unit_hash


def config(**extra) -> AppConfig:
    return AppConfig.model_validate({
        "models": [{"name": "e1", "kind": "embed"}, {"name": "e2", "kind": "embed"}, {"name": "r", "kind": "rerank"}],
        "aliases": {"canary": [{"model": "e1", "weight": 9}, {"model": "e2", "weight": 1}]},
    } | extra)


def test_models_resolve_to_themselves():
    table = ModelTable(config())
    assert table.resolve("e1", "embed", "k") == "e1"
    assert table.resolve("r", "rerank", "k") == "r"


def test_unknown_model_lists_what_is_available():
    with pytest.raises(UnknownModelError, match=r"Available: \['canary', 'e1', 'e2'\]"):
        ModelTable(config()).resolve("nope", "embed", "k")


def test_wrong_kind_says_what_the_model_is():
    with pytest.raises(UnknownModelError, match="it is a rerank model"):
        ModelTable(config()).resolve("r", "embed", "k")


def test_split_is_deterministic_per_key():
    table = ModelTable(config())
    assert [table.resolve("canary", "embed", f"k{i}") for i in range(50)] == [
        table.resolve("canary", "embed", f"k{i}") for i in range(50)]


def test_split_follows_the_weights():
    table = ModelTable(config())
    counts = Counter(table.resolve("canary", "embed", f"key-{i}") for i in range(20000))
    assert abs(counts["e2"] / 20000 - 0.1) < 0.01


def test_seed_changes_the_assignment():
    a = ModelTable(config())
    b = ModelTable(config(router={"traffic_seed": 7}))
    keys = [f"k{i}" for i in range(200)]
    assert [a.resolve("canary", "embed", k) for k in keys] != [b.resolve("canary", "embed", k) for k in keys]


def test_unit_hash_is_in_unit_interval():
    values = [unit_hash(0, str(i)) for i in range(1000)]
    assert all(0 <= v < 1 for v in values) and 0.45 < sum(values) / 1000 < 0.55


def test_chunks_cover_in_order():
    items = list(range(10))
    parts = chunks(items, 4)
    assert [start for start, _ in parts] == [0, 4, 8]
    assert [x for _, part in parts for x in part] == items


def test_omitted_model_resolves_to_the_only_model_of_its_kind():
    assert ModelTable(config()).resolve(None, "rerank", "k") == "r"


def test_omitted_model_with_several_of_its_kind_lists_the_choices():
    from serving.routing import ModelRequiredError

    with pytest.raises(ModelRequiredError, match=r"Choices: \['canary', 'e1', 'e2'\]"):
        ModelTable(config()).resolve(None, "embed", "k")


def test_resolve_any_takes_every_kind_and_defaults_to_the_first_model():
    table = ModelTable(config())
    assert table.resolve_any(None, "k") == "e1"
    assert table.resolve_any("r", "k") == "r"
    assert table.resolve_any("canary", "k") in {"e1", "e2"}
    with pytest.raises(UnknownModelError, match="not served"):
        table.resolve_any("nope", "k")
