"""Training runs: the same content and image as a notebook, run as a Job on one node or many.

`model` (pure: the Run the daemon writes and reads back) and `fetching` (pure: what fetching
outputs does to each local path) under `client` (the Run resource and its pods) under `runner`
(the Run, Logs, Get, List, Stop and Fetch of the API) under `capability`.
"""
