"""ZeroMQ devices and the bridge from MPI ranks to the outside world.

* :class:`Forwarder` (XSUB -> XPUB) and :class:`Streamer` (PULL -> PUSH), each run in a
  thread, a process, or from the CLI, with a control socket (:class:`DeviceControl`).
* :class:`Broker`, :class:`BrokerWorker` and :class:`Sink`: acknowledged task delivery
  with heartbeats and re-dispatch (the ZeroMQ guide's Paranoid Pirate pattern), results
  de-duplicated by task id.
* :class:`Publisher` and :class:`TaskFarm`: what MPI ranks use.

Everything speaks the wire format of :mod:`nonsense_hpc.wire` (docs/wire.md).
"""

from nonsense_hpc.devices.bridge import Publisher, Result, TaskFarm
from nonsense_hpc.devices.broker import Broker
from nonsense_hpc.devices.control import DeviceControl
from nonsense_hpc.devices.device import Device, Forwarder, Streamer
from nonsense_hpc.devices.runner import LAUNCHERS
from nonsense_hpc.devices.security import (
    check_bind_address,
    configure_client,
    configure_server,
    generate_keys,
    normalize_address,
)
from nonsense_hpc.devices.sink import Sink
from nonsense_hpc.devices.worker import BrokerWorker, StreamWorker

__all__ = [
    "LAUNCHERS",
    "Broker",
    "BrokerWorker",
    "Device",
    "DeviceControl",
    "Forwarder",
    "Publisher",
    "Result",
    "Sink",
    "StreamWorker",
    "Streamer",
    "TaskFarm",
    "check_bind_address",
    "configure_client",
    "configure_server",
    "generate_keys",
    "normalize_address",
]
