"""Registries of the toolbox's own pluggable pieces (fastreid's registries hold the rest)."""
from fastreid.utils.registry import Registry

TRAINER_REGISTRY = Registry("TRAINER")          # DefaultTrainer subclasses, named by TRAINER.NAME
GRAD_COMBINERS = Registry("GRAD_COMBINER")      # SOLVER.GRAD_COMBINE.NAME
TEST_ADAPTERS = Registry("TEST_ADAPTER")        # TEST.ADAPT.NAME


def register_as(registry, name):
    """Decorator registering an object under an explicit (config-friendly) name or alias (grad
    combiners, test-time adapters). Trainers use `@TRAINER_REGISTRY.register()`: TRAINER.NAME is the
    class name."""
    def deco(obj):
        registry._do_register(name, obj)
        return obj
    return deco
