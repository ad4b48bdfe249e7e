"""The compiled fast path of the batch scorer: fused recurrent steps (``csrc/stepwise.cpp``).

It is built once per machine with the local C++ compiler and cached under
``$XDG_CACHE_HOME/rnn-sentiment/native`` (``~/.cache/...``), keyed by the source, the torch
version and the CPU, because it is compiled for this CPU's instruction set. When it cannot be built
(no compiler, no ninja) or ``RNN_SENTIMENT_NATIVE=0`` is set, :func:`kernels` returns ``None`` and
the scorer runs the same steps as PyTorch calls, slower, with the same results up to rounding.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

SOURCE = Path(__file__).parent / "csrc" / "stepwise.cpp"
CFLAGS = ["-O3", "-march=native", "-ffast-math", "-mrecip", "-fopenmp"]
LDFLAGS = ["-fopenmp"]  # resolves to the libgomp torch already loaded: one OpenMP runtime

_loaded: ModuleType | None = None
_failure: str | None = None


def _cpu_key() -> str:
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "model name")):
                flags += line
    except OSError:
        flags = platform.processor()
    return flags


def build_dir() -> Path:
    import torch

    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), torch.__version__.encode(), sys.version.encode(),
                 " ".join(CFLAGS).encode(), _cpu_key().encode()):  # fmt: skip
        digest.update(part)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = cache / "rnn-sentiment" / "native" / digest.hexdigest()[:16]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: build in the temporary folder instead
        folder = Path(tempfile.gettempdir()) / f"rnn-sentiment-native-{os.getuid()}" / folder.name
    return folder


def _name(folder: Path) -> str:
    return f"rnn_sentiment_stepwise_{folder.name}"


def _import(path: Path, name: str) -> ModuleType:
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def build(verbose: bool = False) -> ModuleType:
    """Compile (or reuse) the extension and import it; raises when it cannot be built."""
    import torch  # noqa: F401  (the extension links against the loaded libtorch)

    folder = build_dir()
    name = _name(folder)
    built = folder / f"{name}.so"
    if built.is_file():
        return _import(built, name)
    from torch.utils import cpp_extension

    folder.mkdir(parents=True, exist_ok=True)
    _clear_stale_lock(folder)
    _put_ninja_on_path()
    print("rnn-sentiment: compiling the fast CPU scorer for this machine (once, about a minute)",
          file=sys.stderr, flush=True)  # fmt: skip
    return cpp_extension.load(
        name=name,
        sources=[str(SOURCE)],
        extra_cflags=CFLAGS,
        extra_ldflags=LDFLAGS,
        build_directory=str(folder),
        verbose=verbose,
    )


def _clear_stale_lock(folder: Path, older_than: float = 600.0) -> None:
    # torch waits for the lock file of a concurrent build; a build that was killed leaves it
    # behind, and every later build would wait on it forever.
    lock = folder / "lock"
    try:
        if time.time() - lock.stat().st_mtime > older_than:
            lock.unlink()
    except OSError:
        pass


def _put_ninja_on_path() -> None:
    # torch runs ``ninja`` from PATH; the ninja wheel's binary is not there unless the virtual
    # environment is activated.
    try:
        import ninja  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return
    os.environ["PATH"] = f"{ninja.BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}"


def kernels() -> ModuleType | None:
    """The compiled module, building it on first use; ``None`` when it is off or cannot be built."""
    global _loaded, _failure
    if _loaded is not None or _failure is not None:
        return _loaded
    if os.environ.get("RNN_SENTIMENT_NATIVE", "1") == "0":
        _failure = "turned off by RNN_SENTIMENT_NATIVE=0"
        return None
    try:
        _loaded = build()
    except Exception as error:  # noqa: BLE001 - any build failure means: use the PyTorch path
        _failure = f"{type(error).__name__}: {str(error).strip().splitlines()[-1:] or ''}"
    return _loaded


def failure() -> str | None:
    """Why :func:`kernels` returned ``None``, if it did."""
    return _failure


if __name__ == "__main__":  # ``python -m rnn_sentiment.native``: build now (make install does)
    module = kernels()
    if module is None:
        print(f"rnn-sentiment: the fast CPU scorer was not built ({failure()}); scoring uses "
              "PyTorch calls instead, slower, same results", file=sys.stderr)  # fmt: skip
    else:
        print(f"rnn-sentiment: fast CPU scorer ready: {module.__file__}", file=sys.stderr)
