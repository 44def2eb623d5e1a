"""DGTrainer: fastreid's DefaultTrainer with the hook points every DG method needs.

fastreid builds its step object inline in `DefaultTrainer.__init__`, so this class re-does that
constructor, in this order, with factories a project overrides (all classmethods unless noted):

  1. build_train_loader(cfg)                   the training data (fastreid's signature)
  2. auto_scale_hyperparams(cfg, num_classes)  fastreid's: MODEL.HEADS.NUM_CLASSES
  3. prepare(cfg, train_set)                   instance method, the one step between the data and
                                               the model: anything measured on the training set
                                               (trainer attributes, config values written with
                                               `update_config`); returns the config
  4. build_model(cfg), then the hook points, each named by what it is:
     - optimizers:            build_optimizers (several, per-prefix LR multipliers)
     - extra loaders:         build_extra_loaders (e.g. target-domain batches)
     - schedule:              build_schedule (alternating phases, instance method)
     - offline stages:        build_extra_hooks (e.g. clustering, instance method)
     - gradient combination:  SOLVER.GRAD_COMBINE (plugins.registry.GRAD_COMBINERS, in DGStep)
     - test-time adaptation:  TEST.ADAPT (plugins.registry.TEST_ADAPTERS, in `test`)
  and `checkpoint_optional_keys` (training-only parts a loaded checkpoint may lack,
  plugins/checkpoint.py), and `test` (several targets, 10-split protocols).
Trainers register with `@TRAINER_REGISTRY.register()` (TRAINER.NAME is the class name).
Everything stateful (every optimizer and scheduler, the AMP scaler, the schedule, stateful hooks,
the training loaders' positions and the RNG states) goes into the checkpoint, written every epoch
(SOLVER.CHECKPOINT_PERIOD) and every SOLVER.CHECKPOINT_PERIOD_ITERS iterations and on SIGTERM, so
`--resume` continues the interrupted run exactly, mid-epoch included (plugins.engine.resume).
"""
import logging
import os
from collections import OrderedDict

import numpy as np
import torch
from fastreid.engine import DefaultTrainer, hooks
from fastreid.engine.train_loop import TrainerBase
from fastreid.utils.events import EventStorage
from fastreid.modeling.meta_arch import build_model
from fastreid.solver import build_lr_scheduler
from fastreid.utils import comm
from fastreid.utils.events import CommonMetricPrinter

from datasets_ext.bases import expand_test_names
from plugins.checkpoint import StrictCheckpointer
from plugins.data.batching import epoch_length
from plugins.data.build import build_dg_test_loader, build_dg_train_loader
from plugins.registry import TEST_ADAPTERS, TRAINER_REGISTRY

from .metrics import MetricsJSONWriter
from .optim import build_optimizer
from .resume import ResumeCheckpointer, RNGStates
from .step import DGStep
from .tta import run_inference

logger = logging.getLogger(__name__)


