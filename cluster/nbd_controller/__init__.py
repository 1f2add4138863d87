"""nbd-controller: the cluster side of nbd.

It drives each `Notebook` (nbd.dev/v1alpha1) toward its spec: it answers upload requests with signed
URLs, builds the uploaded context into an image in a Job, and runs the notebook Pod. The pure modules
(`config`, `naming`, `crd`, `manifests`, `decisions`, `conditions`) do no I/O; `storage`, `kube`,
`workqueue`, `reconciler` and `main` are the thin I/O layers around them.
"""
