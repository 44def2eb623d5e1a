"""Domain-specific BN (DSBN) and domain-adaptive BN (DABN) for any fastreid backbone.

`convert_dsbn(module, K)` replaces every BatchNorm2d (fastreid's `BatchNorm`, the BN half of
IBN-Net's `IBN` blocks, a neck's BN...) by a `DSBN2d` holding K copies of it ("experts"), so the
convolutions stay shared. Which normalisation a forward pass uses is chosen for the whole network
with `norm_route(model, route)`:

- DOMAIN (arg: per-sample domain ids, or the K segment sizes of a batch sorted by domain): each
  sample through its own domain's BN; batch statistics of that domain's samples in training
  (updating only that domain's running statistics), its running statistics in eval.
- EXPERT (arg: an expert index, or one per sample): expert i with its running statistics, never
  updated; the K domain experts F_i(x) of TAL Eq. 2.
- AVERAGE: the mean of the K expert outputs (DABN with uniform weights).
- ADAPTIVE (`DABN2d` only): DABN, Eq. 5, sum_i alpha_i (gamma_i x_hat_i + beta_i) with alpha from
  Eq. 6, softmax(W2 ReLU(W1 GAP(x))), per sample.
- SHARED (layers built with `shared_bn=True`): a separate plain BN, the "BN" baseline of DABN.

x_hat_i (Eq. 4) in AVERAGE/ADAPTIVE uses each expert's running statistics (`stats="running"`:
the DI stream then sees the experts' normalisations, as at test time) or, in training only, the
batch statistics of the input (`stats="batch"`; eval falls back to the running ones).
"""
import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["DSBN2d", "DABN2d", "convert_dsbn", "norm_route", "norm_layers", "record_domain_weights", "average_running_stats",
           "DOMAIN", "EXPERT", "AVERAGE", "ADAPTIVE", "SHARED"]

DOMAIN, EXPERT, AVERAGE, ADAPTIVE, SHARED = "domain", "expert", "average", "adaptive", "shared"


def _copy_bn(bn):
    new = nn.BatchNorm2d(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=True,
                         track_running_stats=True)
    with torch.no_grad():
        if bn.affine:
            new.weight.copy_(bn.weight), new.bias.copy_(bn.bias)
            new.weight.requires_grad_(bn.weight.requires_grad)
            new.bias.requires_grad_(bn.bias.requires_grad)
        if bn.track_running_stats and bn.running_mean is not None:
            new.running_mean.copy_(bn.running_mean), new.running_var.copy_(bn.running_var)
            new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new.to(bn.weight.device if bn.affine else bn.running_mean.device)


def _running_affine(bn):
    """(a, b) with bn_eval(x) = a * x + b per channel."""
    a = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return a, bn.bias - a * bn.running_mean


