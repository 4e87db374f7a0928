"""Chapter 6: deployment hardening of a trained model.

- safe serialization: safetensors, ``torch.load(weights_only=True)`` only, and a harmless
  pickle payload to show why (``course_lib.hardening.serialization``);
- keys, AES-256-GCM encryption, HMAC-SHA256 and Ed25519 signatures (``crypto``);
- envelope encryption: a data key per artefact, wrapped by a key-encryption key that stays
  in a KMS, with KEK versions: rotation, and destroying an old version as a separate step
  (``envelope``; ``SimulatedKMS`` stands in for the service);
- ``save_secure`` / ``load_secure``: a signed manifest of SHA-256 hashes, encryption at rest,
  and verification on every load, refused without a verify key unless ``allow_unsigned=True``,
  optionally checked against the ``expected`` name and version (``secure``); ``sign_file`` / ``verify_file`` for a single file. Any failure raises
  :class:`IntegrityError`;
- ``ModelRegistry``: versions, aliases (champion, candidate), rollback and lineage on a local
  folder, safe when several processes of one machine write at once, its records read from the
  signed manifests; ``dataset_fingerprint`` (``model_registry``);
- calibration: reliability bins, expected calibration error and its noise floor, negative
  log-likelihood, temperature scaling (``calibration``);
- prediction validation: an input guard, OOD scores with a calibrated threshold and AUROC,
  FGSM and PGD attacks, and ``GuardedPredictor``, which abstains with a reason (``guard``);
- export: torch.export, ONNX checked against onnxruntime and verified before it runs, dynamic
  int8 quantization (``export``);
- figures: reliability diagrams, where an OOD threshold falls, accuracy under attack (``figures``).
"""

from course_lib.hardening.calibration import (
    ece_noise_floor,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
)
from course_lib.hardening.crypto import (
    KEY_ENV,
    Ed25519PrivateKey,
    Ed25519PublicKey,
    load_key,
    new_key,
    write_key_file,
)
from course_lib.hardening.envelope import SimulatedKMS, open_envelope, rewrap, seal_envelope
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
    reliability_figure,
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
from course_lib.hardening.model_registry import ModelRegistry, dataset_fingerprint
from course_lib.hardening.secure import (
    UnsignedModelWarning,
    load_secure,
    rotate_data_key,
    save_secure,
    sign_file,
    verified_metadata,
    verify_file,
)
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
    "UnsignedModelWarning",
    "rotate_data_key",
    "verified_metadata",
    "sign_file",
    "verify_file",
    "SimulatedKMS",
    "seal_envelope",
    "open_envelope",
    "rewrap",
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
    "dataset_fingerprint",
    "reliability_bins",
    "expected_calibration_error",
    "ece_noise_floor",
    "negative_log_likelihood",
    "fit_temperature",
    "reliability_figure",
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
