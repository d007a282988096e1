"""Every registered model x attention head: shapes, finiteness, gradients; weights loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spinexr.errors import WeightsError
from spinexr.models import create_model, list_models

ATTENTION = ["mhsa", "cbam", "none"]


def _size(name: str) -> int:
    return 80 if name == "inception_v3" else 64


@pytest.mark.parametrize("attention", ATTENTION)
@pytest.mark.parametrize("name", list_models())
def test_forward_backward(name: str, attention: str) -> None:
    torch.manual_seed(0)
    m = create_model(name, attention=attention)
    m.train()
    s = _size(name)
    x = torch.randn(2, 1, s, s)
    out = m(x)
    assert out.shape == (2, 3)
    assert torch.isfinite(out).all()
    out.sum().backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    feats = m.forward_features(x)
    assert feats.ndim == 4 and feats.shape[1] == m.num_features
    amap = m.attention_map
    if attention == "none":
        assert amap is None
    else:
        assert amap.shape == (2, feats.shape[2], feats.shape[3])
        assert torch.isfinite(amap).all()


def test_mhsa_map_is_a_distribution() -> None:
    m = create_model("small", attention="mhsa").eval()
    m(torch.randn(3, 1, 96, 96))
    amap = m.attention_map
    # Mean attention received per token, averaged over queries: sums to 1 over the map.
    assert torch.allclose(amap.flatten(1).sum(1), torch.ones(3), atol=1e-4)


@pytest.mark.parametrize("name", list_models())
def test_stem_takes_one_channel(name: str) -> None:
    m = create_model(name, attention="none")
    first = next(mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d))
    assert first.in_channels == 1


@pytest.mark.parametrize("ext", [".safetensors", ".pth"])
def test_local_timm_weights_load(tmp_path: Path, ext: str) -> None:
    import timm

    torch.manual_seed(1)
    ref = timm.create_model("resnet10t", pretrained=False, in_chans=3)  # an ImageNet-shaped timm state dict
    sd = ref.state_dict()
    path = tmp_path / f"resnet10t{ext}"
    if ext == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save(sd, path)
    m = create_model("small", weights=str(path))
    own = m.backbone.state_dict()
    assert torch.equal(own["layer4.0.conv2.weight"], sd["layer4.0.conv2.weight"])
    # The RGB stem is folded into one gray channel by timm's adapt_input_conv (sum over RGB).
    stem = "conv1.0.weight"
    assert own[stem].shape[1] == 1
    assert torch.allclose(own[stem][:, 0], sd[stem].sum(1), atol=1e-5)


def test_local_weights_for_wrong_architecture(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    sd = timm.create_model("mobilenetv3_small_050", pretrained=False).state_dict()
    p = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(p))
    with pytest.raises(WeightsError, match="different model"):
        create_model("small", weights=str(p))
    with pytest.raises(WeightsError, match="not found"):
        create_model("small", weights=str(tmp_path / "missing.pth"))


def test_pickled_object_refused(tmp_path: Path) -> None:
    import argparse

    p = tmp_path / "evil.pth"
    torch.save({"x": argparse.Namespace(a=1)}, p)  # any non-tensor object: weights_only refuses it
    with pytest.raises(WeightsError, match="cannot load"):
        create_model("small", weights=str(p))


def test_imagenet_offline_gives_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        import huggingface_hub.constants as hc

        monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    except ImportError:
        pass
    with pytest.raises(WeightsError) as ei:
        create_model("densenet121", weights="imagenet")
    msg = str(ei.value)
    assert "--weights none" in msg and "densenet121" in msg


def test_unknown_model_and_attention() -> None:
    from spinexr.errors import SpinexrError

    with pytest.raises(SpinexrError, match="available"):
        create_model("vgg16")
    with pytest.raises(SpinexrError, match="mhsa, cbam or none"):
        create_model("small", attention="transformer")
