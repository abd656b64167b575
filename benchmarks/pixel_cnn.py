"""The paper's "deeply trained CNN" baseline, small enough for a 2-core CPU.

FakeSpotter compares itself with Xception / VGG19 / ResNet50 fine-tuned on pixels. Those
need ImageNet weights and a GPU; here the stand-in is a plain 5-stage CNN trained from
scratch on the same aligned 112 x 112 face crops the SFace backbone sees:

    stem  conv3x3(3->16) BN ReLU
    4 x   conv3x3 stride 2 (c -> 2c, from 16) BN ReLU, conv3x3(2c -> 2c) BN ReLU
    head  global average pool, dropout 0.2, linear(256 -> 1)

about 1.2 M parameters and 0.18 GMAC per crop. Training: AdamW (lr 2e-3, weight decay
5e-4), cosine schedule, batch 64, binary cross-entropy, random horizontal flips and shifts
of up to 6 px; the epoch with the best validation AUC is kept. The whole training is capped
at a wall-clock budget (default 30 minutes) and stops after the last epoch that fits.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm


def _block(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class PixelCNN(nn.Module):
    def __init__(self, width: int = 16) -> None:
        super().__init__()
        layers = _block(3, width, 1)
        c = width
        for _ in range(4):
            layers += _block(c, 2 * c, 2) + _block(2 * c, 2 * c, 1)
            c *= 2
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).mean((2, 3))
        return self.head(self.dropout(x)).squeeze(1)


def to_tensor(crops: np.ndarray) -> torch.Tensor:
    """N x H x W x 3 uint8 -> N x 3 x H x W float in [-1, 1]."""
    return torch.from_numpy(crops).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def _augment(x: torch.Tensor, rng: np.random.Generator, shift: int = 6) -> torch.Tensor:
    n, _, h, w = x.shape
    flip = torch.from_numpy(rng.random(n) < 0.5)
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    padded = F.pad(x, (shift, shift, shift, shift), mode="replicate")
    out = torch.empty_like(x)
    dy, dx = rng.integers(0, 2 * shift + 1, size=(2, n))
    for i in range(n):
        out[i] = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
    return out


@torch.inference_mode()
def predict(model: PixelCNN, crops: np.ndarray, batch: int = 128) -> np.ndarray:
    """P(fake) for N x H x W x 3 uint8 crops."""
    model.eval()
    out = [
        torch.sigmoid(model(to_tensor(crops[i : i + batch]))) for i in range(0, len(crops), batch)
    ]
    return torch.cat(out).numpy() if out else np.zeros(0)


def train(
    crops: np.ndarray,
    y: np.ndarray,
    val_crops: np.ndarray,
    val_y: np.ndarray,
    *,
    minutes: float = 30.0,
    max_epochs: int = 30,
    batch: int = 64,
    seed: int = 0,
    log=print,
) -> tuple[PixelCNN, dict]:
    """Train within ``minutes`` of wall clock; returns the best-validation-AUC model and a log."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = PixelCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=5e-4)
    steps_per_epoch = math.ceil(len(crops) / batch)
    # The schedule assumes the epochs that fit the budget; it is re-planned after epoch 1.
    planned = max_epochs
    history, best = [], (-1.0, None, 0)
    start = time.perf_counter()
    y_t = torch.from_numpy(y.astype(np.float32))
    step = 0
    for epoch in range(max_epochs):
        model.train()
        order = rng.permutation(len(crops))
        total = 0.0
        for i in tqdm(
            range(0, len(order), batch), desc=f"pixel CNN epoch {epoch + 1}", leave=False
        ):
            idx = order[i : i + batch]
            lr = 2e-3 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / (planned * steps_per_epoch))))
            for g in opt.param_groups:
                g["lr"] = lr
            x = _augment(to_tensor(crops[idx]), rng)
            loss = F.binary_cross_entropy_with_logits(model(x), y_t[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            step += 1
        val_auc = float(roc_auc_score(val_y, predict(model, val_crops)))
        elapsed = time.perf_counter() - start
        history.append(
            {
                "epoch": epoch + 1,
                "loss": total / len(crops),
                "val_auc": val_auc,
                "seconds": round(elapsed, 1),
            }
        )
        log(
            f"pixel CNN epoch {epoch + 1}: loss {total / len(crops):.4f}, val AUC {val_auc:.4f}, {elapsed:.0f} s"
        )
        if val_auc > best[0]:
            best = (val_auc, {k: v.clone() for k, v in model.state_dict().items()}, epoch + 1)
        per_epoch = elapsed / (epoch + 1)
        if epoch == 0:
            planned = max(1, min(max_epochs, int(minutes * 60 / per_epoch)))
        if epoch + 1 >= planned or elapsed + per_epoch > minutes * 60:
            break
    model.load_state_dict(best[1])
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    return model, {
        "history": history,
        "best_epoch": best[2],
        "best_val_auc": best[0],
        "train_seconds": round(time.perf_counter() - start, 1),
        "n_params": n_params,
        "threads": torch.get_num_threads(),
        "minutes_budget": minutes,
    }
