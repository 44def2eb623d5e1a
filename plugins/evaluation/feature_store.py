"""Row stores on disk for evaluation features too large for host RAM (issue #19 item 4).

`FeatureStore` appends rows ([n, *row_shape], float16 or float32) batch by batch to one raw file
(row-major, native byte order) and, when finished, writes a JSON header beside it
(`<file>.json`: rows, row shape, dtype, a random token). `MappedRows` memory-maps one or several
finished files, in order, as one [N, *row_shape] matrix and hands out row blocks as torch tensors
that are views of the mapping (`block`: no copy within one file) or gathered copies (`take`).

Host memory. Writing goes through a small buffered file (the data lands in the page cache, not in
the process). Reading touches mapped pages, which count in the process's resident set until they
are unmapped; `MappedRows` drops them (madvise MADV_DONTNEED: the data stays in the page cache
and is re-read on the next access, so earlier views stay valid) before a read would take the
rows read since the last drop over `window_bytes`, so its resident share stays within
`window_bytes` plus one block whatever the store's size.

`as_rows(x)` gives tensors the same interface (`TensorRows`), so scoring code reads either.

Errors: `FeatureStoreError` (an OSError, with the errno of the cause) names the file and what was
being written when the disk is full, the directory cannot be written or a header is missing or
does not match its file.
"""
import errno
import json
import mmap
import os
import uuid

import numpy as np
import torch

__all__ = ["FeatureStore", "FeatureStoreError", "MappedRows", "TensorRows", "RowRange", "as_rows",
           "WINDOW_BYTES", "DTYPES"]

WINDOW_BYTES = 64 << 20    # mapped bytes a reader may keep resident before dropping them
DTYPES = {"float16": torch.float16, "float32": torch.float32}
_NP = {torch.float16: np.float16, torch.float32: np.float32}


class FeatureStoreError(OSError):
    """A store file could not be written or read (the message names the path)."""


def _dtype(dtype):
    dtype = DTYPES.get(dtype, dtype)
    if dtype not in _NP:
        raise ValueError(f"feature store dtype must be float16 or float32, got {dtype!r}")
    return dtype


class FeatureStore:
    """Append-only on-disk row store: one file `path` (created or truncated) of float16 / float32
    rows of a fixed trailing shape (set by the first `append`).

    append(rows): rows [n, *row_shape] (any float dtype, any device; cast to `dtype`, copied to the
    host one batch at a time). finish(): flushes and writes the header `path + ".json"`; then
    `open()` maps it (`MappedRows`). `hint` is appended to error messages (e.g. which config key
    chooses the directory). Raises FeatureStoreError naming `path` (errno ENOSPC: disk full;
    EACCES / ENOTDIR / ENOENT: directory not writable) and ValueError when a batch's trailing shape
    differs from the first one's."""

    def __init__(self, path, dtype=torch.float16, hint=""):
        self.path, self.dtype, self.hint = str(path), _dtype(dtype), hint
        self.rows, self.row_shape, self.token = 0, None, uuid.uuid4().hex
        self.finished = False
        try:
            self._file = open(self.path, "wb")
        except OSError as e:
            raise self._error(e, "create the feature store file") from e

    def _error(self, e, what):
        cause = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
                 errno.EACCES: "permission denied", errno.EROFS: "read-only file system",
                 errno.ENOENT: "no such directory", errno.ENOTDIR: "a path component is not a directory"}
        reason = cause.get(e.errno, e.strerror or str(e))
        hint = f"; {self.hint}" if self.hint else ""
        return FeatureStoreError(e.errno, f"feature store {self.path}: cannot {what}: {reason}{hint}")

    @property
    def row_bytes(self):
        return int(np.prod(self.row_shape or (0,))) * torch.empty((), dtype=self.dtype).element_size()

    def append(self, rows):
        """Write rows [n, *row_shape] at the end of the file."""
        if self.finished:
            raise RuntimeError(f"feature store {self.path} is finished: no more rows")
        rows = torch.as_tensor(rows).detach()
        shape = tuple(rows.shape[1:])
        if self.row_shape is None:
            self.row_shape = shape
        elif shape != self.row_shape:
            raise ValueError(f"feature store {self.path}: rows of shape {shape} after rows of shape "
                             f"{self.row_shape}")
        if not rows.shape[0]:
            return
        arr = rows.to("cpu", self.dtype).contiguous().numpy()
        try:
            self._file.write(memoryview(arr).cast("B"))
        except OSError as e:
            raise self._error(e, f"write {rows.shape[0]} rows ({arr.nbytes} bytes) after {self.rows} rows") from e
        self.rows += rows.shape[0]

    def finish(self, row_shape=None):
        """Flush, close and write the header; `row_shape` for a store that got no rows."""
        if self.finished:
            return self
        if self.row_shape is None:
            if row_shape is None:
                raise ValueError(f"feature store {self.path}: no rows and no row_shape given")
            self.row_shape = tuple(row_shape)
        try:
            self._file.close()
            with open(self.path + ".json", "w") as f:
                json.dump({"rows": self.rows, "row_shape": list(self.row_shape),
                           "dtype": str(self.dtype).split(".")[-1], "token": self.token}, f)
        except OSError as e:
            raise self._error(e, f"flush {self.rows} rows ({self.rows * self.row_bytes} bytes)") from e
        self.finished = True
        return self

    def header(self):
        """(path, rows, row_shape, dtype name, token) of a finished store."""
        return self.path, self.rows, self.row_shape, str(self.dtype).split(".")[-1], self.token

    def open(self, window_bytes=WINDOW_BYTES):
        return MappedRows([self.finish().path], window_bytes=window_bytes)

    def remove(self):
        """Close and delete the file and its header (mappings stay valid until closed)."""
        if not self._file.closed:
            self._file.close()
        for p in (self.path, self.path + ".json"):
            if os.path.exists(p):
                os.remove(p)


