"""Who the gateway says it is: product name, URIs and version, for `--version`, the server's
BuildInfo and its ApplicationDescription (instead of asyncua's "FreeOpcUa" defaults)."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

DISTRIBUTION = "opcua-gateway"
PRODUCT_NAME = "OPC UA Gateway"
PRODUCT_URI = "urn:opcua-gateway"
MANUFACTURER = "opcua-gateway project"
# The server's ApplicationUri. It is written into the application certificate, so it stays the same
# across versions: a new URI would mean a new certificate that every client has to trust again.
APPLICATION_URI = "urn:opcua-gateway:server"


@dataclass(frozen=True)
class BuildInfo:
    product_uri: str
    manufacturer: str
    product_name: str
    version: str
    build_number: str
    build_date: datetime


def version() -> str:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def build_info() -> BuildInfo:
    """Version from the package metadata; build number the git commit of a source checkout, else the
    version; build date when the package was built or installed."""
    ver = version()
    return BuildInfo(PRODUCT_URI, MANUFACTURER, PRODUCT_NAME, ver, _git_commit() or ver, _build_date())


def _build_date() -> datetime:
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
        for file in dist.files or []:
            if file.name in ("METADATA", "PKG-INFO"):
                return datetime.fromtimestamp(Path(str(file.locate())).stat().st_mtime, UTC)
    except (importlib.metadata.PackageNotFoundError, OSError):
        pass
    return datetime.fromtimestamp(Path(__file__).stat().st_mtime, UTC)


def _git_commit() -> str | None:
    """The commit of the checkout the package runs from (editable installs), read without running git."""
    git = Path(__file__).resolve().parents[1] / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head[:12]
        ref = head[5:]
        if (git / ref).is_file():
            return (git / ref).read_text().strip()[:12]
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(f" {ref}"):
                return line.split()[0][:12]
    except OSError:
        return None
    return None
