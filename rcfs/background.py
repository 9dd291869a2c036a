"""Learning what listings do not say, from rate-limit budget nobody is using.

The API's listings leave out the size of some attachments and the content type of
every recording. Until they are known a file is shown with a provisional size (see
`rcfs.folders.media.PROVISIONAL_SIZE`) and recordings are named `.mp3`. A desktop
then types a `.wav` recording as MP3, and shows sizes that are not real; so this task
learns the missing facts while the user is not asking for anything:

- one probe per file, a ranged GET of its first byte (`Range: bytes=0-0`): the answer's
  Content-Range carries the size and its Content-Type the real type, so a recording
  costs one request for both (the metadata call it replaces gave only the type);
- newest first, because that is what people open;
- only in a rate-limit group that has carried no other request for a whole window, and
  only up to half of the group's limit, so a `cp` that starts meanwhile finds at least
  half its window free; the moment any other request of the group appears, the probes
  of that group stop until it has been quiet for a window again;
- learned facts go through the same callbacks as those a download learns (persisted
  in the StateStore, kernel caches invalidated by the adapter), so each is paid once
  per account, not once per mount;
- what to probe comes from each owner (`RemoteMediaOwner.probe_targets`): message and
  recording files are keyed like their content; a greeting's file is keyed by its rule
  and type, its content by the greeting, so the owner names the content and is told
  the size it has (`probe_learned_size`).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Iterable

import trio

from .api.client import Priority, RingCentralClient
from .api.errors import ApiError, NotFound, RangeNotSatisfiable, RateLimited
from .api.governor import Group
from .folders.media import RemoteMediaOwner
from .reader import Source
from .state import StateStore
from .tree import File

log = logging.getLogger(__name__)

QUIET_WINDOWS = 1.0  # a group must have seen no other request for this many windows
SHARE = 0.5  # probes never fill more than this share of a group's limit


@dataclasses.dataclass
class LearnerStats:
    """What the background work did so far (shown by `rcfs status`)."""

    requests: dict[str, int] = dataclasses.field(default_factory=dict)  # per group
    sizes_learned: int = 0
    types_learned: int = 0
    failures: int = 0
    rate_limited: int = 0


class BackgroundLearner:
    """Probes files of unknown size (and recordings of unknown type), newest first."""

    def __init__(self, client: RingCentralClient, owners: Iterable[RemoteMediaOwner], state: StateStore, *,
                 on_size: Callable[[str, int], None], on_content_type: Callable[[str, str], None],
                 tick: float = 0.5) -> None:
        self.client = client
        self.owners = list(owners)
        self.state = state
        self.on_size = on_size
        self.on_content_type = on_content_type
        self.tick = tick
        self.stats = LearnerStats()
        self._skip: set[str] = set()  # keys whose probe failed for good this session
        self._others_seen: dict[Group, int] = {}  # other requests of the group at the last look
        self._quiet_since: dict[Group, float] = {}

    # what is left to learn ------------------------------------------------------------
    def _needs(self, node: File, source: Source) -> bool:
        if source.key in self._skip or not source.url:
            return False
        if node.size is None:
            return True
        return source.key.startswith("rec:") and source.key not in self.state.content_types

    def pending(self) -> list[tuple[RemoteMediaOwner, File, Source]]:
        """(owner, file, what to probe) still to learn, newest first."""
        found = [(owner, node, source) for owner in self.owners
                 for node, source in owner.probe_targets() if self._needs(node, source)]
        found.sort(key=lambda t: t[1].mtime, reverse=True)
        return found

    def pending_counts(self) -> dict[str, int]:
        sizes = types = 0
        for owner in self.owners:
            for node, source in owner.probe_targets():
                if source.key in self._skip or not source.url:
                    continue
                sizes += node.size is None
                types += source.key.startswith("rec:") and source.key not in self.state.content_types
        return {"sizes": sizes, "types": types}

    # pacing ---------------------------------------------------------------------------
    def _others(self, group: Group) -> int:
        """Requests of `group` this learner did not send (retries of ours count too: that
        only makes it more careful)."""
        return self.client.stats.requests.get(group.value, 0) - self.stats.requests.get(group.value, 0)

    def may_probe(self, group: Group) -> bool:
        """True when a probe in `group` can only use budget nobody is asking for."""
        now = trio.current_time()
        budget = self.client.governor.budget(group)
        others = self._others(group)
        if (others != self._others_seen.get(group) or budget.waiting or budget.blocked_for
                or group not in self._quiet_since):
            self._others_seen[group] = others
            self._quiet_since[group] = now
            return False
        if now - self._quiet_since[group] < QUIET_WINDOWS * self._window(group):
            return False
        return budget.used < max(1, int(budget.limit * SHARE))

    def _window(self, group: Group) -> float:
        """The group's window; before its first answer, the shortest window the server
        announced for another group (it uses one window for all; the default is 60 s)."""
        budget = self.client.governor.budget(group)
        if budget.learned:
            return budget.window
        learned = [b.window for b in (self.client.governor.budget(g) for g in Group if g is not Group.NONE)
                   if b.learned]
        return min(learned, default=budget.window)

    # work -----------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            pending = self.pending()
            # Nothing to learn: look again now and then (a refresh may list new files).
            await trio.sleep(self.tick if pending else max(self.tick, 5.0))
            by_group: dict[Group, list[tuple[RemoteMediaOwner, File, Source]]] = {}
            for target in pending:
                by_group.setdefault(self.client.budget_for(target[2].url).group, []).append(target)
            for group, targets in by_group.items():
                for owner, node, source in targets:
                    if not self.may_probe(group):
                        break
                    if self._needs(node, source):  # (a download may have learned it meanwhile)
                        await self.probe(node, group, source=source, owner=owner)

    async def probe(self, node: File, group: Group, *, source: Source | None = None,
                    owner: RemoteMediaOwner | None = None) -> None:
        source = source or Source(key=node.key, url=node.url, size=node.size)
        key = source.key

        def learned_size(size: int) -> None:
            self.stats.sizes_learned += 1
            self.on_size(key, size)
            if owner is not None:
                owner.probe_learned_size(node, key, size)

        self.stats.requests[group.value] = self.stats.requests.get(group.value, 0) + 1
        try:
            chunk = await self.client.fetch(source.url, 0, 0, priority=Priority.BACKGROUND)
        except RateLimited:
            self.stats.rate_limited += 1
            return  # the group is blocked now; may_probe waits for it to be quiet again
        except NotFound:
            self._skip.add(key)
            return
        except RangeNotSatisfiable as exc:  # an empty file: byte 0 does not exist
            self._skip.add(key)
            if exc.total is not None and node.size is None:
                learned_size(exc.total)
            return
        except ApiError as exc:
            self.stats.failures += 1
            log.debug("background probe of %s failed: %s", key, exc)
            self._skip.add(key)  # not again this session: a broken item must not loop
            return
        if chunk.total is None:
            self._skip.add(key)  # the server does not say; opening the file will find out
        elif node.size is None:
            learned_size(chunk.total)
        if chunk.content_type and key.startswith("rec:") and key not in self.state.content_types:
            self.stats.types_learned += 1
            self.on_content_type(key, chunk.content_type)
        self.state.maybe_flush()
        # Another task's request in the same group while ours was out is seen at the next look.
