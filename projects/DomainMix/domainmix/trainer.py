"""DomainMixTrainer: the three stages of Algorithm 1 in one run.

Stage 1 (pseudo labels): until DOMAINMIX.PSEUDO.START_EPOCH the model trains on the labelled
  sources only; at that epoch's start the unlabelled sources are clustered (PseudoLabelHook, with
  the model of PSEUDO.WEIGHTS if given), then every PSEUDO.PERIOD epochs again. Labels known in
  advance come from PSEUDO.LABELS_FILE.
Stage 2 (Eq. 4) until DOMAINMIX.STAGE3_START, then stage 3: a cycle of ALTERNATE.BACKBONE units of
  backbone training (Eq. 11, C_d fixed) and ALTERNATE.DISC units of discriminator training (Eq. 5,
  backbone fixed), a unit being an epoch (Algorithm 1) or an iteration (reference code: 9 + 1).
An epoch is `len(construction-time training set) // batch` iterations: with labels from clustering
it counts the labelled sources only (the set grows after clustering; epochs keep their length,
so a resumed run lines up with the interrupted one).
"""
import functools
import logging

import torch
import torch.nn.functional as F

from plugins.checkpoint import load_model_weights
from plugins.data import build_dg_train_loader
from plugins.engine import AlternatingSchedule, DGTrainer, Phase, Stage, Update, build_optimizer
from plugins.engine.step import unwrap
from plugins.clustering import PseudoLabelHook, cluster_pseudo_labels, extract_features
from plugins.clustering import knn_options as clustering_knn_options
from plugins.registry import TRAINER_REGISTRY

from .data import build_train_set, build_unlabelled_loaders
from .modeling import num_domains

logger = logging.getLogger(__name__)

REID = Phase("reid", (Update(("main",)),))               # Eq. 4 (stages 1-2)
DISC = Phase("disc", (Update(("disc",)),))               # Eq. 5, backbone fixed
BACKBONE = Phase("backbone", (Update(("main",)),))       # Eq. 11, C_d fixed


def is_disc_param(name):
    return name.startswith("disc.")


def knn_options(cfg):
    """{"use_gpu", "knn_method", "knn_params"} of the clustering's k-NN from DOMAINMIX.PSEUDO (KNN,
    USE_GPU): `plugins.clustering.knn_options`. Raises ValueError naming the key."""
    p = cfg.DOMAINMIX.PSEUDO
    return clustering_knn_options(p.KNN, "DOMAINMIX.PSEUDO.KNN", use_gpu=p.USE_GPU)


def clustering_fn(cfg):
    """features -> pseudo labels with the config's k1, k2, eps, min_samples and Eq. 1 bounds
    (none for "initial" labels, KEEP_OUTLIERS: every DBSCAN cluster is kept); the k-NN by
    `knn_options` (exact: on the GPU when there is one and PSEUDO.USE_GPU,
    `plugins.kreciprocal.knn_backend`: faiss-gpu, else torch)."""
    p = cfg.DOMAINMIX.PSEUDO
    initial = p.KEEP_OUTLIERS
    return functools.partial(cluster_pseudo_labels, k1=p.K1, k2=p.K2, eps=p.EPS, min_samples=p.MIN_SAMPLES,
                             min_size=1 if initial else p.MIN_SIZE, max_size=0 if initial else p.MAX_SIZE,
                             **knn_options(cfg))


