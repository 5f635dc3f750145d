"""An optimized BLAS for MLX's Linux CPU backend, put in place before ``libmlx`` is loaded.

The ``mlx-cpu`` wheel's ``libmlx.so`` links a netlib reference BLAS (``mlx_cpu.libs/libblas-*.so.3.10.0``): a 1024²
float32 matmul runs at a few GFLOP/s. A library that is loaded with ``RTLD_GLOBAL`` before ``libmlx.so`` comes first
in the global lookup scope, so ``libmlx``'s ``cblas_sgemm`` (and its LAPACK calls) bind to it instead.

The optimized library is ``cmeel-openblas``'s OpenBLAS (standard ``cblas_*`` names, threads by pthreads). It needs
``libgfortran.so.5``, which a clean Linux lacks. Where the system has none, the GNU Fortran runtime that the
``mlx-cpu`` wheel itself bundles (else numpy's or scipy's) is used: auditwheel renamed its SONAME
(``libgfortran-<hash>.so.5.0.0``), and glibc matches a ``DT_NEEDED`` entry against loaded objects' SONAMEs, so a copy
whose SONAME reads ``libgfortran.so.5`` is loaded from memory (``memfd_create``; a private temporary file, removed at
once, where that is refused) before OpenBLAS. Nothing is written to site-packages or a cache. See ``docs/blas.md``.

Not applicable (``None``, no failure): macOS and other platforms, Linux other than x86_64, ``mlx-cuda-*`` installed,
no ``mlx-cpu`` wheel, ``ONEPASS_BLAS=off``.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
import sys
import tempfile
import threading
from collections.abc import Callable
from importlib import metadata
from pathlib import Path, PurePath

ENV_SWITCH = "ONEPASS_BLAS"  # "off" keeps the wheel's own BLAS (read by ``entrypoints.settings``)
GFORTRAN_SONAME = "libgfortran.so.5"  # what cmeel-openblas's libopenblas.so.0 NEEDs
OPENBLAS_FILE = "libopenblas.so.0"
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")  # a user's own choice of threads wins
# cmeel-openblas releases whose DYNAMIC_ARCH build runs AVX-512 code (``sgemm_direct``, the small row-major sgemm path)
# on any x86_64 CPU: on one without AVX-512 (AMD Zen 3, Intel before Skylake-X) the first such matmul kills the process
# with SIGILL. pyproject.toml excludes them; this guard covers an environment that has one all the same.
AVX512_ONLY_RELEASES = frozenset({"0.3.31"})
# Wheels whose auditwheel-bundled GNU Fortran runtime can stand in, in order of preference: mlx-cpu's own first (it
# comes with the libmlx being sped up), then numpy's and scipy's (both bundle one for their OpenBLAS builds)
GFORTRAN_DONORS = ("mlx-cpu", "numpy", "scipy")

_result: str | None = None  # what this process loaded, once settled
_failure: str | None = None  # why it did not, when that is worth a warning
_settled = False
_handles: list[ctypes.CDLL] = []  # keep the loaded libraries referenced for the process's life
_lock = threading.Lock()


class _NotApplicable(Exception):
    """This installation does not use the CPU backend's reference BLAS: nothing to do, nothing to warn about."""


def enable_fast_blas(enabled: bool = True) -> str | None:
    """Load an optimized BLAS with ``RTLD_GLOBAL`` so that ``libmlx`` binds to it; call before importing ``mlx``.

    ``enabled`` False (``ONEPASS_BLAS=off``, read by the composition root) keeps the wheel's own BLAS. Returns a short description of what was loaded, or ``None`` (not applicable, switched off, or failed: then
    ``fast_blas_failure()`` says why). Never raises; the first call settles the answer for the process.
    """
    global _result, _failure, _settled
    with _lock:
        if not _settled:
            try:
                _result = _enable(enabled)
            except _NotApplicable:
                _result = None
            except Exception as exc:  # noqa: BLE001 - a missing speed-up must never stop transcription
                _result, _failure = None, f"{type(exc).__name__}: {exc}"
            _settled = True
        return _result


def fast_blas_failure() -> str | None:
    """Why ``enable_fast_blas()`` returned ``None`` where it should have worked; ``None`` when it loaded or did not
    apply (macOS, CUDA, ``ONEPASS_BLAS=off``)."""
    return _failure


