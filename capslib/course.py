"""Where the course lives online, and its files fetched from there (Colab, Kaggle, a pip install).

One setting says where the course's repository is: ``REPOSITORY`` below, or
``$CAPSNET_COURSE_URL``, which overrides it. Everything online is made from it:

* the install line of every notebook's first cell on Colab and Kaggle
  (``pip install git+<URL>``; the student copies get the URL configured when
  ``capsnet-classroom student`` made them);
* the launch badges of the student copies (``capslib.classroom.hooks.CourseLinks``);
* the downloads: a course installed without its folder (``pip install``, Colab)
  fetches the data, the shipped model and the measured results from the
  repository's raw files, ``raw_url(path)``: for GitHub
  ``https://raw.githubusercontent.com/<owner>/<repo>/<BRANCH>/<path>``; for any other
  URL ``<URL>/<path>`` (a folder laid out like the repository, e.g. a local
  ``python -m http.server``).

Every fetched file is checked against the SHA-256 this package ships
(``capslib._course_files.FILES``, written from the repository by
``python -m capslib.course --write-manifest``), never against a downloaded sum,
and kept in ``cache_dir()`` (``$CAPSNET_COURSE_CACHE``, else
``$XDG_CACHE_HOME/capsnet-course``, else ``~/.cache/capsnet-course``), laid out like the
repository (``data/fashion-mnist/...``). A checkout or a copy of the course folder
never gets here: its local files are found first (``capslib.data.course_root``).
"""
import hashlib
import os
import re
import sys
import urllib.parse
import urllib.request
from pathlib import Path

# The course's repository: the one place to change when the course moves (or set
# $CAPSNET_COURSE_URL). Colab, Kaggle and Binder badges need a GitHub repository.
REPOSITORY = "https://github.com/capsnet-course/capsnet-course"
BRANCH = "main"  # the branch the badges open and the raw files come from
ENV_URL = "CAPSNET_COURSE_URL"
ENV_CACHE = "CAPSNET_COURSE_CACHE"
TIMEOUT = 60  # seconds without an answer before a download gives up

_GITHUB = re.compile(r"^https?://(?:www\.)?github\.com/([^/]+)/([^/]+?)(?:\.git)?/?$")


class DownloadError(OSError):
    """A course file could not be fetched, or what came was not the course's file."""


def repository_url():
    """``$CAPSNET_COURSE_URL``, else ``REPOSITORY``; without a trailing slash."""
    return (os.environ.get(ENV_URL, "").strip() or REPOSITORY).rstrip("/")


def github(url=None):
    """``(owner, repo)`` when the URL is a GitHub repository's, else None."""
    match = _GITHUB.match(url or repository_url())
    return match.groups() if match else None


def raw_url(path, url=None):
    """Where the repository's file ``path`` (e.g. ``data/fashion-mnist/SHA256SUMS``) is served."""
    url = url or repository_url()
    path = urllib.parse.quote(str(path).lstrip("/"))
    gh = github(url)
    if gh:
        return f"https://raw.githubusercontent.com/{gh[0]}/{gh[1]}/{BRANCH}/{path}"
    return f"{url.rstrip('/')}/{path}"


def page_url(path, url=None):
    """A page showing the repository's file ``path`` (with an ``#anchor`` if given)."""
    url = url or repository_url()
    gh = github(url)
    if gh:
        return f"https://github.com/{gh[0]}/{gh[1]}/blob/{BRANCH}/{path}"
    return f"{url.rstrip('/')}/{path}"


def launch_links(notebook, url=None):
    """``{service: URL}`` opening ``student/<notebook>`` on Colab, Kaggle and Binder
    (empty unless the repository is on GitHub, which all three read from)."""
    gh = github(url or repository_url())
    if not gh:
        return {}
    owner, repo = gh
    path = f"student/{notebook}"
    return {
        "Colab": f"https://colab.research.google.com/github/{owner}/{repo}/blob/{BRANCH}/{path}",
        "Kaggle": ("https://kaggle.com/kernels/welcome?src="
                   f"https://github.com/{owner}/{repo}/blob/{BRANCH}/{path}"),
        "Binder": (f"https://mybinder.org/v2/gh/{owner}/{repo}/{BRANCH}"
                   f"?labpath={urllib.parse.quote(path, safe='')}"),
    }


BADGES = {
    "Colab": ("Open In Colab", "https://colab.research.google.com/assets/colab-badge.svg"),
    "Kaggle": ("Open in Kaggle", "https://kaggle.com/static/images/open-in-kaggle.svg"),
    "Binder": ("Launch Binder", "https://mybinder.org/badge_logo.svg"),
}


def badges(notebook, url=None):
    """One Markdown line of launch badges for ``student/<notebook>`` ('' if none)."""
    links = launch_links(notebook, url)
    return " ".join(f"[![{BADGES[name][0]}]({BADGES[name][1]})]({link})"
                    for name, link in links.items())


