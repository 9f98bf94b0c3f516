"""The attention matrix as a heatmap: one row per output token, one column per input token, darker where
the model looked harder (the lecture's "what does the network seem to be focusing on?"); for captions, the
attention of each word over the image grid laid over the picture (`plot_image_attention`).

Drawn with matplotlib's object API on an Agg canvas: no display, no global backend switched.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def plot_attention(src_tokens: Sequence[str], tgt_tokens: Sequence[str], weights: Sequence[Sequence[float]],
                   path: str | os.PathLike, title: str | None = None) -> Path:
    """Write the heatmap of `weights` (len(tgt_tokens) rows x len(src_tokens) columns, each row a
    distribution over the source) to `path` (PNG, or any format matplotlib infers from the suffix)."""
    w = np.asarray(weights, dtype=np.float64).reshape(len(tgt_tokens), len(src_tokens))
    cell = 0.45  # inches per token
    fig = Figure(figsize=(max(4.0, 1.5 + cell * len(src_tokens)), max(3.0, 1.2 + cell * len(tgt_tokens))))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(w, cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(src_tokens)), [t.strip() or repr(t) for t in src_tokens], rotation=60, ha="right")
    ax.set_yticks(range(len(tgt_tokens)), [t.strip() or repr(t) for t in tgt_tokens])
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path


def plot_image_attention(image: np.ndarray, words: Sequence[str], weights: Sequence[Sequence[float]],
                         grid: tuple[int, int], path: str | os.PathLike, title: str | None = None) -> Path:
    """Write one panel per generated word: the picture (H, W, 3) uint8 with that word's attention over the
    `grid` (rows x columns of cells, `weights` one row per word, cells row by row) laid over it as a
    heatmap, upsampled to the picture's size (the lecture's "what is the network focusing on")."""
    h, w = grid
    maps = np.asarray(weights, dtype=np.float64).reshape(len(words), h, w)
    cols = min(5, len(words) + 1)
    rows = -(-(len(words) + 1) // cols)
    fig = Figure(figsize=(2.2 * cols, 2.4 * rows))
    FigureCanvasAgg(fig)
    extent = (0, image.shape[1], image.shape[0], 0)  # the grid stretched over the whole picture
    for i in range(len(words) + 1):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(image, extent=extent)
        if i > 0:
            ax.imshow(maps[i - 1], cmap="Greys_r", alpha=0.6, extent=extent, interpolation="bilinear",
                      vmin=0.0, vmax=max(float(maps[i - 1].max()), 1e-9))
        ax.set_title("(image)" if i == 0 else words[i - 1], fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path


PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def check_plot_path(path: str | os.PathLike) -> Path:
    """A picture file to write: a suffix matplotlib writes (ConfigError otherwise); its folder is created."""
    from seqlab.errors import ConfigError

    path = Path(path)
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise ConfigError(f"a picture's name must end in {', '.join(PLOT_SUFFIXES)}", path=path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the folder ({e.strerror})", path=path.parent) from None
    return path


def plot_result_attention(kind: str, result: dict, picture: np.ndarray | None, path: str | os.PathLike,
                          title: str) -> Path:
    """Draw the attention a predictor returned (`Predictor.attention`: `alignment` for output x input tokens,
    `image` for each word over the picture, `tokens` for one weight per input token)."""
    if kind == "alignment":
        return plot_attention(result["src_tokens"], result["tgt_tokens"], result["attention"], path, title=title)
    if kind == "image":
        return plot_image_attention(picture, result["words"], result["attention"], tuple(result["grid"]), path,
                                    title=title)
    tokens = [t for t, _ in result["attention"]]
    return plot_attention(tokens, ["weight"], [[w for _, w in result["attention"]]], path, title=title)
