"""What a dataset is to the pipeline: a `Source`, one per dataset, declared in its module and
listed in data/__init__.py's registry (`DATASETS`). The `dataset` parameter's choices, the
rules on `data_path` and `column_map`, the languages a run may ask for and where the
examples came from are all read from it, so adding a dataset is its module (a `load` and a
`SOURCE`) and one registry line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from xlinfluence.data.select import Pools

#: (languages, *, data_path, column_map) -> the train and test pools of those languages
Loader = Callable[..., Pools]


@dataclass(frozen=True)
class Source:
    """name: the `dataset` value. origin: where its examples come from when no data_path
    is given (a URL, recorded with the manifests). languages: data_path -> the languages it
    has, where that is known without reading its examples (None: unknown). A data_path or
    column_map it does not take, or a data_path it needs, is refused with `why` and `fix`."""

    name: str
    load: Loader
    origin: str
    languages: Callable[[str], set[str] | None]
    takes_data_path: bool = True
    needs_data_path: bool = False
    takes_column_map: bool = True
    why: str = ""
    fix: str = ""

    def refusal(self, data_path: str, column_map: object) -> tuple[str, object, str, str] | None:
        """(parameter, value, why, fix) for a data_path or column_map this source refuses."""
        if data_path and not self.takes_data_path:
            return "data_path", data_path, self.why, self.fix
        if column_map and not self.takes_column_map:
            return "column_map", column_map, self.why, self.fix
        if self.needs_data_path and not data_path:
            return "data_path", data_path, self.why, self.fix
        return None

    def pools(
        self, languages: Sequence[str], data_path: str, column_map: Mapping[str, str] | None
    ) -> Pools:
        return self.load(languages, data_path=data_path, column_map=column_map)


def folders(data_path: str) -> set[str] | None:
    """The subfolder names of a data_path folder (a saved copy's languages), else None."""
    path = Path(data_path) if data_path else None
    if path is None or not path.is_dir():
        return None
    return {p.name for p in path.iterdir() if p.is_dir()}
