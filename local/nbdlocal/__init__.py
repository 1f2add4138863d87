"""nbdlocal: the local plumbing the nbd daemon and its clients share, so they cannot disagree.

- `paths`: where the daemon's socket, state dir, log and lock are;
- `version`: the one nbd version and the local API's version;
- `lock`: the instance lock and the format of its file (who holds it);
- `probe`: whether anything accepts connections on the socket.

The shape of Mutagen's `pkg/daemon`. Standard library only and nothing imported here, so a client
pays only for the module it uses (`import nbdlocal.paths` costs a CLI start-up next to nothing).
"""
