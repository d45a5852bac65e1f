"""Which of the project's files ship: everything minus ignore rules, with secrets never included.

Credentials never ship: files and directories matching :data:`CREDENTIAL_PATTERNS` (SSH and
TLS keys, cloud and registry credentials, token files, shell histories...) are kept out before
any other rule is read, whatever ``.gitignore`` or ``.flashignore`` say, and a symbolic link is
judged by the name of the file it resolves to as well as its own. What was kept out this way is
listed (:attr:`FileSet.withheld`) and the build says so.

Then three sets of rules, in gitignore syntax (matched by ``pathspec``'s ``GitIgnoreSpec``, which
follows git's own semantics, negations and directory rules included):

1. Built-in rules (:data:`BUILTIN_IGNORES`): build output, VCS metadata, virtual environments,
   bytecode, tool caches and ``.env`` files. They are checked first and cannot be negated, so a
   ``!.env`` in ``.gitignore`` still does not ship a secret. Any directory holding a
   ``pyvenv.cfg`` is a virtual environment, whatever its name.
2. ``.gitignore`` files, the project root's and those of subdirectories, each relative to its
   own directory; a deeper file's match overrides a shallower one, as in git.
3. ``.flashignore`` at the project root, same syntax, applied after ``.gitignore`` so it can
   both add rules and re-include (``!path``) something git ignores.

As in git, a file inside an ignored directory cannot be re-included: ignored directories are not
walked at all. Symbolic links to files inside the project ship as the file they point to; links
to directories, or to anything outside the project, are skipped with a warning (they could pull
in secrets or loop).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

BUILTIN_IGNORES = (
    # build output and the packer's own files
    ".flash/",
    "/flash_manifest.json",
    # version control
    ".git/",
    ".hg/",
    ".svn/",
    # virtual environments (and see pyvenv.cfg detection)
    ".venv/",
    "venv/",
    ".tox/",
    ".nox/",
    # bytecode and tool caches
    "__pycache__/",
    "*.py[cod]",
    ".pytest_cache/",
    ".mypy_cache/",
    ".ruff_cache/",
    ".ipynb_checkpoints/",
    "*.egg-info/",
    # secrets: dotenv files in every spelling
    ".env",
    ".env.*",
    "*.env",
    ".envrc",
    # ignore files themselves, and OS litter
    ".gitignore",
    ".flashignore",
    ".DS_Store",
    "Thumbs.db",
)

_BUILTIN = pathspec.GitIgnoreSpec.from_lines(BUILTIN_IGNORES)

# Files no artifact should ever carry (gitignore syntax, matched at any depth). No ignore rule can
# re-include them.
CREDENTIAL_PATTERNS = (
    # SSH
    ".ssh/",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "*.ppk",
    # TLS and signing keys, key stores
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.jks",
    "*.keystore",
    ".gnupg/",
    # cloud, cluster and registry credentials
    ".aws/",
    ".azure/",
    "**/.config/gcloud/",
    "credentials.json",
    "service-account*.json",
    "kubeconfig",
    ".kube/",
    "**/.docker/config.json",
    # package index and git tokens
    ".netrc",
    "_netrc",
    ".pypirc",
    ".npmrc",
    ".git-credentials",
    # secrets files, password files, infrastructure state
    "secrets.yml",
    "secrets.yaml",
    ".htpasswd",
    "*.tfstate",
    "*.tfstate.*",
    # shell histories
    ".bash_history",
    ".zsh_history",
    ".python_history",
)

_CREDENTIALS = pathspec.GitIgnoreSpec.from_lines(CREDENTIAL_PATTERNS)


def is_credential(rel: str, is_dir: bool = False) -> bool:
    """Whether a project-relative path looks like a credential (see :data:`CREDENTIAL_PATTERNS`)."""
    return _CREDENTIALS.match_file(rel + "/" if is_dir else rel)


@dataclass(frozen=True)
class ProjectFile:
    """One file that ships: its path in the artifact and where to read it."""

    rel: str  # posix path relative to the project root, as it appears in the artifact
    path: Path  # the file to read (a symlink's target)
    size: int
    executable: bool
    mtime: int


@dataclass
class FileSet:
    """The project's shipped files, sorted by path, and what was skipped and why."""

    files: list[ProjectFile]
    warnings: list[str] = field(default_factory=list)
    withheld: list[str] = field(default_factory=list)  # kept out as credentials (paths)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


