"""Chapter 6: deployment hardening of a trained model.

- safe serialization: safetensors, ``torch.load(weights_only=True)`` only, and a harmless
  pickle payload to show why (``course_lib.hardening.serialization``);
- keys, AES-256-GCM encryption, HMAC-SHA256 and Ed25519 signatures (``crypto``);
- ``save_secure`` / ``load_secure``: a signed manifest of SHA-256 hashes, encryption at rest,
  and verification on every load (``secure``). Any failure raises :class:`IntegrityError`;
- ``ModelRegistry``: versions, aliases (champion, candidate), rollback and lineage on a local
  folder, safe when several processes write at once (``registry``);
- prediction validation: an input guard, OOD scores with a calibrated threshold and AUROC,
  FGSM and PGD attacks, and ``GuardedPredictor``, which abstains with a reason (``guard``);
- export: torch.export, ONNX checked against onnxruntime, dynamic int8 quantization (``export``);
- figures: where an OOD threshold falls, and accuracy under attack (``figures``).
"""

from course_lib.hardening.crypto import (
    KEY_ENV,
    Ed25519PrivateKey,
    Ed25519PublicKey,
    load_key,
    new_key,
    write_key_file,
)
from course_lib.hardening.export import (
    compare_runtimes,
    export_onnx,
    export_program,
    median_ms,
    onnx_session,
    quantize_int8,
    serialized_size,
)
from course_lib.hardening.figures import (
    attack_figure,
    flagged_rates,
    threshold_controls,
    threshold_figure,
)
from course_lib.hardening.guard import (
    GuardedPredictor,
    InputGuard,
    InvalidInput,
    Prediction,
    accuracy_under_attack,
    auroc,
    calibrate_threshold,
    energy_score,
    fgsm,
    max_softmax_score,
    pgd,
)
from course_lib.hardening.model_registry import ModelRegistry
from course_lib.hardening.secure import load_secure, save_secure
from course_lib.hardening.serialization import (
    IntegrityError,
    load_weights,
    safe_torch_load,
    save_weights,
    write_pickle_payload,
)

__all__ = [
    "IntegrityError",
    "save_secure",
    "load_secure",
    "save_weights",
    "load_weights",
    "safe_torch_load",
    "write_pickle_payload",
    "new_key",
    "write_key_file",
    "load_key",
    "KEY_ENV",
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "ModelRegistry",
    "InvalidInput",
    "InputGuard",
    "max_softmax_score",
    "energy_score",
    "calibrate_threshold",
    "auroc",
    "fgsm",
    "pgd",
    "accuracy_under_attack",
    "Prediction",
    "GuardedPredictor",
    "export_program",
    "export_onnx",
    "onnx_session",
    "compare_runtimes",
    "quantize_int8",
    "serialized_size",
    "median_ms",
    "flagged_rates",
    "threshold_figure",
    "threshold_controls",
    "attack_figure",
]
