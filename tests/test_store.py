"""Artifact IO: round trips, atomic replacement, deterministic bytes, clear errors."""

import numpy as np
import pandas as pd
import pytest

from pipeline import store


def test_zarr_round_trip_with_attributes(tmp_path):
    arrays = {
        "w": np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32),
        "class": np.arange(10, dtype=np.int64),
        "split": np.array(["train"] * 5 + ["probe"] * 5),
    }
    store.write_zarr(tmp_path / "a.zarr", arrays, {"seed": 3})
    read, attrs = store.read_zarr(tmp_path / "a.zarr")
    assert attrs == {"seed": 3}
    np.testing.assert_array_equal(read["w"], arrays["w"])
    np.testing.assert_array_equal(read["class"], arrays["class"])
    assert read["split"].tolist() == arrays["split"].tolist()


def test_rewrite_replaces_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "a.zarr"
    store.write_zarr(target, {"x": np.zeros(3)})
    store.write_zarr(target, {"y": np.ones(2)})
    arrays, _ = store.read_zarr(target)
    assert set(arrays) == {"y"}
    assert [p.name for p in tmp_path.iterdir()] == ["a.zarr"]


def test_failed_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "table.parquet"
    with pytest.raises(RuntimeError), store.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_parquet_is_byte_identical_for_equal_input(tmp_path):
    frame = pd.DataFrame({"unit": np.arange(5), "value": np.linspace(0, 1, 5)})
    store.write_parquet(tmp_path / "a.parquet", frame)
    store.write_parquet(tmp_path / "b.parquet", frame)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_parquet_reads_many_files_as_one(tmp_path):
    for k in range(3):
        store.write_parquet(tmp_path / f"chunk-{k}.parquet", pd.DataFrame({"unit": [k, k], "v": [0.0, 1.0]}))
    frame = store.read_parquet(sorted(tmp_path.glob("chunk-*.parquet")))
    assert sorted(frame["unit"].tolist()) == [0, 0, 1, 1, 2, 2]


def test_missing_files_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.zarr"):
        store.read_zarr(tmp_path / "nothere.zarr")
    with pytest.raises(FileNotFoundError, match="nothere.parquet"):
        store.read_parquet(tmp_path / "nothere.parquet")
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        store.read_json(tmp_path / "nothere.json")


def test_json_handles_numpy_values(tmp_path):
    store.write_json(tmp_path / "m.json", {"r2": np.float32(0.5), "n": np.int64(3), "v": np.arange(2)})
    assert store.read_json(tmp_path / "m.json") == {"r2": 0.5, "n": 3, "v": [0, 1]}
