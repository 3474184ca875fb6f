"""A watched git repository: a bare mirror of one branch kept under the state directory.

The watcher never works in the user's checkout: it fetches the branch into its
own bare repository and exports each commit with `git archive`, so a bake sees
exactly the committed tree (no stray local edits) whether the source is a local
path or a remote URL.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from workbench.core import run
from workbench.core.errors import CommandFailed, ConfigError, WorkbenchError

_SHA = re.compile(r"^[0-9a-f]{40}$")
# A field separator git never puts in a subject line.
_SEP = "\x1f"


@dataclass(frozen=True)
class Commit:
    sha: str
    subject: str
    author: str
    date: str

    @property
    def short(self) -> str:
        return self.sha[:10]


def parse_ls_remote(text: str) -> dict[str, str]:
    """Branch name -> sha, from `git ls-remote --heads` output.

    A line looks like `3f2c…e1\trefs/heads/master`.
    """
    heads: dict[str, str] = {}
    for line in text.splitlines():
        sha, _, ref = line.partition("\t")
        if _SHA.match(sha) and ref.startswith("refs/heads/"):
            heads[ref[len("refs/heads/") :]] = sha
    return heads


def parse_log(text: str) -> list[Commit]:
    """Commits from `git log --format=%H<US>%s<US>%an<US>%cI`, one per line."""
    commits = []
    for line in text.splitlines():
        parts = line.split(_SEP)
        if len(parts) == 4 and _SHA.match(parts[0]):
            commits.append(Commit(*parts))
    return commits


def resolve_source(repository: str, root: Path) -> str:
    """A URL stays as it is; a path is made absolute against the checkout."""
    if re.match(r"^[a-z][a-z0-9+.-]*://", repository) or re.match(r"^[^/]+@[^/:]+:", repository):
        return repository
    return str((root / (repository or ".")).resolve())


class Mirror:
    """The bare repository holding the watched branch of `source`."""

    def __init__(self, source: str, branch: str, path: Path, setting: str = "[watch] repository") -> None:
        self.source = source
        self.branch = branch
        self.path = path
        self.setting = setting
        self.ref = f"refs/watched/{branch}"

    def _git(self, *args: str, timeout: float = 300) -> str:
        return run.capture(["git", "--git-dir", str(self.path), *args], timeout=timeout).stdout

    def check_source(self) -> str:
        """The branch head in the source, or a ConfigError naming what is wrong."""
        if "://" not in self.source and ":" not in self.source.split("/")[0] and not Path(self.source).exists():
            raise ConfigError(
                f"watch: repository {self.source} does not exist (set by {self.setting}; "
                "give the path of a git checkout or a URL)"
            )
        try:
            out = run.capture(["git", "ls-remote", "--heads", self.source], timeout=120).stdout
        except CommandFailed as exc:
            reason = (exc.tail or ["no output"])[-1].removeprefix("fatal: ")
            raise ConfigError(
                f"watch: cannot read the git repository {self.source} ({reason}); set by {self.setting}"
            ) from None
        heads = parse_ls_remote(out)
        if self.branch not in heads:
            known = ", ".join(sorted(heads)) or "none (no commits yet)"
            raise ConfigError(
                f"watch: branch {self.branch!r} does not exist in {self.source} (its branches: {known}); "
                "set [watch] branch or pass --branch"
            )
        return heads[self.branch]

    def fetch(self) -> str:
        """Bring the branch into the mirror; its head commit."""
        if not (self.path / "HEAD").is_file():
            self.path.mkdir(parents=True, exist_ok=True)
            run.capture(["git", "init", "--quiet", "--bare", str(self.path)])
        self._git("fetch", "--quiet", "--no-tags", "--force", self.source, f"+refs/heads/{self.branch}:{self.ref}")
        return self._git("rev-parse", self.ref).strip()

    def has(self, sha: str) -> bool:
        result = run.capture(["git", "--git-dir", str(self.path), "cat-file", "-e", f"{sha}^{{commit}}"], check=False)
        return result.returncode == 0

    def new_commits(self, since: str | None, head: str) -> list[Commit]:
        """Commits after `since` up to `head`, oldest first; just `head` when there is no `since`."""
        fmt = f"--format=%H{_SEP}%s{_SEP}%an{_SEP}%cI"
        if since is None or not self.has(since):
            return parse_log(self._git("log", "-1", fmt, head))
        if since == head:
            return []
        # First parent only: a merged branch is one event, as it landed on the watched branch.
        return parse_log(self._git("log", "--reverse", "--first-parent", fmt, f"{since}..{head}"))

    def export(self, sha: str, dest: Path) -> Path:
        """A detached worktree of `sha` at `dest` (replacing any left there).

        A worktree rather than an archive: tools that ask git about the tree
        they build from (the bake labels images with the commit) get this
        commit, not the commit of a repository the state directory sits in.
        """
        self.remove_export(dest)
        try:
            self._git("worktree", "add", "--quiet", "--detach", "--force", str(dest), sha)
        except CommandFailed as exc:
            raise WorkbenchError(f"watch: cannot check out commit {sha[:10]} at {dest}: {exc}") from None
        return dest

    def remove_export(self, dest: Path) -> None:
        if (self.path / "HEAD").is_file():
            run.capture(["git", "--git-dir", str(self.path), "worktree", "remove", "--force", str(dest)], check=False)
            run.capture(["git", "--git-dir", str(self.path), "worktree", "prune"], check=False)
        shutil.rmtree(dest, ignore_errors=True)