def _enable(enabled: bool) -> str:
    if not enabled:
        raise _NotApplicable(f"{ENV_SWITCH}=off")
    if not sys.platform.startswith("linux") or platform.machine() != "x86_64":
        raise _NotApplicable("not Linux x86_64")
    if _cuda_wheel_installed():
        raise _NotApplicable("mlx-cuda installed")
    try:
        metadata.distribution("mlx-cpu")
    except metadata.PackageNotFoundError:
        raise _NotApplicable("no mlx-cpu wheel") from None
    if "mlx.core" in sys.modules:
        raise RuntimeError("mlx.core was imported before enable_fast_blas(): libmlx already bound its BLAS")

    already = global_provider("cblas_sgemm")
    if already is not None:  # e.g. an LD_PRELOADed BLAS: libmlx binds to it, a library loaded now would come after it
        return f"{Path(already).name}, already in the global scope (nothing loaded)"

    openblas = _installed_file("cmeel-openblas", lambda p: p.name == OPENBLAS_FILE and p.parent.name == "lib")
    if openblas is None:
        raise FileNotFoundError(f"cmeel-openblas's {OPENBLAS_FILE} is not installed")
    release = metadata.version("cmeel-openblas")
    if release in AVX512_ONLY_RELEASES and not cpu_has_avx512():
        raise RuntimeError(
            f"cmeel-openblas {release} crashes on CPUs without AVX-512 (SIGILL in sgemm_direct); "
            "install another release: pip install 'cmeel-openblas!=0.3.31'"
        )
    try:
        library = ctypes.CDLL(str(openblas), mode=ctypes.RTLD_GLOBAL)  # the system's libgfortran, where there is one
        gfortran_from = "the system"
    except OSError as exc:
        if GFORTRAN_SONAME not in str(exc):
            raise
        gfortran_from = _load_bundled_gfortran()
        library = ctypes.CDLL(str(openblas), mode=ctypes.RTLD_GLOBAL)
    _handles.append(library)
    if not any(os.environ.get(v) for v in THREAD_VARIABLES):
        # heuristic: one thread. The decoder's matmuls are small (batch × state): with 2 threads OpenBLAS's thread
        # hand-off cost up to 15x their time whenever another process held a core, and the encoder gained < 5 %
        library.openblas_set_num_threads(1)

    provider = global_provider("cblas_sgemm")
    if provider is None or Path(provider).resolve() != openblas.resolve():
        raise RuntimeError(f"cblas_sgemm resolves to {provider}, not {openblas}")
    return f"{_openblas_summary(library)} from cmeel-openblas (libgfortran from {gfortran_from})"


