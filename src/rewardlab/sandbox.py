"""Running code a model wrote: in a bubblewrap sandbox where one is available, under resource limits always.

:func:`run_python` runs a program in a fresh ``python -I`` process and says how it ended. Every run has
limits on memory (address space), CPU time, wall-clock time, the size of any file it writes (its stdout and
stderr go to files, so this also bounds what it can print) and how much of its output is read back.

Where `bubblewrap <https://github.com/containers/bubblewrap>`_ (``bwrap``) works, the program also runs in
new namespaces: no network (its own loopback only, so not even the local server is reachable), its own
process ids (whatever it started dies with it), a filesystem holding only the system directories and the
interpreter, read-only, with a private size-limited ``/tmp`` as its working directory: the home directory,
the run store and the working tree are not there at all. The number of processes it may run is limited
(``RLIMIT_NPROC``, counted inside the sandbox); when this process is root, the program runs as ``nobody``,
since the kernel does not hold root to that limit.

Without bubblewrap (not installed, or unable to create namespaces here) the limits stay and a warning, given
once, names what is then unprotected. ``REWARDLAB_SANDBOX`` chooses: ``auto`` (the default: bubblewrap when
it works), ``bwrap`` (bubblewrap or an error) or ``off`` (limits only).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

from rewardlab.errors import RewardlabError

MODE_VARIABLE = "REWARDLAB_SANDBOX"
MODES = ("auto", "bwrap", "off")
# What the program may see, read-only, besides the interpreter: the system, never a home or a project.
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
SANDBOX_TMP = "/tmp"
UNPROTECTED = (
    "it can read and write every file this user can (keys in the home directory, the run store), open "
    "network connections and start any number of processes"
)
ENVIRONMENT = {
    "PATH": os.defpath,
    "LANG": "C.UTF-8",
    # One thread each: a numerical library starting a thread per core would meet the process limit.
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


@dataclass(frozen=True)
class Limits:
    """What one run may use. ``processes`` and ``tmp_mb`` apply in the sandbox only."""

    timeout_s: float = 3.0  # wall clock; CPU time is limited to this rounded up, plus one second
    memory_mb: int = 512  # address space of each process
    file_mb: int = 1  # any file written, stdout and stderr included
    processes: int = 32  # processes and threads, the program's own included
    tmp_mb: int = 16  # the private /tmp, all files together
    output_bytes: int = 64 * 1024  # of stdout (its start) and stderr (its end) read back

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise RewardlabError(f"sandbox timeout_s must be > 0, got {self.timeout_s}")
        for name in ("memory_mb", "file_mb", "processes", "tmp_mb", "output_bytes"):
            if getattr(self, name) < 1:
                raise RewardlabError(f"sandbox {name} must be at least 1, got {getattr(self, name)}")


@dataclass
class Result:
    """How a run ended: ``error`` is ``None`` when it exited with code 0, else what went wrong, in words."""

    returncode: int | None  # None: killed at the wall-clock limit
    stdout: str
    stderr: str
    error: str | None
    sandboxed: bool  # ran inside bubblewrap


# The first program: it reads the code, then becomes the program (limits set, root given up, main.py
# written). In the sandbox it forks the program instead, adopts every orphan (a subreaper), and once the
# program has ended kills and reaps whatever is left, so a run is over when it exits; it writes the
# program's wait status to the status file.
LAUNCHER = """\
import json, os, signal, sys
try:
    import resource
except ImportError:  # not POSIX: the wall-clock limit only
    resource = None
a = json.loads(sys.argv[1])
code = sys.stdin.buffer.read()
os.dup2(os.open(os.devnull, os.O_RDONLY), 0)


def become_program():
    if a["drop_to"] is not None:
        os.setgroups([])
        os.setresgid(a["drop_to"][1], a["drop_to"][1], a["drop_to"][1])
        os.setresuid(a["drop_to"][0], a["drop_to"][0], a["drop_to"][0])
    os.chdir(a["workdir"])
    with open("main.py", "wb") as f:
        f.write(code)
    for name, value in a["limits"].items() if resource else ():
        limit = getattr(resource, name)
        hard = resource.getrlimit(limit)[1]  # a lower limit already set stays: it cannot be raised
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(limit, (value, value))
    os.execv(a["python"], [a["python"], "-I", "main.py"])


if not a["reap"]:
    become_program()
import ctypes
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
if a["drop_to"] is not None:
    os.chmod(a["workdir"], 0o1777)
pid = os.fork()
if pid == 0:
    try:
        become_program()
    finally:
        os._exit(127)
status = os.waitpid(pid, 0)[1]
while True:
    try:
        os.kill(-1, signal.SIGKILL)  # every process in the sandbox but this one and its init
    except OSError:
        pass
    try:
        while True:
            os.waitpid(-1, 0)
    except ChildProcessError:
        break