@TRAINER_REGISTRY.register()
class DGTrainer(DefaultTrainer):
    def __init__(self, cfg):
        TrainerBase.__init__(self)
        data_loader = self.build_train_loader(cfg)
        cfg = self.auto_scale_hyperparams(cfg, data_loader.dataset.num_classes)
        cfg = self.prepare(cfg, data_loader.dataset)
        self.cfg = cfg
        model = self.build_model(cfg)
        optimizers = self.build_optimizers(cfg, model)
        if comm.get_world_size() > 1:
            # The step averages gradients itself (after gradient surgery needs them per objective),
            # so DDP only syncs the start state (BN running statistics: RunningStatsSync).
            ids = [comm.get_local_rank()] if next(model.parameters()).is_cuda else None
            model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=ids, broadcast_buffers=False, find_unused_parameters=False)
        self.iters_per_epoch = epoch_length(len(data_loader.dataset), cfg.SOLVER.IMS_PER_BATCH,
                                            cfg.SOLVER.ITERS_PER_EPOCH,
                                            getattr(data_loader.dataset, "source", None) or "training set")
        self.schedule = self.build_schedule(cfg)
        self._trainer = DGStep(cfg, model, data_loader, optimizers,
                               self.build_extra_loaders(cfg), self.schedule)
        self.schedulers = {k: self.build_lr_scheduler(cfg, opt, self.iters_per_epoch)
                           for k, opt in optimizers.items()}
        self.scheduler = self.schedulers["main"]
        self.extra_hooks = self.build_extra_hooks(cfg)
        self.rng_states = RNGStates()
        self.checkpointer = StrictCheckpointer(model, cfg.OUTPUT_DIR, save_to_disk=comm.is_main_process(),
                                               optional=self.checkpoint_optional_keys(cfg),
                                               allow_partial=cfg.MODEL.WEIGHTS_ALLOW_PARTIAL,
                                               **self._checkpointables())
        self.start_epoch = 0
        self.resume_iter = None
        self.max_epoch = cfg.SOLVER.MAX_EPOCH
        self.max_iter = self.max_epoch * self.iters_per_epoch
        self.warmup_iters = cfg.SOLVER.WARMUP_ITERS
        self.delay_epochs = cfg.SOLVER.DELAY_EPOCHS
        self.register_hooks(self.build_hooks())

    # ------------------------------------------------------------------ preparation
    def prepare(self, cfg, train_set):
        """The one step that runs after the training data and before the model are built.

        Args:
            cfg: the run's config (frozen), MODEL.HEADS.NUM_CLASSES already filled in.
            train_set: the training dataset (`data_loader.dataset`, items `(path, pid, camid,
                extras)` in `train_set.img_items`).
        Returns:
            the config the model is built from: `cfg`, or `update_config(cfg, {...})` for values
            measured on the training set (they are then also in OUTPUT_DIR/config.yaml).
        An override may set trainer attributes that later factories read (ADIN: the validation
        loader and nuisance statistics; PTL: the attribute classes). Default: `cfg` unchanged.
        """
        return cfg

    # ------------------------------------------------------------------ factories
    @classmethod
    def build_model(cls, cfg):
        model = build_model(cfg)
        logger.info("Model:\n{}".format(model))
        return model

    @classmethod
    def checkpoint_optional_keys(cls, cfg):
        """State-dict key prefixes that a loaded checkpoint (MODEL.WEIGHTS, --eval-only, *.WEIGHTS)
        may lack or hold in another shape: parts sized by the training set that the test path
        never uses. Default: fastreid's identity classifier `heads.weight` (one row per training
        id). Everything else must match (plugins/checkpoint.py)."""
        return ("heads.weight",)

    @classmethod
    def build_optimizers(cls, cfg, model):
        """{name: optimizer}; "main" is required. Override to add e.g. a discriminator's."""
        return {"main": build_optimizer(cfg, model)}

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer, iters_per_epoch):
        return build_lr_scheduler(cfg, optimizer, max(iters_per_epoch, 1))

    @classmethod
    def build_train_loader(cls, cfg):
        return build_dg_train_loader(cfg)

    @classmethod
    def build_extra_loaders(cls, cfg):
        """{name: loader}: each step also draws one batch from each, in `data["extra"][name]`."""
        return {}

    def build_schedule(self, cfg):
        """None (one phase updating everything) or a plugins.engine.schedule.AlternatingSchedule."""
        return None

    def build_extra_hooks(self, cfg):
        """Hooks run before evaluation and checkpointing (e.g. periodic clustering)."""
        return []

    @property
    def optimizers(self):
        return self._trainer.optimizers

    def _checkpointables(self):
        state = {"optimizer": self.optimizers["main"]}
        state.update({f"optimizer_{k}": v for k, v in self.optimizers.items() if k != "main"})
        for name, sched in self.schedulers.items():
            suffix = "" if name == "main" else f"_{name}"
            state.update({f"{k}{suffix}": v for k, v in sched.items()})
        if self._trainer.grad_scaler is not None:
            state["grad_scaler"] = self._trainer.grad_scaler
        if self.schedule is not None:
            state["schedule"] = self.schedule
        for h in self.extra_hooks:
            if hasattr(h, "state_dict"):
                state[f"hook_{type(h).__name__}"] = h
        state["data"] = self._trainer        # loaders' seeds and positions
        state["rng"] = self.rng_states
        return state

    # ------------------------------------------------------------------ resume
    def resume_or_load(self, resume=True):
        """fastreid's, plus the iteration to start at: a mid-epoch checkpoint stores it as "iter"."""
        checkpoint = self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            self.start_epoch = checkpoint.get("epoch", -1) + 1
            self.resume_iter = int(checkpoint.get("iter", self.start_epoch * self.iters_per_epoch))

    def train(self):
        """fastreid's TrainerBase.train loop, able to start inside an epoch: the resumed epoch skips
        its before_epoch hooks and its finished iterations. Loader positions and RNG states are
        restored after the hooks' before_train (which may rebuild loaders), just before the first step."""
        ipe = max(self.iters_per_epoch, 1)
        start = self.start_epoch * ipe if self.resume_iter is None else self.resume_iter
        first_epoch, offset = divmod(start, ipe)
        logger.info(f"Starting training from epoch {first_epoch}" + (f", iteration {start}" if offset else ""))
        self.iter = self.start_iter = start
        with EventStorage(start) as self.storage:
            try:
                self.before_train()
                self._trainer.restore_data_position()
                self.rng_states.restore()
                for self.epoch in range(first_epoch, self.max_epoch):
                    if offset and self.epoch == first_epoch:
                        self.storage.epoch = self.epoch
                    else:
                        self.before_epoch()
                    for _ in range(offset if self.epoch == first_epoch else 0, self.iters_per_epoch):
                        self.before_step()
                        self.run_step()
                        self.after_step()
                        self.iter += 1
                    self.after_epoch()
            except Exception:
                logger.exception("Exception during training:")
                raise
            finally:
                self.after_train()
        if comm.is_main_process():
            assert hasattr(self, "_last_eval_results"), "No evaluation results obtained during training!"
            return self._last_eval_results

    def build_hooks(self):
        cfg = self.cfg
        ret = [hooks.IterationTimer()]
        if comm.get_world_size() > 1:   # before every hook that evaluates or saves the model
            ret.append(RunningStatsSync(self.model))
        ret += [NamedLRScheduler(opt, self.schedulers[k], "lr" if k == "main" else f"lr_{k}")
                for k, opt in self.optimizers.items()]
        if self.schedule is not None:
            ret.append(self.schedule)
        ret += list(self.extra_hooks)
        if cfg.TEST.PRECISE_BN.ENABLED and hooks.get_bn_modules(self.model):
            pcfg = cfg.clone()
            pcfg.defrost()
            pcfg.DATALOADER.NUM_WORKERS = 0
            pcfg.DATASETS.NAMES = (cfg.TEST.PRECISE_BN.DATASET,)
            ret.append(hooks.PreciseBN(self.model, build_dg_train_loader(pcfg), cfg.TEST.PRECISE_BN.NUM_ITER))

        def test_and_save_results():
            if getattr(self, "interrupted", False):   # SIGTERM: fastreid's EvalHook.after_train would evaluate
                return {}
            self._last_eval_results = self.test(self.cfg, self.model)
            return self._last_eval_results

        ret.append(hooks.EvalHook(cfg.TEST.EVAL_PERIOD, test_and_save_results))
        ret.append(ResumeCheckpointer(self.checkpointer, self.rng_states, cfg.SOLVER.CHECKPOINT_PERIOD_ITERS))
        if comm.is_main_process():
            ret.append(hooks.PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD))
            ret.append(hooks.PeriodicWriter(self.build_writers(), 20))
        return ret

    def build_writers(self):
        writers = [CommonMetricPrinter(self.max_iter),
                   MetricsJSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"))]   # with every evaluation
        try:
            from fastreid.utils.events import TensorboardXWriter
            import torch.utils.tensorboard  # noqa: F401
            writers.append(TensorboardXWriter(self.cfg.OUTPUT_DIR))
        except ImportError:
            pass
        return writers

    # ------------------------------------------------------------------ evaluation
    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_dir=None, **dataset_kwargs):
        from plugins.evaluation import DGReidEvaluator
        data_loader, num_query = build_dg_test_loader(cfg, dataset_name, **dataset_kwargs)
        return data_loader, DGReidEvaluator(cfg, num_query, output_dir)

    @classmethod
    def test(cls, cfg, model):
        """Evaluate every target of DATASETS.TESTS (each split of multi-split ones), log the table
        and write per-split and aggregated results to OUTPUT_DIR/TEST.RESULTS_JSON."""
        from plugins.evaluation import report
        adapter = TEST_ADAPTERS.get(cfg.TEST.ADAPT.NAME)(cfg) if cfg.TEST.ADAPT.NAME else None
        per_split = OrderedDict()
        for target, display, name, kwargs in expand_test_names(cfg.DATASETS.TESTS):
            logger.info(f"Evaluating {display}")
            data_loader, evaluator = cls.build_evaluator(cfg, name, **kwargs)
            if adapter is not None:   # works on a copy: the trained weights are never touched
                results = adapter.evaluate(model, data_loader, evaluator)
            else:
                results = run_inference(model, data_loader, evaluator, flip=cfg.TEST.FLIP.ENABLED)
            per_split[display] = dict(results)
        if not comm.is_main_process():
            return {}
        summary = report.aggregate_splits(per_split)
        logger.info("DG evaluation (mean ± std over splits):\n" + report.format_results_table(per_split))
        if cfg.OUTPUT_DIR:
            report.write_results_json(per_split, os.path.join(cfg.OUTPUT_DIR, cfg.TEST.RESULTS_JSON))
        results = OrderedDict((t, dict(a["mean"])) for t, a in summary.items())
        return results[next(iter(results))] if len(results) == 1 else results


