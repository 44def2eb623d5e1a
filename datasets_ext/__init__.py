"""Dataset plugins: importing this package registers every loader in fastreid's DATASET_REGISTRY."""
import plugins  # noqa: F401  (fastreid shims must be applied before fastreid.data is imported)
