"""Channel data sent in bulk: the SSH packets of an upload sealed here, many at a time.

paramiko sends channel data one packet (at most 32 KiB on OpenSSH) at a time: a
Message, about six copies of the data and some thirty Python calls for each. A large
upload spent most of the client's CPU there, not in the cipher: with 8 files of 64 MiB
to a loopback OpenSSH, the client used 3.4 s of CPU, 0.24 s of it in AES-GCM, 0.56 s in
memmove. Here up to 64 packets are laid out in one buffer kept for the connection, each
sealed in place with AES-GCM (``encrypt_into``), and written with one call: 256 MiB went
out in 1.40-1.45 s instead of 1.70-1.96 s, with a quarter less client CPU.

It takes paramiko's own locks and keeps its books, as ``Channel.send`` and
``Packetizer.send_message`` do: the channel's send window, waiting out a key exchange,
the write lock (the transport's thread sends window adjustments and keepalives between
batches), the cipher's invocation counter, the sequence number, and the byte and
packet counts that trigger a rekey. Those are paramiko's private attributes, so the
connection first checks they are all there, and each batch that the outgoing cipher is
AES-GCM, by its name and its engine (mirror asks for it first; every OpenSSH since 6.2
offers it); otherwise that batch goes through ``Channel.sendall``, slower but the same
bytes. A mistake here cannot go unnoticed: the server checks every packet's tag and
drops the connection on the first bad one.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import paramiko

MSG_CHANNEL_DATA = 94
#: the AES-GCM tag after each packet
TAG = 16
#: packets sealed and written at once: 2 MiB, what an upload keeps in flight
BATCH = 64
#: packet length (not encrypted: the associated data)
_LENGTH = struct.Struct(">I")
#: the sealed part starts with padding length, message type, channel and data length
_HEAD = struct.Struct(">BBII")
_COUNTER = 2**64
#: the packetizer's private state this module reads or keeps up to date
_STATE = (
    "write_lock",
    "block_engine_out",
    "iv_out",
    "block_size_out",
    "aead_out",
    "compress_engine_out",
    "dump_packets",
    "sequence_number_out",
    "sent_bytes",
    "sent_packets",
    "need_rekey",
    "received_bytes_overflow",
    "received_packets_overflow",
)
_TRANSPORT = ("clear_to_send", "clear_to_send_lock", "clear_to_send_timeout", "active", "local_cipher")
#: the ciphers sealed here: RFC 5647's construction (the length as associated data, a
#: 12-byte nonce counting packets); another AEAD (chacha20-poly1305) works differently
SEALED = frozenset({"aes128-gcm@openssh.com", "aes256-gcm@openssh.com"})

Sender = Callable[[memoryview], None]


def sender(channel: paramiko.Channel) -> Sender:
    """What to send this channel's data with: batches sealed here where paramiko's
    internals are as this module knows them, else ``channel.sendall``."""
    transport = channel.get_transport()
    packetizer = _Private(transport.packetizer)
    if not (all(map(packetizer.has, _STATE)) and all(hasattr(transport, name) for name in _TRANSPORT)):
        return channel.sendall
    return _Sealer(channel, transport, packetizer).sendall


class _Private:
    """A paramiko Packetizer's private attributes, by their names in its source."""

    def __init__(self, packetizer: Any) -> None:
        self.packetizer = packetizer

    def has(self, name: str) -> bool:
        return hasattr(self.packetizer, f"_Packetizer__{name}")

    def __getitem__(self, name: str) -> Any:
        return getattr(self.packetizer, f"_Packetizer__{name}")

    def __setitem__(self, name: str, value: Any) -> None:
        setattr(self.packetizer, f"_Packetizer__{name}", value)


