"""The candidate's filesystem: an empty read-only root with only what Python needs bound in.

`enter_private_root()` must run in a process that already has its own mount namespace (and
CAP_SYS_ADMIN there). It mounts a tmpfs, binds into it read-only/nosuid/nodev the system
directories (/usr, /lib*, /bin, /sbin), a few /etc files, the interpreter's prefixes and
sys.path entries, device nodes null/zero/full/random/urandom, empty /proc and /tmp mount
points, then pivot_roots into it and detaches the old root. Nothing else of the host (home
directories, /work, the repository, the database, other candidates' scratch) exists in the view.
"""
from __future__ import annotations

import os

from evoforge.sandbox import _linux as L
from evoforge.sandbox._common import DEV_NODES, ETC_FILES, SYSTEM_DIRS, Toolchains, python_dirs

# Any existing directory that holds nothing the view needs; the tmpfs over it is private to
# our mount namespace and becomes "/" after pivot_root.
ROOT_CANDIDATES = ("/sys", "/mnt", "/srv", "/media")


def _mkdirs(root: str, path: str) -> str:
    target = root + path
    os.makedirs(target, mode=0o755, exist_ok=True)
    return target


def _touch(root: str, path: str) -> str:
    target = root + path
    os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
    if not os.path.exists(target):
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
    return target


# View directories under /tmp (a checkout or venv that lives there) would be hidden by the
# per-run scratch tmpfs on /tmp: they are bound at a stash path instead and bound again inside
# the scratch by `mount_scratch`.
STASH = "/.evoforge-stash"
STASHED: list[tuple[str, str]] = []  # (stash path in the view, where it belongs under /tmp)


def under_tmp(path: str) -> bool:
    return path.startswith("/tmp/")


def view_dirs(toolchains: Toolchains = Toolchains()) -> list[str]:
    """Host directories bound read-only (symlinked top-level dirs such as /bin excluded): the
    system, the interpreter and the operator's toolchains."""
    dirs = []
    for d in SYSTEM_DIRS + python_dirs() + list(toolchains.dirs):
        if os.path.isdir(d) and not os.path.islink(d):
            if not any(d.startswith(o + "/") for o in dirs):
                dirs.append(d)
    return dirs


def _pick_root(toolchains: Toolchains) -> str:
    needed = view_dirs(toolchains) + ETC_FILES + DEV_NODES
    for cand in ROOT_CANDIDATES:
        if os.path.isdir(cand) and not any(n.startswith(cand + "/") for n in needed):
            return cand
    raise OSError(f"no directory to build the sandbox root on (tried {ROOT_CANDIDATES})")


def enter_private_root(rw_binds: tuple[tuple[str, str], ...] = (),
                       toolchains: Toolchains = Toolchains()) -> None:
    L.mount(None, "/", None, L.MS_REC | L.MS_PRIVATE)
    root = _pick_root(toolchains)
    L.mount("evoforge-root", root, "tmpfs", L.MS_NOSUID | L.MS_NODEV, "mode=0755,size=1m")
    for d in SYSTEM_DIRS:
        if os.path.islink(d):
            os.symlink(os.readlink(d), root + d)
    STASHED.clear()
    for d in view_dirs(toolchains):
        if under_tmp(d):
            stash = f"{STASH}/{len(STASHED)}"
            L.bind_ro(d, _mkdirs(root, stash))
            STASHED.append((stash, d))
            _mask(root, stash, d, toolchains.masked)
            continue
        if os.path.lexists(root + d):
            continue
        L.bind_ro(d, _mkdirs(root, d))
        _mask(root, d, d, toolchains.masked)
    for f in ETC_FILES:
        if os.path.isfile(f):
            L.bind_ro(f, _touch(root, f))
    for dev in DEV_NODES:
        if os.path.exists(dev):
            target = _touch(root, dev)
            L.mount(dev, target, None, L.MS_BIND)
            L.mount(None, target, None, L.MS_BIND | L.MS_REMOUNT | L.MS_NOSUID | L.MS_NOEXEC)
    for src, dst in rw_binds:
        L.mount(src, _mkdirs(root, dst), None, L.MS_BIND)
        L.mount(None, root + dst, None,
                L.MS_BIND | L.MS_REMOUNT | L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC)
    os.symlink("/proc/self/fd", root + "/dev/fd")
    os.symlink("/tmp", root + "/dev/shm")
    for d in ("/proc", "/tmp", "/.oldroot"):
        os.makedirs(root + d, mode=0o755, exist_ok=True)
    os.chmod(root + "/tmp", 0o1777)
    os.chdir(root)
    L.pivot_root(".", ".oldroot")
    os.chdir("/")
    L.umount2("/.oldroot", L.MNT_DETACH)
    os.rmdir("/.oldroot")
    L.mount(None, "/", None, L.MS_REMOUNT | L.MS_RDONLY | L.MS_NOSUID | L.MS_NODEV)


def _mask(root: str, at: str, host_dir: str, masked: tuple[str, ...]) -> None:
    """Hide the secret-looking files of a toolchain bound at `root + at` (from `host_dir`)."""
    for path in masked:
        if path.startswith(host_dir + "/"):
            L.mount("/dev/null", root + at + path[len(host_dir):], None, L.MS_BIND)


def mount_scratch(options: str) -> None:
    """The run's private, size-limited /tmp (after `enter_private_root`, still privileged), with
    any stashed Python directory bound back read-only at its own path inside it. Not noexec:
    compilers (cargo, g++) build into it and run what they built; a candidate that can run
    Python could map executable memory anyway."""
    L.mount("evoforge-scratch", "/tmp", "tmpfs", L.MS_NOSUID | L.MS_NODEV, options)
    for stash, target in STASHED:
        os.makedirs(target, mode=0o755, exist_ok=True)
        L.bind_ro(stash, target)
