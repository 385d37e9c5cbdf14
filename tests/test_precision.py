"""The precision a runtime reports it compiled a network in, parsed by one function (issue 39:
OpenVINO's ``<Type: 'bfloat16'>`` was read as fp32, so every bf16 run was reported fp32)."""

from __future__ import annotations

import pytest

from facesearch.core.errors import FacesearchError
from facesearch.core.precision import read_back_precision


@pytest.mark.parametrize("spelling, ours", [
    ("bf16", "bf16"), ("bfloat16", "bf16"), ("<Type: 'bfloat16'>", "bf16"), ("BF16", "bf16"),
    ("f32", "fp32"), ("float32", "fp32"), ("<Type: 'float32'>", "fp32"), ("fp32", "fp32"),
    ("f16", "fp16"), ("float16", "fp16"), ("<Type: 'float16'>", "fp16"),
    ("tensor(float)", "fp32"), ("tensor(bfloat16)", "bf16"), ("tensor(float16)", "fp16"),
])
def test_every_spelling_of_a_precision_reads_as_ours(spelling, ours):
    assert read_back_precision(spelling) == ours


def test_openvino_type_objects_read_as_ours():
    """A real ``openvino.Type`` (what ``get_property`` returns), on any CPU."""
    ov = pytest.importorskip("openvino")
    assert read_back_precision(ov.Type.bf16) == "bf16"
    assert read_back_precision(ov.Type.f32) == "fp32"
    assert read_back_precision(ov.Type.f16) == "fp16"
    assert read_back_precision(str(ov.Type.bf16)) == "bf16"


def test_an_unknown_spelling_is_an_error_not_a_silent_fp32():
    with pytest.raises(FacesearchError, match="int8"):
        read_back_precision("int8")
