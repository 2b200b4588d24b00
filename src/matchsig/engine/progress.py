"""The progress bar of the engine's long loops (scoring, layer curves, statistics, patching): tqdm, or nothing."""

from __future__ import annotations


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="pair", dynamic_ncols=True)
