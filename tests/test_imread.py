"""Reading radiographs: every format, every colour mode, and every bad input."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from conftest import gradient_image, save
from spinexr.data.imread import list_images, read_image
from spinexr.errors import ImageReadError


def _check_unit(img: np.ndarray) -> None:
    assert img.dtype == np.float32
    assert img.ndim == 2
    assert 0.0 <= img.min() and img.max() <= 1.0


@pytest.mark.parametrize("ext,fmt", [(".jpg", "JPEG"), (".png", "PNG"), (".tif", "TIFF"), (".bmp", "BMP")])
def test_8bit_formats(tmp_path: Path, gray_u8: np.ndarray, ext: str, fmt: str) -> None:
    p = save(gray_u8, tmp_path / f"a{ext}")
    img, meta = read_image(p)
    _check_unit(img)
    assert meta.format == fmt
    assert (meta.width, meta.height) == (64, 96)
    assert meta.bit_depth == 8
    tol = 0.05 if fmt == "JPEG" else 1e-6
    assert np.abs(img - gray_u8 / 255.0).mean() < tol


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16bit_kept(tmp_path: Path, ext: str) -> None:
    a = (np.linspace(0, 65535, 64 * 96).reshape(96, 64)).astype(np.uint16)
    p = tmp_path / f"a16{ext}"
    if ext == ".tif":
        import tifffile

        tifffile.imwrite(p, a)
    else:
        Image.fromarray(a).save(p)
    img, meta = read_image(p)
    _check_unit(img)
    assert meta.bit_depth == 16
    # 16-bit precision survives: neighbouring values differ by far less than one 8-bit step.
    assert np.allclose(img, a / 65535.0, atol=1e-6)
    assert len(np.unique(img)) > 256


def test_colour_modes_become_gray(tmp_path: Path, gray_u8: np.ndarray) -> None:
    rgb = np.stack([gray_u8] * 3, -1)
    for mode in ("RGB", "RGBA", "P", "CMYK", "LA"):
        base = Image.fromarray(rgb)
        im = base.quantize(256) if mode == "P" else base.convert(mode)
        ext = ".jpg" if mode == "CMYK" else ".png"
        p = save(im, tmp_path / f"m_{mode}{ext}")
        img, _ = read_image(p)
        _check_unit(img)
        assert np.abs(img - gray_u8 / 255.0).mean() < 0.06, mode


def test_exif_orientation_honoured(tmp_path: Path) -> None:
    a = np.zeros((40, 80), np.uint8)
    a[:, :20] = 255  # bright band on the left of a wide image
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    p = tmp_path / "rot.jpg"
    im.save(p, exif=exif.tobytes())
    img, meta = read_image(p)
    assert img.shape == (80, 40)  # portrait once the tag is applied
    assert (meta.width, meta.height) == (40, 80)
    assert img[:20].mean() > 0.8 and img[-20:].mean() < 0.2  # the band is now at the top


# ---------------------------------------------------------------- DICOM


def make_dicom(path: Path, pixels: np.ndarray, **attrs) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = attrs.pop("transfer_syntax", ExplicitVRLittleEndian)
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = attrs.pop("photometric", "MONOCHROME2")
    bits = 16 if pixels.dtype == np.uint16 else 8
    ds.BitsAllocated = bits
    ds.BitsStored = attrs.pop("bits_stored", bits)
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    raw = attrs.pop("raw_pixel_data", None)
    for k, v in attrs.items():
        setattr(ds, k, v)
    if raw is not None:
        ds.PixelData = raw
    elif pixels is not None:
        ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_16bit_monochrome2(tmp_path: Path) -> None:
    a = np.linspace(0, 4095, 64 * 96).reshape(96, 64).astype(np.uint16)
    p = make_dicom(tmp_path / "a.dcm", a, bits_stored=12, PixelSpacing=[0.143, 0.143])
    img, meta = read_image(p)
    _check_unit(img)
    assert meta.format == "DICOM" and meta.bit_depth == 12
    assert meta.photometric == "MONOCHROME2"
    assert meta.pixel_spacing == (0.143, 0.143)
    assert img[0, 0] == pytest.approx(0.0) and img[-1, -1] == pytest.approx(1.0)
    assert len(np.unique(img)) > 256  # more than 8 bits of levels survive


def test_dicom_monochrome1_inverted(tmp_path: Path) -> None:
    a = np.linspace(0, 4095, 64 * 96).reshape(96, 64).astype(np.uint16)
    m2, _ = read_image(make_dicom(tmp_path / "m2.dcm", a))
    m1, meta = read_image(make_dicom(tmp_path / "m1.dcm", a, photometric="MONOCHROME1"))
    assert meta.photometric == "MONOCHROME1"
    assert np.allclose(m1, 1.0 - m2, atol=1e-6)
    assert m1[0, 0] == pytest.approx(1.0)  # the lowest stored value is white in MONOCHROME1


def test_dicom_window_and_rescale_applied(tmp_path: Path) -> None:
    a = np.linspace(0, 4000, 64 * 96).reshape(96, 64).astype(np.uint16)
    # Stored 0..4000, rescaled to -1000..3000; window 1000 +/- 500 on the rescaled values.
    p = make_dicom(tmp_path / "w.dcm", a, RescaleSlope=1.0, RescaleIntercept=-1000.0,
                   WindowCenter=1000.0, WindowWidth=1000.0)
    img, _ = read_image(p)
    hu = a.astype(float) - 1000.0
    assert np.all(img[hu <= 500] == 0.0)  # below the window: black
    assert np.all(img[hu >= 1500] == 1.0)  # above the window: white
    inside = (hu > 600) & (hu < 1400)
    expected = np.clip((hu[inside] - 999.5) / 999.0 + 0.5, 0, 1)
    assert np.allclose(img[inside], expected, atol=1e-5)


def test_dicom_without_pixel_data(tmp_path: Path) -> None:
    p = make_dicom(tmp_path / "sr.dcm", np.zeros((4, 4), np.uint8), raw_pixel_data=None)
    ds = pydicom.dcmread(p)
    del ds.PixelData
    ds.save_as(p)
    with pytest.raises(ImageReadError, match="no pixel data"):
        read_image(p)


def test_dicom_compressed_without_plugin_names_it(tmp_path: Path) -> None:
    from pydicom.encaps import encapsulate

    a = np.zeros((32, 32), np.uint16)
    frag = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 60])  # a J2K start, then junk
    p = make_dicom(tmp_path / "j2k.dcm", a, transfer_syntax=JPEG2000Lossless, raw_pixel_data=frag)
    with pytest.raises(ImageReadError, match="pylibjpeg") as ei:
        read_image(p)
    assert "j2k.dcm" in str(ei.value)


def test_dicom_detected_without_extension(tmp_path: Path) -> None:
    a = np.linspace(0, 255, 32 * 32).reshape(32, 32).astype(np.uint8)
    p = make_dicom(tmp_path / "IM0001", a)
    img, meta = read_image(p)
    assert meta.format == "DICOM"
    assert p in list_images(tmp_path)


# ---------------------------------------------------------------- bad input


def _bad(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_bad_inputs_raise_image_read_error(tmp_path: Path, gray_u8: np.ndarray) -> None:
    good_jpg = save(gray_u8, tmp_path / "g.jpg").read_bytes()
    good_png = save(gray_u8, tmp_path / "g.png").read_bytes()
    cases = {
        "empty.jpg": (b"", "empty"),
        "trunc.jpg": (good_jpg[: len(good_jpg) // 2], "truncated"),
        "trunc.png": (good_png[: len(good_png) // 2], "truncated|corrupt|decode"),
        "random.png": (os.urandom(4096), "not a recognised image"),
        "text.jpg": (b"this is not an image, it is a note\n" * 20, "not a recognised image"),
    }
    for name, (data, reason) in cases.items():
        p = _bad(tmp_path, name, data)
        with pytest.raises(ImageReadError, match=reason) as ei:
            read_image(p)
        assert isinstance(ei.value, ValueError)
        assert ei.value.path == str(p)
        assert name in str(ei.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "nope.png")


def test_decompression_bomb_refused(tmp_path: Path) -> None:
    p = save(np.zeros((3000, 3000), np.uint8) + gradient_image(3000, 3000), tmp_path / "big.png")
    with pytest.raises(ImageReadError, match="over the limit"):
        read_image(p, max_pixels=4_000_000)
    img, _ = read_image(p, max_pixels=10_000_000)  # the same file passes a higher, explicit limit
    assert img.shape == (3000, 3000)


def test_default_limit_admits_largest_kauh_size() -> None:
    from spinexr.data.imread import DEFAULT_MAX_PIXELS
    assert DEFAULT_MAX_PIXELS > 2972 * 4999 * 2


def test_tiny_and_constant_images(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="1x1"):
        read_image(save(np.array([[7]], np.uint8), tmp_path / "one.png"))
    with pytest.raises(ImageReadError, match="constant"):
        read_image(save(np.full((64, 64), 128, np.uint8), tmp_path / "flat.png"))
