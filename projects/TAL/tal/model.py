"""TAL: two-stream adaptive learning (Yan et al.), as a fastreid meta-architecture.

One backbone (shared convolutions) whose every BN is a DSBN2d (plugins.dsbn), with a 3x3 conv + BN
neck per matched stage, then L2-normalised maps matched by (MS-)QAConv (tal.qaconv).

Training (one hybrid-source batch, three passes):
  DS, Eq. 1     each sample through its own domain's BNs -> MS-QAConv -> loss_ds;
  DS, Eq. 2     the batch through all K experts (running statistics, no gradient into the
                backbone) -> MSDA-QAConv -> loss_ds_hybrid (only MSDA-QAConv learns from it);
  DI, Eq. 5-6   the batch through DABN -> MS-QAConv -> loss_di.
Logged in training (EventStorage scalars, so in OUTPUT_DIR/metrics.json): DABN's weight entropy
and routing accuracy (`dabn_routing_stats`), the evidence that Eq. 6 acted (tools/diagnostics.py).
Inference: the logits of the test streams (DS: MSDA-QAConv over the K experts; DI: MS-QAConv)
are summed. In eval mode the model returns one flat vector per image (global descriptor + every
stream's maps); `split_features` and `pair_logits` score pairs from it (tal.evaluation).
"""
import contextlib
import logging
import math

import torch
import torch.nn.functional as F
from fastreid.config import configurable
from fastreid.modeling.backbones import build_backbone
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY
from fastreid.utils.events import get_event_storage
from torch import nn

from plugins.dsbn import ADAPTIVE, AVERAGE, DOMAIN, EXPERT, SHARED, convert_dsbn, norm_route, record_domain_weights
from .qaconv import MSDAQAConv, MSQAConv

from .losses import matching_loss

logger = logging.getLogger(__name__)

STAGES = ("res2", "res3", "res4", "res5")   # outputs of layer1..layer4
DI_ROUTES = {"dabn": ADAPTIVE, "average": AVERAGE, "bn": SHARED}


def infer_num_domains(cfg):
    """K: the domain groups, MODEL.TAL.NUM_DOMAINS, the sources, or the training cameras."""
    t = cfg.MODEL.TAL
    if t.DOMAIN_GROUPS:
        return len(t.DOMAIN_GROUPS)
    if t.NUM_DOMAINS > 0:
        return t.NUM_DOMAINS
    if cfg.DATASETS.DOMAIN_LABEL == "dataset":
        return len(cfg.DATASETS.NAMES)
    from plugins.data.build import load_train_items
    return len({it[3]["domain"] for it in load_train_items(cfg)})


def _stage_outputs(backbone, x, wanted):
    """{stage: map} for the wanted stages of a fastreid ResNet (stops after the last one)."""
    b, out = backbone, {}
    x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
    for name, layer in zip(STAGES, (b.layer1, b.layer2, b.layer3, b.layer4)):
        x = layer(x)
        if name in wanted:
            out[name] = x
            if len(out) == len(wanted):
                break
    return out


@torch.no_grad()
def dabn_routing_stats(alphas, experts):
    """Evidence that DABN's domain attention (Eq. 6) acted, from the weights of one batch.

    Args:
        alphas: [L x [N, K]]: alpha of each DABN layer l run on the batch (rows sum to 1).
        experts: [N] long: each sample's own expert (its source domain's, `TAL.expert_ids`).
    Returns {name: float}:
        dabn_entropy: mean over layers and samples of H(alpha) = -sum_i alpha_i ln alpha_i (nats);
        dabn_entropy_max: ln K, the entropy of uniform weights (DABN = the experts' average; where
            DABN starts, its last FC being zero);
        dabn_routing_acc: share of (layer, sample) pairs whose largest weight is the sample's own
            expert (ties go to the lowest index, so uniform weights score expert 0's share);
        dabn_routing_acc_e{k}: the same over the samples of expert k, for each k in the batch;
        dabn_routing_chance: the largest expert's share of the batch (a router that always picks
            one expert scores at most this).
    """
    if not alphas:
        raise ValueError("dabn_routing_stats: no DABN weights (no DABN layer ran)")
    a = torch.stack([x.float() for x in alphas])                         # [L, N, K]
    if a.shape[1] != experts.numel():
        raise ValueError(f"dabn_routing_stats: {a.shape[1]} samples of weights, {experts.numel()} expert ids")
    num_experts = a.shape[2]
    experts = experts.to(a.device).long().view(1, -1)
    entropy = -torch.special.xlogy(a, a).sum(dim=2)                      # [L, N]
    hit = (a.argmax(dim=2) == experts).float()                          # [L, N]
    counts = torch.bincount(experts.view(-1), minlength=num_experts)
    per_expert = torch.zeros(num_experts, device=a.device).index_add_(0, experts.view(-1), hit.sum(0))
    values = torch.cat([torch.stack([entropy.mean(), hit.mean(), counts.max() / counts.sum()]),
                        per_expert / (counts * a.shape[0]).clamp_min(1)]).tolist()   # one host sync
    out = {"dabn_entropy": values[0], "dabn_entropy_max": math.log(num_experts),
           "dabn_routing_acc": values[1], "dabn_routing_chance": values[2]}
    for k, n in enumerate(counts.tolist()):
        if n:
            out[f"dabn_routing_acc_e{k}"] = values[3 + k]
    return out


