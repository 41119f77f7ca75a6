"""The folder is the contract between stages.

Every stage output carries `manifest.json`, written last: stage, facepipe version, config, inputs
(with the sha256 of their manifests), counts and skipped items. While a stage runs, its folder holds
`.inprogress.json` (the config it is working to) and a lock, so that:
  * rerunning the same command after an interrupt continues the work,
  * a finished output is left alone,
  * a different config into the same folder is refused unless --force,
  * two processes writing the same folder are refused,
  * single-file outputs (an HDF5 cache or pseudo-label file) follow the same rules through FileOutput:
    a lock beside the file, work in OUT.partial, the manifest inside the file written last, a rename;
  * every manifest records the command line that made it (`command`);
  * except shards (`shard=(i, n)`, from --shard I/N): per-item stages let N processes or machines each
    write 1/N of the items into one folder, each under its own lock; shards write no manifest, and a
    final run without --shard finds their items done, does any left and writes the manifest.
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from facepipe import __version__
from facepipe.util.atomic import write_json
from facepipe.util.errors import FacepipeError, OtherConfig

MANIFEST = "manifest.json"
INPROGRESS = ".inprogress.json"
LOCK = ".lock"
SCHEMA_VERSION = 1

# Which command makes each stage's output, for "missing input" messages.
MAKERS = {
    "import": "facepipe import FORMAT SRC OUT",
    "paste": "facepipe paste DATASET BACKGROUNDS OUT",
    "backgrounds": "facepipe backgrounds SRC... OUT",
    "landmarks": "facepipe landmarks IN OUT",
    "align": "facepipe align IN OUT",
    "cache": "facepipe cache IN OUT.h5",
    "train": "facepipe train CACHE --out runs/NAME",
    "pseudolabel": "facepipe pseudolabel --teacher RUN IN OUT.h5",
    "distill": "facepipe distill --teacher RUN",
}


def config_dict(cfg) -> dict:
    """The part of a config that decides the output (fields marked identity=False are left out)."""
    out = {}
    for f in dataclasses.fields(cfg):
        if f.metadata.get("identity", True):
            v = getattr(cfg, f.name)
            out[f.name] = str(v) if isinstance(v, Path) else v
    return json.loads(json.dumps(out, default=str))


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(folder, stages: tuple[str, ...] | str | None = None, what: str = "input") -> dict:
    """Read a finished stage's manifest, or fail naming the command that makes it."""
    folder = Path(folder)
    if isinstance(stages, str):
        stages = (stages,)
    hint = " or ".join(f"`{MAKERS.get(s, s)}`" for s in stages) if stages else "the stage that makes it"
    if not folder.exists():
        raise FacepipeError(f"{what} {folder} does not exist; make it with {hint}.")
    path = folder / MANIFEST
    if not path.exists():
        if (folder / INPROGRESS).exists():
            raise FacepipeError(f"{what} {folder} is unfinished (interrupted run); rerun the command that makes it.")
        raise FacepipeError(f"{what} {folder} has no {MANIFEST}; make it with {hint}.")
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise FacepipeError(f"{what} {path} is unreadable ({e}); remake it with {hint}.") from None
    if stages and m.get("stage") not in stages:
        raise FacepipeError(
            f"{what} {folder} was made by `{m.get('stage')}`, expected {hint}.")
    m["_sha256"] = file_sha256(path)
    return m


