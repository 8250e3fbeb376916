"""One write request to the server, through influxdb-client: v2 (`/api/v2/write`, InfluxDB 2.x/3.x and
VictoriaMetrics) or v1 (`/write` with database and retention policy, InfluxDB 1.x).

The client's own retries are off: the sender decides what a failure means (retry the batch, split
it, drop one point) and keeps the batch on disk meanwhile. v1's `/write` is not in the client's API
(its 1.x compatibility goes through `/api/v2/write`, which InfluxDB 1.6 lacks), so it is called through
the client's own HTTP layer, with the same TLS, timeout and authentication settings.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass

import urllib3
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from gateway.influx.config import InfluxConfig


@dataclass
class WriteFailed(Exception):
    """The server did not take the batch. status 0: no answer (refused, reset, timed out)."""

    status: int
    message: str
    retry_after_s: float | None = None

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.message}" if self.status else self.message


class Endpoint:
    def __init__(self, config: InfluxConfig) -> None:
        self.config = config
        timeout_ms = int(config.timeout_s * 1000)
        common = {"verify_ssl": config.verify_tls, "ssl_ca_cert": str(config.ca_file) if config.ca_file else None,
                  "retries": False, "timeout": timeout_ms}
        if config.version == 2:
            self.client = InfluxDBClient(url=config.url, token=config.token or None, org=config.org, **common)
            self.write_api = self.client.write_api(write_options=SYNCHRONOUS)
        else:
            auth = f"{config.username}:{config.password}" if config.username else None
            self.client = InfluxDBClient(url=config.url, token=auth, auth_basic=bool(auth), **common)
            self.write_api = None

    def write(self, target: str, body: bytes, timeout_s: float | None = None) -> None:
        """Send one batch of lines to a bucket (v2) or retention policy (v1); WriteFailed if not taken."""
        timeout = (timeout_s if timeout_s is not None else self.config.timeout_s)
        try:
            if self.write_api is not None:
                self.write_api.write(bucket=target, org=self.config.org, record=body,
                                     write_precision=WritePrecision.NS, _request_timeout=timeout * 1000)
            else:
                self.client.api_client.call_api(
                    "/write", "POST", query_params=[("db", self.config.database), ("rp", target),
                                                    ("precision", "ns")],
                    header_params={"Content-Type": "text/plain; charset=utf-8"}, body=body,
                    auth_settings=[], _return_http_data_only=True,
                    _request_timeout=timeout * 1000)
        except ApiException as exc:
            headers = exc.headers or {}
            detail = (headers.get("X-Influxdb-Error") or _text(exc.body) or exc.reason or "").strip()
            raise WriteFailed(int(exc.status or 0), detail[:500],
                              _retry_after(headers.get("Retry-After"))) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise WriteFailed(0, _no_answer(exc)) from exc

    def close(self) -> None:
        self.client.close()


def _text(body: object) -> str:
    if isinstance(body, bytes):
        return body.decode("utf-8", "replace")
    return str(body or "")


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _no_answer(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    text = str(reason)
    if "Connection refused" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return "no answer in time"
    return f"{type(reason).__name__}: {text}"[:300]
