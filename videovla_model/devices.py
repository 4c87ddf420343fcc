"""Checking a torch device string before anything is loaded onto it, so a failure names the device."""

from __future__ import annotations


class DeviceUnavailableError(ValueError):
    """The requested torch device does not exist on this machine; the message names it and what is available."""


def check_device(device: str) -> None:
    """Raises DeviceUnavailableError unless `device` (e.g. "cpu", "cuda", "cuda:1") can hold tensors here."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise DeviceUnavailableError(
            f"device {device!r} is not a torch device string (e.g. 'cpu', 'cuda:0'): {error}"
        ) from error
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            built = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise DeviceUnavailableError(f"device {device!r} is not available: {built}; use device 'cpu'")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise DeviceUnavailableError(
                f"device {device!r} is not available: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}"
            )
    elif parsed.type not in ("cpu", "meta"):
        try:
            torch.empty(0, device=parsed)
        except RuntimeError as error:
            raise DeviceUnavailableError(f"device {device!r} is not available: {error}") from error
