"""The framing stress test's transforms keep the spine in the frame, and the test counts changes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spinexr.data.contract import fit_to_box
from spinexr.data.framing import (
    FULL_ASPECT,
    STRIP_ASPECT,
    framing_stress,
    pad_to_aspect,
    spine_window,
    strip_box,
    strip_crop,
)
from spinexr.data.imread import read_image
from spinexr.data.landmarks import read_landmark_csv

CLASSES = ("Normal", "Scoliosis", "Spondylolisthesis")


def test_strip_keeps_every_vertebra_corner_of_synthetic_films(synth_dir: Path) -> None:
    recs = read_landmark_csv(synth_dir / "landmarks.csv").records
    assert len(recs) >= 10
    for r in recs:
        img, _ = read_image(r.path)
        x0, w = strip_box(img)  # from the image alone: where the film is brightest
        xs = r.landmarks[..., 0]
        assert x0 <= xs.min() and xs.max() <= x0 + w, f"{r.path.name}: spine {xs.min():.0f}-{xs.max():.0f}, strip {x0}+{w}"
        strip = strip_crop(img)
        assert strip.shape[0] == img.shape[0] and strip.shape[0] / strip.shape[1] == pytest.approx(STRIP_ASPECT, rel=0.05)
        # With the corners given, a strip too narrow for a wide curve widens to hold them.
        x0l, wl = strip_box(img, aspect=12.0, landmarks=r.landmarks)
        assert x0l <= xs.min() and xs.max() <= x0l + wl


def test_padding_keeps_the_film_and_reaches_full_film_proportions() -> None:
    img = np.random.default_rng(0).random((400, 100)).astype(np.float32)
    out = pad_to_aspect(img)
    assert out.shape == (400, 160) and 400 / 160 == FULL_ASPECT
    left = (160 - 100) // 2
    assert np.array_equal(out[:, left:left + 100], img)
    assert np.array_equal(out[:, :left], img[:, :left][:, ::-1])  # the margins mirror the film's own edges
    black = pad_to_aspect(img, mode="black")
    assert np.array_equal(black[:, left:left + 100], img) and black[:, :left].max() == 0
    tiny = pad_to_aspect(np.ones((1000, 20), dtype=np.float32))  # much narrower than the margins it needs
    assert tiny.shape == (1000, 400) and tiny.min() == 1
    wide = np.zeros((100, 80), dtype=np.float32)
    assert pad_to_aspect(wide) is wide  # already wider than a full film: unchanged


def _film(h: int, w: int, spine_x: int, seed: int = 0) -> np.ndarray:
    """A film with textured soft tissue and a bright vertical band (the spine) at column ``spine_x``."""
    rng = np.random.default_rng(seed)
    img = 0.2 + 0.1 * rng.random((h, w))
    img[:, max(0, spine_x - w // 40 - 2): spine_x + w // 40 + 3] += 0.5
    return np.clip(img, 0, 1).astype(np.float32)


def test_window_makes_a_strip_and_the_strip_widened_the_same_input() -> None:
    strip = _film(800, 180, 95)  # narrower than a strip (800 / 4 = 200), spine a little right of centre
    wide = pad_to_aspect(strip)  # the framing test's widened Normal strip
    assert wide.shape[1] == 320
    win, x0 = spine_window(strip)
    win_w, x0_w = spine_window(wide)
    assert win.shape == (800, 200) and abs(x0 + 100 - 95) <= 8  # strip proportions, on the spine
    assert x0 < 0  # starts left of the narrow film: its left edge mirrored outwards
    assert np.array_equal(win, win_w) and x0_w - x0 == (320 - 180) // 2
    a, pa = fit_to_box(strip, 96, 96, "window")
    b, pb = fit_to_box(wide, 96, 96, "window")
    assert np.array_equal(a, b)  # the model cannot tell them apart
    # Letterbox and strip modes can: the widened film shows more than the strip.
    assert not np.array_equal(fit_to_box(strip, 96, 96, "letterbox")[0], fit_to_box(wide, 96, 96, "letterbox")[0])
    # The placement maps the spine back onto the film it came from, in either framing.
    for pl, off in ((pa, 0), (pb, (320 - 180) // 2)):
        x_in = pl.points_to_input(np.array([[95.0 + off, 400.0]]))
        assert pl.points_to_original(x_in)[0, 0] == pytest.approx(95.0 + off, abs=1e-6)
        assert abs(x_in[0, 0] - 48) <= 1  # the spine sits in the middle of the input


def test_window_of_a_full_film_is_its_strip_around_the_spine() -> None:
    full = _film(800, 320, 150, seed=1)
    win, x0 = spine_window(full)
    assert win.shape == (800, 200) and 0 <= x0 <= 120
    assert np.array_equal(win, full[:, x0:x0 + 200])  # cut from the film itself, nothing mirrored
    assert abs(x0 + 100 - 150) <= 8  # on the spine (a band 21 px wide)
    # The framing test's strip of a full AP film (cut around the spine by strip_crop's own estimate of
    # its column) reaches the model as nearly the same pixels: within a grey level on average.
    cut = strip_crop(full)
    a = fit_to_box(full, 96, 96, "window")[0].astype(int)
    b = fit_to_box(cut, 96, 96, "window")[0].astype(int)
    assert np.abs(a - b).mean() < 1.0
    assert np.abs(a - fit_to_box(full, 96, 96, "letterbox")[0].astype(int)).mean() > 5  # unlike the film as it is


def test_stress_counts_what_framing_changes() -> None:
    rng = np.random.default_rng(1)
    sco = [rng.random((250, 100)) for _ in range(6)] + [rng.random((500, 100))]  # the last is not a full AP view
    nor = [rng.random((400, 100)) for _ in range(5)]

    def by_aspect(films: list[np.ndarray]) -> np.ndarray:  # a pure framing shortcut: tall means Normal
        return np.array([[1.0, 0, 0] if f.shape[0] / f.shape[1] > 3 else [0, 1.0, 0] for f in films])

    def by_content(films: list[np.ndarray]) -> np.ndarray:
        return np.tile([0.0, 1.0, 0.0], (len(films), 1))

    s = framing_stress(by_aspect, sco, nor, CLASSES)
    assert s["scoliosis_ap_to_strip"] == {"n": 6, "changed": 6, "to": {"Normal": 6, "Spondylolisthesis": 0}}
    assert s["normal_strip_to_full"]["n"] == 5 and s["normal_strip_to_full"]["changed"] == 5
    s = framing_stress(by_content, sco, nor, CLASSES)
    assert s["scoliosis_ap_to_strip"]["changed"] == 0 and s["normal_strip_to_full"]["changed"] == 0


def test_reframe_augmentation_cuts_wide_films_and_widens_strips() -> None:
    import torch

    from spinexr.data.augment import reframe

    s = 64
    x = torch.zeros(2, 1, s, s)
    x[0, 0, :, 12:52] = 0.3  # a full AP film, 40 columns wide, letterboxed
    x[0, 0, :, 30:34] = 0.9  # its spine, the brightest band
    x[1, 0, :, 28:36] = torch.linspace(0.2, 0.6, 8)  # a narrow strip with a left-to-right gradient
    gen = torch.Generator().manual_seed(0)
    y = reframe(x, strip_p=1.0, widen_p=1.0, gen=gen)
    cols0 = torch.nonzero(y[0, 0].amax(dim=0) > 0).flatten()
    assert len(cols0) == 16 and cols0.min() <= 30 and cols0.max() >= 33  # a strip S/4 wide, around the spine
    assert torch.equal(y[0, 0, :, 30:34], x[0, 0, :, 30:34])
    cols1 = torch.nonzero(y[1, 0].amax(dim=0) > 0).flatten()
    assert len(cols1) == int(s / 2.5) and torch.equal(y[1, 0, :, 28:36], x[1, 0, :, 28:36])  # the strip kept
    assert torch.allclose(y[1, 0, :, 27], x[1, 0, :, 28]) and torch.allclose(y[1, 0, :, 36], x[1, 0, :, 35])  # mirrored
    assert torch.equal(reframe(x, 0.0, 0.0, gen), x)


def test_blur_and_noise_augmentation() -> None:
    import dataclasses

    import torch

    from spinexr.config import AugConfig
    from spinexr.data.augment import augment, gaussian_blur

    x = torch.zeros(3, 1, 32, 32)
    x[:, :, :, 16:] = 1.0  # a sharp vertical edge
    y = gaussian_blur(x, torch.tensor([0.0, 1.0, 2.0]))
    assert torch.allclose(y[0], x[0], atol=1e-6)  # sigma 0 keeps the film
    assert torch.allclose(y.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1e-5)  # brightness kept
    edge = [float(y[i, 0, 16, 15]) for i in range(3)]
    assert edge[0] == 0.0 < edge[1] < edge[2] < 0.5  # wider sigma spreads the edge further
    still = dataclasses.replace(AugConfig(), rotate_deg=0, scale=0, translate=0, flip=False, brightness=0,
                                contrast=0, gamma=0, strip_p=0, widen_p=0)
    flat = torch.full((4, 1, 16, 16), 0.5)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(augment(flat, still, gen), flat)
    noisy = augment(flat, dataclasses.replace(still, noise=0.1), gen)
    assert 0 < float((noisy - flat).std()) < 0.1 and noisy.min() >= 0 and noisy.max() <= 1


def _reference_reframe(x, strip_p, widen_p, gen, strip_aspect=4.0, full_aspect=2.5):
    """The framing augmentation film by film, written plainly: the oracle for the batched version."""
    import torch

    from spinexr.data.framing import brightest_band

    def mirror(film, n):
        reps = [film, film.flip(-1)] * (n // film.shape[-1] + 1)
        return torch.cat(reps, dim=-1)[..., :n]

    b, _, s, _ = x.shape
    r = torch.rand(b, 2, generator=gen)
    out = x.clone()
    cols = x.amax(dim=(1, 2)) > 0
    for i in range(b):
        idx = torch.nonzero(cols[i]).flatten()
        if len(idx) == 0:
            continue
        c0, c1 = int(idx[0]), int(idx[-1]) + 1
        w = c1 - c0
        if r[i, 0] < strip_p and w > s / strip_aspect * 1.2:
            cx = c0 + brightest_band(x[i, 0, :, c0:c1].mean(dim=0).numpy())
            half = int(s / strip_aspect / 2)
            out[i, :, :, :max(c0, cx - half)] = 0
            out[i, :, :, min(c1, cx + half):] = 0
        elif r[i, 1] < widen_p and w < s / full_aspect:
            target = int(s / full_aspect)
            left = min((target - w) // 2, c0)
            right = min(target - w - left, s - c1)
            film = x[i, :, :, c0:c1]
            if left > 0:
                out[i, :, :, c0 - left:c0] = mirror(film, left).flip(-1)
            if right > 0:
                out[i, :, :, c1:c1 + right] = mirror(film.flip(-1), right)
    return out


def test_batched_reframe_matches_the_film_by_film_definition() -> None:
    import torch

    from spinexr.data.augment import reframe

    g = torch.Generator().manual_seed(1)
    for trial in range(30):
        s = int(torch.randint(32, 100, (1,), generator=g))
        x = torch.zeros(6, 1, s, s)
        for i in range(5):  # the last film stays empty (all letterbox)
            w = int(torch.randint(2, s + 1, (1,), generator=g))
            c0 = int(torch.randint(0, s - w + 1, (1,), generator=g))
            film = torch.rand(s, w, generator=g) * 0.5 + 0.05
            band = int(torch.randint(0, w, (1,), generator=g))
            film[:, max(0, band - 2):band + 2] += 0.4
            x[i, 0, :, c0:c0 + w] = film
        want = _reference_reframe(x, 0.5, 0.5, torch.Generator().manual_seed(trial))
        got = reframe(x, 0.5, 0.5, torch.Generator().manual_seed(trial))
        assert torch.equal(got, want), trial
