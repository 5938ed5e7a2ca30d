import pytest
import torch
from torch import nn

from trainers.precision import autocast, for_inference, grad_scaler, resolve_device, train_precision, unsupported_reason


def test_bf16_autocast_really_produces_bf16_activations_in_linear_layers():
    seen = []
    lin = nn.Linear(8, 8)
    lin.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with autocast("bf16", "cpu")():
        lin(torch.randn(2, 8))
    assert seen == [torch.bfloat16]


def test_fp32_and_int8_train_without_autocast():
    seen = []
    lin = nn.Linear(8, 8)
    lin.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    for p in ("fp32", "int8"):
        with autocast(p, "cpu")():
            lin(torch.randn(2, 8))
    assert seen == [torch.float32, torch.float32]
    assert train_precision("int8") == "fp32" and train_precision("bf16") == "bf16"


def test_int8_quantises_every_linear_layer_with_int8_weights_close_to_fp32():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(3, 8)
    expected = model(x).detach()
    q = for_inference(model, "int8")
    from trainers.deploy.modeling_pruned import Int8Linear

    assert sum(isinstance(m, Int8Linear) for m in q.modules()) == 2
    assert not any(type(m) is nn.Linear for m in q.modules())
    assert all(m.weight.dtype == torch.int8 for m in q.modules() if isinstance(m, Int8Linear))
    out = q(x)
    assert out.shape == (3, 2)
    torch.testing.assert_close(out, expected, atol=0.05, rtol=0.05)  # int8 rounding, not a different function
    assert not torch.equal(out, expected)


def test_int8_path_uses_no_deprecated_quantisation_api():
    import inspect

    import trainers.deploy.modeling_pruned as modeling
    import trainers.precision as precision

    for module in (precision, modeling):
        assert "quantize_dynamic" not in inspect.getsource(module) and "torch.ao" not in inspect.getsource(module)


def test_impossible_combinations_are_named():
    assert "CUDA" in unsupported_reason("fp16", "cpu")
    assert "CPU" in unsupported_reason("int8", "cuda")
    assert unsupported_reason("bf16", "cpu") is None
    assert unsupported_reason("fp32", "cpu") is None
    assert "unknown" in unsupported_reason("fp8", "cpu")


def test_grad_scaler_only_for_fp16_on_cuda():
    assert not grad_scaler("bf16", "cpu").is_enabled()
    assert not grad_scaler("fp32", "cpu").is_enabled()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_explicit_cuda_without_gpu_is_an_error():
    with pytest.raises(ValueError, match="no CUDA"):
        resolve_device("cuda")
    assert resolve_device("auto") == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_fp16_on_cuda_uses_a_grad_scaler_and_half_activations():
    assert grad_scaler("fp16", "cuda").is_enabled()
    lin = nn.Linear(8, 8).cuda()
    with autocast("fp16", "cuda")():
        assert lin(torch.randn(2, 8, device="cuda")).dtype == torch.float16
