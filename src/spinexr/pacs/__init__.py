"""``spinexr pacs``: spinexr against a PACS over DICOMweb. Films come in by QIDO-RS and WADO-RS, reports
(a TID 1500 SR and a presentation state per film, :mod:`spinexr.deploy.dicom`) go back by STOW-RS, and
a SQLite ledger remembers what was done."""

from spinexr.pacs.client import Credentials, Unreachable, connect, load_credentials
from spinexr.pacs.ledger import Ledger
from spinexr.pacs.worker import PacsWorker, Round, watch

__all__ = ["Credentials", "Ledger", "PacsWorker", "Round", "Unreachable", "connect", "load_credentials", "watch"]
