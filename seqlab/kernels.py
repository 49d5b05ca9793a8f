"""seqlab's compiled CPU kernels.

The multiclass losses have a C++ kernel (``seqlab/csrc/losses.cpp``) for float32 on the CPU:
one pass per row computes the loss and its gradient. It is built on first use with torch's
C++ extension loader, which needs a C++ compiler and ninja, and cached under
``$SEQLAB_CACHE`` (default ``~/.cache/seqlab``) for the installed torch and CPU. The first
build takes about half a minute; ``make install`` does it once ahead of time.

Where it cannot be built, or with ``SEQLAB_COMPILED=0`` in the environment when seqlab is
imported, the same losses run as torch operations (``seqlab/losses.py``): same results, slower
on small inputs. :func:`status` says which is in use and why.

    python -m seqlab.kernels        # build now, print the status
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import threading
import warnings
from pathlib import Path
from types import ModuleType

import torch

SOURCE = Path(__file__).resolve().parent / "csrc" / "losses.cpp"
ENV_SWITCH = "SEQLAB_COMPILED"

_lock = threading.Lock()
_module: ModuleType | None = None
_reason: str | None = None
_tried = False
_off = 0
# read once: the losses ask on every call
_OFF_AT_IMPORT = os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off")


def _flags() -> tuple[str, list[str]]:
    """The CPU capability torch dispatches to here, and the flags that build the kernel for it
    (ATen's vectorised types pick their implementation from ``CPU_CAPABILITY_*``)."""
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        capability = "DEFAULT"
    if capability == "AVX512":
        return capability, ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma",
                            "-DCPU_CAPABILITY_AVX512", "-DCPU_CAPABILITY=AVX512"]
    if capability == "AVX2":
        return capability, ["-mavx2", "-mfma", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"]
    return "DEFAULT", []


def build_directory(capability: str) -> Path:
    root = Path(os.environ.get("SEQLAB_CACHE") or Path.home() / ".cache" / "seqlab")
    version = torch.__version__.replace("+", "-")
    python = f"py{sys.version_info[0]}{sys.version_info[1]}"
    return root / "kernels" / f"torch-{version}-{python}-{capability.lower()}"


def _source_key() -> str:
    return hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]


def _build() -> tuple[ModuleType | None, str | None]:
    if sys.platform not in ("linux", "darwin"):
        return None, f"not built on {sys.platform}"
    capability, flags = _flags()
    directory = build_directory(capability)
    failed = directory / "build-failed.txt"
    key = _source_key()
    if failed.is_file():
        lines = failed.read_text(encoding="utf-8", errors="replace").splitlines()
        if lines and lines[0] == key:  # no new attempt (half a minute) in every process
            reason = (f"{lines[1] if len(lines) > 1 else 'unknown error'} (an earlier build "
                      f"failed; delete {failed} to try again)")
            _warn(reason)
            return None, reason
    try:
        from torch.utils import cpp_extension

        if shutil.which("ninja") is None:  # the ninja wheel's binary, where PATH lacks it
            with contextlib.suppress(ImportError):
                import ninja

                os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])
        directory.mkdir(parents=True, exist_ok=True)
        if not any(directory.glob("*.so")):
            print(f"seqlab: building the CPU loss kernel in {directory} (once, about 30 s; "
                  f"{ENV_SWITCH}=0 skips this)", file=sys.stderr, flush=True)
        # at::parallel_for is inline OpenMP code: without -fopenmp it runs on one thread
        openmp = ["-fopenmp"] if sys.platform == "linux" else []
        module = cpp_extension.load(
            name=f"seqlab_losses_{capability.lower()}", sources=[str(SOURCE)],
            extra_cflags=["-O3", *openmp, *flags], extra_ldflags=openmp,
            build_directory=str(directory), verbose=False)
        failed.unlink(missing_ok=True)
        return module, None
    except Exception as exc:  # noqa: BLE001 - no compiler, no ninja, no headers: run without it
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        reason = f"{type(exc).__name__}: {first}"[:300]
        with contextlib.suppress(OSError):
            directory.mkdir(parents=True, exist_ok=True)
            failed.write_text(f"{key}\n{reason}\n\n{exc}\n", encoding="utf-8")
        _warn(reason)
        return None, reason


def _warn(reason: str) -> None:
    warnings.warn(
        f"seqlab: no compiled CPU loss kernel ({reason}); the losses run as torch operations "
        f"instead (same results, slower on small inputs). Set {ENV_SWITCH}=0 to skip the "
        f"kernel.", RuntimeWarning, stacklevel=4)


def losses() -> ModuleType | None:
    """The compiled loss module, built on the first call; None where it is switched off or
    could not be built."""
    global _module, _reason, _tried
    if _off or _OFF_AT_IMPORT:
        return None
    if not _tried:
        with _lock:
            if not _tried:
                _module, _reason = _build()
                _tried = True
    return _module


def status() -> str:
    """Which implementation of the CPU losses is in use, and why."""
    if _OFF_AT_IMPORT:
        return f"torch operations ({ENV_SWITCH}=0 when seqlab was imported)"
    if _off:
        return "torch operations (switched off in this block)"
    module = losses()
    if module is None:
        return f"torch operations (the kernel could not be built: {_reason})"
    return f"compiled kernel ({_flags()[0]}, {Path(module.__file__).parent})"


@contextlib.contextmanager
def disabled():
    """Run the losses as torch operations inside this block (for comparisons and benchmarks)."""
    global _off
    _off += 1
    try:
        yield
    finally:
        _off -= 1


if __name__ == "__main__":
    print(status())
