"""DomainMix stage 1: pseudo labels by SpCL (Ge et al., NeurIPS 2020), as the DomainMix paper runs
it (Sec. 4.2: "SpCL is used to generate pseudo labels ... standard training settings, but the
training iterations in each epoch are set to 800").

Model (`DomainMixSpCL`): fastreid's Baseline with every BatchNorm turned into domain-specific BN
(`plugins.dsbn`, expert 0 = the labelled source, 1 = the unlabelled target) and a
`plugins.clustering.spcl.HybridMemory`. A training step takes a source batch (main loader) and a
target batch (extra loader "target"), runs them through their own BNs, and minimises SpCL's
unified contrastive loss of both on the L2-normalised BNNeck features (`loss_source`, `loss_target`).
Evaluation and feature extraction use the target BN (SpCL's public code does).

Trainer (`DomainMixSpCLTrainer`): fills the memory before training (source class centroids, target
instance features), re-clusters the memory's target rows at every epoch with SpCL's self-paced
criteria (`plugins.clustering.spcl.SpCLHook`) and rebuilds the target loader from the labels
(clusters as identities, un-clustered images as one-image identities, as in SpCL). At the end it
writes OUTPUT_DIR/model_target_bn.pth: the network with its target BNs as plain BNs, the
DOMAINMIX.PSEUDO.WEIGHTS of the stage 2-3 configs (their model has no DSBN).
"""
import functools
import logging
import os

import numpy as np
import torch
import torch.nn.functional as F
from fastreid.config import configurable
from fastreid.data.transforms import build_transforms
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY, Baseline
from fastreid.utils import comm
from torch.nn.modules.batchnorm import _BatchNorm

from plugins.clustering import extract_features
from plugins.clustering.spcl import HybridMemory, SpCLHook, spcl_cluster
from plugins.data import DGCommDataset, build_dg_train_loader
from plugins.dsbn import DOMAIN, EXPERT, convert_dsbn, norm_route
from plugins.engine import DGTrainer
from plugins.engine.step import unwrap
from plugins.registry import TRAINER_REGISTRY

from .data import build_unlabelled_loaders, split_sources
from .trainer import knn_options

logger = logging.getLogger(__name__)

SOURCE, TARGET = 0, 1       # DSBN experts


def _frozen_bn_params(module):
    """Names 'module.param' of the BatchNorm parameters that do not train (fastreid's frozen
    BNNeck bias), to freeze them again in every expert after the DSBN conversion."""
    return [f"{n}.{p}" for n, m in module.named_modules() if isinstance(m, _BatchNorm)
            for p, t in m.named_parameters(recurse=False) if not t.requires_grad]


@META_ARCH_REGISTRY.register()
class DomainMixSpCL(Baseline):
    @configurable
    def __init__(self, *, memory=None, **kwargs):
        super().__init__(**kwargs)
        frozen = _frozen_bn_params(self)
        convert_dsbn(self.backbone, 2)
        convert_dsbn(self.heads, 2)
        for name in frozen:
            mod_name, param = name.rsplit(".", 1)
            for expert in self.get_submodule(mod_name).experts:
                getattr(expert, param).requires_grad_(False)
        self.memory = memory

    @classmethod
    def from_config(cls, cfg):
        ret = Baseline.from_config(cfg)
        s = cfg.DOMAINMIX.SPCL
        labelled, groups = split_sources(cfg)
        if len(groups) != 1:
            raise ValueError(f"SpCL adapts to one unlabelled target: DOMAINMIX.UNLABELLED must name exactly "
                             f"one dataset, got {tuple(cfg.DOMAINMIX.UNLABELLED)}")
        dim = cfg.MODEL.HEADS.EMBEDDING_DIM or cfg.MODEL.BACKBONE.FEAT_DIM
        ret["memory"] = HybridMemory(dim, len({it[1] for it in labelled}), len(next(iter(groups.values()))),
                                     temperature=s.TEMPERATURE, momentum=s.MOMENTUM, source_update=s.SOURCE_UPDATE)
        return ret

    def embed(self, images):
        """L2-normalised BNNeck features [B, D] of preprocessed images (the current BN route)."""
        fmap = self.backbone(images)
        return F.normalize(self.heads.bottleneck(self.heads.pool_layer(fmap))[..., 0, 0], dim=1)

    def forward(self, batched_inputs):
        if not self.training:
            with norm_route(self, EXPERT, TARGET):
                return super().forward(batched_inputs)
        if "extra" not in batched_inputs or "target" not in batched_inputs["extra"]:
            raise KeyError("DomainMixSpCL trains on a source batch and a target batch: the step's extra "
                           "loader 'target' is missing (TRAINER.NAME must be DomainMixSpCLTrainer)")
        target = batched_inputs["extra"]["target"]
        src, tgt = self.preprocess_image(batched_inputs), self.preprocess_image(target)
        with norm_route(self, DOMAIN, [len(src), len(tgt)]):
            feats = self.embed(torch.cat([src, tgt]))
        f_s, f_t = feats[:len(src)], feats[len(src):]
        rows_t = torch.as_tensor(target["index"], device=feats.device).long() + self.memory.num_source
        return {"loss_source": self.memory(f_s, batched_inputs["targets"].to(feats.device)),
                "loss_target": self.memory(f_t, rows_t)}


