"""The dashboard's chart library, fetched once at install time from the npm registry and kept in the package.

The dashboard must work offline (a training box with no internet), so no page loads anything from a CDN:
``python -m rewardlab.dashboard.vendor`` (run by ``make install``) downloads uPlot's pinned tarball,
checks it against the registry's sha512 integrity recorded here, and extracts its script, stylesheet and
license into ``static/vendor/``. Running it again when the files are there does nothing.
"""

from __future__ import annotations

import base64
import hashlib
import io
import sys
import tarfile
import urllib.request
from pathlib import Path

from rewardlab import atomic
from rewardlab.errors import RewardlabError

PACKAGE = "uplot"
VERSION = "1.6.32"
TARBALL = f"https://registry.npmjs.org/{PACKAGE}/-/{PACKAGE}-{VERSION}.tgz"
# The registry's dist.integrity for that version (npm view uplot@1.6.32 dist.integrity).
INTEGRITY = "sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw=="
# Member of the tarball -> file written into the vendor directory.
FILES = {
    "package/dist/uPlot.iife.min.js": "uPlot.iife.min.js",
    "package/dist/uPlot.min.css": "uPlot.min.css",
    "package/LICENSE": "uPlot.LICENSE",
}
VENDOR_DIR = Path(__file__).resolve().parent / "static" / "vendor"
STAMP = "VERSION"  # holds "<package>@<version> <integrity>": what the files were extracted from
COMMAND = "python -m rewardlab.dashboard.vendor"


def integrity_of(data: bytes) -> str:
    """Subresource-integrity form of the sha512, as npm records it."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def _stamp() -> str:
    return f"{PACKAGE}@{VERSION} {INTEGRITY}\n"


def is_vendored(directory: Path = VENDOR_DIR) -> bool:
    """Whether every file is there, extracted from the pinned tarball."""
    stamp = directory / STAMP
    return (
        stamp.is_file()
        and stamp.read_text() == _stamp()
        and all((directory / name).is_file() for name in FILES.values())
    )


def extract(data: bytes, directory: Path = VENDOR_DIR) -> list[Path]:
    """Check ``data`` (the tarball) against the pinned integrity and write the needed files."""
    found = integrity_of(data)
    if found != INTEGRITY:
        raise RewardlabError(f"{TARBALL}: integrity {found} is not the pinned {INTEGRITY}; nothing written")
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member, name in FILES.items():
            source = tar.extractfile(member)  # read by name: no path from the archive is ever written
            if source is None:
                raise RewardlabError(f"{TARBALL} has no file {member}")
            atomic.write_bytes(directory / name, source.read())
            written.append(directory / name)
    atomic.write_text(directory / STAMP, _stamp())
    return written


def download(url: str = TARBALL, timeout_s: float = 60.0) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.read()
    except OSError as error:
        raise RewardlabError(f"could not download {url}: {error}") from None


def vendor(directory: Path = VENDOR_DIR) -> list[Path]:
    """The vendored files: downloaded, checked and extracted unless they are there already."""
    if not is_vendored(directory):
        extract(download(), directory)
    return [directory / name for name in FILES.values()]


def main() -> int:
    try:
        paths = vendor()
    except RewardlabError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{PACKAGE} {VERSION}: {paths[0].parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
