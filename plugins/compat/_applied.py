"""What the shim modules share: the list of shims applied in this process and the CUDA probe."""

APPLIED = []  # names of the shims that were needed on this stack


def mark(name):
    """Record that the shim `name` patched something (each name once)."""
    if name not in APPLIED:
        APPLIED.append(name)


def cuda_available():
    import torch
    return torch.cuda.is_available()
