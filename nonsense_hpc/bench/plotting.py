"""The common end of every benchmark plot: grid, legend, layout, write the PNG."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["save_figure"]


def save_figure(fig: Any, axes: Iterable[Any], path: Path, dpi: int = 110) -> None:
    """Put a light log grid and a legend on each axis, then write ``fig`` to ``path``.

    The parent folder is created; the figure is closed afterwards.
    """
    import matplotlib.pyplot as plt

    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
