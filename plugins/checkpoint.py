"""Loading model weights: one function for --eval-only, fine-tuning and every `*.WEIGHTS` key.

fastreid's `Checkpointer.load` needs a `{"model": state_dict}` file (a bare `torch.save(
model.state_dict())` fails with `KeyError: 'model'`) and loads whatever keys match, logging the
rest at INFO level: a checkpoint of another architecture loads nothing and the run goes on with a
randomly initialised model. Here:

- accepted files: fastreid checkpoints (`{"model": state_dict, ...}`), `{"state_dict": ...}` and
  bare state_dicts (parameter name -> tensor); a `module.` prefix (DataParallel / DDP) on every key
  is stripped. Files are read with `torch.load(weights_only=True)`.
- every model key must be in the checkpoint with the same shape and every checkpoint key in the
  model, else `CheckpointMismatchError` lists the missing, unexpected and mis-shaped keys (the
  first few of each, and counts).
- `optional`: keys / module names / "prefix*" patterns a trainer declares as not used by the test path and sized by the
  training set (fastreid's identity classifier `heads.weight`; see
  `DGTrainer.checkpoint_optional_keys`). Those may be missing, unexpected or of another shape; the
  model keeps its own values for them (logged at WARNING).
- `allow_partial` (config key `MODEL.WEIGHTS_ALLOW_PARTIAL`): load the matching keys and log the
  rest at WARNING instead of raising. A checkpoint with no key in common with the model is an
  error even then.

`StrictCheckpointer` is fastreid's Checkpointer (saving, `--resume` with optimizers and
schedulers) with the model loaded by the same rules.
"""
import logging
import os
import pickle
from collections import OrderedDict

import torch
from fastreid.utils.checkpoint import Checkpointer

__all__ = ["CheckpointError", "CheckpointMismatchError", "StrictCheckpointer", "load_model_weights", "load_weights",
           "match_state_dict", "optional_keys", "read_state_dict"]

logger = logging.getLogger(__name__)

SHOWN = 5   # keys listed per kind in an error


class CheckpointError(ValueError):
    """A weights file cannot be read as a model state_dict."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's keys or shapes do not match the model's."""


def _state_of(obj, path, what):
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        found = (f"a dict with keys {sorted(map(str, obj))[:SHOWN]}" if isinstance(obj, dict)
                 else type(obj).__name__)
        raise CheckpointError(f"{what} {path}: not a model checkpoint: expected a fastreid checkpoint "
                              f"{{'model': state_dict}} or a state_dict (parameter name -> tensor), found {found}")
    state = OrderedDict(obj)
    if all(k.startswith("module.") for k in state):
        state = OrderedDict((k[len("module."):], v) for k, v in state.items())
    return state


def read_state_dict(path, what="MODEL.WEIGHTS"):
    """The model state_dict (OrderedDict name -> tensor, on CPU) in the file `path`.

    Raises FileNotFoundError (no such file) or CheckpointError (not loadable with
    weights_only=True, or no state_dict inside); both name `what` (the config key) and the path."""
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: checkpoint file {path!r} not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise CheckpointError(f"{what} {path}: cannot be read by torch.load(weights_only=True): "
                              f"{str(e).splitlines()[0]}") from e
    return _state_of(obj, path, what)


def _is_optional(key, optional):
    """`key` is one of `optional`, in a module named there ("heads" covers "heads.weight"), or
    starts with a pattern's text before a trailing "*" ("prior_*")."""
    return any(key.startswith(p[:-1]) if p.endswith("*") else (key == p or key.startswith(p + "."))
               for p in optional)


def _listing(keys):
    more = f", ... ({len(keys) - SHOWN} more)" if len(keys) > SHOWN else ""
    return ", ".join(keys[:SHOWN]) + more


