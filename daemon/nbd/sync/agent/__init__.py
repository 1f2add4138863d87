"""The sync agent: stdlib-only code that runs in the pod and serves one directory tree.

The daemon ships this package into the pod as one zipapp (`nbd.sync.shipping`: built
deterministically from these files, cached in the pod by its SHA-256, sent only when the pod has
no copy of that exact build) and talks to it over the exec stream's stdin/stdout with
length-prefixed binary frames; logs go to stderr only. The daemon also imports the modules it
shares with the pod, so one rule is written once:

- `paths`: what a sync path may be, `Refused`, the temp-file prefix (the daemon checks every path
  the agent reports with the same rule the agent enforces);
- `frames`: the wire format and how file contents are packed into it (both ends of the stream);
- `ignore`: the gitignore-style rules both sides scan with;
- `tree`: `Tree`, one directory scanned, read and changed under guard (the daemon's local side
  is a `Tree` too);
- `durability`: temp file, fsync or syncfs, rename: how received bytes land;
- `watcher`: inotify, else polling (agent only; the daemon watches with watchdog);
- `server`: the request loop (agent only); `__main__`: `python -m nbd.sync.agent ROOT`.

Constraints, because it runs in any image: Python >= 3.8 syntax and library only, no third-party
import, and no import of the rest of nbd (modules import each other relatively, so the same files
run as `nbd.sync.agent` in the daemon and as a top-level package inside the zipapp).
"""
