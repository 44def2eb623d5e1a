"""ADINTrainer: DGTrainer with ADIN's optimizers, held-out validation subset, nuisance statistics
and §3.3 schedule (TRAINER.NAME: ADINTrainer).

Optimizers: "main" (f_E + f_I + centres: joint and identity phases), "extractor" (f_E alone: the
adversarial update of Eq. 7) and "nuisance" (f_N). Every one is checkpointed with its scheduler,
and so is the schedule's position, so `--resume` continues in the same phase.
"""
import logging
import random
from collections import defaultdict

from fastreid.data import build_reid_test_loader
from fastreid.data.transforms import build_transforms
from fastreid.utils import comm

from plugins.data import DGCommDataset
from plugins.data.build import build_dg_train_loader, load_train_items
from plugins.engine import DGTrainer, build_optimizer, update_config
from plugins.engine.step import unwrap
from plugins.registry import TRAINER_REGISTRY

from .nuisance import head_names, measure
from .schedule import build_adin_schedule, identity_error

logger = logging.getLogger(__name__)
EXTRACTOR = ("backbone.", "pool.")


def split_validation(items, num_images, seed=0):
    """(train items, held-out items): one image from each of `num_images` randomly drawn identities
    that have at least two images, so every identity keeps training images."""
    by_pid = defaultdict(list)
    for i, it in enumerate(items):
        by_pid[it[1]].append(i)
    rng = random.Random(seed)
    eligible = sorted((p for p, idx in by_pid.items() if len(idx) >= 2), key=str)
    chosen = rng.sample(eligible, min(num_images, len(eligible)))
    held = {rng.choice(by_pid[p]) for p in chosen}
    return [it for i, it in enumerate(items) if i not in held], [items[i] for i in sorted(held)]


@TRAINER_REGISTRY.register()
class ADINTrainer(DGTrainer):
    def __init__(self, cfg):
        super().__init__(cfg)
        if self.nuisance_stats is not None:
            unwrap(self.model).set_nuisance_stats(self.nuisance_stats)

    @classmethod
    def checkpoint_optional_keys(cls, cfg):
        """f_I and f_N (with the nuisance priors and pair table) are sized by the training set and
        only train; the test path uses f_E (`backbone.`, `pool.`) alone, and a model built for
        evaluation has no f_I / f_N."""
        return ("identity", "center_loss", "nuisance", "prior_*", "pair_table")

    @property
    def adversarial(self):
        return self.cfg.MODEL.ADIN.ADV_LOSS != "none"

    # -------------------------------------------------------------- data
    @classmethod
    def build_train_loader(cls, cfg):
        """The training loader over the source images less the validation subset (ADIN.SWITCH
        'threshold' with an adversarial loss: one image each of ADIN.VAL.NUM_IMAGES identities,
        `split_validation`), which its dataset keeps as `held_out` items for `prepare`."""
        items = load_train_items(cfg)
        val_items = []
        if cfg.MODEL.ADIN.ADV_LOSS != "none" and cfg.ADIN.SWITCH == "threshold":
            items, val_items = split_validation(items, cfg.ADIN.VAL.NUM_IMAGES, cfg.ADIN.VAL.SEED)
            if not val_items:
                raise ValueError("ADIN.SWITCH 'threshold' needs a validation subset: no identity has 2 images")
        train_set = DGCommDataset(items, build_transforms(cfg, is_train=True), relabel=True)
        train_set.source = (f"training set DATASETS.NAMES {tuple(cfg.DATASETS.NAMES)}"
                            + (f" less {len(val_items)} validation images" if val_items else ""))
        train_set.held_out = val_items
        return build_dg_train_loader(cfg, train_set=train_set)

    def prepare(self, cfg, train_set):
        """Before the model: the validation loader over the held-out images (identity labels of
        the training set; `self.val_loader`, None without a subset), the nuisance statistics of
        the training images (`self.nuisance_stats`, None without an adversarial loss) and, unless
        given, MODEL.ADIN.NUM_NUISANCE_CLASSES from them (written to config.yaml)."""
        items, val_items = train_set.img_items, getattr(train_set, "held_out", [])
        self.val_loader = None
        if val_items:
            val_set = DGCommDataset([(p, train_set.pid_dict[pid], train_set.cam_dict.get(c, -1), e)
                                     for p, pid, c, e in val_items],
                                    build_transforms(cfg, is_train=False), relabel=False)
            self.val_loader, _ = build_reid_test_loader(val_set, cfg.TEST.IMS_PER_BATCH, 0,
                                                     num_workers=cfg.DATALOADER.NUM_WORKERS)
            if comm.is_main_process():
                total = len(items) + len(val_items)
                logger.info(f"ADIN: {len(val_items)} of {total} training images ({100 * len(val_items) / total:.1f}%) "
                            "held out from training to monitor the identity error (ADIN.VAL.NUM_IMAGES: one "
                            "image each of that many identities with >= 2 images)")
        self.nuisance_stats = None
        if cfg.MODEL.ADIN.ADV_LOSS != "none":
            self.nuisance_stats = measure(head_names(cfg), [train_set.cam_dict[it[2]] for it in items],
                                          [int(it[3].get("timeid", -1)) for it in items])
            if not cfg.MODEL.ADIN.NUM_NUISANCE_CLASSES:
                heads = head_names(cfg)
                cfg = update_config(cfg, {"MODEL.ADIN.NUM_NUISANCE_CLASSES":
                                          [self.nuisance_stats.num_classes[h] for h in heads]})
                logger.info(f"ADIN nuisance heads {heads}: {cfg.MODEL.ADIN.NUM_NUISANCE_CLASSES} classes, priors "
                            + "; ".join(f"{h}: {[round(float(p), 4) for p in self.nuisance_stats.priors[h]]}"
                                        for h in heads))
        return cfg

    # -------------------------------------------------------------- optimizers and schedule
    @classmethod
    def build_optimizers(cls, cfg, model):
        opts = {"main": build_optimizer(cfg, model, include=lambda n: not n.startswith("nuisance."))}
        if cfg.MODEL.ADIN.ADV_LOSS != "none":
            opts["nuisance"] = build_optimizer(cfg, model, include=lambda n: n.startswith("nuisance."))
            if cfg.ADIN.ADV_OBJECTIVE == "adv":
                opts["extractor"] = build_optimizer(cfg, model, include=lambda n: n.startswith(EXTRACTOR))
        return opts

    def build_schedule(self, cfg):
        return build_adin_schedule(cfg, lambda trainer: identity_error(trainer.model, self.val_loader),
                                   chance_levels=self.chance_levels)

    def chance_levels(self):
        """{head: max_k p_k}: the training accuracy of always guessing the head's commonest class."""
        m = unwrap(self.model)
        return {h: float(getattr(m, f"prior_{h}").max()) for h in m.nuisance}