class DSBN2d(nn.Module):
    """K domain-specific BatchNorm2d (same channels) and, optionally, a shared plain one."""

    def __init__(self, bn, num_domains, shared_bn=False, stats="running"):
        super().__init__()
        if stats not in ("running", "batch"):
            raise ValueError(f"stats must be 'running' or 'batch', got {stats!r}")
        self.num_features, self.eps, self.stats = bn.num_features, bn.eps, stats
        self.experts = nn.ModuleList([_copy_bn(bn) for _ in range(num_domains)])
        self.shared = _copy_bn(bn) if shared_bn else None
        self.route = (DOMAIN, None)   # set through norm_route()

    @property
    def num_domains(self):
        return len(self.experts)

    def forward(self, x):
        mode, arg = self.route
        if mode == DOMAIN:
            return self._per_domain(x, arg)
        if mode == EXPERT:   # arg: one expert for all, or one per sample (a batched K-expert pass)
            if isinstance(arg, int):
                a, b = _running_affine(self.experts[arg])
                return x * a[:, None, None] + b[:, None, None]
            ab = [_running_affine(bn) for bn in self.experts]
            ids = torch.as_tensor(arg, device=x.device).long()
            a, b = torch.stack([v[0] for v in ab])[ids], torch.stack([v[1] for v in ab])[ids]
            return x * a[:, :, None, None] + b[:, :, None, None]
        if mode == SHARED:
            if self.shared is None:
                raise RuntimeError("this DSBN2d has no shared BN (built without shared_bn=True)")
            return self.shared(x)
        if mode == AVERAGE:
            return self._mix(x, x.new_full((x.shape[0], self.num_domains), 1.0 / self.num_domains))
        raise ValueError(f"DSBN2d cannot run route {mode!r}")

    def _per_domain(self, x, domains):
        """domains: per-sample ids [N], or the K segment sizes of a batch sorted by domain
        (no host synchronisation per layer)."""
        if domains is None:
            raise ValueError("the DOMAIN route needs the batch's domain ids")
        if isinstance(domains, (list, tuple)):
            counts, order = list(domains), None
            if len(counts) != self.num_domains or sum(counts) != x.shape[0]:
                raise ValueError(f"segment sizes {counts} do not fit {self.num_domains} domains "
                                 f"and a batch of {x.shape[0]}")
        else:
            domains = torch.as_tensor(domains, device=x.device).long().view(-1)
            if domains.numel() != x.shape[0]:
                raise ValueError(f"{domains.numel()} domain ids for a batch of {x.shape[0]}")
            if bool(((domains < 0) | (domains >= self.num_domains)).any()):
                raise ValueError(f"domain ids must lie in [0, {self.num_domains}), got "
                                 f"{sorted(set(domains.tolist()))}")
            counts = torch.bincount(domains, minlength=self.num_domains).tolist()
            order = torch.argsort(domains, stable=True)
            x = x.index_select(0, order)
        pieces = [self.experts[d](p) for d, p in enumerate(x.split(counts)) if counts[d]]
        out = torch.cat(pieces) if len(pieces) > 1 else pieces[0]
        return out if order is None else out.index_select(0, torch.argsort(order))

    def _mix(self, x, alpha):
        """sum_i alpha[n, i] * (gamma_i * x_hat_i + beta_i), Eq. 5, as one affine map per sample."""
        gammas = torch.stack([bn.weight for bn in self.experts])          # [K, C]
        betas = torch.stack([bn.bias for bn in self.experts])
        if self.stats == "batch" and self.training:   # x_hat from the input's own statistics
            x_hat = F.batch_norm(x, None, None, training=True, eps=self.eps)
            return x_hat * (alpha @ gammas)[:, :, None, None] + (alpha @ betas)[:, :, None, None]
        ab = [_running_affine(bn) for bn in self.experts]
        a, b = torch.stack([v[0] for v in ab]), torch.stack([v[1] for v in ab])
        return x * (alpha @ a)[:, :, None, None] + (alpha @ b)[:, :, None, None]

    def extra_repr(self):
        return f"{self.num_features}, experts={self.num_domains}, stats={self.stats}"


