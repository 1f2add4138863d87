"""How the agent gets into the pod: one zipapp, built deterministically, sent only when missing.

The agent is a package (`nbd.sync.agent`); the pod receives it as a single zipapp, `__main__.py`
plus the package as `nbd_agent/`, so it runs with nothing but `python3`. The archive is built from
the package's sources alone, with fixed names, order, times and modes and no compression, so the
same sources always give the same bytes and so the same SHA-256: that hash names the copy cached
in the pod, and a pod that already holds it is sent nothing. (`zipapp.create_archive` would stamp
the build's clock and the files' local mtimes into the archive, so it is written with `zipfile`;
the result is an ordinary zipapp, `python3 nbd-agent.pyz ROOT` runs it.)

The daemon starts `python3 -c BOOTSTRAP HASH SIZE ROOT CACHE_DIR` through exec. The bootstrap runs
`CACHE_DIR/.nbd-agent-HASH.pyz` when it is there and hashes to HASH; otherwise it writes the line
`NBD-AGENT-SEND`, reads exactly SIZE bytes from stdin, checks their hash, and caches them there
(atomically; a cache directory it cannot write is not an error). Then it writes `NBD-AGENT-READY`
and runs the zipapp in its own process, as `python3 FILE.pyz ROOT` would (from memory when the
cache could not be written). Everything after READY on the stream is the agent's frames.

The bootstrap runs in the pod: Python 3.8 syntax and library only.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import io
import logging
import zipfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cache

__all__ = ["AgentApp", "BOOTSTRAP", "agent_app", "agent_command", "agent_sources", "build_zipapp", "ship"]

log = logging.getLogger(__name__)

AGENT_PACKAGE = "nbd.sync.agent"
# The package's name inside the zipapp (its modules import each other relatively).
ARCHIVE_PACKAGE = "nbd_agent"
ARCHIVE_MAIN = b"import sys\nfrom nbd_agent.server import main\nsys.exit(main(sys.argv))\n"
# The earliest time a zip entry can hold: no build clock, time zone or file time gets in.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)

SEND = b"NBD-AGENT-SEND"
READY = b"NBD-AGENT-READY"

BOOTSTRAP = r"""
import hashlib,os,sys
h,n,root,cache=sys.argv[1],int(sys.argv[2]),sys.argv[3],sys.argv[4]
p=os.path.join(cache,'.nbd-agent-%s.pyz'%h)
app=None
try:
    with open(p,'rb') as f: app=f.read()
    if hashlib.sha256(app).hexdigest()!=h: app=None
except OSError: pass
if app is None:
    os.write(1,b'NBD-AGENT-SEND\n')
    parts=[];got=0
    while got<n:
        c=os.read(0,n-got)
        if not c: sys.exit(3)
        parts.append(c);got+=len(c)
    app=b''.join(parts)
    if hashlib.sha256(app).hexdigest()!=h:
        sys.stderr.write('nbd-agent: corrupted transfer\n');sys.exit(4)
    try:
        t=p+'.%d'%os.getpid()
        with open(t,'wb') as f: f.write(app)
        os.replace(t,p)
    except OSError: p=None
os.write(1,b'NBD-AGENT-READY\n')
sys.argv=[p or '<nbd-agent>',root]
if p:
    import runpy
    runpy.run_path(p,run_name='__main__')
else:
    import importlib.abc,importlib.util,io,zipfile
    z=zipfile.ZipFile(io.BytesIO(app))
    names=set(z.namelist())
    class Z(importlib.abc.MetaPathFinder,importlib.abc.Loader):
        def find_spec(self,name,path=None,target=None):
            b=name.replace('.','/')
            for f,pkg in ((b+'/__init__.py',True),(b+'.py',False)):
                if f in names: return importlib.util.spec_from_loader(name,self,origin=f,is_package=pkg)
        def create_module(self,spec): return None
        def exec_module(self,m):
            f=m.__spec__.origin
            exec(compile(z.read(f),'<nbd-agent>/'+f,'exec'),m.__dict__)
    sys.meta_path.insert(0,Z())
    exec(compile(z.read('__main__.py'),'<nbd-agent>/__main__.py','exec'),{'__name__':'__main__'})
"""


@dataclass(frozen=True)
class AgentApp:
    """The agent's zipapp and its SHA-256 (hex), which names its copy in the pod."""

    data: bytes = field(repr=False)
    digest: str


def agent_sources() -> list[tuple[str, bytes]]:
    """The agent package's modules, (file name, source), sorted by name."""
    files = importlib.resources.files(AGENT_PACKAGE)
    out = [(f.name, f.read_bytes()) for f in files.iterdir() if f.name.endswith(".py") and f.is_file()]
    return sorted(out)


def build_zipapp(sources: list[tuple[str, bytes]]) -> bytes:
    """The zipapp of the agent modules `sources`: the same sources give the same bytes."""
    buf = io.BytesIO()
    entries = [("__main__.py", ARCHIVE_MAIN)] + [
        (f"{ARCHIVE_PACKAGE}/{name}", data) for name, data in sorted(sources)
    ]
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.create_system = 3  # Unix, whatever builds it, so the mode below means the same
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_STORED
            z.writestr(info, data)
    return buf.getvalue()


@cache
def agent_app() -> AgentApp:
    """This daemon's agent (built once per process)."""
    data = build_zipapp(agent_sources())
    return AgentApp(data, hashlib.sha256(data).hexdigest())


def agent_command(app: AgentApp, root: str, cache_dir: str = "/tmp", python: str = "python3") -> list[str]:
    """The argv that runs the (cached or streamed) agent serving `root`."""
    return [python, "-c", BOOTSTRAP, app.digest, str(len(app.data)), root, cache_dir]


async def ship(
    app: AgentApp, send: Callable[[bytes], Awaitable[None]], receive: Callable[[], Awaitable[bytes]]
) -> bytes:
    """Answer the bootstrap: send the zipapp when it asks; return the bytes after READY (the
    start of the agent's frames). EOFError when the stream ends first."""
    buf = b""
    while True:
        while b"\n" not in buf:
            data = await receive()
            if not data:
                raise EOFError
            buf += data
        line, buf = buf.split(b"\n", 1)
        if line == SEND:
            await send(app.data)
        elif line == READY:
            return buf
        else:
            log.debug("agent bootstrap: %r", line[:200])
