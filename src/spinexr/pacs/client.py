"""The DICOMweb side of ``spinexr pacs``: credentials, a dicomweb-client session, and what each failure means.

Credentials never come from the command line (it shows in ``ps`` and shell history). In order:
``SPINEXR_PACS_TOKEN`` (a bearer token), or ``SPINEXR_PACS_USER`` with ``SPINEXR_PACS_PASSWORD``
(basic authentication), or ``--auth-file FILE`` holding ``token = ...`` or ``user = ...`` and
``password = ...`` lines; a file others can read is refused.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spinexr.errors import SpinexrError

ENV_TOKEN, ENV_USER, ENV_PASSWORD = "SPINEXR_PACS_TOKEN", "SPINEXR_PACS_USER", "SPINEXR_PACS_PASSWORD"
TIMEOUT_S = 60
ROOT_HINT = ("if {url} is not a DICOMweb root, give the server's DICOMweb root (Orthanc: http://HOST:8042/dicom-web; "
             "dcm4chee: http://HOST:8080/dcm4chee-arc/aets/DCM4CHEE/rs)")


@dataclass(frozen=True)
class Credentials:
    """Basic (user and password) or bearer (token) authentication; neither is shown by ``repr``.

    Args:
        user: the user name (basic).
        password: its password.
        token: a bearer token.
    """

    user: str | None = None
    password: str | None = None
    token: str | None = None

    @property
    def kind(self) -> str:
        return "bearer token" if self.token else "basic" if self.user else "none"

    def __repr__(self) -> str:
        return f"Credentials({self.kind})"

    def apply(self, session: Any) -> None:
        if self.token:
            session.headers["Authorization"] = f"Bearer {self.token}"
        elif self.user:
            session.auth = (self.user, self.password or "")


def _read_auth_file(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise SpinexrError(f"--auth-file {path}: no such file")
    if os.name == "posix" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SpinexrError(f"--auth-file {path}: others can read it; make it private (chmod 600 {path})")
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        key, sep, value = text.partition("=")
        if not sep or key.strip() not in ("token", "user", "password"):
            raise SpinexrError(f"--auth-file {path}, line {n}: expected 'token = ...', 'user = ...' or "
                               "'password = ...'")
        out[key.strip()] = value.strip()
    return out


def load_credentials(auth_file: str | Path | None = None, env: Mapping[str, str] | None = None) -> Credentials:
    """The credentials to use (see the module), or none."""
    env = os.environ if env is None else env
    if env.get(ENV_TOKEN):
        return Credentials(token=env[ENV_TOKEN])
    if env.get(ENV_USER):
        return Credentials(user=env[ENV_USER], password=env.get(ENV_PASSWORD, ""))
    if auth_file is not None:
        vals = _read_auth_file(Path(auth_file))
        if vals.get("token"):
            return Credentials(token=vals["token"])
        if vals.get("user"):
            return Credentials(user=vals["user"], password=vals.get("password", ""))
        raise SpinexrError(f"--auth-file {auth_file}: holds neither a token nor a user")
    return Credentials()


class Unreachable(SpinexrError):
    """The server could not be reached or answered with a server error: worth trying again later."""


def connect(url: str, credentials: Credentials | None = None, timeout: float = TIMEOUT_S) -> Any:
    """A dicomweb-client :class:`DICOMwebClient` for the server at ``url`` (its DICOMweb root).

    Args:
        url: the server's DICOMweb root (``http://host:8042/dicom-web``).
        credentials: its credentials, or None.
        timeout: seconds a request may take.
    """
    try:
        import requests
        from dicomweb_client.api import DICOMwebClient
    except ImportError:
        raise SpinexrError("spinexr pacs needs dicomweb-client: pip install 'spinexr[dicom]'") from None
    if not url.startswith(("http://", "https://")):
        raise SpinexrError(f"{url}: a DICOMweb address starts with http:// or https:// "
                           "(for Orthanc: http://HOST:8042/dicom-web)")
    session = requests.Session()
    (credentials or Credentials()).apply(session)
    _with_timeout(session, timeout)
    client = DICOMwebClient(url=url.rstrip("/"), session=session)
    client.set_http_retry_params(retry=False)  # spinexr pacs retries whole rounds, with its own backoff
    return client


def _with_timeout(session: Any, timeout: float) -> None:
    request = session.request

    def timed(method: str, url: str, **kw: Any) -> Any:
        kw.setdefault("timeout", timeout)
        return request(method, url, **kw)

    session.request = timed


def explain(e: BaseException, url: str) -> SpinexrError:
    """A DICOMweb failure as an error a user can act on: :class:`Unreachable` (try again later) or final."""
    import requests

    if isinstance(e, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        return Unreachable(f"the PACS at {url} cannot be reached ({type(e).__name__}); check that it runs and "
                           "the address is its DICOMweb root")
    if isinstance(e, requests.exceptions.HTTPError) and e.response is not None:
        code = e.response.status_code
        if code in (401, 403):
            return SpinexrError(f"the PACS at {url} refused the credentials (HTTP {code}): set {ENV_USER} and "
                                f"{ENV_PASSWORD}, or {ENV_TOKEN}, or give --auth-file")
        if code >= 500 or code in (408, 429):
            return Unreachable(f"the PACS at {url} answered HTTP {code} ({e.response.reason})")
        hint = ""
        if code in (400, 404, 405) and e.request.method == "GET":  # a QIDO-RS query the server does not know
            hint = f"; {ROOT_HINT.format(url=url)}"
        return SpinexrError(f"the PACS at {url} answered HTTP {code} ({e.response.reason}) to {e.request.method} "
                            f"{e.response.url}{hint}")
    return SpinexrError(f"the PACS at {url}: {type(e).__name__}: {e}")


__all__ = ["Credentials", "Unreachable", "connect", "explain", "load_credentials"]