def match_state_dict(model, state, *, optional=(), allow_partial=False, path="", what="MODEL.WEIGHTS"):
    """Load `state` (name -> tensor) into `model` under the rules of the module docstring.

    Returns {"missing": [...], "unexpected": [...], "shapes": [(key, ckpt shape, model shape)],
    "loaded": n} (the keys not loaded, after `optional`); raises CheckpointMismatchError."""
    if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
        model = model.module
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
              if k in own and tuple(v.shape) != tuple(own[k].shape)]
    load = OrderedDict((k, v) for k, v in state.items()
                       if k in own and tuple(v.shape) == tuple(own[k].shape))
    skipped = sorted({k for k in missing + unexpected + [s[0] for s in shapes] if _is_optional(k, optional)})
    if skipped:
        logger.warning(f"{what} {path}: keeping the model's own values for {_listing(skipped)} "
                       f"(declared optional: not used at test time)")
    report = {"missing": [k for k in missing if not _is_optional(k, optional)],
              "unexpected": [k for k in unexpected if not _is_optional(k, optional)],
              "shapes": [s for s in shapes if not _is_optional(s[0], optional)],
              "loaded": len(load)}
    parts = []
    if report["missing"]:
        parts.append(f"{len(report['missing'])} missing keys (in the model, not in the checkpoint): "
                     f"{_listing(report['missing'])}")
    if report["unexpected"]:
        parts.append(f"{len(report['unexpected'])} unexpected keys (in the checkpoint, not in the model): "
                     f"{_listing(report['unexpected'])}")
    if report["shapes"]:
        parts.append(f"{len(report['shapes'])} keys of another shape: "
                     + _listing([f"{k} {c} in the checkpoint vs {m} in the model" for k, c, m in report["shapes"]]))
    if not load and own:
        raise CheckpointMismatchError(f"{what} {path}: no key of the checkpoint matches the model "
                                      f"(another architecture?); " + "; ".join(parts))
    if parts:
        message = f"{what} {path} does not match the model: " + "; ".join(parts)
        if not allow_partial:
            raise CheckpointMismatchError(message + ". Set MODEL.WEIGHTS_ALLOW_PARTIAL True to load only "
                                          "the matching keys")
        logger.warning(message + f" (MODEL.WEIGHTS_ALLOW_PARTIAL: loaded the {len(load)} matching keys)")
    model.load_state_dict(load, strict=False)
    logger.info(f"Loaded {len(load)} tensors from {what} {path}")
    return report


def load_weights(model, path, *, optional=(), allow_partial=False, what="MODEL.WEIGHTS"):
    """Load the checkpoint file `path` into `model` (see the module docstring for the accepted
    files and the rules). Returns `match_state_dict`'s report. Raises FileNotFoundError,
    CheckpointError, CheckpointMismatchError, each naming `what` and `path`."""
    return match_state_dict(model, read_state_dict(path, what), optional=optional,
                            allow_partial=allow_partial, path=path, what=what)


def optional_keys(cfg, trainer_cls=None):
    """The keys `trainer_cls` (default: the cfg's TRAINER.NAME, else DGTrainer) declares optional."""
    if trainer_cls is None:
        from plugins.engine.trainer import DGTrainer
        from plugins.registry import TRAINER_REGISTRY
        name = cfg.get("TRAINER", {}).get("NAME", "")
        trainer_cls = TRAINER_REGISTRY.get(name) if name else DGTrainer
    return tuple(trainer_cls.checkpoint_optional_keys(cfg))


def load_model_weights(cfg, model, path=None, what="MODEL.WEIGHTS", trainer_cls=None):
    """`load_weights` of `path` (default cfg.MODEL.WEIGHTS) with the optional keys the trainer
    declares (`optional_keys`) and cfg.MODEL.WEIGHTS_ALLOW_PARTIAL. The one entry point of
    --eval-only, the *.WEIGHTS keys and the commands that take a model."""
    return load_weights(model, cfg.MODEL.WEIGHTS if path is None else path,
                        optional=optional_keys(cfg, trainer_cls),
                        allow_partial=bool(cfg.MODEL.get("WEIGHTS_ALLOW_PARTIAL", False)), what=what)


class StrictCheckpointer(Checkpointer):
    """fastreid's Checkpointer whose model loading follows `match_state_dict` (bare state_dicts,
    `module.` prefixes, an error on mismatched keys). `optional`, `allow_partial` as there."""

    def __init__(self, model, save_dir="", *, optional=(), allow_partial=False, **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.optional, self.allow_partial = tuple(optional), allow_partial
        self._what = "MODEL.WEIGHTS"

    def resume_or_load(self, path, *, resume=True):
        self._what = "--resume checkpoint" if resume and self.has_checkpoint() else "MODEL.WEIGHTS"
        return super().resume_or_load(path, resume=resume)

    def load(self, path, checkpointables=None):
        if path and "://" not in path and not os.path.isfile(path):   # URLs: fastreid's PathManager
            raise FileNotFoundError(f"{self._what}: checkpoint file {path!r} not found")
        self._path = path
        return super().load(path, checkpointables)

    def _load_file(self, f):
        try:
            obj = torch.load(f, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
            raise CheckpointError(f"{self._what} {f}: cannot be read by torch.load(weights_only=True): "
                                  f"{str(e).splitlines()[0]}") from e
        if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
            return obj
        return {"model": _state_of(obj, f, self._what)}

    def _load_model(self, checkpoint):
        state = _state_of({"model": checkpoint.pop("model")}, self._path, self._what)
        match_state_dict(self.model, state, optional=self.optional, allow_partial=self.allow_partial,
                         path=self._path, what=self._what)
        return None   # fastreid then skips its own (INFO-level) report