def _read_rules(path: Path) -> pathspec.GitIgnoreSpec | None:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    return pathspec.GitIgnoreSpec.from_lines(lines)


class _Rules:
    """The ignore rules in force while walking the tree."""

    def __init__(self, root: Path) -> None:
        self.gitignores: list[tuple[str, pathspec.GitIgnoreSpec]] = []
        root_rules = _read_rules(root / ".gitignore") if (root / ".gitignore").is_file() else None
        if root_rules is not None:
            self.gitignores.append(("", root_rules))
        flashignore = root / ".flashignore"
        self.flashignore = _read_rules(flashignore) if flashignore.is_file() else None

    def add_gitignore(self, rel_dir: str, directory: Path) -> None:
        rules = _read_rules(directory / ".gitignore")
        if rules is not None:
            self.gitignores.append((rel_dir + "/", rules))
            self.gitignores.sort(key=lambda item: item[0].count("/"))

    def ignored(self, rel: str, is_dir: bool) -> bool:
        probe = rel + "/" if is_dir else rel
        if _BUILTIN.match_file(probe):
            return True
        decision: bool | None = None
        for base, rules in self.gitignores:
            if base and not probe.startswith(base):
                continue
            result = rules.check_file(probe[len(base) :])
            if result.include is not None:
                decision = result.include
        if self.flashignore is not None:
            result = self.flashignore.check_file(probe)
            if result.include is not None:
                decision = result.include
        return bool(decision)


def collect_files(project_dir: Path, skip: Iterable[Path] = ()) -> FileSet:
    """The files of ``project_dir`` that ship, minus the paths in ``skip`` (e.g. the output)."""
    root = project_dir.resolve()
    skipped = {p.resolve() for p in skip}
    rules = _Rules(root)
    out = FileSet([])

    def walk(directory: Path, rel_dir: str) -> None:
        if rel_dir:
            rules.add_gitignore(rel_dir, directory)
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as err:
            out.warnings.append(f"{rel_dir or '.'}: not readable ({err.strerror}); skipped")
            return
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            path = Path(entry.path)
            if entry.is_symlink():
                _add_symlink(root, path, rel, rules, out)
                continue
            if entry.is_dir(follow_symlinks=False):
                if rules.ignored(rel, True) or (path / "pyvenv.cfg").exists():
                    continue
                if is_credential(rel, True):
                    out.withheld.append(rel + "/")
                    continue
                walk(path, rel)
            elif entry.is_file(follow_symlinks=False):
                if rules.ignored(rel, False) or path in skipped:
                    continue
                if is_credential(rel):
                    out.withheld.append(rel)
                    continue
                st = entry.stat(follow_symlinks=False)
                out.files.append(_project_file(rel, path, st))

    walk(root, "")
    out.files.sort(key=lambda f: f.rel)
    return out


def _project_file(rel: str, path: Path, st: os.stat_result) -> ProjectFile:
    return ProjectFile(
        rel=rel,
        path=path,
        size=st.st_size,
        executable=bool(st.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)),
        mtime=int(st.st_mtime),
    )


def _add_symlink(root: Path, path: Path, rel: str, rules: _Rules, out: FileSet) -> None:
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):
        if not rules.ignored(rel, False):
            out.warnings.append(f"{rel}: broken symbolic link; skipped")
        return
    is_dir = target.is_dir()
    if rules.ignored(rel, is_dir):
        return
    inside = target.is_relative_to(root)
    target_rel = target.relative_to(root).as_posix() if inside else target.name
    if is_credential(rel, is_dir) or is_credential(target_rel, is_dir):
        out.withheld.append(rel)  # a link named innocently still points at a key
        return
    if is_dir:
        out.warnings.append(f"{rel}: symbolic link to a directory; skipped (copy it instead)")
        return
    if not inside:
        out.warnings.append(f"{rel}: symbolic link to {target}, outside the project; skipped")
        return
    if rules.ignored(target_rel, False):
        out.warnings.append(f"{rel}: symbolic link to ignored file {target_rel}; skipped")
        return
    if target.is_file():
        out.files.append(_project_file(rel, target, target.stat()))


def fingerprint(files: Iterable[ProjectFile]) -> str:
    """sha256 over the shipped files' paths and contents (length-framed, in path order)."""
    digest = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.rel):
        name = f.rel.encode("utf-8")
        digest.update(len(name).to_bytes(8, "big"))
        digest.update(name)
        digest.update(f.size.to_bytes(8, "big"))
        with open(f.path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()
