"""Convert dlib's face descriptor into our weights format: the default model's starting point.

dlib's ResNet face descriptor (public domain, see weights/README.md) is read from
the installed ``face-recognition-models`` package into our embedder format: the
timm backbone ``dlib_resnet29``, no projection head, L2 norm, 150-px chips aligned
with dlib's 5-point template. The shipped ``weights/default`` is this port
fine-tuned by ``tools/finetune_default.py`` (the whole recipe is in weights/README.md).

    python tools/make_default_weights.py [--out weights/dlib_port]
"""

from __future__ import annotations

import argparse

from facesearch.models.dlib_resnet import convert_dlib_weights
from facesearch.models.factory import create_embedder
from facesearch.models.weights import save_weights


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="weights/dlib_port")
    args = ap.parse_args(argv)
    model = create_embedder("dlib_resnet29", embedding_dim=128, input_size=150, head="none", align="dlib5_150_p25")
    model.trunk.load_state_dict(convert_dlib_weights(), strict=True)
    model.config.recipe = {"source": "dlib_face_recognition_resnet_model_v1.dat (face-recognition-models 0.3.0)",
                           "conversion": "facesearch.models.dlib_resnet.convert_dlib_weights", "training": "none"}
    print(save_weights(model, args.out))


if __name__ == "__main__":
    main()
