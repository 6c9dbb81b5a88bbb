"""Walking the paths given to a load: folders in sorted order, filters, symlink policy, loops.

Policy:

* Files and folders whose name starts with ``.`` are left out of a walk (not reported: they are
  version-control, cache and editor files far more often than documents).
* ``include``/``exclude`` globs match each file's path relative to the folder given (see
  :func:`~m3e_rag.ingest.loaders.load_paths`); an excluded folder is not entered.
* **Symbolic links are not followed out of the ingested folders** by default: a link inside a
  walked folder whose target lies outside every path given (``docs/passwd -> /etc/passwd``) is
  reported as skipped, naming ``follow_symlinks=True`` / ``--follow-symlinks``. Links whose target
  is inside the given paths are followed (a file reached twice is loaded once). Paths named
  directly are explicit: they are always followed.
* A link loop (``s.txt -> s.txt``), a broken link or an unreadable folder is reported as skipped
  with the reason; the walk goes on. A folder reached twice (a link back up the tree) is walked once.
* What the walk sees is checked again when each file is opened (:mod:`.opening`): a file swapped
  for a link out of the folders after the walk saw it is refused then, with the same reason.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path

from m3e_rag.ingest.loaders._common import SkippedFile, display_path
from m3e_rag.ingest.loaders.opening import inside

__all__ = ["iter_files", "file_identity", "real_roots", "FOLLOW_HINT"]

FOLLOW_HINT = "pass follow_symlinks=True (CLI: --follow-symlinks) to follow it"


def file_identity(path: Path) -> tuple[int, int] | str:
    """Return a key that is the same for two spellings of one file (device and inode)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return os.path.abspath(path)
    return (st.st_dev, st.st_ino)


def match(rel: str, name: str, pattern: str) -> bool:
    """Whether a relative POSIX path matches a glob pattern (see ``load_paths``)."""
    if "/" not in pattern.rstrip("/"):
        return fnmatchcase(name, pattern) or fnmatchcase(rel, pattern)
    variants = {pattern, pattern.replace("/**/", "/")}
    while pattern.startswith("**/"):
        pattern = pattern[3:]
        variants.update({pattern, pattern.replace("/**/", "/")})
    return any(fnmatchcase(rel, v) for v in variants)


def real_roots(roots: list[Path]) -> list[str]:
    """The real paths of the paths given: a link walked to a target under none of them leads out."""
    return [os.path.realpath(r) for r in roots]


def _link_error(exc: OSError) -> str:
    """Reason for a symbolic link whose target cannot be reached."""
    if exc.errno == errno.ELOOP:
        return "symbolic link loop (the link points back at itself)"
    if exc.errno == errno.ENOENT:
        return "broken symbolic link (its target does not exist)"
    return f"cannot follow symbolic link: {exc.strerror or exc}"


def iter_files(
    roots: list[Path],
    include: list[str] | None,
    exclude: list[str] | None,
    follow_symlinks: bool,
    skipped: list[SkippedFile],
) -> Iterator[tuple[Path, bool]]:
    """Yield ``(file, walked)`` to load under ``roots`` in order; append what is left out to ``skipped``.

    ``walked`` is False for a file named in ``roots`` itself (always followed), True for a file
    found in a folder (held to the symlink policy again when it is opened).
    """
    reals = real_roots(roots)
    for root in roots:
        if os.path.isdir(root):
            for file in _walk_folder(root, include, exclude, follow_symlinks, reals, skipped):
                yield file, True
        else:
            yield root, False


def _walk_folder(
    root: Path,
    include: list[str] | None,
    exclude: list[str] | None,
    follow_symlinks: bool,
    reals: list[str],
    skipped: list[SkippedFile],
) -> Iterator[Path]:
    """Depth-first, files of a folder before its sub-folders, each level in sorted order."""
    visited: set[tuple[int, int]] = set()
    try:
        st = os.stat(root)
        visited.add((st.st_dev, st.st_ino))
    except OSError:
        pass
    stack: list[tuple[str, str]] = [(os.fspath(root), "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            skipped.append(SkippedFile(display_path(folder), f"cannot read folder: {exc.strerror or exc}"))
            continue
        subfolders: list[tuple[str, str]] = []
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            rel = prefix + name
            try:
                is_link = entry.is_symlink()
            except OSError:
                is_link = False
            try:
                target_stat = os.stat(entry.path)
            except OSError as exc:
                if include is not None and not any(match(rel, name, p) for p in include):
                    continue
                if exclude and any(match(rel, name, p) for p in exclude):
                    continue
                reason = _link_error(exc) if is_link else f"cannot read: {exc.strerror or exc}"
                skipped.append(SkippedFile(display_path(entry.path), reason))
                continue
            is_dir = stat.S_ISDIR(target_stat.st_mode)
            if is_dir:
                if exclude and any(match(rel, name, p) or match(rel + "/", name, p) for p in exclude):
                    continue
            else:
                if include is not None and not any(match(rel, name, p) for p in include):
                    continue
                if exclude and any(match(rel, name, p) for p in exclude):
                    continue
            if is_link and not follow_symlinks:
                target = os.path.realpath(entry.path)
                if not inside(target, reals):
                    shown = os.fsencode(target).decode("utf-8", "backslashreplace")
                    kind = "folder" if is_dir else "file"
                    skipped.append(SkippedFile(
                        display_path(entry.path),
                        f"symbolic link to a {kind} outside the ingested folders ({shown}); {FOLLOW_HINT}",
                    ))
                    continue
            if is_dir:
                key = (target_stat.st_dev, target_stat.st_ino)
                if key in visited:
                    if is_link:
                        skipped.append(SkippedFile(
                            display_path(entry.path), "symbolic link to a folder already walked (a loop or a duplicate)"
                        ))
                    continue
                visited.add(key)
                subfolders.append((entry.path, rel + "/"))
            else:
                yield Path(entry.path)
        stack.extend(reversed(subfolders))
