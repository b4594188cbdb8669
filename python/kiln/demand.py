"""What a requestor asks of a provider, as people write it (sizes like "256MiB")."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import ValidationError

from kiln.errors import UsageError
from kiln.protocol.messages import Demand as DemandMessage
from kiln.units import parse_size


@dataclass(frozen=True)
class Demand:
    """What a container needs: at least ``cpus``, ``memory`` and ``storage``, and ``labels``.

    Sizes are bytes or strings such as ``"256MiB"`` or ``"2GiB"``.
    """

    cpus: float = 1.0
    memory: int | str = "256MiB"
    storage: int | str = 0
    labels: Mapping[str, str] = field(default_factory=dict)

    def to_message(self) -> DemandMessage:
        """The demand as the protocol carries it; :class:`UsageError` when it breaks a rule."""
        try:
            return DemandMessage(
                cpus=self.cpus,
                memory=parse_size(self.memory),
                storage=parse_size(self.storage),
                labels=dict(self.labels),
            )
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in e.errors(include_url=False))
            raise UsageError(f"invalid demand: {problems}") from e
