"""Compact, immutable sequences of artifacts, for the inputs and outputs of wide nodes.

A node with a million artifacts is held by the kernel twice in a run's life: when the task
that publishes them completes (its outputs, then the published records) and when an aggregate
reads them (planning, then its :class:`~interlock.values.TaskInput`). As Python objects an
:class:`~interlock.records.Artifact` costs about 650 bytes (its record, the fields dict, the id
and origin strings, the seq int); the sequences here hold what is needed to rebuild each one
and build the record when it is asked for:

- :class:`PackedArtifacts`: any artifacts, one compact JSON text per artifact (about 150
  bytes for the benchmark's). What ``TaskInput.inputs`` holds for a large aggregate read from
  a store with the ``stream`` ability.
- :class:`ArtifactTexts`: any artifacts, as the JSON object text (``Artifact.to_dict``) a
  store already holds for each (Redis keeps them so): the store hands over what it read, and
  no record is built until one is read.
- :class:`PackedOutputs`: a task's validated outputs (``NewArtifact``), the fields kept as the
  JSON text their validation produced.
- :class:`PublishedView`: the artifacts a completion publishes, derived from its outputs
  (ids, fields and data read from them; node, task, seq and origin computed).

The kernel uses them from :data:`PACK_MIN` items on; below that, plain lists.

They behave as read-only sequences of records: ``len``, indexing (negative too), iteration,
``in``, ``index``/``count``, ``reversed``; slicing returns a ``list``; they compare equal to
any sequence (list, tuple or another of them) holding equal records in the same order; they
pickle. Each access builds a new record: ``s[0] == s[0]`` but ``s[0] is not s[0]``, and
mutating the ``fields`` of a record read from one changes nothing in it (treat records as
read-only values, as everywhere).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain, islice
from typing import Any, TypeVar, overload

from interlock.jsonvalues import JSON
from interlock.records import Artifact, NewArtifact, OriginMode

__all__ = ["PACK_MIN", "ArtifactTexts", "PackedArtifacts", "PackedOutputs", "PublishedView",
           "pack_if_wide", "same_items"]

PACK_MIN = 1000
"""The kernel packs a task's outputs, and reads a node's artifacts packed, from this many on:
below it plain lists cost less time and the memory does not matter."""

_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)
_DECODE = json.JSONDecoder().decode
_CHUNK = 256  # texts parsed together when an ArtifactTexts is iterated
_T = TypeVar("_T")
_GONE = ""  # what a forgotten output's fields text becomes (no valid text is empty)


def same_items(mine: Sequence[Any], other: object) -> bool:
    """``mine == other`` for a lazy sequence: equal to any list/tuple/Sequence of equal items
    in the same order (``NotImplemented`` for anything that is not a sequence)."""
    if not isinstance(other, Sequence) or isinstance(other, (str, bytes, bytearray)):
        return NotImplemented  # type: ignore[no-any-return]
    if len(mine) != len(other):
        return False
    return all(a == b for a, b in zip(mine, other, strict=True))


class _Lazy(Sequence[_T]):
    """Shared read-only sequence behaviour: subclasses give ``__len__`` and ``_item(k)``."""

    __slots__ = ()

    def _item(self, k: int) -> _T:
        raise NotImplementedError

    @overload
    def __getitem__(self, k: int) -> _T: ...

    @overload
    def __getitem__(self, k: slice) -> list[_T]: ...

    def __getitem__(self, k: int | slice) -> _T | list[_T]:
        if isinstance(k, slice):
            return [self._item(i) for i in range(*k.indices(len(self)))]
        n = len(self)
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError(f"{type(self).__name__} index out of range")
        return self._item(k)

    def __iter__(self) -> Iterator[_T]:
        for k in range(len(self)):
            yield self._item(k)

    def __eq__(self, other: object) -> bool:
        return same_items(self, other)

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    __hash__ = None  # type: ignore[assignment]  # like list: equal to unhashable lists

    def __repr__(self) -> str:
        if len(self) <= 3:
            return f"{type(self).__name__}({list(self)!r})"
        return f"<{type(self).__name__} of {len(self):,} items, first {self._item(0)!r}>"


class PackedArtifacts(_Lazy[Artifact]):
    """An immutable sequence of :class:`Artifact` held as one compact JSON text each.

    ``PackedArtifacts(artifacts)`` packs any iterable of artifacts (consumed once: a stream of
    records is never held whole). Building a record back costs a JSON decode (a few
    microseconds); fields and data are rebuilt from JSON (a deep copy, values unchanged).
    """

    __slots__ = ("_rows",)

    def __init__(self, artifacts: Iterable[Artifact] = ()) -> None:
        encode = _ENCODER.encode
        self._rows: list[str] = [
            encode([a.artifact_id, a.node_index, a.generation, a.task_id, a.seq, a.fields,
                    a.data, a.origin])
            for a in artifacts]

    @classmethod
    def from_texts(cls, texts: list[str]) -> PackedArtifacts:
        """The packed sequence of rows already in its format — per artifact the compact JSON
        array ``[artifact_id, node_index, generation, task_id, seq, fields, data, origin]``
        — taken as they are (a store that can build them itself, as SQLite does with JSON1,
        saves decoding and encoding each artifact). Not validated: for texts a store built
        from the artifacts it wrote."""
        packed = cls.__new__(cls)
        packed._rows = texts
        return packed

    def plus(self, more: Iterable[Artifact]) -> PackedArtifacts:
        """A new packed sequence: these artifacts, then ``more`` (packed as they are read)."""
        return PackedArtifacts.from_texts([*self._rows, *PackedArtifacts(more)._rows])

    def __reduce__(self) -> tuple[Any, ...]:
        return PackedArtifacts.from_texts, (self._rows,)

    def __len__(self) -> int:
        return len(self._rows)

    def _item(self, k: int) -> Artifact:
        return Artifact(*_DECODE(self._rows[k]))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PackedArtifacts) and other._rows == self._rows:
            return True  # same texts: same records (different texts may still be equal)
        return same_items(self, other)

    __hash__ = None  # __eq__ without __hash__: unhashable, like the base


class ArtifactTexts(_Lazy[Artifact]):
    """An immutable sequence of :class:`Artifact` held as the JSON object texts (``str`` or
    UTF-8 ``bytes``, the members of :meth:`Artifact.to_dict`) a store read them as.

    A store that keeps artifacts as such texts returns a wide node's artifacts this way (the
    ``stream`` ability's ``iter_artifacts``, the ``prefetch`` ability's facts): reading them
    costs the transfer, and each record is built when read — planning a 1,000-way launch
    builds the records batch by batch, planning an aggregate by reference builds one. The
    texts are not validated here: a store hands over only texts it wrote itself, in ``seq``
    order (a node generation's artifacts, as ``get_artifacts`` returns them).
    """

    __slots__ = ("_texts",)

    def __init__(self, texts: Sequence[str | bytes]) -> None:
        self._texts = texts

    def __reduce__(self) -> tuple[Any, ...]:
        return ArtifactTexts, (list(self._texts),)

    def __len__(self) -> int:
        return len(self._texts)

    def _item(self, k: int) -> Artifact:
        raw = self._texts[k]
        return Artifact(**_DECODE(raw.decode() if isinstance(raw, bytes) else raw))

    def __iter__(self) -> Iterator[Artifact]:
        # read in order (what a plugin does with its input): one JSON parse per chunk of
        # texts costs less per record than one per text
        texts = self._texts
        for start in range(0, len(texts), _CHUNK):
            chunk = [raw.decode() if isinstance(raw, bytes) else raw
                     for raw in texts[start:start + _CHUNK]]
            for data in _DECODE("[" + ",".join(chunk) + "]"):
                yield Artifact(**data)


class PackedOutputs(_Lazy[NewArtifact]):
    """A task's validated outputs: per output its local id (None for the default, its
    position), its fields as JSON text, and its data. Item ``k`` is the
    :class:`NewArtifact` ``{task_id}/{local id}`` with the fields decoded."""

    __slots__ = ("_data", "_fields", "_gone", "_ids", "_prefix")

    def __init__(self, task_id: str, ids: list[str | None], fields: list[str],
                 data: list[JSON]) -> None:
        if not len(ids) == len(fields) == len(data):
            raise ValueError("ids, fields and data must have one item per output")
        self._prefix = f"{task_id}/"
        self._gone = 0  # outputs before this one were forgotten
        self._ids = ids
        self._fields = fields
        self._data = data

    def __reduce__(self) -> tuple[Any, ...]:
        return _outputs, (self._prefix, self._ids, self._fields, self._data)

    def __len__(self) -> int:
        return len(self._fields)

    def artifact_id(self, k: int) -> str:
        """The qualified id of output ``k`` (no decode)."""
        local = self._ids[k]
        return f"{self._prefix}{k if local is None else local}"

    def _item(self, k: int) -> NewArtifact:
        return NewArtifact(self.artifact_id(k), _DECODE(self.fields_text(k)), self._data[k])

    def fields_text(self, k: int) -> str:
        """The JSON text of output ``k``'s fields as validated (compact separators, ASCII
        only): a store may write it as it is instead of decoding the item and encoding again."""
        text = self._fields[k]
        if text is _GONE:
            raise LookupError(f"output {k} was forgotten by its owner")
        return text

    def data(self, k: int) -> JSON:
        """Output ``k``'s data (no decode of its fields)."""
        if self._fields[k] is _GONE:
            raise LookupError(f"output {k} was forgotten by its owner")
        return self._data[k]

    def forget(self, stop: int) -> None:
        """Drop what outputs ``0 .. stop-1`` hold. Only for the owner of the sequence (the
        kernel, which made it), once nothing will read those items again: reading one
        afterwards raises LookupError."""
        fields, data, ids = self._fields, self._data, self._ids
        stop = min(stop, len(fields))
        for k in range(self._gone, stop):
            fields[k] = _GONE
            data[k] = ids[k] = None
        self._gone = max(self._gone, stop)