class StageOutput:
    """Claims an output folder for one stage run. Use as a context manager.

    state after entering: "done" (finished with the same config: nothing to do),
    "resume" (an interrupted run with the same config left work behind) or "fresh".
    """

    def __init__(self, out, stage: str, config: dict, force: bool = False, shard: tuple[int, int] | None = None):
        self.out = Path(out)
        self.stage = stage
        self.config = config
        self.force = force
        self.shard = shard
        if shard is not None and force:
            raise FacepipeError("--force cannot go with --shard (shards would wipe each other); "
                                "clear the folder with a plain --force run first.")
        self.state = "fresh"
        self.started = time.time()
        self._lock_fd = None

    def __enter__(self):
        try:
            return self._enter()
        except BaseException:
            self.__exit__(None, None, None)  # a refused claim must not keep the lock
            raise

    def _enter(self):
        out = self.out
        if out.exists() and not out.is_dir():
            raise FacepipeError(f"output {out} exists and is not a folder.")
        refuse_input_inside(out, self.config)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FacepipeError(f"cannot create output folder {out}: {e.strerror}.") from None
        self._lock()
        man, prog = out / MANIFEST, out / INPROGRESS
        if man.exists():
            old = _load(man)
            if old.get("stage") == self.stage and old.get("config") == self.config and not self.force:
                self.state = "done"
                self.manifest = old
                return self
            if not self.force:
                raise OtherConfig(
                    f"{out} already holds a finished `{old.get('stage')}` output with another config; "
                    "use --force to replace it or choose another folder.")
            self._wipe()
        elif prog.exists():
            old = _load(prog)
            if old.get("stage") == self.stage and old.get("config") == self.config and not self.force:
                self.state = "resume"
            elif not self.force:
                raise OtherConfig(
                    f"{out} holds an unfinished `{old.get('stage')}` run with another config; "
                    "rerun that command to finish it, or use --force to start over.")
            else:
                self._wipe()
        else:
            # Hidden files (.DS_Store, a temp file of a write cut short, a lock) neither block nor get wiped.
            foreign = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
            if foreign:  # never wiped, not even with --force: facepipe replaces only what it wrote
                raise FacepipeError(f"{out} is not empty and was not made by facepipe (it holds {foreign[0]}"
                                    f"{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}); "
                                    "choose an empty or new folder.")
        if self.shard is None or not prog.exists():
            write_json(prog, {"stage": self.stage, "config": self.config, "started": self.started})
        return self

    def finish(self, inputs: dict | None = None, counts: dict | None = None,
               skipped: list | None = None, extra: dict | None = None) -> dict:
        """Write the manifest (last) and drop the in-progress marker."""
        m = {
            "stage": self.stage,
            "schema_version": SCHEMA_VERSION,
            "facepipe_version": __version__,
            "config": self.config,
            "inputs": inputs or {},
            "counts": counts or {},
            "skipped": skipped or [],
            "seconds": round(time.time() - self.started, 3),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": command_line(),
        }
        if extra:
            m.update(extra)
        write_json(self.out / MANIFEST, m)
        try:
            (self.out / INPROGRESS).unlink()
        except FileNotFoundError:
            pass
        self.manifest = m
        return m

    def __exit__(self, exc_type, *exc):
        if exc_type is not None and self._lock_fd is not None and self.shard is None:
            self._drop_empty_claim()
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None
        return False

    def _drop_empty_claim(self):
        """A run that failed before writing anything leaves no mark: its in-progress config would only make
        the corrected command into the same folder ask for --force, with nothing to resume."""
        try:
            if not any(not p.name.startswith(".") for p in self.out.iterdir()):
                (self.out / INPROGRESS).unlink(missing_ok=True)
        except OSError:
            pass

    def _lock(self):
        name = LOCK if self.shard is None else f"{LOCK}-shard{self.shard[0]}of{self.shard[1]}"
        self._lock_fd = lock_folder(self.out, name)

    def _wipe(self):
        for p in self.out.iterdir():
            if p.name.startswith(LOCK):
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()


def command_line() -> str:
    """The command this process runs, as a user would type it again (`facepipe ...` for the CLI)."""
    argv = list(sys.argv)
    prog = Path(argv[0]).name if argv else ""
    if prog in ("facepipe", "__main__.py") or prog.startswith("facepipe"):
        argv[0] = "facepipe"
    return shlex.join(argv)


class FileOutput:
    """Claims a single-file output (an HDF5 file) for one stage run, as StageOutput claims a folder.

    The work goes into OUT.partial and is renamed to OUT when whole, so a file named OUT is always
    complete. After entering, `state` is "done" (OUT exists with the same config: `manifest` holds its
    manifest), "resume" (OUT.partial was left by a run with the same config) or "fresh" (any partial
    left by another config is removed). OUT with another config is refused unless force.
    `read_manifest(OUT)` returns a finished file's manifest; `partial_config(PART)` the config a
    partial file was started with (None if it cannot tell). replace_other=True: OUT with another config
    is made again instead of refused (a derived file no command line names, such as a resampled cache).
    resume_under_force=True: --force still continues a partial file of the same config (pseudo-labels:
    hours of teacher inference the same command would only redo).
    """

    def __init__(self, out, config: dict, force: bool, read_manifest: Callable[[Path], dict],
                 partial_config: Callable[[Path], dict | None], what: str = "output", replace_other: bool = False,
                 resume_under_force: bool = False):
        self.out, self.config, self.force, self.what = Path(out), config, force, what
        self.replace_other, self.resume_under_force = replace_other, resume_under_force
        self.part = Path(str(out) + ".partial")
        self._read, self._partial_config = read_manifest, partial_config
        self.state, self.manifest, self._lock = "fresh", None, None

    def __enter__(self):
        self._lock = file_lock(self.out)
        self._lock.__enter__()
        try:
            self._claim()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _claim(self) -> None:
        refuse_input_inside(self.out, self.config)
        if self.out.exists() and not self.force:
            old = self._read(self.out)
            if old.get("config") == self.config:
                self.state, self.manifest = "done", old
                return
            if not self.replace_other:
                raise OtherConfig(f"{self.what} {self.out} exists with another config; use --force to replace "
                                    "it.")
        if self.part.exists():
            may_resume = self.resume_under_force or not self.force
            if may_resume and self._partial_config(self.part) == self.config:
                self.state = "resume"
            else:
                self.part.unlink()

    def finish(self) -> None:
        """The partial file is whole (its manifest written last): give it its name."""
        os.replace(self.part, self.out)

    def __exit__(self, *exc):
        if self._lock is not None:
            self._lock.__exit__(None, None, None)
            self._lock = None
        return False


