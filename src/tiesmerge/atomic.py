"""Atomic output folders, checked before any work, with disk faults as one-line user errors.

An output is built in a hidden temp dir beside its target (`.NAME.tmp-PID-XXXX`) and renamed into place only when
complete, so a failed or interrupted run leaves nothing under the target's name. A run killed outright (SIGKILL,
power loss) cannot clean up: the next run that writes beside the same target removes such temp dirs once their
process is gone, and says so.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from tiesmerge.errors import BadInputError

Log = Callable[[str], None]

# Disk faults a user fixes (free space, permissions, another path), not bugs.
DISK_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
               errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
               errno.EROFS: "read-only file system", errno.ENAMETOOLONG: "a name in the path is too long"}
_STALE = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)(?:-.*)?$")


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def disk_error(exc: OSError, path: Path | str) -> BadInputError | None:
    """The one-line user error for a disk fault while writing `path`, or None for other errors."""
    reason = DISK_ERRNOS.get(exc.errno or -1)
    if reason is None:
        return None
    fix = ("free space there or write elsewhere with -o" if exc.errno in (errno.ENOSPC, errno.EDQUOT)
           else "choose a shorter path" if exc.errno == errno.ENAMETOOLONG
           else "choose a folder you can write to with -o")
    return BadInputError(f"cannot write {path}: {reason}; {fix}")


# A temp output is named `.NAME.tmp-PID-XXXXXXXX`: NAME may use what is left of the file system's name limit.
_TMP_OVERHEAD = 32


def user_path(path: Path | str, what: str = "path") -> Path:
    """`~` and `~user` expanded; an unknown user or home is one line, not a RuntimeError."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        raise BadInputError(f"{what} {path}: cannot expand {str(path).split('/')[0]!r} (no such user or home "
                            "folder); give the full path") from None


def _exists(path: Path) -> bool:
    """Path.exists() that answers False, not OSError, for a name the file system cannot hold (ENAMETOOLONG)."""
    try:
        return path.exists()
    except OSError:
        return False