def read_header(path):
    """The header of a finished store file: dict(rows, row_shape, dtype, token). Raises
    FeatureStoreError naming the file when the header is missing or does not match the file."""
    try:
        with open(path + ".json") as f:
            head = json.load(f)
        size = os.path.getsize(path)
    except (OSError, ValueError) as e:
        raise FeatureStoreError(getattr(e, "errno", None) or errno.EIO,
                                f"feature store {path}: no readable header {path}.json or file ({e})") from e
    dtype = _dtype(head["dtype"])
    expected = head["rows"] * int(np.prod(head["row_shape"])) * torch.empty((), dtype=dtype).element_size()
    if size != expected:
        raise FeatureStoreError(errno.EIO, f"feature store {path}: {size} bytes, its header says "
                                           f"{head['rows']} rows x {head['row_shape']} {head['dtype']} "
                                           f"= {expected} bytes")
    return head


class _Rows:
    """Shared read interface: len, shape, dtype, block(a, b), take(index), [a:b] -> RowRange."""

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("row stores support [a:b] (a lazy RowRange); use block() / take() for data")
        a, b, _ = key.indices(len(self))
        return RowRange(self, a, max(a, b))

    @property
    def row_bytes(self):
        return int(np.prod(self.shape[1:])) * torch.empty((), dtype=self.dtype).element_size()