def target_bn_state_dict(model):
    """The model's state_dict with the target BN expert as the plain BN (`x.experts.1.k` ->
    `x.k`), the source experts and the memory dropped: loads into the same network without DSBN."""
    out = {}
    for k, v in unwrap(model).state_dict().items():
        if k.startswith("memory."):
            continue
        if ".experts." in k:
            head, rest = k.split(".experts.", 1)
            idx, tail = rest.split(".", 1)
            if int(idx) != TARGET:
                continue
            k = f"{head}.{tail}"
        out[k] = v
    return out


@TRAINER_REGISTRY.register()
class DomainMixSpCLTrainer(DGTrainer):
    @classmethod
    def build_train_loader(cls, cfg):
        """The labelled sources (DATASETS.NAMES), classes in fastreid's sorted pid order."""
        labelled, _ = split_sources(cfg)
        train_set = DGCommDataset(labelled, build_transforms(cfg, is_train=True), relabel=True)
        train_set.source = f"SpCL source set: DATASETS.NAMES {tuple(cfg.DATASETS.NAMES)}"
        return build_dg_train_loader(cfg, train_set=train_set)

    @classmethod
    def build_extra_loaders(cls, cfg):
        return {"target": cls.target_loader(cfg, np.full(len(cls.target_items(cfg)), -1))}

    @staticmethod
    def target_items(cfg):
        _, groups = split_sources(cfg)
        return next(iter(groups.values()))

    @classmethod
    def target_loader(cls, cfg, labels):
        """Target training loader: image i's identity is its cluster, or itself when un-clustered;
        batches carry "index" = the image's row in the target set (memory row - S)."""
        items = [(path, f"spcl:{lab}" if lab >= 0 else f"spcl_instance:{i}", cam, extras)
                 for i, ((path, _, cam, extras), lab) in enumerate(zip(cls.target_items(cfg), labels))]
        train_set = DGCommDataset(items, build_transforms(cfg, is_train=True), relabel=True)
        train_set.source = f"SpCL target set: DOMAINMIX.UNLABELLED {tuple(cfg.DOMAINMIX.UNLABELLED)}"
        return build_dg_train_loader(cfg, train_set=train_set)

    @classmethod
    def checkpoint_optional_keys(cls, cfg):
        return ("heads.weight", "memory")

    def build_extra_hooks(self, cfg):
        p, s = cfg.DOMAINMIX.PSEUDO, cfg.DOMAINMIX.SPCL
        cluster = functools.partial(spcl_cluster, k1=p.K1, k2=p.K2, eps=p.EPS, eps_gap=s.EPS_GAP,
                                    min_samples=p.MIN_SAMPLES, quantile=s.INDEP_QUANTILE, **knn_options(cfg))
        return [SpCLHook(lambda: unwrap(self.model).memory, self.init_memory, cluster, self.on_labels,
                         [it[0] for it in self.target_items(cfg)], cfg.OUTPUT_DIR)]

    @torch.no_grad()
    def init_memory(self):
        """(source class centroids [S, D], target features [T, D]) of the current model (eval
        mode: target BN), SpCL's initialisation."""
        cfg, model = self.cfg, unwrap(self.model)
        labelled, _ = split_sources(cfg)
        ds = DGCommDataset(labelled, build_transforms(cfg, is_train=False), relabel=True)
        from fastreid.data.build import build_reid_test_loader
        loader = build_reid_test_loader(test_set=ds, test_batch_size=cfg.TEST.IMS_PER_BATCH, num_query=0,
                                        num_workers=cfg.DATALOADER.NUM_WORKERS)[0]
        feats = F.normalize(extract_features(model, loader), dim=1)
        pids = torch.as_tensor([ds.pid_dict[it[1]] for it in ds.img_items])
        n = model.memory.num_source
        centroids = torch.zeros(n, feats.shape[1]).index_add_(0, pids, feats)
        centroids /= torch.bincount(pids, minlength=n).clamp(min=1)[:, None].float()
        target = extract_features(model, next(iter(build_unlabelled_loaders(cfg).values())))
        return centroids, target

    def on_labels(self, labels, epoch):
        self._trainer.set_extra_loader("target", self.target_loader(self.cfg, labels))

    def train(self):
        results = super().train()
        if comm.is_main_process():
            path = os.path.join(self.cfg.OUTPUT_DIR, "model_target_bn.pth")
            torch.save(target_bn_state_dict(self.model), path)
            logger.info(f"Stage-1 network with its target BNs (the stage 2-3 PSEUDO.WEIGHTS): {path}")
        return results

