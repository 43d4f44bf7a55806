"""The peak memory of one trial, not of the worker's lifetime: CUDA's allocator peaks (reset
when the trial starts) and the process's resident set. On Linux writing "5" to
/proc/self/clear_refs resets the resident-set high-water mark (VmHWM), which then holds the
trial's own peak; elsewhere a thread samples the resident set every ``interval`` seconds
(which can miss a spike shorter than that)."""

from __future__ import annotations

import threading
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(field: str) -> int | None:
    """A ``field: <n> kB`` line of /proc/self/status, or None where there is none."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_hwm() -> bool:
    """Reset this process's VmHWM to its present resident set; whether that worked."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    hwm, rss = _status_kb("VmHWM"), _status_kb("VmRSS")
    # a kernel that ignores "5" (before Linux 4.0) leaves the lifetime's peak in place
    return hwm is not None and rss is not None and hwm <= rss + 1024


class TrialMemory:
    """Peak memory from ``start()`` to ``stop()``; ``metrics()`` gives it in MiB:
    peak_rss_mb, and on CUDA peak_gpu_memory_mb (allocated by tensors) and
    peak_gpu_reserved_mb (held by the caching allocator, what nvidia-smi counts).
    peak_memory_mb is the GPU peak on CUDA, the resident-set peak on the CPU."""

    def __init__(self, cuda: bool, interval: float = 0.05):
        self.cuda = cuda
        self.interval = interval  # seconds between samples, without VmHWM
        self._sampled_kb = 0
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._hwm = False

    def start(self) -> "TrialMemory":
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
        self._hwm = reset_hwm()
        if not self._hwm:
            self._sampled_kb = _rss_kb()
            self._done.clear()
            self._thread = threading.Thread(target=self._sample, name="llmhpo-rss", daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(self.interval):
            self._sampled_kb = max(self._sampled_kb, _rss_kb())

    def stop(self) -> None:
        if self._thread is not None:
            self._done.set()
            self._thread.join()
            self._thread = None
            self._sampled_kb = max(self._sampled_kb, _rss_kb())

    def metrics(self) -> dict[str, float]:
        """The peaks in MiB (call after ``stop()``)."""
        kb = _status_kb("VmHWM") if self._hwm else self._sampled_kb
        out = {"peak_rss_mb": (kb or 0) / 1024}
        if self.cuda:
            import torch

            out["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
            out["peak_gpu_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
        out["peak_memory_mb"] = out["peak_gpu_memory_mb"] if self.cuda else out["peak_rss_mb"]
        return out


def _rss_kb() -> int:
    import psutil

    return psutil.Process().memory_info().rss // 1024
