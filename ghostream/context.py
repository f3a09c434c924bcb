"""What every service of a running server shares: settings, broker, history, gatekeeper."""

from __future__ import annotations

from dataclasses import dataclass

from ghostream import monitoring
from ghostream.auth import Gatekeeper, create_authenticator
from ghostream.broker.eventlog import EventLog
from ghostream.broker.packets import PacketHub
from ghostream.broker.registry import Broker
from ghostream.config import Settings
from ghostream.outputs.llhls import LlHls


@dataclass
class ServerContext:
    settings: Settings
    broker: Broker
    gatekeeper: Gatekeeper
    history: EventLog | None
    packets: PacketHub
    hls: LlHls

    @classmethod
    def create(cls, settings: Settings) -> ServerContext:
        """Wire the broker to its listeners; OSError when the history cannot be opened."""
        broker = Broker(reconnect_grace=settings.streams.reconnect_grace)
        broker.on_event.append(monitoring.observe)
        history = None
        if settings.history.enabled:
            history = EventLog.open(settings.history.database)
            broker.on_event.append(history.record)
        auth = settings.auth
        authenticator = create_authenticator(
            enabled=auth.enabled,
            backend=auth.backend,
            credentials=auth.basic.credentials,
            ldap_uri=auth.ldap.uri,
            ldap_userdn=auth.ldap.userdn,
            ldap_aliases=auth.ldap.aliases,
        )
        packets = PacketHub(broker)
        hls = LlHls(packets, broker)
        return cls(settings, broker, Gatekeeper(authenticator), history, packets, hls)

    def close(self) -> None:
        if self.history is not None:
            self.history.close()
