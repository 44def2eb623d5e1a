"""The training step every project shares (hook points a, b, d, e of the trainer).

One iteration = the phase chosen by the schedule (plugins.engine.schedule) run on
SOLVER.ACCUM_STEPS micro-batches. A phase is one forward pass and a list of *updates*; each update
names the loss terms it minimises and the optimizers it steps, so alternating adversaries, frozen
extractors and discriminators are all just updates over different parameter sets.

Inside an update the loss terms split into objectives (primary, and auxiliary when
SOLVER.GRAD_COMBINE.AUX_LOSSES names them). Each objective's gradient is accumulated over the
micro-batches, averaged across DDP processes, and only then combined on the shared parameters by the
configured combiner (gradient surgery), so accumulation and DDP give the update of the joint batch.
Parameters outside the shared extractor receive the plain sum of the objectives' gradients.
"""
import inspect
import logging
import time
import warnings
from typing import NamedTuple, Tuple

import torch
import torch.distributed as dist
from fastreid.engine.train_loop import SimpleTrainer
from fastreid.utils import comm
from fastreid.utils.events import get_event_storage

from plugins.data.loaders import shutdown_loader
from plugins.registry import GRAD_COMBINERS, register_as

from .resume import loader_state, make_resumable, restart_at

logger = logging.getLogger(__name__)


class Update(NamedTuple):
    optimizers: Tuple[str, ...]     # optimizers stepped by this update
    losses: Tuple[str, ...] = ()    # loss terms minimised; () = every term of the forward


class Phase(NamedTuple):
    name: str
    updates: Tuple[Update, ...]


TRAIN = Phase("train", (Update(("main",)),))


@register_as(GRAD_COMBINERS, "sum")
class SumCombiner:
    """No calibration: the objectives' gradients are added (Table 5, design a)."""

    def __init__(self, cfg=None):
        pass

    def __call__(self, grads, inplace=False):
        """grads: {objective: tensor or list of per-parameter tensors}; returns the same shape
        (written into the first objective's tensors when `inplace`)."""
        gs = list(grads.values())
        if torch.is_tensor(gs[0]):
            return torch.stack(gs).sum(0), {}
        total = gs[0] if inplace else list(gs[0])
        for g in gs[1:]:
            if inplace:
                torch._foreach_add_(total, g)
            else:
                total = torch._foreach_add(total, g)
        return list(total), {}


def unwrap(model):
    return model.module if hasattr(model, "module") else model


def check_finite(loss_dict, iteration):
    """Stop training on a non-finite loss term, naming it (one host sync for all terms)."""
    values = torch.stack([v.detach().float().reshape(()) for v in loss_dict.values()])
    if not bool(torch.isfinite(values).all()):
        bad = {k: float(v.detach()) for k, v in loss_dict.items() if not torch.isfinite(v.detach()).all()}
        raise FloatingPointError(f"non-finite loss at iteration {iteration}: " +
                                 ", ".join(f"'{k}' = {v}" for k, v in bad.items()))


