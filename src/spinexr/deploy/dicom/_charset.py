"""The Specific Character Set of an SR or presentation state: the source film's where it carries every text
of the output, else the source's with the degree sign spelt "deg" where that is all it lacks, else
ISO_IR 192 (UTF-8). A film without a character set is in the default repertoire (ASCII), which has no
"°". A film whose set uses code extensions (several defined terms: ``\\ISO 2022 IR 87`` for Japanese,
``\\ISO 2022 IR 149`` for Korean) gets UTF-8 too: OHIF reads SRs with dcmjs, which refuses a Specific
Character Set of more than one value, and UTF-8 carries the same names. pydicom re-encodes each text value
(patient names included) in the set chosen when it writes.
"""

from __future__ import annotations

from collections.abc import Iterator

from pydicom import config
from pydicom.charset import convert_encodings, encode_string, python_encoding
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "PN"})
UTF8 = "ISO_IR 192"
DEGREE = "°"


def _elements(ds: Dataset) -> Iterator[DataElement]:
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _elements(item)
        elif elem.VR in TEXT_VRS and elem.value not in (None, ""):
            yield elem


def _texts(elem: DataElement) -> list[str]:
    values = elem.value if isinstance(elem.value, MultiValue | list) else [elem.value]
    return [str(v) for v in values if v not in (None, "")]


def terms(value: str | list[str] | MultiValue | None) -> list[str]:
    """The defined terms of a Specific Character Set value (empty: the default repertoire)."""
    if value is None or value == "":
        return []
    return [str(v) for v in value] if isinstance(value, MultiValue | list | tuple) else [str(value)]


def carries(texts: list[str], charset: list[str]) -> bool:
    """True when every text can be written in ``charset`` (its defined terms; empty: ASCII only; a term DICOM
    does not define carries nothing)."""
    if not charset or charset == [""]:
        return all(t.isascii() for t in texts)
    if any(term.strip() not in python_encoding for term in charset):
        return False  # a term DICOM does not define: nothing is written in it
    try:
        encodings = convert_encodings(charset)
    except (LookupError, ValueError):
        return False
    before = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.RAISE
    try:
        for t in texts:
            encode_string(t, encodings)
    except (UnicodeError, LookupError, ValueError):
        return False
    finally:
        config.settings.writing_validation_mode = before
    return True


def settle(ds: Dataset, source_charset: str | list[str] | MultiValue | None) -> str:
    """Set ``ds``'s Specific Character Set (see the module) and return what was chosen, in words."""
    src = terms(source_charset)
    elements = list(_elements(ds))
    texts = [t for e in elements for t in _texts(e)]
    if len(src) > 1:
        chosen, how = [UTF8], "UTF-8: the film's set uses code extensions, which viewers' SR readers refuse"
    elif carries(texts, src):
        chosen, how = src, "the film's"
    elif carries([t.replace(DEGREE, " deg") for t in texts], src):
        for e in elements:
            if e.VR != "PN" and any(DEGREE in t for t in _texts(e)):
                e.value = ([t.replace(DEGREE, " deg") for t in e.value] if isinstance(e.value, MultiValue | list)
                           else str(e.value).replace(DEGREE, " deg"))
        chosen, how = src, "the film's, with the degree sign as 'deg'"
    else:
        chosen, how = [UTF8], "UTF-8: the film's set cannot carry the report's text"
    if not chosen:
        if "SpecificCharacterSet" in ds:
            del ds.SpecificCharacterSet
    else:
        ds.SpecificCharacterSet = chosen[0] if len(chosen) == 1 else chosen
    return f"{'/'.join(chosen) or 'default repertoire'} ({how})"


__all__ = ["carries", "settle", "terms"]