def pack_if_wide(artifacts: Iterable[Artifact]) -> Sequence[Artifact]:
    """The artifacts as a list when fewer than :data:`PACK_MIN`, else packed as they are read
    (a stream of records is then never held whole). Artifacts already packed
    (:class:`PackedArtifacts`, :class:`ArtifactTexts`) are kept as they are."""
    if isinstance(artifacts, (PackedArtifacts, ArtifactTexts)):
        return artifacts
    iterator = iter(artifacts)
    head = list(islice(iterator, PACK_MIN))
    if len(head) < PACK_MIN:
        return head
    return PackedArtifacts(chain(head, iterator))


def _outputs(prefix: str, ids: list[str | None], fields: list[str], data: list[JSON]
             ) -> PackedOutputs:
    return PackedOutputs(prefix[:-1], ids, fields, data)


class PublishedView(_Lazy[Artifact]):
    """The artifacts a completion of ``task_id`` publishes from ``outputs``: output ``k`` as
    the artifact of seq ``first_seq + k``, its origin by ``origin_mode`` (``self``: its own
    id; ``inherit``: ``origin``; ``broadcast``: None), as
    :meth:`~interlock.records.TaskRecord.output_origin` derives it."""

    __slots__ = ("_first", "_generation", "_mode", "_node", "_origin", "_outputs", "_task")

    def __init__(self, outputs: Sequence[NewArtifact], node_index: int, generation: int,
                 task_id: str, first_seq: int, origin_mode: OriginMode,
                 origin: str | None) -> None:
        self._outputs = outputs
        self._node = node_index
        self._generation = generation
        self._task = task_id
        self._first = first_seq
        self._mode = origin_mode
        self._origin = origin

    def __reduce__(self) -> tuple[Any, ...]:
        return list, (list(self),)  # pickled as the records (rare: facts stay in-process)

    def __len__(self) -> int:
        return len(self._outputs)

    def forget(self, stop: int) -> None:
        """Let the outputs of items ``0 .. stop-1`` go when they are packed (see
        :meth:`PackedOutputs.forget`: only for their owner, the kernel, which reads a wide
        fan-out's view once, in order, batch by batch)."""
        if isinstance(self._outputs, PackedOutputs):
            self._outputs.forget(stop)

    @property
    def node_index(self) -> int:
        """The node of every artifact in the view."""
        return self._node

    @property
    def generation(self) -> int:
        """The generation of every artifact in the view."""
        return self._generation

    @property
    def task_id(self) -> str:
        """The task that published every artifact in the view."""
        return self._task

    def texts(self) -> Iterator[tuple[int, str, str | None, str, JSON]] | None:
        """Per artifact, in order, ``(seq, artifact_id, origin, fields text, data)`` with the
        fields as the JSON text their validation produced (compact separators, ASCII only),
        not decoded: for a store that writes fields as text (no decode and encode again per
        artifact). None when the outputs are not packed: read the records instead. Like the
        records, an output the owner has forgotten raises LookupError when reached."""
        outputs = self._outputs
        if not isinstance(outputs, PackedOutputs):
            return None
        return self._texts(outputs)

    def _texts(self, outputs: PackedOutputs) -> Iterator[tuple[int, str, str | None, str, JSON]]:
        mode, first = self._mode, self._first
        for k in range(len(outputs)):
            artifact_id = outputs.artifact_id(k)
            origin = artifact_id if mode == "self" else None if mode == "broadcast" \
                else self._origin
            yield first + k, artifact_id, origin, outputs.fields_text(k), outputs.data(k)

    def detached(self) -> PublishedView | None:
        """A copy of this view that the owner's :meth:`forget` does not reach (a store may
        keep it instead of the records: its own lists of ids, field texts and data, the texts
        and data shared), or None when the outputs are not packed or some were forgotten."""
        outputs = self._outputs
        if not isinstance(outputs, PackedOutputs) or outputs._gone:
            return None
        own = PackedOutputs(outputs._prefix[:-1], list(outputs._ids), list(outputs._fields),
                            list(outputs._data))
        return PublishedView(own, self._node, self._generation, self._task, self._first,
                             self._mode, self._origin)

    def _item(self, k: int) -> Artifact:
        o = self._outputs[k]
        mode = self._mode
        origin = o.artifact_id if mode == "self" else None if mode == "broadcast" \
            else self._origin
        return Artifact(o.artifact_id, self._node, self._generation, self._task,
                        self._first + k, o.fields, o.data, origin)
