"""The bundled demo: a small CNN for 16×16 digits and its data, used by ``make demo``.

``python -m seethrough.demo`` writes the digits data (scikit-learn's bundled 8×8 digits,
upsampled to 16×16) to the cache folder, runs ``seethrough inspect`` on the demo CNN, audits a
demo trojaned digits MLP (built deterministically by the zoo on first run, then cached) with
``seethrough audit --repair --attack``, then runs the quick ground-truth benchmark (``seethrough bench --quick``),
and prints where the two reports are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["digits_cnn", "digits16", "main"]


def digits_cnn(seed: int = 0) -> nn.Module:
    """A small CNN for (N, 1, 16, 16) digits: two conv blocks and a linear head, seeded init."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(16 * 4 * 4, 10),
        )
    finally:
        torch.random.set_rng_state(gen_state)  # leave the caller's global RNG as it was
    return model.eval()


def digits16() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits as float32 (N, 1, 16, 16) in [0, 1], int64 labels and class names."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype(np.float32) / 16.0
    x = x.repeat(2, axis=1).repeat(2, axis=2)[:, None]  # nearest-neighbour 8×8 → 16×16
    names = np.array([str(i) for i in range(10)])
    return x, digits.target.astype(np.int64), names


def main() -> None:
    from .cli import app
    from .core.io import cache_dir

    path = cache_dir() / "demo" / "digits16.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    x, y, names = digits16()
    np.savez(path, x=x, y=y, class_names=names)
    print("$ seethrough inspect --model seethrough.demo:digits_cnn --data", path)  # noqa: T201 - a demo script
    app(["inspect", "--model", "seethrough.demo:digits_cnn", "--data", str(path)], prog_name="seethrough",
        standalone_mode=False)
    weights, clean = _demo_trojaned_model(path.parent)
    audit_args = ["audit", "--model", "seethrough.bench.zoo:DigitsMLP", "--weights", str(weights), "--data",
                  str(clean), "--out", "seethrough-demo/audit", "--repair", "--attack"]
    print("\n$ seethrough " + " ".join(audit_args))  # noqa: T201 - a demo script
    app(audit_args, prog_name="seethrough", standalone_mode=False)
    print("\n$ seethrough bench --quick   (trains the zoo on first run; resumes afterwards)")  # noqa: T201
    app(["bench", "--quick"], prog_name="seethrough")


def _demo_trojaned_model(folder: Path) -> tuple[Path, Path]:
    """A patch-trojaned digits MLP's weights and the clean test split, written once into ``folder``."""
    from safetensors.torch import save_file

    from .bench.zoo import digits16, trojaned_classifier

    model, meta = trojaned_classifier("mlp", "patch", 0)
    weights = folder / "trojaned_mlp.safetensors"
    save_file(model.state_dict(), str(weights))
    x, y = digits16("test")
    clean = folder / "digits16_test.npz"
    np.savez(clean, x=x.numpy(), y=y.numpy(), class_names=np.array([str(i) for i in range(10)]))
    print(f"(demo model: trojan planted with target class {meta['trigger']['target_class']}; "  # noqa: T201
          "the audit is not told)")
    return weights, clean


if __name__ == "__main__":
    main()
