"""The compiled fast path of the batch scorer: fused recurrent steps (``csrc/stepwise.cpp``).

It is built once per machine with the local C++ compiler and cached under
``$XDG_CACHE_HOME/rnn-sentiment/native`` (``~/.cache/...``), keyed by the source, the torch
version and the CPU, because it is compiled for this CPU's instruction set. When it cannot be built
(no compiler, no ninja), :func:`kernels` returns ``None`` and the scorer runs the same steps as
PyTorch calls, slower, with the same results up to rounding. Whether it is used at all
(``RNN_SENTIMENT_NATIVE=0`` turns it off) is decided in :mod:`rnn_sentiment.inference.engine`.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

SOURCE = Path(__file__).parent / "csrc" / "stepwise.cpp"
CFLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp"]
if platform.machine().lower() in ("x86_64", "amd64"):
    CFLAGS.append("-mrecip")  # approximate reciprocal + one Newton step for the sigmoids' divisions
LDFLAGS = ["-fopenmp"]  # resolves to the libgomp torch already loaded: one OpenMP runtime

_loaded: ModuleType | None = None
_failure: str | None = None

# What torch runs as ``ninja`` during a build: a supervisor with the real ninja as its child, so
# the compilers never outlive the process that builds. The supervisor gets SIGTERM when that
# process dies, even by SIGKILL (Linux's PR_SET_PDEATHSIG); ninja gets SIGTERM when the supervisor
# dies, also when the builder kills it (subprocess.run does on Ctrl-C); and ninja passes SIGTERM on
# to the compilers, each in a process group of its own. Measured with a compiler that sleeps: a
# SIGKILLed builder left ninja and the compiler running; with the supervisor both are gone in
# well under a second.
_SUPERVISOR = """
import ctypes, os, signal, subprocess, sys
ninja, builder, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
prctl = getattr(ctypes.CDLL(None), "prctl", None)
def die_with_parent():
    if prctl is not None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
die_with_parent()
if os.getppid() != builder:  # the builder died before prctl
    sys.exit(1)
signal.signal(signal.SIGINT, lambda *_: None)  # Ctrl-C reaches ninja too; it stops the build
code = subprocess.Popen([ninja, *args], preexec_fn=die_with_parent).wait()
sys.exit(code if code >= 0 else 128 - code)
"""


def _cpu_key() -> str:
    try:  # one line per core: deduplicated, so the key does not change with the cores online
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({x for x in lines if x.startswith(("flags", "model name"))}))
    except OSError:
        return platform.machine() + platform.processor()


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
        folder = _private_temp() / folder.name
        folder.mkdir(exist_ok=True)
    return folder


def _private_temp() -> Path:
    # The temporary folder is shared with other users: the one we import code from must be ours
    # and writable by nobody else, or someone could plant a library in it.
    base = Path(tempfile.gettempdir()) / f"rnn-sentiment-native-{os.getuid()}"
    base.mkdir(mode=0o700, exist_ok=True)
    info = base.lstat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077 or not base.is_dir() or base.is_symlink():
        raise OSError(f"{base} is not a private folder of this user")
    return base


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
    """Compile (or reuse) the extension and import it; raises when it cannot be built.

    A library is imported only once a ``complete`` marker says its build finished; builds are
    serialised by an ``flock`` (released by the kernel if the process dies), so a killed build
    neither leaves a half-written library to import nor a lock file that blocks every later one.
    """
    import torch  # noqa: F401  (the extension links against the loaded libtorch)

    folder = build_dir()
    name = _name(folder)
    built, marker = folder / f"{name}.so", folder / "complete"
    if marker.is_file() and built.is_file():
        return _import(built, name)
    with _exclusive(folder / "build.lock"):
        if marker.is_file() and built.is_file():  # another process built it while we waited
            return _import(built, name)
        (folder / "lock").unlink(missing_ok=True)  # torch's own lock file, left by a killed build
        built.unlink(missing_ok=True)
        from torch.utils import cpp_extension

        _say("compiling the fast CPU scorer for this machine (once, about a minute)")
        with _ninja_that_dies_with_us(folder):
            module = cpp_extension.load(
                name=name,
                sources=[str(SOURCE)],
                extra_cflags=CFLAGS,
                extra_ldflags=LDFLAGS,
                build_directory=str(folder),
                verbose=verbose,
            )
        partial = folder / "complete.tmp"
        partial.write_text("built\n")
        os.replace(partial, marker)
        _prune_old_builds(folder)
        return module


def _prune_old_builds(current: Path, days: float = 30.0) -> None:
    # Each new source, torch or CPU gets a folder of its own; drop the ones unused for a month.
    cutoff = time.time() - days * 86400
    for folder in current.parent.iterdir():
        try:
            if folder != current and folder.is_dir() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue


@contextmanager
def _exclusive(path: Path, patience: float = 2.0) -> Iterator[None]:
    """Hold the build lock; says on stderr what it waits for when that takes over ``patience``."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock; torch's own lock file still serialises builds
        yield
        return
    with path.open("a") as handle:
        deadline = time.monotonic() + patience
        while not _try_lock(handle.fileno()):
            if time.monotonic() >= deadline:
                _say("waiting for another process to finish building the fast CPU scorer "
                     f"(lock: {path})")  # fmt: skip
                fcntl.flock(handle, fcntl.LOCK_EX)
                break
            time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _try_lock(fd: int) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _say(text: str) -> None:
    if sys.stderr is not None:  # print(file=None) would write to stdout, the machine output
        print(f"rnn-sentiment: {text}", file=sys.stderr, flush=True)


@contextmanager
def _ninja_that_dies_with_us(folder: Path) -> Iterator[None]:
    """PATH leads torch to the :data:`_SUPERVISOR` ``ninja`` while a build runs (Linux)."""
    _put_ninja_on_path()
    ninja = shutil.which("ninja")
    if ninja is None or not sys.platform.startswith("linux"):
        yield  # no ninja: torch says so; elsewhere no PR_SET_PDEATHSIG to build on
        return
    bin_dir = folder / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "supervise.py").write_text(_SUPERVISOR)
    python, script = shlex.quote(sys.executable), shlex.quote(str(bin_dir / "supervise.py"))
    command = bin_dir / "ninja"
    command.write_text(
        f'#!/bin/sh\nexec {python} -I -S {script} {shlex.quote(ninja)} {os.getpid()} "$@"\n'
    )
    command.chmod(0o755)
    path = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{path}"
    try:
        yield
    finally:
        os.environ["PATH"] = path


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
    try:
        _loaded = build()
    except Exception as error:  # noqa: BLE001 - any build failure means: use the PyTorch path
        _failure = f"{type(error).__name__}: {_first_error_line(error)}"
    return _loaded


def _first_error_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    compiler = [line for line in lines if "error" in line.lower()]
    return (compiler or lines or ["(no message)"])[0]


def failure() -> str | None:
    """Why :func:`kernels` returned ``None``, if it did."""
    return _failure


if (
    __name__ == "__main__"
):  # ``python -m rnn_sentiment.inference.native``: build now (make install does)
    module = kernels()
    if module is None:
        print(f"rnn-sentiment: the fast CPU scorer was not built ({failure()}); scoring uses "
              "PyTorch calls instead, slower, same results", file=sys.stderr)  # fmt: skip
    else:
        print(f"rnn-sentiment: fast CPU scorer ready: {module.__file__}", file=sys.stderr)