def check_name_length(target: Path, flag: str = "-o") -> None:
    """Refuse a path the file system cannot hold (ENAMETOOLONG) — any component too long, or the whole — before
    any work."""
    probe = next((p for p in (target.parent, *target.parents) if _exists(p)), Path("/"))
    try:
        name_max = os.pathconf(probe, "PC_NAME_MAX")
        path_max = os.pathconf(probe, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    long = next((part for part in target.parts if len(os.fsencode(part)) > name_max - _TMP_OVERHEAD), None)
    if long is not None:
        which = "its last name" if long == target.name else "the folder name"
        raise BadInputError(f"output {str(target)[:80]}…: {which} {long[:40]}… is {len(os.fsencode(long))} bytes; "
                            f"the file system allows {name_max} (less {_TMP_OVERHEAD} for the temp name): choose "
                            f"a shorter {flag} path")
    if len(os.fsencode(str(target.absolute()))) > path_max - _TMP_OVERHEAD - 64:
        raise BadInputError(f"output {str(target)[:80]}… is longer than the file system allows ({path_max} bytes); "
                            f"choose a shorter {flag} path")


def _real(path: Path) -> Path:
    try:
        return Path(path).expanduser().resolve()
    except (RuntimeError, OSError):
        return Path(path).absolute()


def refuse_overlap(output: Path | str, inputs: dict[str, Path | str | None], fix: str = "write to a separate folder"
                   ) -> None:
    """Refuse an output that is, lies inside, or contains one of the inputs (after following symlinks on both
    sides): writing it, or replacing it with --force, would change or delete an input."""
    target = _real(Path(output))
    for label, src in inputs.items():
        if src is None:
            continue
        real = _real(Path(src))
        if target == real or real in target.parents or target in real.parents:
            how = "is" if target == real else ("lies inside" if real in target.parents else "contains")
            raise BadInputError(f"output {output} overlaps {label} ({src}: the output {how} it); {fix}")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(target: Path, log: Log | None = _stderr) -> list[Path]:
    """Remove temp dirs of this tool beside `target` left by runs that no longer exist; returns them."""
    removed = []
    try:
        siblings = list(target.parent.iterdir())
    except OSError:
        return removed
    for entry in siblings:
        m = _STALE.match(entry.name)
        if m and m["name"] == target.name and not _alive(int(m["pid"])):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    if removed and log is not None:
        log(f"removed {len(removed)} unfinished temp folder(s) of an earlier, interrupted run beside {target}")
    return removed


def check_output_dir(target: Path | str, force: bool) -> Path:
    """Refuse an output folder that cannot be written, before any work: not a folder, not empty without --force,
    a parent that is a file or not writable. Returns the resolved path."""
    target = user_path(target, "output")
    check_name_length(target)
    resolved = target.resolve()
    if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents or resolved.parent == resolved:
        raise BadInputError(f"output {target} is the current folder, one of its parents or the root; "
                            "write to a new folder")
    if target.exists() and not target.is_dir():
        raise BadInputError(f"output {target} exists and is not a directory; choose another -o path")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise BadInputError(f"output {target} exists and is not empty; pass --force to replace it")
    parent = target.absolute().parent
    existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise BadInputError(f"output {target}: {existing} is a file, not a folder; choose another -o path")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise BadInputError(f"cannot write {target}: permission denied in {existing}; "
                            "choose a folder you can write to with -o")
    return target.resolve()


def ensure_free_space(folder: Path, need: int, what: str) -> None:
    """Refuse to start a long job whose output (`need` bytes, with 5 % headroom) cannot fit on the disk."""
    probe = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if probe is None:
        return
    free = shutil.disk_usage(probe).free
    if free < need * 1.05:
        raise BadInputError(f"not enough free space for {what} in {probe}: needs about {need / 2**20:.0f} MiB, "
                            f"{free / 2**20:.0f} MiB free; free space or write elsewhere with -o")


@contextlib.contextmanager
def atomic_output_dir(target: Path, force: bool, log: Log | None = _stderr) -> Iterator[Path]:
    """Yield a temp dir beside `target`; on success it replaces `target`, on any failure it is removed.
    Disk faults (full disk, quota, permissions, read-only) become one-line BadInputErrors naming the path."""
    target = check_output_dir(target, force)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(target, log)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    except OSError as exc:
        raise (disk_error(exc, target) or exc) from None
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the output should look like any folder
    old = None
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            target.rename(old)
        tmp.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not target.exists():
            old.rename(target)  # put the previous output back
        err = disk_error(exc, target)
        if err is None:
            raise
        raise err from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_output_file(target: Path | str, flag: str, inputs: dict[str, Path | str | None]) -> Path:
    """A file output checked before any work: not a folder, its folder exists and is writable, its name fits, and
    it is none of the inputs (nor inside one, through symlinks too)."""
    path = user_path(target, flag)
    if path.is_dir():
        raise BadInputError(f"{flag} {target}: is a folder; give a file name (e.g. {Path(target) / 'recipe.yaml'})")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise BadInputError(f"{flag} {target}: the folder {parent} does not exist; create it or write elsewhere")
    if not os.access(parent, os.W_OK):
        raise BadInputError(f"{flag} {target}: cannot write to the folder {parent}; choose a folder you can write to")
    check_name_length(path, flag)
    refuse_overlap(path, inputs, f"give {flag} a new file name")
    return path


def write_file(path: Path | str, data: str | bytes) -> Path:
    """Write a file atomically: a temp file beside it, then a rename; nothing is left on any failure."""
    raw = data.encode() if isinstance(data, str) else data

    def write(tmp: Path) -> None:
        tmp.write_bytes(raw)

    return replace_file(path, write)


def replace_file(path: Path | str, write: Callable[[Path], None]) -> Path:
    """`write(tmp)` fills a temp file beside `path`, which then replaces `path` in one rename; a disk fault is one
    line (BadInputError) and the temp file never stays."""
    path = Path(path)
    tmp = None
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name[:64]}.tmp-", dir=path.parent if str(path.parent) else ".")
        os.close(fd)
        tmp = Path(name)
        write(tmp)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise (disk_error(exc, path) or exc) from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return path