def cpu_has_avx512(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU runs AVX-512 Foundation instructions (the kernel's ``avx512f`` flag)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return False  # unknown: the safe answer, which only costs the speed-up with a known-bad release
    return any("avx512f" in line.split() for line in text.splitlines() if line.startswith("flags"))


def _load_bundled_gfortran() -> str:
    """Load a wheel's bundled Fortran runtime under the SONAME that libopenblas NEEDs, so that the loader takes it
    for that dependency (it joins the global scope with libopenblas). Returns where it came from."""
    original = next(filter(None, (_installed_file(d, _is_bundled_gfortran) for d in GFORTRAN_DONORS)), None)
    if original is None:
        raise FileNotFoundError(f"no {GFORTRAN_SONAME} on the system, none bundled in {', '.join(GFORTRAN_DONORS)}")
    image = original.read_bytes()
    for needed in dynamic_strings(image)[1]:  # its auditwheel-renamed libquadmath, found by SONAME once loaded
        sibling = original.parent / needed
        if sibling.is_file():
            _handles.append(ctypes.CDLL(str(sibling), mode=ctypes.RTLD_LOCAL))
    _handles.append(_load_image(rename_soname(image, GFORTRAN_SONAME), GFORTRAN_SONAME))
    return f"{original.parent.name}/{original.name}"


def _is_bundled_gfortran(path: PurePath) -> bool:
    return path.parent.name.endswith(".libs") and path.name.startswith("libgfortran")


def _load_image(image: bytes, name: str) -> ctypes.CDLL:
    """dlopen an in-memory ELF image: from a memfd, else from a private temporary file removed right after."""
    memfd_create: Callable[[str], int] | None = getattr(os, "memfd_create", None)
    if memfd_create is not None:
        try:
            fd = memfd_create(name)
        except OSError:
            pass  # no memfd (old kernel, seccomp): fall back to a file
        else:
            try:
                rest = memoryview(image)
                while rest:
                    rest = rest[os.write(fd, rest) :]
                return ctypes.CDLL(f"/proc/self/fd/{fd}", mode=ctypes.RTLD_LOCAL)
            except OSError:
                pass  # e.g. no /proc, or vm.memfd_noexec=2: fall back to a file
            finally:
                os.close(fd)  # the loader keeps its own mapping
    with tempfile.TemporaryDirectory(prefix="onepass-blas-") as folder:
        path = Path(folder) / name
        path.write_bytes(image)
        return ctypes.CDLL(str(path), mode=ctypes.RTLD_LOCAL)


# ELF64 little-endian: just enough to read and rename the SONAME (x86_64 only, like the rest of this module)
_PT_LOAD, _PT_DYNAMIC = 1, 2
_DT_NULL, _DT_NEEDED, _DT_STRTAB, _DT_STRSZ, _DT_SONAME = 0, 1, 5, 10, 14


def _dynamic_table(image: bytes) -> tuple[int, int, list[tuple[int, int]]]:
    """(file offset of .dynstr, its size, the (tag, value) entries of the dynamic section)."""
    if image[:4] != b"\x7fELF" or image[4] != 2 or image[5] != 1:
        raise ValueError("not a little-endian ELF64 file")
    (phoff,) = struct.unpack_from("<Q", image, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", image, 0x36)
    loads: list[tuple[int, int, int]] = []  # vaddr, filesz, offset
    dynamic: tuple[int, int] | None = None  # offset, filesz
    for i in range(phnum):
        p_type, _flags, offset, vaddr, _paddr, filesz = struct.unpack_from("<IIQQQQ", image, phoff + i * phentsize)
        if p_type == _PT_LOAD:
            loads.append((vaddr, filesz, offset))
        elif p_type == _PT_DYNAMIC:
            dynamic = (offset, filesz)
    if dynamic is None:
        raise ValueError("no dynamic section")
    entries: list[tuple[int, int]] = []
    for at in range(dynamic[0], dynamic[0] + dynamic[1], 16):
        tag, value = struct.unpack_from("<qQ", image, at)
        if tag == _DT_NULL:
            break
        entries.append((tag, value))
    tags = dict(entries)
    if _DT_STRTAB not in tags or _DT_STRSZ not in tags:
        raise ValueError("no dynamic string table")
    strtab = next((tags[_DT_STRTAB] - v + o for v, n, o in loads if v <= tags[_DT_STRTAB] < v + n), None)
    if strtab is None or strtab + tags[_DT_STRSZ] > len(image):
        raise ValueError("dynamic string table outside the file")
    return strtab, tags[_DT_STRSZ], entries


def _string_at(image: bytes, start: int) -> str:
    return image[start : image.index(b"\0", start)].decode()


def dynamic_strings(image: bytes) -> tuple[str | None, list[str]]:
    """(SONAME, NEEDED names) of an ELF64 shared library."""
    strtab, _size, entries = _dynamic_table(image)
    soname = next((_string_at(image, strtab + v) for t, v in entries if t == _DT_SONAME), None)
    return soname, [_string_at(image, strtab + v) for t, v in entries if t == _DT_NEEDED]


def rename_soname(image: bytes, soname: str) -> bytes:
    """A copy of ``image`` whose SONAME reads ``soname``, written over the old one (which must not be shorter)."""
    strtab, size, entries = _dynamic_table(image)
    at = next((strtab + v for t, v in entries if t == _DT_SONAME), None)
    if at is None or at >= strtab + size:
        raise ValueError("no SONAME")
    old = image.index(b"\0", at) - at
    new = soname.encode()
    if len(new) > old:
        raise ValueError(f"SONAME {soname!r} is longer than the one it replaces")
    return image[:at] + new + b"\0" * (old - len(new)) + image[at + old :]


def _installed_file(distribution: str, wanted: Callable[[PurePath], bool]) -> Path | None:
    """The first file of an installed distribution (by its RECORD) that ``wanted`` accepts."""
    try:
        files = metadata.distribution(distribution).files or []
    except metadata.PackageNotFoundError:
        return None
    for entry in files:
        if wanted(entry):  # a relative PackagePath: cheap to test, unlike locate()
            path = Path(str(entry.locate()))
            if path.is_file():
                return path
    return None


def _cuda_wheel_installed() -> bool:
    """Whether an ``mlx-cuda-*`` wheel (any CUDA version) is installed on ``sys.path``: a directory listing, not a
    read of every installed package's metadata."""
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        if any(n.lower().replace("-", "_").startswith("mlx_cuda") and n.endswith(".dist-info") for n in names):
            return True
    return False


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


def global_provider(symbol: str) -> str | None:
    """The file that defines ``symbol`` first in the process's global scope, the one ``libmlx`` will bind to."""
    process = ctypes.CDLL(None)
    try:
        address = ctypes.cast(getattr(process, symbol), ctypes.c_void_p).value
    except AttributeError:
        return None
    info = _DlInfo()
    if not process.dladdr(ctypes.c_void_p(address), ctypes.byref(info)) or info.dli_fname is None:
        return None
    return os.fsdecode(info.dli_fname)


def _openblas_summary(library: ctypes.CDLL) -> str:
    """E.g. "OpenBLAS 0.3.31 (SkylakeX, 2 threads)"."""
    library.openblas_get_config.restype = ctypes.c_char_p
    library.openblas_get_corename.restype = ctypes.c_char_p
    library.openblas_get_num_threads.restype = ctypes.c_int
    config = (library.openblas_get_config() or b"OpenBLAS").decode().split()
    version = " ".join(config[:2]) if len(config) > 1 else "OpenBLAS"
    core = (library.openblas_get_corename() or b"?").decode()
    threads = library.openblas_get_num_threads()
    return f"{version} ({core}, {threads} thread{'s' if threads != 1 else ''})"