class DGStep(SimpleTrainer):
    """Multi-objective, multi-optimizer step with gradient accumulation, surgery and AMP."""

    def __init__(self, cfg, model, data_loader, optimizers, extra_loaders=None, schedule=None):
        make_resumable(data_loader)
        super().__init__(model, data_loader, optimizers["main"], None)
        self.optimizers = optimizers
        self.extra_loaders = dict(extra_loaders or {})
        for loader in self.extra_loaders.values():
            make_resumable(loader)
        self._extra_iters = {k: iter(v) for k, v in self.extra_loaders.items()}
        self._consumed = dict.fromkeys(["main", *self.extra_loaders], 0)   # batches since (re)build
        self._pending_data_state = None
        self.schedule = schedule
        self.accum_steps = max(1, cfg.SOLVER.ACCUM_STEPS)
        self.nan_check = cfg.SOLVER.NAN_CHECK
        gc = cfg.SOLVER.GRAD_COMBINE
        self.combiner = GRAD_COMBINERS.get(gc.NAME)(cfg)
        # Combiners that accept `inplace` may reuse the step's gradient buffers for their result.
        self._combine_kwargs = {"inplace": True} if "inplace" in inspect.signature(self.combiner).parameters else {}
        self.aux_losses = frozenset(gc.AUX_LOSSES)
        names = {p: n for n, p in unwrap(model).named_parameters()}
        self.shared = {p for p, n in names.items() if any(n.startswith(s) for s in gc.SHARED)}
        self.amp = bool(cfg.SOLVER.AMP.ENABLED) and torch.cuda.is_available()
        if cfg.SOLVER.AMP.ENABLED and not self.amp:
            warnings.warn("SOLVER.AMP.ENABLED but CUDA is not available: training in fp32.")
        self.grad_scaler = torch.amp.GradScaler("cuda") if self.amp else None

    # ------------------------------------------------------------------ data
    def set_data_loader(self, loader):
        """Replace the main loader (e.g. after re-clustering pseudo labels); the old one's
        background thread and worker processes are stopped first (plugins.data.shutdown_loader)."""
        _retire(self.data_loader, self._data_loader_iter, loader)
        make_resumable(loader)
        self.data_loader = loader
        self._data_loader_iter = iter(loader)
        self._consumed["main"] = 0

    def set_extra_loader(self, name, loader):
        """Replace (or add) the extra loader `name`, stopping the old one's thread and workers."""
        if name in self.extra_loaders:
            _retire(self.extra_loaders[name], self._extra_iters.get(name), loader)
        make_resumable(loader)
        self.extra_loaders[name] = loader
        self._extra_iters[name] = iter(loader)
        self._consumed[name] = 0

    def next_batch(self):
        data = next(self._data_loader_iter)
        self._consumed["main"] += 1
        if self._extra_iters:
            data = dict(data)
            data["extra"] = {k: next(it) for k, it in self._extra_iters.items()}
            for k in self._extra_iters:
                self._consumed[k] += 1
        return data

    # ------------------------------------------------------------------ resume (plugins.engine.resume)
    def state_dict(self):
        """{loader name: {"seed", "batches"}}: where each training loader's stream stands."""
        loaders = {"main": self.data_loader, **self.extra_loaders}
        return {k: loader_state(v, self._consumed[k]) for k, v in loaders.items()}

    def load_state_dict(self, state):
        """Kept until `restore_data_position` (after the hooks' before_train, which may rebuild loaders)."""
        self._pending_data_state = dict(state)

    def restore_data_position(self):
        """Restart each loader at its saved seed and position. Raises KeyError naming the loaders
        when the checkpoint's loaders differ from this run's."""
        state, self._pending_data_state = self._pending_data_state, None
        if state is None:
            return
        loaders = {"main": self.data_loader, **self.extra_loaders}
        if set(state) != set(loaders):
            raise KeyError(f"the checkpoint's training loaders {sorted(state)} differ from this run's "
                           f"{sorted(loaders)} (checkpoint key 'data')")
        for k, loader in loaders.items():
            it = restart_at(loader, state[k])
            if k == "main":
                self._data_loader_iter = it
            else:
                self._extra_iters[k] = it
            self._consumed[k] = state[k]["batches"]

    # ------------------------------------------------------------------ step
    def run_step(self):
        assert self.model.training, "[DGStep] model was changed to eval mode!"
        phase = self.schedule.current_phase(self.iter) if self.schedule is not None else TRAIN
        unwrap(self.model).phase = phase.name
        acc = [None] * len(phase.updates)
        data_time = 0.0
        for micro in range(self.accum_steps):
            start = time.perf_counter()
            data = self.next_batch()
            data_time += time.perf_counter() - start
            ctx = self.model.no_sync() if isinstance(self.model, torch.nn.parallel.DistributedDataParallel) \
                else torch.enable_grad()
            with ctx:
                with torch.autocast("cuda", enabled=self.amp):
                    loss_dict = self.model(data)
                if self.nan_check:
                    check_finite(loss_dict, self.iter)
                for i, upd in enumerate(phase.updates):
                    grads = self._objective_grads(loss_dict, upd, retain=i + 1 < len(phase.updates))
                    acc[i] = grads if acc[i] is None else _add(acc[i], grads)
        self._write_metrics(loss_dict, data_time)
        for upd, grads in zip(phase.updates, acc):
            self._apply(upd, grads)
        if self.grad_scaler is not None:
            self.grad_scaler.update()

    def _params(self, upd):
        seen, out = set(), []
        for name in upd.optimizers:
            for group in self.optimizers[name].param_groups:
                for p in group["params"]:
                    if p.requires_grad and p not in seen:
                        seen.add(p)
                        out.append(p)
        return out

    def _objective_grads(self, loss_dict, upd, retain):
        """{objective: [grad per param]} of this micro-batch, scaled for accumulation and AMP."""
        terms = {k: v for k, v in loss_dict.items() if not upd.losses or k in upd.losses}
        if not terms:
            raise KeyError(f"update {upd} selects no loss term; the model returned {sorted(loss_dict)}")
        objectives = {"primary": [v for k, v in terms.items() if k not in self.aux_losses],
                      "aux": [v for k, v in terms.items() if k in self.aux_losses]}
        if isinstance(self.combiner, SumCombiner):   # one backward pass: the common case
            objectives = {"primary": objectives["primary"] + objectives["aux"]}
        objectives = {k: v for k, v in objectives.items() if v}
        params = self._params(upd)
        out = {}
        for j, (name, vals) in enumerate(objectives.items()):
            loss = sum(vals) / self.accum_steps
            if self.grad_scaler is not None:
                loss = self.grad_scaler.scale(loss)
            g = torch.autograd.grad(loss, params, retain_graph=retain or j + 1 < len(objectives),
                                    allow_unused=True)
            out[name] = [torch.zeros_like(p) if gi is None else gi for p, gi in zip(params, g)]
        return out

    def _apply(self, upd, grads):
        params = self._params(upd)
        if comm.get_world_size() > 1:   # average every objective across processes first
            for g in grads.values():
                flat = torch.cat([x.reshape(-1) for x in g])
                dist.all_reduce(flat)
                flat /= comm.get_world_size()
                _unflatten_into(flat, g)
        # Shared parameters take the combiner's output (when there is more than one objective);
        # every other parameter the plain sum of the objectives' gradients.
        shared_idx = [i for i, p in enumerate(params) if p in self.shared] if len(grads) > 1 else []
        shared = set(shared_idx)
        total = [None if i in shared else _sum([g[i] for g in grads.values()]) for i in range(len(params))]
        if shared_idx:   # per-parameter lists: no concatenation of the objectives' gradients
            combined, stats = self.combiner({k: [g[i] for i in shared_idx] for k, g in grads.items()},
                                            **self._combine_kwargs)
            for i, g in zip(shared_idx, combined):
                total[i] = g
            if stats and comm.is_main_process():
                get_event_storage().put_scalars(**stats)
        for p, g in zip(params, total):
            p.grad = g
        for name in upd.optimizers:
            opt = self.optimizers[name]
            if self.grad_scaler is not None:
                self.grad_scaler.step(opt)
            else:
                opt.step()
            opt.zero_grad(set_to_none=True)


def _retire(old_loader, old_iter, new_loader):
    """Stop what iterates `old_loader` before `new_loader` replaces it. A torch loader with persistent
    workers handed in again keeps its iterator (iter() resets and reuses it)."""
    if old_iter is not None and not (old_loader is new_loader and old_iter is not old_loader):
        shutdown_loader(old_iter)
    if old_loader is not new_loader and old_loader is not old_iter:
        shutdown_loader(old_loader)


def _sum(tensors):
    out = tensors[0]
    for t in tensors[1:]:
        out = out + t
    return out


def _add(a, b):
    return {k: [x + y for x, y in zip(a[k], b[k])] for k in a}


def _unflatten_into(flat, tensors):
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset:offset + n].view_as(t))
        offset += n