class MappedRows(_Rows):
    """Finished store files mapped in order as one [N, *row_shape] matrix (read-only use).
    `tokens`: the writers' tokens (FeatureStore.token), checked against the headers (is this the
    file that process wrote, e.g. on a shared file system?).

    block(a, b) -> tensor [b - a, *row_shape] on the CPU: a view of the mapping when the rows lie in
    one file, else a concatenated copy. take(index) -> tensor [len(index), *row_shape] (copy).
    Raises FeatureStoreError naming a file whose header is missing / inconsistent, ValueError when
    the files' row shapes or dtypes differ."""

    def __init__(self, paths, window_bytes=WINDOW_BYTES, tokens=None):
        heads = [read_header(p) for p in paths]
        for i, (p, h) in enumerate(zip(paths, heads)):
            if tokens is not None and h["token"] != tokens[i]:
                raise FeatureStoreError(errno.ESTALE, f"feature store {p}: token {h['token']} is not the "
                                                      f"writer's {tokens[i]} (another file at that path)")
        kinds = {(tuple(h["row_shape"]), h["dtype"]) for h in heads}
        if len(kinds) != 1:
            raise ValueError("feature stores differ in row shape / dtype: "
                             + ", ".join(f"{p}: {h['row_shape']} {h['dtype']}" for p, h in zip(paths, heads)))
        row_shape, dtype = next(iter(kinds))
        self.dtype, self.paths, self.window_bytes = _dtype(dtype), list(paths), window_bytes
        self.shape = torch.Size((sum(h["rows"] for h in heads), *row_shape))
        self._maps, self._arrays, self.starts = [], [], [0]
        for p, h in zip(paths, heads):
            if h["rows"]:
                with open(p, "rb") as f:
                    mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)   # private: never writes the file
                arr = np.frombuffer(mm, dtype=_NP[self.dtype]).reshape(h["rows"], *row_shape)
            else:
                mm, arr = None, np.empty((0, *row_shape), dtype=_NP[self.dtype])
            self._maps.append(mm)
            self._arrays.append(torch.from_numpy(arr))
            self.starts.append(self.starts[-1] + h["rows"])
        self.touched = 0          # bytes handed out since the last drop
        self.drops = 0            # times the mapped pages were dropped

    def _touch(self, nbytes):
        """Account for `nbytes` about to be read: first drop what was read before if the window
        would overflow (the mapped resident set stays within window_bytes + one block)."""
        if self.touched and self.touched + nbytes > self.window_bytes:
            self.drop()
        self.touched += nbytes

    def drop(self):
        """Unmap the touched pages from this process (the file data stays in the page cache)."""
        for mm in self._maps:
            if mm is not None:
                mm.madvise(mmap.MADV_DONTNEED)
        self.touched, self.drops = 0, self.drops + 1

    def block(self, a, b):
        if not 0 <= a <= b <= len(self):
            raise IndexError(f"rows {a}:{b} out of 0:{len(self)}")
        parts = []
        self._touch((b - a) * self.row_bytes)
        for i, (s, e) in enumerate(zip(self.starts, self.starts[1:])):
            if s < b and e > a:
                parts.append(self._arrays[i][max(a, s) - s:min(b, e) - s])
        if not parts:
            return torch.empty((0, *self.shape[1:]), dtype=self.dtype)
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def take(self, index):
        index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        out = torch.empty((len(index), *self.shape[1:]), dtype=self.dtype)
        self._touch(out.numel() * out.element_size())
        if len(index):
            if int(index.min()) < 0 or int(index.max()) >= len(self):
                raise IndexError(f"row index out of 0:{len(self)}")
            shard = torch.bucketize(index, torch.tensor(self.starts[1:]), right=True)
            for i in shard.unique().tolist():
                sel = (shard == i).nonzero().squeeze(1)
                out[sel] = self._arrays[i][index[sel] - self.starts[i]]
        return out

    def close(self):
        """Release the mappings (views handed out before must not be used afterwards)."""
        self._arrays = []
        for mm in self._maps:
            if mm is not None:
                try:
                    mm.close()
                except BufferError:   # a view is still alive: the mapping goes with it
                    pass
        self._maps = []


class TensorRows(_Rows):
    """A tensor [N, *row_shape] behind the same interface (block = view, take = index)."""

    def __init__(self, tensor):
        self.tensor, self.shape, self.dtype = tensor, tensor.shape, tensor.dtype

    def block(self, a, b):
        return self.tensor[a:b]

    def take(self, index):
        return self.tensor[torch.as_tensor(index, dtype=torch.long, device=self.tensor.device)]


class RowRange(_Rows):
    """Rows a..b-1 of another row source (lazy: the query / gallery parts of one store)."""

    def __init__(self, source, a, b):
        self.source, self.a = source, a
        self.shape, self.dtype = torch.Size((b - a, *source.shape[1:])), source.dtype

    def block(self, a, b):
        if not 0 <= a <= b <= len(self):
            raise IndexError(f"rows {a}:{b} out of 0:{len(self)}")
        return self.source.block(self.a + a, self.a + b)

    def take(self, index):
        return self.source.take(torch.as_tensor(index, dtype=torch.long) + self.a)


def as_rows(x):
    """A row source (MappedRows / TensorRows / RowRange) for a tensor or a row source."""
    return x if isinstance(x, _Rows) else TensorRows(torch.as_tensor(x))
