"""Pairwise (QAConv) evaluation: every query x gallery pair is scored by the model's matchers,
block by block under TAL.EVAL.MEMORY_MB, and ranked by the exact chunked engine
(plugins.evaluation.evaluate_rank_dist_fn). With TAL.EVAL.TOPK = k > 0 only the k gallery items
nearest by the global descriptor are rescored by QAConv; the others keep their global order,
behind every rescored item.

Memory at any test-set size (issue #19 item 4; the paper is silent, this is engineering):

- the test maps never sit in host RAM: `TALEvaluator.process` appends each batch to an on-disk
  store (plugins.evaluation.feature_store, TAL.EVAL.FEATURE_DTYPE) in a fresh temporary directory
  inside TAL.EVAL.STORE_DIR (default OUTPUT_DIR), removed after the evaluation;
- under DDP every process writes its own shard (fastreid's InferenceSampler gives each a
  contiguous part of the dataset) and process 0 memory-maps the shards in rank order: nothing is
  gathered. That needs the store directory on a file system every process sees (one machine, or
  a shared STORE_DIR); process 0 checks each shard's header token, and where it cannot see a
  shard (several machines, local disks) the shards are streamed to it instead, in chunks of
  plugins.evaluation.gather.CHUNK_BYTES, into its own store file. pids and camids are gathered;
- scoring reads query chunks and gallery blocks from the store; with TAL.EVAL.GALLERY_ON_DEVICE
  the first gallery rows are cached on the model's device, as many as TAL.EVAL.DEVICE_MEMORY_MB
  holds in the stored dtype, and the rest is streamed block by block. The same blocks are scored
  in the same order whatever is cached, so results are bit-identical to scoring in-memory tensors.
"""
import logging
import os
import shutil
import tempfile

import torch
from fastreid.evaluation.evaluator import inference_context
from fastreid.utils import comm

from plugins.distributed import broadcast_object
from plugins.evaluation import DEFAULT_CHUNK_SIZE, DGReidEvaluator, evaluate_rank_dist_fn
from plugins.evaluation.feature_store import (DTYPES, FeatureStore, FeatureStoreError, MappedRows, TensorRows,
                                              as_rows)
from plugins.evaluation.gather import CHUNK_BYTES, gather_rows
from .qaconv import blockwise_scores

logger = logging.getLogger(__name__)

STORE_HINT = "set TAL.EVAL.STORE_DIR to a writable directory with room for the test maps"


def check_eval_config(cfg):
    """The torch dtype of TAL.EVAL.FEATURE_DTYPE, after checking TAL.EVAL's budgets. Raises
    ValueError naming the key and what it expects (a negative DEVICE_MEMORY_MB would otherwise fail
    deep inside, a non-positive MEMORY_MB / negative TOPK silently mean one pair per block / all
    pairs)."""
    e = cfg.TAL.EVAL
    if e.FEATURE_DTYPE not in DTYPES:
        raise ValueError(f"TAL.EVAL.FEATURE_DTYPE must be 'float32' or 'float16', got {e.FEATURE_DTYPE!r}")
    if not e.MEMORY_MB > 0:
        raise ValueError(f"TAL.EVAL.MEMORY_MB must be > 0 (MiB per scoring block), got {e.MEMORY_MB}")
    if not e.DEVICE_MEMORY_MB >= 0:
        raise ValueError(f"TAL.EVAL.DEVICE_MEMORY_MB must be >= 0 (MiB of gallery maps on the device; 0: none), "
                         f"got {e.DEVICE_MEMORY_MB}")
    if e.TOPK < 0:
        raise ValueError(f"TAL.EVAL.TOPK must be >= 0 (0: every pair rescored), got {e.TOPK}")
    return DTYPES[e.FEATURE_DTYPE]