@META_ARCH_REGISTRY.register()
class TAL(nn.Module):
    @configurable
    def __init__(self, *, backbone, scales, input_size, neck_dim=128, num_domains=1,
                 domain_groups=(), streams=("ds", "di"), test_streams=(), di_norm="dabn",
                 dabn_reduction=16, dabn_stats="running", ds_matcher="msda", msda_reduction=16,
                 ds_pairs="domain", loss="triplet", margin=16.0,
                 pixel_mean=(0.0, 0.0, 0.0), pixel_std=(1.0, 1.0, 1.0)):
        super().__init__()
        streams, test_streams = tuple(streams), tuple(test_streams) or tuple(streams)
        if not streams or (set(streams) != {"base"} and not set(streams) <= {"ds", "di"}):
            raise ValueError(f"MODEL.TAL.STREAMS must be ('base',) or a subset of ('ds', 'di'), got {streams}")
        if not set(test_streams) <= set(streams):
            raise ValueError(f"MODEL.TAL.TEST_STREAMS {test_streams} must be trained streams {streams}")
        if di_norm not in DI_ROUTES or ds_matcher not in ("msda", "average", "voting") \
                or ds_pairs not in ("domain", "all"):
            raise ValueError(f"bad DI_NORM {di_norm!r} / DS_MATCHER {ds_matcher!r} / DS_PAIRS {ds_pairs!r}")
        if getattr(backbone, "NL_1", None) is not None:
            raise ValueError("TAL runs the ResNet stage by stage: MODEL.BACKBONE.WITH_NL is not supported")
        self.scales = sorted(scales, key=STAGES.index)
        self.streams, self.test_streams = streams, test_streams
        self.di_norm, self.ds_pairs, self.loss_kind, self.margin = di_norm, ds_pairs, loss, margin
        self.backbone = backbone
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, -1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, -1, 1, 1), False)
        self._build_necks(input_size, neck_dim)
        self.num_domains = 0 if streams == ("base",) else num_domains
        self._build_domain_map(domain_groups)
        if self.num_domains:   # every BN of backbone and necks -> K experts (+ DABN / a plain BN)
            di = "di" in streams
            for part in (self.backbone, self.necks):
                convert_dsbn(part, self.num_domains, dabn=di and di_norm == "dabn", reduction=dabn_reduction,
                             shared_bn=di and di_norm == "bn", stats=dabn_stats)
        lengths = [h * w for _, h, w in self.map_shapes]
        self.base_matcher = MSQAConv(lengths) if "base" in streams else None
        self.ds_matcher = MSQAConv(lengths) if "ds" in streams else None
        self.msda = MSDAQAConv(self.num_domains, lengths, msda_reduction,
                               "attention" if ds_matcher == "msda" else "average") \
            if "ds" in streams and ds_matcher != "voting" else None
        self.di_matcher = MSQAConv(lengths) if "di" in streams else None

    @torch.no_grad()
    def _build_necks(self, input_size, neck_dim):
        """One 3x3 conv + BN per scale (sized by a dummy forward); self.map_shapes = (C, H, W)."""
        was = self.backbone.training
        outs = _stage_outputs(self.backbone.eval(), torch.zeros(1, 3, *input_size), set(self.scales))
        self.backbone.train(was)
        shapes = {s: tuple(outs[s].shape[1:]) for s in self.scales}
        self.necks = nn.ModuleDict({
            s: nn.Sequential(nn.Conv2d(c, neck_dim, 3, padding=1, bias=False), nn.BatchNorm2d(neck_dim))
            for s, (c, _, _) in shapes.items()} if neck_dim > 0 else {})
        self.map_shapes = [(neck_dim or shapes[s][0],) + shapes[s][1:] for s in self.scales]

    def _build_domain_map(self, domain_groups):
        """domain label -> expert (-1: none) from DOMAIN_GROUPS, identity by default."""
        groups = [list(g) for g in domain_groups] or [[d] for d in range(self.num_domains)]
        if self.num_domains and len(groups) != self.num_domains:
            raise ValueError(f"{len(groups)} DOMAIN_GROUPS for {self.num_domains} experts")
        lookup = torch.full((max([d for g in groups for d in g], default=0) + 1,), -1, dtype=torch.long)
        for e, g in enumerate(groups):
            lookup[torch.tensor(g, dtype=torch.long)] = e
        self.register_buffer("domain_to_expert", lookup, False)

    @classmethod
    def from_config(cls, cfg):
        t = cfg.MODEL.TAL
        if list(cfg.INPUT.SIZE_TRAIN) != list(cfg.INPUT.SIZE_TEST):
            raise ValueError("QAConv's FC is sized by the map: INPUT.SIZE_TRAIN and SIZE_TEST must match")
        base = tuple(t.STREAMS) == ("base",)
        return dict(
            backbone=build_backbone(cfg), scales=list(t.SCALES), input_size=tuple(cfg.INPUT.SIZE_TRAIN),
            neck_dim=t.NECK_DIM, num_domains=0 if base else infer_num_domains(cfg),
            domain_groups=[list(g) for g in t.DOMAIN_GROUPS], streams=tuple(t.STREAMS),
            test_streams=tuple(t.TEST_STREAMS), di_norm=t.DI_NORM, dabn_reduction=t.DABN_REDUCTION,
            dabn_stats=t.DABN_STATS, ds_matcher=t.DS_MATCHER, msda_reduction=t.MSDA_REDUCTION,
            ds_pairs=t.DS_PAIRS, loss=t.LOSS, margin=t.MARGIN,
            pixel_mean=cfg.MODEL.PIXEL_MEAN, pixel_std=cfg.MODEL.PIXEL_STD)

    @property
    def device(self):
        return self.pixel_mean.device

    # ------------------------------------------------------------------ feature maps
    def maps(self, images, route=None):
        """L2-normalised maps of every scale, [N, C, H, W] each, under a BN route."""
        ctx = norm_route(self, *route) if route is not None else contextlib.nullcontext()
        with ctx:
            outs = _stage_outputs(self.backbone, images, set(self.scales))
            return [F.normalize(self.necks[s](outs[s]) if s in self.necks else outs[s], dim=1)
                    for s in self.scales]

    def expert_maps(self, images):
        """Maps of all K experts in one batched pass: [N, K, C, H, W] per scale (Eq. 2)."""
        n, k = images.shape[0], self.num_domains
        ids = torch.arange(k, device=images.device).repeat_interleave(n)
        maps = self.maps(images.repeat(k, 1, 1, 1), (EXPERT, ids))
        return [m.view(k, n, *m.shape[1:]).transpose(0, 1) for m in maps]

    def expert_ids(self, domains):
        domains = torch.as_tensor(domains, device=self.device).long()
        if bool((domains >= len(self.domain_to_expert)).any()):
            raise ValueError(f"domain label {int(domains.max())} has no expert: set MODEL.TAL.NUM_DOMAINS "
                             f"/ DOMAIN_GROUPS for the training domains")
        experts = self.domain_to_expert[domains]
        if bool((experts < 0).any()):
            missing = sorted(set(domains[experts < 0].tolist()))
            raise ValueError(f"domain labels {missing} are in no MODEL.TAL.DOMAIN_GROUPS entry")
        return experts

    def _by_expert(self, domains):
        """(sorted expert ids, sorting permutation, K segment sizes): the batch sorted by expert
        lets every DSBN layer slice it without a host synchronisation."""
        experts = self.expert_ids(domains)
        order = torch.argsort(experts, stable=True)
        segments = torch.bincount(experts, minlength=self.num_domains).tolist()
        return experts[order], order, segments

    def preprocess_image(self, batched_inputs):
        images = batched_inputs["images"] if isinstance(batched_inputs, dict) else batched_inputs
        return (images.to(self.device) - self.pixel_mean) / self.pixel_std

    # ------------------------------------------------------------------ training
    def forward(self, batched_inputs):
        images = self.preprocess_image(batched_inputs)
        if not self.training:
            return self.inference_features(images)
        targets = batched_inputs["targets"].to(self.device)
        losses = {}
        if "base" in self.streams:
            maps = self.maps(images)
            losses["loss_base"] = self._loss(self.base_matcher(maps, maps), targets)
        if "ds" in self.streams:
            experts, order, segments = self._by_expert(batched_inputs["domains"])
            maps = self.maps(images[order], (DOMAIN, segments))
            valid = experts[:, None] == experts[None, :] if self.ds_pairs == "domain" else None
            losses["loss_ds"] = self._loss(self.ds_matcher(maps, maps), targets[order], valid)
            if self.msda is not None:
                with torch.no_grad():   # the experts keep their domain-specific knowledge
                    maps = self.expert_maps(images)
                losses["loss_ds_hybrid"] = self._loss(self.msda(maps, maps), targets)
        elif "di" in self.streams and self.di_norm != "bn":
            with torch.no_grad():   # DI alone: the experts' statistics still follow their domains
                _, order, segments = self._by_expert(batched_inputs["domains"])
                self.maps(images[order], (DOMAIN, segments))
        if "di" in self.streams:
            with self._logging_dabn_weights(batched_inputs):
                maps = self.maps(images, (DI_ROUTES[self.di_norm], None))
            losses["loss_di"] = self._loss(self.di_matcher(maps, maps), targets)
        return losses

    @contextlib.contextmanager
    def _logging_dabn_weights(self, batched_inputs):
        """Around the DI pass with DABN in a training loop: records every DABN layer's alpha
        (Eq. 6, as the layer computed it, detached: `plugins.dsbn.record_domain_weights`) and puts
        `dabn_routing_stats` of them into the EventStorage. Nothing is recorded outside a training
        loop, or without DABN."""
        try:
            storage = get_event_storage() if self.di_norm == "dabn" else None
        except AssertionError:   # no EventStorage: not in a training loop
            storage = None
        if storage is None:
            yield
            return
        with record_domain_weights(self) as alphas:
            yield
        if alphas:
            storage.put_scalars(**dabn_routing_stats(alphas, self.expert_ids(batched_inputs["domains"])))

    def _loss(self, scores, targets, valid=None):
        return matching_loss(self.loss_kind, scores, targets, self.margin, valid)

    # ------------------------------------------------------------------ inference
    def feature_layout(self):
        """[(name, shape per image)]: the flat eval output, in order."""
        layout = [("global", (len(self.test_streams) * sum(c for c, _, _ in self.map_shapes),))]
        for stream in self.test_streams:
            for s, shape in zip(self.scales, self.map_shapes):
                layout.append((f"{stream}/{s}", ((self.num_domains,) if stream == "ds" else ()) + shape))
        return layout

    def inference_features(self, images):
        """[N, D]: L2-normalised GAP of every map (the shortlist's global descriptor), then maps."""
        parts, pooled = [], []
        for stream in self.test_streams:
            if stream == "ds":
                maps = self.expert_maps(images)
                pooled += [m.mean(dim=(1, 3, 4)) for m in maps]
            else:
                maps = self.maps(images, (DI_ROUTES[self.di_norm], None) if stream == "di" else None)
                pooled += [m.mean(dim=(2, 3)) for m in maps]
            parts += [m.flatten(1) for m in maps]
        return torch.cat([F.normalize(torch.cat(pooled, dim=1), dim=1)] + parts, dim=1)

    def split_features(self, flat):
        """Flat eval output [..., D] -> {"global": [..., Dg], stream: [maps per scale]}."""
        out, offset, lead = {}, 0, flat.shape[:-1]
        for name, shape in self.feature_layout():
            size = int(torch.Size(shape).numel())
            part = flat[..., offset:offset + size].reshape(*lead, *shape)
            offset += size
            if name == "global":
                out[name] = part
            else:
                out.setdefault(name.split("/")[0], []).append(part)
        if offset != flat.shape[-1]:
            raise ValueError(f"features have {flat.shape[-1]} values, the layout {offset}")
        return out

    def pair_logits(self, q, g, paired=False):
        """Summed logits of the test streams for split features q (P images) and g (G images, or
        with paired=True [P, k] images: each probe against its own k)."""
        total = 0
        for stream in self.test_streams:
            if stream == "ds" and self.msda is None:   # voting: sum of the experts' own logits
                for i in range(self.num_domains):
                    total = total + self.ds_matcher([m[:, i] for m in q["ds"]],
                                                    [m[..., i, :, :, :] for m in g["ds"]], paired)
            elif stream == "ds":
                total = total + self.msda(q["ds"], g["ds"], paired)
            else:
                matcher = self.di_matcher if stream == "di" else self.base_matcher
                total = total + matcher(q[stream], g[stream], paired)
        return total

    def pair_bytes(self):
        """Approximate transient bytes per scored pair (similarity matrix and responses)."""
        hw = [h * w for _, h, w in self.map_shapes]
        maps = sum(self.num_domains if s == "ds" else 1 for s in self.test_streams)
        return 4 * (2 * max(hw) ** 2 + 4 * maps * sum(hw) + 64)