def cache_dir():
    """Where fetched course files are kept (laid out like the repository)."""
    chosen = os.environ.get(ENV_CACHE, "").strip()
    if chosen:
        return Path(chosen).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg) if xdg else Path.home() / ".cache").expanduser() / "capsnet-course"


def manifest():
    """``{path in the repository: SHA-256}`` of every file the package can fetch."""
    from capslib._course_files import FILES
    return FILES


def files_under(folder):
    """The manifest's paths inside the repository folder ``folder`` (e.g. ``results/routing-class``)."""
    prefix = str(folder).strip("/") + "/"
    return [path for path in manifest() if path.startswith(prefix)]


def file_sha256(path):
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _reason(error):
    reason = getattr(error, "reason", None) or error
    return " ".join(str(reason).split())[:200] or type(error).__name__


def fetch(path, cache=None):
    """The cached copy of the repository's file ``path``, downloaded if missing or altered.

    Raises ``DownloadError`` (one line) when the download fails or what came does not
    have the SHA-256 this package ships; nothing is kept then.
    """
    expected = manifest().get(path)
    if expected is None:
        raise DownloadError(f"{path}: not a file of the course this capslib knows (its manifest)")
    target = Path(cache or cache_dir()) / path
    if target.is_file() and file_sha256(target) == expected:
        return target
    url = raw_url(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as answer, open(partial, "wb") as out:
            for chunk in iter(lambda: answer.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
    except Exception as e:  # URLError, HTTPError, timeouts, resets: all one line
        partial.unlink(missing_ok=True)
        raise DownloadError(
            f"could not download {path} from {url}: {_reason(e)}; on Colab or Kaggle check the "
            f"runtime has internet (Kaggle: Settings > Internet on), or set {ENV_URL} to the "
            "course's repository") from None
    if h.hexdigest() != expected:
        partial.unlink(missing_ok=True)
        raise DownloadError(
            f"downloaded {path} from {url}, but it is not the course's file (SHA-256 "
            f"{h.hexdigest()[:12]}..., expected {expected[:12]}...): not kept. Is {ENV_URL} "
            "the course's repository, at the version of this capslib?")
    os.replace(partial, target)
    return target


def fetch_folder(folder, cache=None):
    """Fetch every manifest file under the repository folder ``folder``; its cached path."""
    paths = files_under(folder)
    if not paths:
        raise DownloadError(f"{folder}: no such folder in the course this capslib knows")
    print(f"capslib: fetching {folder}/ ({len(paths)} files) from {repository_url()} into "
          f"{Path(cache or cache_dir()) / folder}", file=sys.stderr, flush=True)
    for path in paths:
        fetch(path, cache)
    return Path(cache or cache_dir()) / folder


def cached(folder, cache=None):
    """The cache's copy of the repository folder ``folder`` (fetched or not)."""
    return Path(cache or cache_dir()) / folder


def is_cached_copy(folder, cache=None):
    """Whether ``folder`` is the cache's copy of a repository folder."""
    try:
        Path(folder).resolve().relative_to(Path(cache or cache_dir()).resolve())
    except ValueError:
        return False
    return True


def present(folder, cache=None):
    """Whether the cache already holds every manifest file under ``folder``, unaltered
    (sizes only: the loaders check every SHA-256 themselves)."""
    root = Path(cache or cache_dir())
    return all((root / path).is_file() for path in files_under(folder))


# -- the manifest, written from a checkout --------------------------------------------

MANIFEST_FOLDERS = ("data", "results")


def tracked_files(root):
    """The files git tracks under ``MANIFEST_FOLDERS`` of the checkout ``root``."""
    import subprocess
    out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", *MANIFEST_FOLDERS],
                         capture_output=True, text=True, check=True).stdout
    return sorted(p for p in out.split("\0") if p)


def manifest_text(root):
    rows = "".join(f"    {path!r}: {file_sha256(Path(root) / path)!r},\n" for path in tracked_files(root))
    return ('"""SHA-256 of the course files capslib can fetch (capslib.course); written by\n'
            '``python -m capslib.course --write-manifest`` from a checkout. Do not edit."""\n'
            f"FILES = {{\n{rows}}}\n")


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(description="The course's repository URL and its files.")
    parser.add_argument("--write-manifest", action="store_true",
                        help="write capslib/_course_files.py from this checkout's data/ and results/")
    args = parser.parse_args(argv)
    if args.write_manifest:
        root = Path(__file__).resolve().parents[1]
        out = Path(__file__).with_name("_course_files.py")
        out.write_text(manifest_text(root))
        print(f"wrote {out} ({len(tracked_files(root))} files)")
        return 0
    print(f"repository: {repository_url()} (branch {BRANCH})\nraw files:  {raw_url('')}\n"
          f"cache:      {cache_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