@TRAINER_REGISTRY.register()
class DomainMixTrainer(DGTrainer):
    def __init__(self, cfg):
        super().__init__(cfg)
        unwrap(self.model).num_active_classes = self.data_loader.dataset.num_active_classes

    @classmethod
    def build_train_loader(cls, cfg):
        return build_dg_train_loader(cfg, train_set=build_train_set(cfg))

    @classmethod
    def checkpoint_optional_keys(cls, cfg):
        """The classifier and C_d are training-only: a stage-1 network (SpCL's target-BN export has
        neither) loads as PSEUDO.WEIGHTS."""
        return ("heads.weight", "disc")

    @classmethod
    def build_optimizers(cls, cfg, model):
        opts = {"main": build_optimizer(cfg, model, include=lambda n: not is_disc_param(n))}
        if getattr(unwrap(model), "disc", None) is not None:
            opts["disc"] = build_optimizer(cfg, model, include=is_disc_param,
                                           base_lr=cfg.SOLVER.BASE_LR * cfg.DOMAINMIX.DISC_LR_FACTOR)
        return opts

    @staticmethod
    def stage3_start(cfg):
        """First epoch of stage 3, or None when the run has no stage 3."""
        s = cfg.DOMAINMIX.STAGE3_START
        return s if 0 <= s < cfg.SOLVER.MAX_EPOCH else None

    def build_schedule(self, cfg):
        ipe, start = self.iters_per_epoch, self.stage3_start(cfg)
        if start is None:
            return AlternatingSchedule(cycle=[Stage(REID, iters=max(ipe, 1))])
        if num_domains(cfg) < 2:
            raise ValueError("stage 3 needs >= 2 domains (DATASETS.NAMES + DOMAINMIX.UNLABELLED)")
        a = cfg.DOMAINMIX.ALTERNATE
        if a.UNIT not in ("epoch", "iter") or a.BACKBONE < 1 or a.DISC < 1:
            raise ValueError("DOMAINMIX.ALTERNATE: UNIT epoch|iter, BACKBONE and DISC >= 1")
        unit = max(ipe, 1) if a.UNIT == "epoch" else 1
        cycle = [Stage(BACKBONE, iters=a.BACKBONE * unit), Stage(DISC, iters=a.DISC * unit)]
        warmup = [Stage(REID, iters=start * ipe)] if start * ipe > 0 else []
        return AlternatingSchedule(warmup=warmup, cycle=cycle[::-1] if a.DISC_FIRST else cycle)

    def build_extra_hooks(self, cfg):
        if not cfg.DOMAINMIX.UNLABELLED:
            return []
        p = cfg.DOMAINMIX.PSEUDO
        cluster = clustering_fn(cfg)
        return [PseudoLabelHook(build_unlabelled_loaders(cfg), self.on_pseudo_labels, cfg.OUTPUT_DIR,
                                first_epoch=p.START_EPOCH, period=p.PERIOD, until_epoch=p.UNTIL_EPOCH, cluster=cluster,
                                model=self._clustering_model if p.WEIGHTS else None,
                                needs_features=p.INIT_CLASSIFIER)]

    def train(self):
        """Loads DOMAINMIX.PSEUDO.WEIGHTS once first (then drops it) when the run will still use it
        (it starts at or before PSEUDO.START_EPOCH), so a missing file or a checkpoint of another
        architecture fails at once, not after START_EPOCH epochs of training."""
        p = self.cfg.DOMAINMIX.PSEUDO
        if self.cfg.DOMAINMIX.UNLABELLED and p.WEIGHTS and self.start_epoch <= p.START_EPOCH:
            self._clustering_model(p.START_EPOCH)
        return super().train()

    def _clustering_model(self, epoch):
        """The PSEUDO.WEIGHTS model for the first clustering, the trained model afterwards."""
        if epoch != self.cfg.DOMAINMIX.PSEUDO.START_EPOCH:
            return self.model
        model = self.build_model(self.cfg)
        load_model_weights(self.cfg, model, self.cfg.DOMAINMIX.PSEUDO.WEIGHTS, what="DOMAINMIX.PSEUDO.WEIGHTS",
                           trainer_cls=type(self))
        return model

    # ------------------------------------------------------------------ pseudo labels
    def on_pseudo_labels(self, pl):
        """New (or restored) labels: rebuild the training set and loader, update the classes in
        force, and (fresh clustering, INIT_CLASSIFIER) set the clusters' classifier rows."""
        train_set = build_train_set(self.cfg, labels=pl.labels)
        self._trainer.set_data_loader(build_dg_train_loader(self.cfg, train_set=train_set))
        model = unwrap(self.model)
        model.num_active_classes = train_set.num_active_classes
        logger.info(f"Training set: {train_set.num_labelled_classes} labelled ids + "
                    f"{train_set.num_active_classes - train_set.num_labelled_classes} clusters, "
                    f"{len(train_set)} images")
        if pl.features is not None and not pl.restored and self.cfg.DOMAINMIX.PSEUDO.INIT_CLASSIFIER:
            if self._clustered_by_other_model(pl.epoch):   # centres from the network being trained
                pl = pl._replace(features=self.own_features())
            self.init_classifier(train_set, pl)

    def _clustered_by_other_model(self, epoch):
        return bool(self.cfg.DOMAINMIX.PSEUDO.WEIGHTS) and epoch == self.cfg.DOMAINMIX.PSEUDO.START_EPOCH

    def own_features(self):
        """Eval features [N, D] of the unlabelled images by the model being trained, in the
        clustering hook's order (its loaders, group after group)."""
        hook = next(h for h in self.extra_hooks if isinstance(h, PseudoLabelHook))
        return torch.cat([extract_features(self.model, loader) for loader in hook.loaders.values()])

    @torch.no_grad()
    def init_classifier(self, train_set, pl):
        """Classifier row of each cluster := its L2-normalised mean feature (reference code: the
        features of the network being trained, also when PSEUDO.WEIGHTS' stage-1 network made the
        labels); the optimizer's state of those rows is reset."""
        weight = unwrap(self.model).heads.weight
        index = {p: i for i, p in enumerate(pl.paths)}
        members = {}
        for path, lab in pl.labels.items():
            if lab >= 0 and path in index:
                members.setdefault(lab, []).append(index[path])
        rows, centres = [], []
        for lab, idx in members.items():
            row = train_set.pseudo_class(lab)
            if row is not None:
                rows.append(row)
                centres.append(pl.features[idx].mean(0))
        if not rows:
            return
        rows_t = torch.as_tensor(rows, device=weight.device)
        weight[rows_t] = F.normalize(torch.stack(centres), dim=1).to(weight)
        for opt in self.optimizers.values():
            for key, val in opt.state.get(weight, {}).items():
                if torch.is_tensor(val) and val.shape == weight.shape:
                    val[rows_t] = 0
