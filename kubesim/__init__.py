"""kubesim: a Kubernetes API server and kubelet double that runs in one local process.

See kubesim/README.md. Entry points: `python -m kubesim serve`, `kubesim.cluster.Cluster`,
`kubesim.store.Store`, `kubesim.apiserver.ApiServer`, and the pytest fixtures in `kubesim.testing`.
"""
