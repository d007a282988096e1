"""A real Orthanc with its DICOMweb plugin on a free loopback port, storage in a folder of its own, basic
authentication on: for the PACS tests and ``benchmarks/pacs_roundtrip.py``. Debian's ``orthanc`` and
``orthanc-dicomweb`` packages provide it (``.ci/run`` installs them)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc/plugins", "/usr/local/share/orthanc/plugins")
USER, PASSWORD = "spinexr", "pacs-test-password"


def find_orthanc() -> tuple[str, str] | None:
    """The Orthanc binary and its DICOMweb plugin, or None when either is missing."""
    exe = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
    plugin = next((str(p) for d in PLUGIN_DIRS for p in Path(d).glob("libOrthancDicomWeb.so*") if p.exists()), None)
    return (exe, plugin) if exe and plugin else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Orthanc:
    """``with Orthanc(folder) as pacs:`` ... ``pacs.url`` is the DICOMweb root; stopped (and its
    process reaped) on exit."""

    def __init__(self, folder: Path, modalities: dict[str, tuple[str, str, int]] | None = None) -> None:
        """``modalities``: DICOM nodes Orthanc may C-STORE to, by name: (AE title, host, port); with them,
        Orthanc's own DICOM server listens on ``dicom_port`` as AE ``ORTHANC``."""
        found = find_orthanc()
        if found is None:
            raise RuntimeError("Orthanc with its DICOMweb plugin is not installed (Debian: orthanc orthanc-dicomweb)")
        self.exe, self.plugin = found
        self.folder = Path(folder)
        self.port = free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.root}/dicom-web"
        self.auth = (USER, PASSWORD)
        self.proc: subprocess.Popen | None = None
        self.modalities = modalities or {}
        self.dicom_port = free_port() if self.modalities else None
        self.ae_title = "ORTHANC"

    def __enter__(self) -> Orthanc:
        store = self.folder / "storage"
        store.mkdir(parents=True, exist_ok=True)
        config = {"Name": "spinexr-test", "StorageDirectory": str(store), "IndexDirectory": str(store),
                  "HttpPort": self.port, "DicomServerEnabled": False, "RemoteAccessAllowed": False,
                  "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD},
                  "Plugins": [self.plugin], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
                  "HttpThreadsCount": 8, "SaveJobs": False}
        if self.modalities:
            config.update({"DicomServerEnabled": True, "DicomAet": self.ae_title, "DicomPort": self.dicom_port,
                           "DicomModalities": {k: list(v) for k, v in self.modalities.items()},
                           "DicomCheckCalledAet": True, "DicomAlwaysAllowStore": False})
        cfg = self.folder / "orthanc.json"
        cfg.write_text(json.dumps(config, indent=1))
        self.log = open(self.folder / "orthanc.log", "wb")
        self.proc = subprocess.Popen([self.exe, str(cfg)], stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=self.folder)
        import requests

        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited at start (rc={self.proc.returncode}); see {self.folder}/orthanc.log")
            try:
                if requests.get(f"{self.root}/system", auth=self.auth, timeout=2).ok:
                    return self
            except requests.exceptions.ConnectionError:
                pass
            if time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"Orthanc did not answer within 60 s; see {self.folder}/orthanc.log")
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def upload(self, path: Path) -> str:
        """Store a file through the REST API; returns Orthanc's ID of the instance."""
        import requests

        r = requests.post(f"{self.root}/instances", data=Path(path).read_bytes(), auth=self.auth, timeout=60)
        r.raise_for_status()
        return str(r.json()["ID"])

    def send(self, modality: str, ids: list[str], timeout: float = 120) -> None:
        """C-STORE the instances ``ids`` to the DICOM node ``modality`` (Orthanc as the SCU), waiting for it."""
        import requests

        r = requests.post(f"{self.root}/modalities/{modality}/store", auth=self.auth, timeout=timeout,
                          json={"Resources": ids, "Synchronous": True})
        r.raise_for_status()

    def client(self):  # noqa: ANN201 - a dicomweb_client.api.DICOMwebClient
        import requests
        from dicomweb_client.api import DICOMwebClient

        s = requests.Session()
        s.auth = self.auth
        return DICOMwebClient(self.url, session=s)
