"""Artifact IO: round trips, atomic replacement, deterministic bytes, clear errors, damage found."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
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


def _activations(path):
    # Several chunks, so that one can be damaged while the others stay intact.
    r = np.random.default_rng(0).normal(size=(4096, 512)).astype(np.float32)
    store.write_zarr(path, {"r": r, "pred": np.arange(4096)}, {"num_units": 512})
    return r


def _chunks(path, array="r"):
    return sorted(p for p in (path / array / "c").rglob("*") if p.is_file())


def test_a_store_records_every_file_it_holds(tmp_path):
    path = tmp_path / "activations.zarr"
    _activations(path)
    assert len(_chunks(path)) > 1
    assert store.zarr_damage(path) is None
    assert store.damaged_artifacts(tmp_path) == []


def _delete(chunk):
    chunk.unlink()


def _truncate(chunk):
    chunk.write_bytes(chunk.read_bytes()[:-20])


def _flip_a_byte(chunk):
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_delete, _truncate, _flip_a_byte])
def test_a_damaged_chunk_names_the_store_and_removes_it(tmp_path, damage):
    path = tmp_path / "activations.zarr"
    _activations(path)
    chunk = _chunks(path)[1]
    damage(chunk)
    with pytest.raises(store.ArtifactError, match=r"activations\.zarr: damaged \(r/c/1/0 .*the next run rebuilds it"):
        store.read_zarr(path, ["r"])
    assert not path.exists()


def test_reading_other_arrays_ignores_damage_elsewhere_until_the_store_is_checked(tmp_path):
    path = tmp_path / "activations.zarr"
    _activations(path)
    _delete(_chunks(path)[0])
    arrays, _ = store.read_zarr(path, ["pred"])
    np.testing.assert_array_equal(arrays["pred"], np.arange(4096))
    # The check before a run covers every array, so the damage does not wait for a reader.
    assert [(p.name, problem) for p, problem in store.damaged_artifacts(tmp_path)] == [
        ("activations.zarr", "r/c/0/0 is missing")
    ]


def test_a_store_without_its_manifest_counts_as_damaged(tmp_path):
    path = tmp_path / "latents.zarr"
    store.write_zarr(path, {"w": np.zeros((3, 2))})
    (path / store.MANIFEST).unlink()
    assert store.discard_damaged(tmp_path) == [
        f"{path}: damaged (its manifest.json is missing); removed it, so the next run rebuilds it"
    ]
    assert not path.exists()


def test_snakemakes_marker_in_a_store_is_neither_damage_nor_warned_about(tmp_path, recwarn):
    path = tmp_path / "latents.zarr"
    store.write_zarr(path, {"w": np.zeros((3, 2))})
    (path / ".snakemake_timestamp").touch()
    assert store.damaged_artifacts(tmp_path) == []
    arrays, _ = store.read_zarr(path)
    assert set(arrays) == {"w"}
    assert not [w for w in recwarn if "not recognized" in str(w.message)]


def _table(path, rows=5000):
    frame = pd.DataFrame({"unit": np.arange(rows), "value": np.random.default_rng(1).normal(size=rows)})
    store.write_parquet(path, frame)
    return frame


def test_a_truncated_parquet_file_is_found_before_reading_and_removed(tmp_path):
    path = tmp_path / "tables" / "chunk-0.parquet"
    _table(path)
    path.write_bytes(path.read_bytes()[:-100])
    [(found, problem)] = store.damaged_artifacts(tmp_path)
    assert found == path
    with pytest.raises(store.ArtifactError, match=r"chunk-0\.parquet: damaged .*the next run rebuilds it"):
        store.read_parquet(path)
    assert not path.exists()


def test_an_altered_parquet_page_fails_its_checksum(tmp_path):
    path = tmp_path / "changes.parquet"
    _table(path)
    data = bytearray(path.read_bytes())
    data[200] ^= 0xFF  # inside the first data page, far from the footer
    path.write_bytes(bytes(data))
    assert store.damaged_artifacts(tmp_path) == []  # the footer is intact
    with pytest.raises(store.ArtifactError, match=r"changes\.parquet: damaged"):
        store.read_parquet(path)
    assert not path.exists()


def test_parquet_without_a_row_count_is_damaged(tmp_path):
    path = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), path)
    assert "row count" in store.parquet_damage(path)


def test_temporaries_of_killed_writes_are_removed_and_nothing_else(tmp_path):
    store.write_zarr(tmp_path / "latents.zarr", {"w": np.zeros(2)})
    (tmp_path / "report").mkdir()
    (tmp_path / ".report.tmp-1a2b3c4d").mkdir()
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / ".chunk-0.parquet.tmp-5e6f7a8b").write_bytes(b"half")
    assert store.discard_temporaries(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.rglob("*") if p.parent == tmp_path) == ["latents.zarr", "report", "tables"]
    assert not list((tmp_path / "tables").iterdir())