os.write(a["status_fd"], str(status).encode())
"""


def _mode(mode: str | None) -> str:
    chosen = (mode if mode is not None else os.environ.get(MODE_VARIABLE, "") or "auto").strip().lower()
    if chosen not in MODES:
        source = "mode" if mode is not None else MODE_VARIABLE
        raise RewardlabError(f"{source} must be one of {', '.join(MODES)}, got '{chosen}'")
    return chosen


def _nobody() -> tuple[int, int]:
    import pwd  # POSIX only, as is running as root

    try:
        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        return 65534, 65534


def _within(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _python_dirs() -> list[str]:
    """The interpreter's installation and environment: the only directories outside the system's bound."""
    executable = os.path.realpath(sys.executable)
    candidates = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    candidates.append(os.path.dirname(os.path.dirname(executable)))
    # Never a directory that holds the home directory or the working tree (a prefix of "/", say).
    guarded = [os.path.realpath(p) for p in (str(Path.home()), os.getcwd())]
    paths = {os.path.abspath(p) for p in candidates} | {os.path.realpath(p) for p in candidates}
    dirs: list[str] = []
    for path in sorted(paths, key=len):  # a directory inside another one chosen comes with it
        if any(_within(path, outer) for outer in (*SYSTEM_PATHS, *dirs)):
            continue
        if path == "/" or any(_within(home, path) for home in guarded):
            continue
        dirs.append(path)
    return dirs


class _Bubblewrap:
    """The ``bwrap`` command line, and whether it works here (tried once)."""

    def __init__(self, executable: str):
        self.executable = executable
        try:
            help_text = subprocess.run(
                [executable, "--help"], capture_output=True, text=True, timeout=10
            ).stdout
        except (OSError, subprocess.SubprocessError):
            help_text = ""
        self.options = {word for word in help_text.split() if word.startswith("--")}
        self.as_root = os.geteuid() == 0

    def command(self, limits: Limits) -> list[str]:
        args = [self.executable, "--die-with-parent", "--new-session"]
        if self.as_root:
            # Root needs no user namespace; the launcher keeps what it takes to make the program nobody's
            # and to end it.
            args += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
            args += ["--unshare-cgroup-try"]
            args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_KILL"]
        else:
            args += ["--unshare-all", "--unshare-user"]
        for path in SYSTEM_PATHS:
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                args += ["--ro-bind", path, path]
        args += ["--dev", "/dev", "--proc", "/proc"]
        if "--size" in self.options:
            args += ["--size", str(limits.tmp_mb * 1024 * 1024)]
        # The private tmp comes before the interpreter's directories: a virtual environment under /tmp (a
        # clone there) is then bound on top of it instead of hidden by it.
        args += ["--tmpfs", SANDBOX_TMP]
        made: set[str] = set()
        for path in _python_dirs():
            parents = list(Path(path).parents)[::-1][1:]  # "/" exists; the rest are made, world-readable
            for parent in map(str, parents):
                if parent not in made:
                    made.add(parent)
                    args += (["--perms", "0755"] if "--perms" in self.options else []) + ["--dir", parent]
            args += ["--ro-bind", os.path.realpath(path), path]
        return [*args, "--chdir", SANDBOX_TMP]


_lock = threading.Lock()
_probed: dict[str, _Bubblewrap | str] = {}  # bwrap path -> a working sandbox, or why it does not work
_warned: set[str] = set()


def _bubblewrap(mode: str) -> _Bubblewrap | None:
    """The sandbox to use in ``mode``, or ``None`` (limits only: the warning is given once)."""
    if mode == "off":
        _warn_once(f"{MODE_VARIABLE}=off: model-written code runs with resource limits only; {UNPROTECTED}")
        return None
    executable = shutil.which("bwrap")
    problem = "bubblewrap (bwrap) is not installed" if executable is None else None
    if executable is not None:
        with _lock:
            if executable not in _probed:
                sandbox = _Bubblewrap(executable)
                trial = _run(sandbox, "", Limits(timeout_s=30))
                _probed[executable] = sandbox if trial.error is None else _first_line(trial)
        found = _probed[executable]
        if isinstance(found, _Bubblewrap):
            return found
        problem = f"bubblewrap cannot create a sandbox here ({found})"
    if mode == "bwrap":
        raise RewardlabError(f"{MODE_VARIABLE}=bwrap, but {problem}")
    _warn_once(
        f"{problem}: model-written code runs with resource limits only; {UNPROTECTED}. Install "
        "bubblewrap (apt-get install bubblewrap) to sandbox it."
    )
    return None


def _first_line(result: Result) -> str:
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else (result.error or "unknown error")


def _warn_once(message: str) -> None:
    with _lock:
        if message in _warned:
            return
        _warned.add(message)
    warnings.warn(message, RuntimeWarning, stacklevel=4)


def sandboxed(mode: str | None = None) -> bool:
    """Whether code run now would run inside bubblewrap (``mode`` as in :func:`run_python`)."""
    return _bubblewrap(_mode(mode)) is not None


def run_python(code: str, limits: Limits | None = None, mode: str | None = None) -> Result:
    """Run ``code`` as ``main.py`` in a fresh interpreter, sandboxed as ``mode`` (default
    ``$REWARDLAB_SANDBOX``, else ``auto``) says; never raises for what the code does."""
    limits = limits or Limits()
    return _run(_bubblewrap(_mode(mode)), code, limits)


def _rlimits(limits: Limits, sandbox: _Bubblewrap | None) -> dict[str, int]:
    values = {
        "RLIMIT_AS": limits.memory_mb * 1024 * 1024,
        "RLIMIT_CPU": math.ceil(limits.timeout_s) + 1,
        "RLIMIT_FSIZE": limits.file_mb * 1024 * 1024,
        "RLIMIT_CORE": 0,
    }
    if sandbox is not None:
        # Counted per user, so only where the program has a user of its own (nobody, or a user namespace).
        values["RLIMIT_NPROC"] = limits.processes
    return values


def _run(sandbox: _Bubblewrap | None, code: str, limits: Limits) -> Result:
    with tempfile.TemporaryDirectory(prefix="rewardlab-sandbox-") as root:
        workdir = SANDBOX_TMP if sandbox is not None else str(Path(root) / "work")
        if sandbox is None:
            os.mkdir(workdir)
        out_path, err_path, status_path = (Path(root) / name for name in ("stdout", "stderr", "status"))
        with out_path.open("wb") as out, err_path.open("wb") as err, status_path.open("wb") as status:
            arguments = {
                "workdir": workdir,
                "python": sys.executable,
                "limits": _rlimits(limits, sandbox),
                "drop_to": _nobody() if sandbox is not None and sandbox.as_root else None,
                "reap": sandbox is not None,
                "status_fd": status.fileno(),
            }
            command = [sys.executable, "-I", "-S", "-c", LAUNCHER, json.dumps(arguments)]
            if sandbox is not None:
                command = sandbox.command(limits) + command
            process = subprocess.Popen(
                command,
                cwd=root,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                pass_fds=(status.fileno(),),
                env={**ENVIRONMENT, "HOME": workdir},
                start_new_session=True,  # its own process group, so children it starts die with it
            )
            timed_out = False
            try:
                process.communicate(code.encode("utf-8", errors="replace"), timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill(process, sandbox is not None)  # and whatever it left behind
        stdout = _read(out_path, limits.output_bytes, head=True)
        # Tracebacks name main.py, not where it was written.
        stderr = _read(err_path, limits.output_bytes, head=False).replace(f'"{workdir}/main.py"', '"main.py"')
        out_size = out_path.stat().st_size
        reported = status_path.read_text()
    if timed_out:
        returncode = None
    elif sandbox is not None and reported.strip().isdigit():
        returncode = os.waitstatus_to_exitcode(int(reported))  # the program's, not bwrap's
    else:
        returncode = process.returncode
    error = _error(returncode, stderr, out_size, limits)
    return Result(returncode, stdout, stderr, error, sandboxed=sandbox is not None)


def _kill(process: subprocess.Popen, sandboxed: bool) -> None:
    """Stop what is left of a run. In the sandbox its init is killed, not bwrap: the kernel then ends every
    process in the sandbox before bwrap, which waits for its init, returns."""
    if sandboxed and process.poll() is None:
        for child in _children(process.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.name == "posix":
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
    process.wait()


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def _read(path: Path, limit: int, head: bool) -> str:
    with path.open("rb") as file:
        size = file.seek(0, os.SEEK_END)
        file.seek(0 if head else max(size - limit, 0))
        return file.read(limit).decode("utf-8", errors="replace")


SIGNAL_REASONS = {
    getattr(signal, "SIGXCPU", -1): "CPU time limit reached",
    getattr(signal, "SIGXFSZ", -1): "output or file size limit reached",
    getattr(signal, "SIGKILL", -1): "killed (memory or time limit)",
    getattr(signal, "SIGSEGV", -1): "crashed (segmentation fault)",
}


def _error(returncode: int | None, stderr: str, out_size: int, limits: Limits) -> str | None:
    if returncode is None:
        return f"timed out after {limits.timeout_s:g} s"
    if returncode == 0:
        return None
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    if out_size >= limits.file_mb * 1024 * 1024:
        return f"output over the {limits.file_mb} MB limit"
    if returncode < 0:
        return SIGNAL_REASONS.get(-returncode, f"killed by signal {-returncode}")
    if last.startswith("MemoryError"):
        return f"memory limit ({limits.memory_mb} MB) reached"
    if last.startswith("BlockingIOError") and "Resource temporarily unavailable" in last:
        return f"process limit ({limits.processes}) reached"
    if "File too large" in last:
        return f"file size limit ({limits.file_mb} MB) reached"
    if "No space left on device" in last:
        return f"the private /tmp is full ({limits.tmp_mb} MB)"
    return f"exit code {returncode}"
