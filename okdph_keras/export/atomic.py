"""Atomic export directories: built in a hidden sibling, renamed into place when complete.

The sibling is `.<name>.partial-<pid>-<random>`; an export being replaced is renamed aside
to `.<name>.old-<pid>-<random>` for the moment of the swap. Siblings whose process is gone
were left by killed exports: the next export to the same destination removes them (or puts
an old export back when nothing replaced it).
"""

import contextlib
import os
import re
import shutil
import tempfile

from okdph_keras.predict import METADATA_FILE
from okdph_keras.validation import fail


def _pid_alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale(output):
    """Removes what killed exports to `output` left beside it (their process is gone)."""
    parent, name = os.path.split(output)
    pattern = re.compile(rf"^\.{re.escape(name)}\.(partial|old)-(\d+)-[A-Za-z0-9_]+$")
    for entry in sorted(os.listdir(parent)):
        match = pattern.match(entry)
        if not match or _pid_alive(int(match.group(2))):
            continue
        path = os.path.join(parent, entry)
        if match.group(1) == "old" and not os.path.lexists(output):
            os.rename(path, output)  # killed between the two renames: put the old export back
        else:
            shutil.rmtree(path, ignore_errors=True)


def _check_output(output, overwrite):
    if not os.path.lexists(output):
        return
    if not overwrite:
        raise FileExistsError(
            f"{output} already exists; pass overwrite=True (CLI --overwrite) to replace it."
        )
    if not os.path.isdir(output) or not os.path.isfile(os.path.join(output, METADATA_FILE)):
        raise FileExistsError(
            f"{output} exists and is not an export (no {METADATA_FILE}); it is not replaced "
            "even with overwrite. Choose another output directory."
        )


def prepare(output_dir, overwrite):
    """The absolute destination, once what killed exports left is gone and it may be written.

    Raises:
        ValueError: `output_dir` names no directory.
        FileExistsError: it exists and `overwrite` is False, or it is not an export.
    """
    output = os.path.abspath(os.fspath(output_dir))
    if os.path.basename(output) in ("", ".", ".."):
        fail("output_dir", output_dir, "a path that names a directory to create")
    if os.path.isdir(os.path.dirname(output)):
        _clean_stale(output)
    _check_output(output, overwrite)
    return output


def _usual_permissions(directory):
    """Temporary files and directories are private (0600/0700): give the export the umask's."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)
    for root, folders, files in os.walk(directory):
        for folder in folders:
            os.chmod(os.path.join(root, folder), 0o777 & ~umask)
        for file in files:
            os.chmod(os.path.join(root, file), 0o666 & ~umask)


def _commit(temporary, output, overwrite):
    """Renames the complete `temporary` directory to `output` (replacing an old export)."""
    _check_output(output, overwrite)
    if not os.path.lexists(output):
        os.rename(temporary, output)
        return
    parent, name = os.path.split(output)
    old = tempfile.mkdtemp(prefix=f".{name}.old-{os.getpid()}-", dir=parent)
    os.rename(output, old)  # replaces the empty directory `old`
    try:
        os.rename(temporary, output)
    except BaseException:
        os.rename(old, output)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def building(output, overwrite):
    """Yields a temporary sibling of `output` to build in; renames it to `output` when the
    block completes, and removes it in any case.

    Example:
        >>> with building(prepare("exports/x", overwrite=False), overwrite=False) as directory:
        ...     write_everything(directory)
    """
    parent, name = os.path.split(output)
    os.makedirs(parent, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=f".{name}.partial-{os.getpid()}-", dir=parent)
    try:
        yield temporary
        _usual_permissions(temporary)
        _commit(temporary, output, overwrite)
    finally:
        if os.path.exists(temporary):
            shutil.rmtree(temporary, ignore_errors=True)