class RunningStatsSync(hooks.HookBase):
    """Under DDP: average every BN running statistic over the processes after every step
    (`plugins.dsbn.average_running_stats`; DDP runs with broadcast_buffers=False), so every process
    evaluates, and rank 0 saves, the same model; without it each rank's statistics drift apart
    and the multi-process evaluation scores each shard with a different model."""

    def __init__(self, model):
        self.model = model

    def after_step(self):
        from plugins.dsbn import average_running_stats
        average_running_stats(self.model)


class NamedLRScheduler(hooks.LRScheduler):
    """fastreid's LR hook, logging under its own name so several optimizers don't share "lr"."""

    def __init__(self, optimizer, scheduler, name="lr"):
        super().__init__(optimizer, scheduler)
        self._name = name

    def after_step(self):
        lr = self._optimizer.param_groups[self._best_param_group_id]["lr"]
        self.trainer.storage.put_scalar(self._name, lr, smoothing_hint=False)
        if self.trainer.iter + 1 <= self.trainer.warmup_iters and "warmup_sched" in self._scheduler:
            if self.trainer.grad_scaler is None or self._scale == self.trainer.grad_scaler.get_scale():
                self._scheduler["warmup_sched"].step()


def update_config(cfg, values):
    """Set config values of a frozen run config, keep OUTPUT_DIR/config.yaml complete, refreeze.

    Args:
        cfg: a fastreid CfgNode (frozen or not; it is changed in place and returned).
        values: {dotted key: value}, e.g. {"MODEL.ADIN.NUM_NUISANCE_CLASSES": [3, 4]}; set through
            each checked by yacs' type rule (the default's type; list and tuple mix) before any is
            set; numpy scalars / arrays become Python numbers / lists; strings are kept verbatim.
    Returns:
        `cfg`, with its frozen state as before.
    Raises:
        KeyError: a key the config does not have, named with the keys given.
        ValueError: a value of another type than its default (yacs' message names the key).
    The main process rewrites OUTPUT_DIR/config.yaml (when OUTPUT_DIR is set), so `--eval-only`
    with that file rebuilds the same model without re-measuring the training set.
    """
    unknown = [k for k in values if not _has_key(cfg, k)]
    if unknown:
        raise KeyError(f"update_config: the config has no key {', '.join(unknown)} (values given for {sorted(values)})")
    from yacs.config import _check_and_coerce_cfg_value_type
    checked = {}   # every value checked before any is set (nothing set when one is wrong)
    for key, value in values.items():
        if isinstance(value, np.ndarray):   # values measured with numpy: plain Python values
            value = value.tolist()
        elif isinstance(value, np.generic):
            value = value.item()
        elif isinstance(value, (list, tuple)):
            value = type(value)(v.item() if isinstance(v, np.generic) else v for v in value)
        node, leaf = _parent(cfg, key)
        checked[key] = (node, leaf, _check_and_coerce_cfg_value_type(value, node[leaf], leaf, key))
    frozen = cfg.is_frozen()
    cfg.defrost()
    try:
        for node, leaf, value in checked.values():   # set as given (no literal_eval of strings)
            node[leaf] = value
    finally:
        if frozen:
            cfg.freeze()
    if comm.is_main_process() and cfg.OUTPUT_DIR:
        with open(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as f:
            f.write(cfg.dump())
    return cfg


def _parent(cfg, dotted):
    *path, leaf = dotted.split(".")
    node = cfg
    for part in path:
        node = node[part]
    return node, leaf


def _has_key(cfg, dotted):
    node = cfg
    for part in dotted.split("."):
        if not hasattr(node, "keys") or part not in node:
            return False
        node = node[part]
    return True


def build_trainer(cfg):
    return TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg)

