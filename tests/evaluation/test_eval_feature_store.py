"""plugins.evaluation.feature_store: on-disk row store (issue #19 item 4): round trip, dtypes and
trailing shapes, several files as one matrix, bounded resident pages, errors naming the path; and
gather_rows streaming into a sink (the store's fallback under DDP)."""
import errno
import json
import os

import numpy as np
import pytest
import torch

from plugins.evaluation.feature_store import (FeatureStore, FeatureStoreError, MappedRows, RowRange,
                                              as_rows)
from tests.engine.ddp_utils import run_gloo


@pytest.mark.parametrize("dtype,shape", [(torch.float16, (3, 4, 2)), (torch.float32, (5,))])
def test_round_trip_in_batches(tmp_path, dtype, shape):
    g = torch.Generator().manual_seed(0)
    data = torch.randn(23, *shape, generator=g, dtype=torch.float64)
    store = FeatureStore(tmp_path / "a.bin", dtype)
    for a in range(0, 23, 5):          # batches of 5 (last of 3), given in float64
        store.append(data[a:a + 5])
    rows = store.open()
    expected = data.to(dtype)
    assert rows.shape == (23, *shape) and rows.dtype == dtype and len(rows) == 23
    assert os.path.getsize(tmp_path / "a.bin") == 23 * int(np.prod(shape)) * (2 if dtype == torch.float16 else 4)
    assert json.load(open(tmp_path / "a.bin.json"))["rows"] == 23
    assert torch.equal(rows.block(0, 23), expected) and torch.equal(rows.block(7, 9), expected[7:9])
    assert torch.equal(rows.take([22, 0, 7]), expected[[22, 0, 7]])
    view = rows.block(3, 6)   # a view of the mapping: no copy
    assert view.untyped_storage().data_ptr() == rows.block(0, 1).untyped_storage().data_ptr()
    part = rows[5:20]
    assert isinstance(part, RowRange) and len(part) == 15
    assert torch.equal(part.block(2, 4), expected[7:9]) and torch.equal(part.take([0, 14]), expected[[5, 19]])
    rows.close()
    store.remove()
    assert os.listdir(tmp_path) == []


def test_several_files_map_as_one_matrix_and_pages_are_dropped(tmp_path):
    data = torch.arange(10 * 6, dtype=torch.float32).view(10, 2, 3)
    paths, tokens = [], []
    for i, (a, b) in enumerate([(0, 4), (4, 4), (4, 10)]):   # an empty shard in the middle
        s = FeatureStore(tmp_path / f"r{i}.bin", torch.float32)
        s.append(data[a:b])
        s.finish()
        paths.append(s.path)
        tokens.append(s.token)
    rows = MappedRows(paths, window_bytes=3 * 24, tokens=tokens)   # 3 rows of 24 bytes
    assert rows.shape == (10, 2, 3)
    assert torch.equal(rows.block(2, 7), data[2:7])          # spans two files: copied
    assert torch.equal(rows.take([9, 0, 4, 3]), data[[9, 0, 4, 3]])
    assert rows.drops == 1 and rows.touched == 4 * 24          # 5 rows read, then 4 more: the 5 dropped first
    assert torch.equal(rows.block(0, 10), data)                # data re-read after the drops
    assert rows.drops == 2 and rows.touched == 10 * 24
    with pytest.raises(FeatureStoreError, match=f"feature store {paths[1]}: token .* is not the writer's x"):
        MappedRows(paths, tokens=[tokens[0], "x", tokens[2]])
    assert torch.equal(as_rows(data).block(1, 3), data[1:3]) and torch.equal(as_rows(data).take([2]), data[[2]])


def test_errors_name_the_path(tmp_path):
    (tmp_path / "file").write_text("")
    bad = tmp_path / "file" / "store.bin"      # parent is a file: the directory cannot hold it
    with pytest.raises(FeatureStoreError, match=f"feature store {bad}: cannot create the feature store file: "
                                                "a path component is not a directory; use X"):
        FeatureStore(bad, hint="use X")
    full = tmp_path / "full.bin"
    os.symlink("/dev/full", full)              # every write: ENOSPC
    store = FeatureStore(full, torch.float16, hint="set TAL.EVAL.STORE_DIR")
    with pytest.raises(FeatureStoreError) as e:
        for _ in range(4):   # buffered: the error comes at a write or at finish
            store.append(torch.zeros(1000, 64))
        store.finish()
    assert e.value.errno == errno.ENOSPC
    assert str(e.value).startswith(f"[Errno {errno.ENOSPC}] feature store {full}: cannot ")
    assert str(e.value).endswith("the disk is full; set TAL.EVAL.STORE_DIR")
    ok = FeatureStore(tmp_path / "ok.bin")
    ok.append(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"ok.bin: rows of shape \(4,\) after rows of shape \(3,\)"):
        ok.append(torch.zeros(2, 4))
    ok.finish()
    with open(ok.path, "ab") as f:
        f.write(b"xx")
    with pytest.raises(FeatureStoreError, match=r"ok.bin: 14 bytes, its header says 2 rows x \[3\] float16 = 12"):
        MappedRows([ok.path])
    with pytest.raises(FeatureStoreError, match=f"feature store {tmp_path / 'none.bin'}: no readable header"):
        MappedRows([str(tmp_path / "none.bin")])
    with pytest.raises(ValueError, match="float16 or float32"):
        FeatureStore(tmp_path / "c.bin", torch.int64)


def _sink_worker(rank, world_size):
    from plugins.evaluation.gather import gather_rows
    counts = [5, 4]
    start = sum(counts[:rank])
    rows = torch.arange(start * 2, (start + counts[rank]) * 2, dtype=torch.float16).view(-1, 2)
    got = []
    gather_rows([rows], dst=0, chunk_bytes=2 * 2 * 2, sink=lambda t: got.append(t.clone()))   # 2 rows a message
    return got


def test_gather_rows_streams_chunks_into_a_sink():
    got, none1 = run_gloo(_sink_worker, 2)
    assert none1 == []
    assert [len(t) for t in got] == [5, 2, 2]       # own rows, then rank 1's in 2-row chunks
    assert torch.equal(torch.cat(got), torch.arange(18, dtype=torch.float16).view(9, 2))