def refuse_input_inside(out: Path, config: dict) -> None:
    """Refuse an output that is, or holds, one of the stage's inputs (config's values naming a file or folder
    that exists, the key "out" aside): --force replaces an output whole, input and all, and even without it
    a stage reading its own output folder reads what it writes."""
    for key, value in config.items():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if key == "out" or not isinstance(v, str) or not v or not os.path.lexists(v):
                continue
            # Resolved and as written: an input that is a link inside OUT resolves elsewhere, and a wipe would
            # remove the link.
            pairs = ((Path(out).resolve(), Path(v).resolve()), (Path(os.path.abspath(out)), Path(os.path.abspath(v))))
            for o, p in pairs:
                if p == o or o in p.parents:
                    raise FacepipeError(f"the output {out} {'is' if p == o else 'holds'} this stage's input {v}; "
                                        "write the output somewhere else.")


def refuse_overwriting_input(out, inputs) -> None:
    """Refuse writing the file `out` over one of this command's `inputs` (files or folders, as written; None
    and paths that do not exist are passed over), or into an input that is a folder: a side output (a sheet,
    a JSON, an ONNX file) named like its input would replace the cache or model it was made from. Compared
    resolved (links followed) and as written (a link renamed over would be lost), and by inode (hard links)."""
    if out is None:
        return
    o_res, o_abs = Path(out).resolve(), Path(os.path.abspath(out))
    for v in inputs:
        if v is None or not str(v) or not os.path.lexists(v):
            continue
        inode = os.path.exists(out) and os.path.exists(v) and os.path.samefile(out, v)
        for o, p in ((o_res, Path(v).resolve()), (o_abs, Path(os.path.abspath(v)))):
            same = inode or o == p
            if same or p in o.parents:
                raise FacepipeError(f"the output {out} {'is' if same else 'lies inside'} this command's input {v}; "
                                    "write it somewhere else.")


def require_suffix(path, suffixes: tuple[str, ...], what: str) -> None:
    """Refuse an output name whose suffix is not one of `suffixes` (lower case, with the dot): the file is
    written in that format whatever its name says, and sibling files are named from it."""
    if path is not None and Path(path).suffix.lower() not in suffixes:
        names = " or ".join(filter(None, (", ".join(suffixes[:-1]), suffixes[-1])))
        raise FacepipeError(f"{what} {path} should end in {names}: the name says the file's format.")


def lock_folder(out: Path, name: str = LOCK, what=None) -> int:
    """Take the exclusive lock file `name` in the folder `out`; returns its fd (close it to release).
    `what` names the output in the refusal (default: the folder)."""
    fd = os.open(Path(out) / name, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FacepipeError(f"{what or out} is being written by another facepipe process; wait for it to "
                            "finish.") from None
    return fd


def _load(path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


@contextmanager
def file_lock(path):
    """Exclusive lock for writing the single-file output `path` (a hidden .lock file beside it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = lock_folder(path.parent, f".{path.name}.lock", what=path)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def parse_shard(value: str | None) -> tuple[int, int] | None:
    """"I/N" (0 <= I < N) -> (I, N); None stays None."""
    if value is None:
        return None
    try:
        i, n = (int(v) for v in value.split("/"))
    except ValueError:
        raise FacepipeError(f"--shard {value!r} must look like I/N, e.g. 0/4.") from None
    if n < 1:
        raise FacepipeError(f"--shard {value}: N, the number of shards, must be 1 or more.")
    if not 0 <= i < n:
        raise FacepipeError(f"--shard {value}: I must be in 0..N-1.")
    return i, n


def shard_summary(so: StageOutput, shard: tuple[int, int], mine: int, done_now: int, skipped: list) -> dict:
    """What a --shard run returns instead of a manifest (the final run without --shard writes that)."""
    return {"stage": so.stage, "shard": list(shard), "skipped": skipped,
            "counts": {"photos_in_shard": mine, "done_now": done_now - len(skipped), "unreadable": len(skipped)},
            "seconds": round(time.time() - so.started, 3)}
