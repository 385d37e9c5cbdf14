"""Stage 7, evaluation: the one protocol every caller uses.

- :mod:`facesearch.photos.folders`: identity-labelled photo folders and identity splits;
- :mod:`facesearch.eval.pairs`: which pairs are scored (all genuine + a seeded impostor sample) and
  their distances;
- :mod:`facesearch.eval.metrics`: verification metrics on pair distances (ROC, EER, TAR@FAR, CV τ);
- :mod:`facesearch.eval.protocol`: the protocol itself — the pairs' distances and the verification
  report every caller gives (``evaluate``, training's validation, calibration, the benchmarks);
- :mod:`facesearch.eval.openset`: open-set identification (FPIR/FNIR, rank-1, DET) against a gallery;
- :mod:`facesearch.eval.tau`: the τ policy — calibration from dev pairs, and which τ a command uses;
- :mod:`facesearch.eval.embedding`: photos → embeddings for evaluation (largest face per photo).

Training validation, ``facesearch evaluate``, ``tools/calibrate.py``, the benchmarks and the tools
all call these; reports render their results from the report layer.
"""
