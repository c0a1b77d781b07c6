"""libnftables, in-process: a context whose netlink socket lives in one namespace, and one
``nft`` script per call (a transaction), with no fork and exec.

kube-proxy's nftables mode, NetworkPolicy enforcement and ``netsim trace`` use it.  Standard
library only (ctypes): the library is loaded at the first context, not at import.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading

from netsim.kernel.netns import KernelError, entered

OUTPUT_STATELESS = 1 << 2  # NFT_CTX_OUTPUT_STATELESS: no counter values in listings
OUTPUT_HANDLE = 1 << 3  # NFT_CTX_OUTPUT_HANDLE: each rule's handle in listings


class NftError(KernelError):
    """A transaction libnftables refused (its error text), or a context it could not make."""


class LibNft:
    """A libnftables context whose netlink socket lives in one namespace.

    Two limits of libnftables 1.0.6 shape this class.  Contexts used from several threads at
    once corrupt its memory (a CNI plugin server with 8 workers died of "double free or
    corruption"), so every call into the library, in any context, holds one process-wide lock.
    And it waits for the kernel's answer with select(), which aborts the process ("bit out of
    range 0 - FD_SETSIZE") when the context's socket is descriptor 1024 or above, as it is in
    an agent holding a thousand pods' sockets: a few low descriptors are kept in reserve and
    handed back just before a context opens its socket.
    """

    _lib = None
    _lock = threading.Lock()
    _reserve: list[int] = []
    RESERVE = 8
    FD_SETSIZE = 1024

    @classmethod
    def load(cls):
        if cls._lib is None:
            lib = ctypes.CDLL(ctypes.util.find_library("nftables") or "libnftables.so.1")
            lib.nft_ctx_new.restype = ctypes.c_void_p
            lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
            lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
            lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
            lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
            lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
            cls._lib = lib
        return cls._lib

    @classmethod
    def _refill_reserve(cls) -> None:
        while len(cls._reserve) < cls.RESERVE:
            fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            if fd >= cls.FD_SETSIZE:
                os.close(fd)
                return
            cls._reserve.append(fd)

    def __init__(self, netns_path: str, output_flags: int = 0):
        self.lib = self.load()
        self.netns_path = netns_path
        self.ctx = None
        with self._lock:
            for fd in self._reserve:
                os.close(fd)
            self._reserve.clear()
            try:
                probe = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)  # the number the socket will get
                os.close(probe)
                if probe >= self.FD_SETSIZE:
                    raise NftError(f"no descriptor below {self.FD_SETSIZE} is free for libnftables' socket")
                with entered(netns_path):
                    self.ctx = self.lib.nft_ctx_new(0)
                if not self.ctx:
                    raise NftError(f"nft_ctx_new in {netns_path} failed")
                self.lib.nft_ctx_buffer_output(self.ctx)
                self.lib.nft_ctx_buffer_error(self.ctx)
                if output_flags:
                    self.lib.nft_ctx_output_set_flags(self.ctx, output_flags)
            finally:
                self._refill_reserve()

    def run(self, text: str) -> str:
        with self._lock:
            rc = self.lib.nft_run_cmd_from_buffer(self.ctx, text.encode())
            out = (self.lib.nft_ctx_get_output_buffer(self.ctx) or b"").decode(errors="replace")
            err = (self.lib.nft_ctx_get_error_buffer(self.ctx) or b"").decode(errors="replace")
        if rc != 0:
            raise NftError(f"nftables transaction in {self.netns_path} failed: {err.strip()[:2000]}")
        return out

    def close(self) -> None:
        with self._lock:
            if self.ctx:
                self.lib.nft_ctx_free(self.ctx)
                self.ctx = None