class DABN2d(DSBN2d):
    """DSBN2d with the domain attention of Eq. 6: GAP -> FC(C, C/r) -> ReLU -> FC(C/r, K) -> softmax.

    The last FC starts at zero, so alpha starts uniform (DABN = AVERAGE at initialisation).
    """

    def __init__(self, bn, num_domains, reduction=16, shared_bn=False, stats="running"):
        super().__init__(bn, num_domains, shared_bn, stats)
        hidden = max(1, bn.num_features // reduction)
        self.attention = nn.Sequential(nn.Linear(bn.num_features, hidden), nn.ReLU(inplace=True),
                                       nn.Linear(hidden, num_domains))
        nn.init.zeros_(self.attention[2].weight), nn.init.zeros_(self.attention[2].bias)
        self.attention.to(self.experts[0].weight.device)
        self.weights_sink = None   # a list while `record_domain_weights` runs: the alphas computed

    def domain_weights(self, x):
        """alpha of Eq. 6, [N, K]."""
        return torch.softmax(self.attention(x.mean(dim=(2, 3))), dim=1)

    def forward(self, x):
        if self.route[0] == ADAPTIVE:
            alpha = self.domain_weights(x)
            if self.weights_sink is not None:
                self.weights_sink.append(alpha.detach().float())
            return self._mix(x, alpha)
        return super().forward(x)


@contextlib.contextmanager
def record_domain_weights(module):
    """Inside the block every DABN2d under `module` appends the alpha [N, K] (Eq. 6) it computes to
    the yielded list (detached float copies, in call order; the forward pass is unchanged)."""
    layers = [m for m in module.modules() if isinstance(m, DABN2d)]
    alphas = []
    for m in layers:
        m.weights_sink = alphas
    try:
        yield alphas
    finally:
        for m in layers:
            m.weights_sink = None


def convert_dsbn(module, num_domains, dabn=False, reduction=16, shared_bn=False, stats="running"):
    """Replace every BatchNorm2d under `module` (in place; the module itself if it is one) by a
    DSBN2d (or DABN2d with `dabn`) whose K experts start as copies of it. Returns the module."""
    def make(bn):
        if dabn:
            return DABN2d(bn, num_domains, reduction, shared_bn, stats)
        return DSBN2d(bn, num_domains, shared_bn, stats)

    if isinstance(module, nn.BatchNorm2d):
        return make(module)
    for name, child in module.named_children():
        if isinstance(child, DSBN2d):
            continue
        if isinstance(child, _BatchNorm):
            if not isinstance(child, nn.BatchNorm2d) or type(child).forward is not _BatchNorm.forward:
                raise TypeError(f"{name}: {type(child).__name__} is not a plain BatchNorm2d "
                                "(GhostBN, SyncBN...): DSBN converts plain BatchNorm2d layers only")
            setattr(module, name, make(child))
        else:
            convert_dsbn(child, num_domains, dabn, reduction, shared_bn, stats)
    return module


def norm_layers(module):
    return [m for m in module.modules() if isinstance(m, DSBN2d)]


@contextlib.contextmanager
def norm_route(module_or_layers, mode, arg=None):
    """Run every DSBN2d of a module (or of a list of them) through `mode` inside the block."""
    layers = norm_layers(module_or_layers) if isinstance(module_or_layers, nn.Module) \
        else list(module_or_layers)
    if mode == ADAPTIVE and not all(isinstance(m, DABN2d) for m in layers):
        raise ValueError("the ADAPTIVE route needs DABN2d layers (convert_dsbn(..., dabn=True))")
    if mode == EXPERT and arg is None:
        raise ValueError("the EXPERT route needs an expert index")
    old = [m.route for m in layers]
    for m in layers:
        m.route = (mode, arg)
    try:
        yield
    finally:
        for m, r in zip(layers, old):
            m.route = r


@torch.no_grad()
def average_running_stats(module):
    """All-reduce every BN running mean and variance of `module` (plain BNs and every DSBN expert)
    to their mean over the processes; a no-op in a single process. Returns the number of buffers.

    Under DDP each process normalises its own batch (batch statistics stay per process, as with
    unsynchronised BN; DSBN routes samples by domain, which SyncBN cannot) and updates its own
    running statistics, so they drift apart. Called after every step, this keeps them identical
    on every process; since the running update is linear, the result is the running average of
    the processes' mean batch statistics (an expert that saw no sample of its domain on one
    process still enters the mean with its old value)."""
    import torch.distributed as torch_dist
    if not (torch_dist.is_available() and torch_dist.is_initialized()) or torch_dist.get_world_size() == 1:
        return 0
    bufs = [b for name, b in module.named_buffers()
            if name.endswith(("running_mean", "running_var")) and b.is_floating_point()]
    if not bufs:
        return 0
    flat = torch.cat([b.reshape(-1) for b in bufs])
    torch_dist.all_reduce(flat)
    flat /= torch_dist.get_world_size()
    offset = 0
    for b in bufs:
        b.copy_(flat[offset:offset + b.numel()].view_as(b))
        offset += b.numel()
    return len(bufs)