def store_directory(cfg, prefix):
    """A fresh temporary directory for a feature store inside TAL.EVAL.STORE_DIR (default
    OUTPUT_DIR, "." without one); the caller removes it. Raises FeatureStoreError naming the
    directory when it cannot be created."""
    base = cfg.TAL.EVAL.STORE_DIR or cfg.OUTPUT_DIR or "."
    try:
        os.makedirs(base, exist_ok=True)
        return tempfile.mkdtemp(prefix=prefix, dir=base)
    except OSError as e:
        raise FeatureStoreError(e.errno, f"feature store directory {base}: cannot create a temporary "
                                         f"directory in it: {e.strerror or e}; {STORE_HINT}") from e


def _copy_rows(src, a, b, device, step):
    """Rows a..b-1 of a row source as one tensor on `device` (stored dtype), read `step` rows at a time."""
    out = torch.empty((b - a, *src.shape[1:]), dtype=src.dtype, device=device)
    for s in range(a, b, step):
        e = min(b, s + step)
        out[s - a:e - a] = src.block(s, e)
    return out


def qaconv_dist_fn(model, q_flat, g_flat, memory_mb=1024, topk=0, gallery_on_device=True,
                   device_memory_mb=None):
    """dist_fn(a, b) -> [b - a, G] distances (-logits) of queries a..b-1, for the ranking engine.

    q_flat / g_flat: the model's flat eval outputs [Q, D] / [G, D], as tensors (any float dtype,
    any device) or row sources (plugins.evaluation.feature_store: an on-disk store, read block by
    block). gallery_on_device: cache gallery rows on the model's device, the first
    device_memory_mb MiB of them in the stored dtype (None: all of them); the rest is read per
    scoring block. `dist_fn.stats`: resident_rows, resident_bytes, streamed_rows (gallery rows
    read from the source so far). Call it with the model in eval mode; it is thread-safe (the
    engine may prefetch the next chunk in a thread).
    """
    device = model.device
    q_src, g_src = as_rows(q_flat), as_rows(g_flat)
    num_g = len(g_src)
    dg = model.feature_layout()[0][1][0]
    pair_bytes = model.pair_bytes()
    row_bytes = g_src.row_bytes
    map_bytes = 4 * (g_src.shape[1] - dg)
    # a block's own maps: the stored row read, its float32 copy and the matcher's reshaped copy
    item_bytes = row_bytes + 2 * 4 * g_src.shape[1]
    need_mb = 2 * max(pair_bytes, 2 * item_bytes) / 2 ** 20   # one 1 x 1 block (qaconv.block_shape)
    if memory_mb < need_mb:
        logger.warning(f"TAL.EVAL.MEMORY_MB {memory_mb:g} is below one scoring block of 1 query x 1 gallery "
                       f"image ({need_mb:.3g} MiB with this model's maps): blocks of one pair use that much")
    # rows per read when filling the cache / the global descriptors: a quarter of the block budget
    io_rows = max(1, int(memory_mb * 2 ** 20 // 4 // max(1, row_bytes)))
    if not gallery_on_device:
        resident = 0
    elif device_memory_mb is None:
        resident = num_g
    else:
        resident = min(num_g, int(device_memory_mb * 2 ** 20 // max(1, row_bytes)))
    if isinstance(g_src, TensorRows) and resident == num_g:   # in-memory gallery: moved once (no copy if there)
        cache = g_src.tensor.to(device)
    else:
        cache = _copy_rows(g_src, 0, resident, device, io_rows)
    stats = {"resident_rows": resident, "resident_bytes": resident * row_bytes, "streamed_rows": 0}

    def global_rows(src, a, b):   # global descriptors of rows a..b-1 [b - a, Dg], float32 on the device
        return torch.cat([src.block(s, min(b, s + io_rows))[:, :dg].to(device, torch.float32)
                          for s in range(a, b, io_rows)])
    # the shortlist's global descriptors of the gallery [G, Dg]
    g_global = global_rows(g_src, 0, num_g) if 0 < topk < num_g else None

    def gallery_block(g0, g1):   # split features of gallery rows g0..g1-1
        if g1 <= resident:
            x = cache[g0:g1]
        else:
            x = g_src.block(max(g0, resident), g1).to(device)
            stats["streamed_rows"] += g1 - max(g0, resident)
            if g0 < resident:
                x = torch.cat([cache[g0:resident], x])
        return model.split_features(x.to(device, torch.float32))

    def gallery_take(index):    # split features of gallery rows `index` (a device tensor)
        x = torch.empty((len(index), *g_src.shape[1:]), dtype=g_src.dtype, device=device)
        hit = index < resident
        x[hit] = cache[index[hit]]
        miss = (~hit).nonzero().squeeze(1)
        if len(miss):
            x[miss] = g_src.take(index[miss].cpu()).to(device)
            stats["streamed_rows"] += len(miss)
        return model.split_features(x.to(torch.float32))

    def queries(a0, a1):        # split features of queries a0..a1-1
        return model.split_features(q_src.block(a0, a1).to(device, torch.float32))

    def all_pairs(a, c):
        held = {}   # the current block row's query maps (read once per block row, not per chunk)

        def score(p0, p1, g0, g1):
            if held.get("rows") != (p0, p1):
                held["rows"], held["q"] = (p0, p1), queries(a + p0, a + p1)
            return model.pair_logits(held["q"], gallery_block(g0, g1)).float().cpu()
        return blockwise_scores(score, c, num_g, pair_bytes, memory_mb, bytes_per_item=item_bytes).neg_()

    def shortlist(a, c, k):
        gdist = 1.0 - global_rows(q_src, a, a + c) @ g_global.t()           # cosine, in [0, 2]
        cand = gdist.topk(k, dim=1, largest=False).indices                  # [c, k]
        rows = max(1, int(memory_mb * 2 ** 20 // (k * (pair_bytes + map_bytes))))
        short = torch.empty(c, k, device=device)
        for r0 in range(0, c, rows):
            idx = cand[r0:r0 + rows]
            g = gallery_take(idx.reshape(-1))
            g = {n: v.view(*idx.shape, *v.shape[1:]) if n == "global"
                 else [m.view(*idx.shape, *m.shape[1:]) for m in v] for n, v in g.items()}
            q = queries(a + r0, a + min(c, r0 + rows))
            short[r0:r0 + rows] = -model.pair_logits(q, g, paired=True).float()
        # the others: behind every rescored item, in their global order
        out = gdist + (short.amax(dim=1, keepdim=True) + 1.0)
        return out.scatter_(1, cand, short).cpu()

    @torch.no_grad()
    def dist_fn(a, b):
        if g_global is not None:
            return shortlist(a, b - a, topk)
        return all_pairs(a, b - a)
    dist_fn.stats = stats
    return dist_fn


class TALEvaluator(DGReidEvaluator):
    """DGReidEvaluator whose distances are the model's pairwise matching logits (negated), with the
    test maps in an on-disk store (module docstring). After `evaluate` the store is removed."""

    def __init__(self, cfg, num_query, model, output_dir=None):
        super().__init__(cfg, num_query, output_dir)
        self.model = model.module if hasattr(model, "module") else model
        self.dtype = check_eval_config(cfg)
        self._store = self._dir = self._reader = None
        self.shared_store = None   # after evaluate under DDP: True = shards mapped, False = streamed

    def reset(self):
        super().reset()
        self._cleanup()

    def close(self):
        """Remove the store (its directory, open file and mappings); `evaluate` does it itself, this
        is for an evaluation that stopped before (an exception or KeyboardInterrupt while the test
        set is extracted: TALTrainer.test calls it). Idempotent."""
        self._cleanup()

    def _cleanup(self):
        if self._reader is not None:
            self._reader.close()
        if self._store is not None:
            self._store.remove()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._store = self._dir = self._reader = None

    def _new_store(self, name):
        if self._dir is None:
            self._dir = store_directory(self.cfg, "tal_eval_store_")
        return FeatureStore(os.path.join(self._dir, name), self.dtype, hint=STORE_HINT)

    def process(self, inputs, outputs):
        try:
            if self._store is None:
                self._store = self._new_store(f"rank{comm.get_rank()}.bin")
            self._store.append(outputs)
        except FeatureStoreError:   # disk full / not writable: leave no partial store behind
            self._cleanup()
            raise
        self._predictions.append({"pids": inputs["targets"].to("cpu"), "camids": inputs["camids"].to("cpu")})

    def _flat_dim(self):
        return sum(int(torch.Size(s).numel()) for _, s in self.model.feature_layout())

    def _collect(self):
        """(MappedRows of all test maps in dataset order, pids, camids) on process 0, None elsewhere."""
        if self._store is None:
            self._store = self._new_store(f"rank{comm.get_rank()}.bin")
        store = self._store.finish(row_shape=(self._flat_dim(),))
        labels = {k: gather_rows([p[k] for p in self._predictions] or [torch.empty(0, dtype=torch.int64)], dst=0)
                  for k in ("pids", "camids")}
        main = comm.is_main_process()
        if comm.get_world_size() == 1:
            self._reader = store.open()
        else:
            heads = comm.all_gather(store.header(), group=comm._get_global_gloo_group())
            shared = None
            if main:
                try:
                    self._reader = MappedRows([h[0] for h in heads], tokens=[h[4] for h in heads])
                    shared = True
                except FeatureStoreError as e:
                    logger.info(f"TAL evaluation: shards not visible to process 0 ({e}); streaming them")
                    shared = False
            self.shared_store = shared = broadcast_object(shared)
            if not shared:
                self._stream_to_main()
            comm.synchronize()   # process 0 has mapped / received every shard: the others may delete theirs
        if not main:
            self._cleanup()
            return None
        return self._reader, labels["pids"].numpy(), labels["camids"].numpy()

    def _stream_to_main(self):
        """Fallback without a shared store directory: every shard to process 0's own store file,
        one chunk at a time (gather_rows with a sink)."""
        own = self._store.open()
        step = max(1, CHUNK_BYTES // max(1, own.row_bytes))
        pieces = [own.block(a, min(len(own), a + step)) for a in range(0, len(own), step)] \
            or [torch.empty((0, *own.shape[1:]), dtype=own.dtype)]
        sink = None
        if comm.is_main_process():
            gathered = self._new_store("gathered.bin")

            def sink(rows):
                gathered.append(rows)
                own.drop()
        gather_rows(pieces, dst=0, sink=sink)
        del pieces
        own.close()
        if comm.is_main_process():
            self._reader = gathered.finish(row_shape=own.shape[1:]).open()
            self._store.remove()
            self._store = gathered

    def evaluate(self):
        try:
            return super().evaluate()
        finally:
            self._cleanup()

    def rank(self, q_feat, g_feat, q_pids, g_pids, q_camids, g_camids):
        test, e = self.cfg.TEST, self.cfg.TAL.EVAL
        if test.AQE.ENABLED or test.RERANK.ENABLED:
            logger.warning("TEST.AQE / TEST.RERANK work on global features: "
                           "ignored by TAL's pairwise evaluation")
        with inference_context(self.model):
            dist_fn = qaconv_dist_fn(self.model, q_feat, g_feat, e.MEMORY_MB, e.TOPK, e.GALLERY_ON_DEVICE,
                                     e.DEVICE_MEMORY_MB)
            self.last_stats = dist_fn.stats
            return evaluate_rank_dist_fn(dist_fn, q_pids, g_pids, q_camids, g_camids,
                                         chunk_size=test.get("CHUNK_SIZE", DEFAULT_CHUNK_SIZE),
                                         prefetch=True)
