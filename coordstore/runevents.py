"""The agents' events of one run, in memory (the file store's ``RunState`` mixes this in).

``self.events`` maps agent -> seq -> event (a JSON dict); an (agent, seq) already held is never
replaced, so re-ingesting an events directory is harmless.
"""

from __future__ import annotations

from coordstore.models import Event


class RunEvents:
    events: dict[str, dict[int, dict]]

    def new_events(self, events: list[Event]) -> list[dict]:
        """The events not stored yet (first of duplicates in the batch); changes nothing."""
        out, seen = [], set()
        for e in events:
            k = (e.agent, e.seq)
            if k not in seen and e.seq not in self.events.get(e.agent, {}):
                seen.add(k)
                out.append(e.model_dump(mode="json"))
        return out

    def put_events(self, events: list[dict]) -> None:
        for e in events:
            self.events.setdefault(e["agent"], {}).setdefault(e["seq"], e)

    def read_events(self, agent: str | None, since_seq: int, limit: int | None) -> list[dict]:
        if agent is not None:
            mine = self.events.get(agent, {})
            out = [mine[s] for s in sorted(mine) if s > since_seq]
        else:
            out = [e for evs in self.events.values() for s, e in evs.items() if s > since_seq]
            out.sort(key=lambda e: (e["ts_ms"], e["agent"], e["seq"]))
        return out if limit is None else out[:limit]

    def last_event_seq(self, agent: str) -> int:
        return max(self.events.get(agent, {}), default=-1)