class _Sealer:
    """Sends one connection's channel data; used by one thread at a time, as the
    connection is."""

    def __init__(self, channel: paramiko.Channel, transport: paramiko.Transport, packetizer: _Private) -> None:
        self.channel = channel
        self.transport = transport
        self.p = packetizer
        # imported with paramiko, not with this module: a run that never connects skips both
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aes_gcm = AESGCM
        #: kept for the connection: two fresh 2 MiB buffers a batch cost page faults and zeroing
        self._out = bytearray()
        self._plain = bytearray()

    def sendall(self, data: memoryview) -> None:
        view = data.cast("B")
        while view:
            sizes = self._take_window(len(view))
            taken = sum(sizes)
            batch, view = view[:taken], view[taken:]
            if not self._seal_and_send(batch, sizes):
                with self.channel.lock:
                    # paramiko's path takes its window again
                    self.channel.out_window_size += len(batch)
                self.channel.sendall(batch)

    def _take_window(self, wanted: int) -> list[int]:
        """Packet sizes for up to :data:`BATCH` packets of the next ``wanted`` bytes, their
        window taken. Only the first may wait for the window to open: waiting with
        packets laid out but unsent could wait for ever."""
        chan = self.channel
        with chan.lock:
            if chan.closed:
                raise OSError("Socket is closed")
            first = chan._wait_for_send_window(wanted)
            if first == 0:
                raise EOFError("the channel was closed while sending")
            sizes = [first]
            left = min(wanted - first, chan.out_window_size)
            step = chan.out_max_packet_size - 64  # as paramiko allows a packet
            while left > 0 and len(sizes) < BATCH:
                n = min(step, left)
                sizes.append(n)
                left -= n
                chan.out_window_size -= n
        return sizes

    def _seal_and_send(self, data: memoryview, sizes: list[int]) -> bool:
        """Seal ``data`` as one packet per size and write them; False (nothing sent)
        when the outgoing cipher is not AES-GCM with ``encrypt_into``."""
        p = self.p
        self._wait_for_kex()
        try:
            with p["write_lock"]:
                engine = p["block_engine_out"]
                if (
                    self.transport.local_cipher not in SEALED
                    or not isinstance(engine, self._aes_gcm)
                    or not hasattr(engine, "encrypt_into")
                    or not p["aead_out"]
                    or p["compress_engine_out"] is not None
                    or p["dump_packets"]
                ):
                    return False
                out = self._seal(engine, data, sizes)
                p.packetizer.write_all(out)
                self._count(len(out), len(sizes))
                return True
        finally:
            self.transport.clear_to_send_lock.release()

    def _wait_for_kex(self) -> None:
        """Hold ``clear_to_send_lock`` once no key exchange is under way (as paramiko's
        ``_send_user_message`` does); the caller releases it."""
        transport = self.transport
        start = time.time()
        while True:
            transport.clear_to_send.wait(0.1)
            if not transport.active:
                raise EOFError("the connection was closed while sending")
            transport.clear_to_send_lock.acquire()
            if transport.clear_to_send.is_set():
                return
            transport.clear_to_send_lock.release()
            if time.time() > start + transport.clear_to_send_timeout:
                raise EOFError("key exchange timed out while sending")

    def _seal(self, engine: Any, data: memoryview, sizes: list[int]) -> memoryview:
        p = self.p
        block = p["block_size_out"]
        chanid = self.channel.remote_chanid
        # padding to a whole block, at least 4 bytes (RFC 4253 6); the length is not sealed
        paddings = [3 + block - ((9 + n + 4) % block) for n in sizes]
        total = sum(4 + 10 + n + pad + TAG for n, pad in zip(sizes, paddings, strict=True))
        if len(self._out) < total:
            self._out = bytearray(total)
        longest = 10 + max(sizes) + 3 + block
        if len(self._plain) < longest:
            self._plain = bytearray(longest)
        out, plain = memoryview(self._out), memoryview(self._plain)
        random = os.urandom(sum(paddings))
        iv = p["iv_out"]
        fixed, counter = iv[:4], int.from_bytes(iv[4:], "big")
        at = taken = used = 0
        for n, pad in zip(sizes, paddings, strict=True):
            sealed = 10 + n + pad
            _LENGTH.pack_into(out, at, sealed)
            _HEAD.pack_into(plain, 0, pad, MSG_CHANNEL_DATA, chanid, n)
            plain[10 : 10 + n] = data[taken : taken + n]
            plain[10 + n : sealed] = random[used : used + pad]
            nonce = fixed + counter.to_bytes(8, "big")
            engine.encrypt_into(nonce, plain[:sealed], out[at : at + 4], out[at + 4 : at + 4 + sealed + TAG])
            counter = (counter + 1) % _COUNTER
            at += 4 + sealed + TAG
            taken += n
            used += pad
        p["iv_out"] = fixed + counter.to_bytes(8, "big")
        return out[:at]

    def _count(self, sent: int, packets: int) -> None:
        """The books ``send_message`` keeps: sequence number, and the counts that ask for
        a new key exchange."""
        p = self.p
        p["sequence_number_out"] = (p["sequence_number_out"] + packets) & 0xFFFFFFFF
        p["sent_bytes"] += sent
        p["sent_packets"] += packets
        rekey = p["sent_packets"] >= p.packetizer.REKEY_PACKETS or p["sent_bytes"] >= p.packetizer.REKEY_BYTES
        if rekey and not p["need_rekey"]:
            p["received_bytes_overflow"] = 0
            p["received_packets_overflow"] = 0
            p.packetizer._trigger_rekey()
