import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from nbdapi.v1 import notebooks_pb2 as _notebooks_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_PHASE_UNSPECIFIED: _ClassVar[RunPhase]
    RUN_PHASE_PACKAGING: _ClassVar[RunPhase]
    RUN_PHASE_UPLOADING: _ClassVar[RunPhase]
    RUN_PHASE_BUILDING: _ClassVar[RunPhase]
    RUN_PHASE_PENDING: _ClassVar[RunPhase]
    RUN_PHASE_STARTING: _ClassVar[RunPhase]
    RUN_PHASE_RUNNING: _ClassVar[RunPhase]
    RUN_PHASE_SUCCEEDED: _ClassVar[RunPhase]
    RUN_PHASE_FAILED: _ClassVar[RunPhase]
    RUN_PHASE_STOPPED: _ClassVar[RunPhase]
RUN_PHASE_UNSPECIFIED: RunPhase
RUN_PHASE_PACKAGING: RunPhase
RUN_PHASE_UPLOADING: RunPhase
RUN_PHASE_BUILDING: RunPhase
RUN_PHASE_PENDING: RunPhase
RUN_PHASE_STARTING: RunPhase
RUN_PHASE_RUNNING: RunPhase
RUN_PHASE_SUCCEEDED: RunPhase
RUN_PHASE_FAILED: RunPhase
RUN_PHASE_STOPPED: RunPhase

class ClusterTarget(_message.Message):
    __slots__ = ("context", "namespace", "kubeconfig")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KUBECONFIG_FIELD_NUMBER: _ClassVar[int]
    context: str
    namespace: str
    kubeconfig: str
    def __init__(self, context: _Optional[str] = ..., namespace: _Optional[str] = ..., kubeconfig: _Optional[str] = ...) -> None: ...

class RunRequest(_message.Message):
    __slots__ = ("directory", "name", "target", "notebook_file", "spec", "command", "nodes", "detach", "rebuild", "ttl_seconds_after_finished")
    DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    NOTEBOOK_FILE_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    DETACH_FIELD_NUMBER: _ClassVar[int]
    REBUILD_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_AFTER_FINISHED_FIELD_NUMBER: _ClassVar[int]
    directory: str
    name: str
    target: ClusterTarget
    notebook_file: str
    spec: _notebooks_pb2.NotebookSpec
    command: _containers.RepeatedScalarFieldContainer[str]
    nodes: int
    detach: bool
    rebuild: bool
    ttl_seconds_after_finished: int
    def __init__(self, directory: _Optional[str] = ..., name: _Optional[str] = ..., target: _Optional[_Union[ClusterTarget, _Mapping]] = ..., notebook_file: _Optional[str] = ..., spec: _Optional[_Union[_notebooks_pb2.NotebookSpec, _Mapping]] = ..., command: _Optional[_Iterable[str]] = ..., nodes: _Optional[int] = ..., detach: _Optional[bool] = ..., rebuild: _Optional[bool] = ..., ttl_seconds_after_finished: _Optional[int] = ...) -> None: ...

class RankStatus(_message.Message):
    __slots__ = ("index", "pod", "phase", "exit_code")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    POD_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    index: int
    pod: str
    phase: str
    exit_code: int
    def __init__(self, index: _Optional[int] = ..., pod: _Optional[str] = ..., phase: _Optional[str] = ..., exit_code: _Optional[int] = ...) -> None: ...

class RunInfo(_message.Message):
    __slots__ = ("name", "namespace", "context", "phase", "reason", "message", "command", "nodes", "gpus_per_node", "gpu_type", "image", "context_md5", "created", "started", "finished", "exit_code", "failed_rank", "ranks", "outputs_path", "directory", "job")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    GPUS_PER_NODE_FIELD_NUMBER: _ClassVar[int]
    GPU_TYPE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_MD5_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    FAILED_RANK_FIELD_NUMBER: _ClassVar[int]
    RANKS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_PATH_FIELD_NUMBER: _ClassVar[int]
    DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    name: str
    namespace: str
    context: str
    phase: RunPhase
    reason: str
    message: str
    command: _containers.RepeatedScalarFieldContainer[str]
    nodes: int
    gpus_per_node: int
    gpu_type: str
    image: str
    context_md5: str
    created: _timestamp_pb2.Timestamp
    started: _timestamp_pb2.Timestamp
    finished: _timestamp_pb2.Timestamp
    exit_code: int
    failed_rank: int
    ranks: _containers.RepeatedCompositeFieldContainer[RankStatus]
    outputs_path: str
    directory: str
    job: str
    def __init__(self, name: _Optional[str] = ..., namespace: _Optional[str] = ..., context: _Optional[str] = ..., phase: _Optional[_Union[RunPhase, str]] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., command: _Optional[_Iterable[str]] = ..., nodes: _Optional[int] = ..., gpus_per_node: _Optional[int] = ..., gpu_type: _Optional[str] = ..., image: _Optional[str] = ..., context_md5: _Optional[str] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., exit_code: _Optional[int] = ..., failed_rank: _Optional[int] = ..., ranks: _Optional[_Iterable[_Union[RankStatus, _Mapping]]] = ..., outputs_path: _Optional[str] = ..., directory: _Optional[str] = ..., job: _Optional[str] = ...) -> None: ...

class RunLog(_message.Message):
    __slots__ = ("rank", "text", "pod", "time")
    RANK_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    POD_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    rank: int
    text: str
    pod: str
    time: _timestamp_pb2.Timestamp
    def __init__(self, rank: _Optional[int] = ..., text: _Optional[str] = ..., pod: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RunEvent(_message.Message):
    __slots__ = ("time", "run", "phase", "progress", "cached", "build_log", "notice", "failed", "status", "log", "finished")
    TIME_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    BUILD_LOG_FIELD_NUMBER: _ClassVar[int]
    NOTICE_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    run: str
    phase: _notebooks_pb2.PhaseChanged
    progress: _notebooks_pb2.Progress
    cached: _notebooks_pb2.Cached
    build_log: _notebooks_pb2.LogLine
    notice: _notebooks_pb2.Notice
    failed: _notebooks_pb2.Failure
    status: RunInfo
    log: RunLog
    finished: RunInfo
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., run: _Optional[str] = ..., phase: _Optional[_Union[_notebooks_pb2.PhaseChanged, _Mapping]] = ..., progress: _Optional[_Union[_notebooks_pb2.Progress, _Mapping]] = ..., cached: _Optional[_Union[_notebooks_pb2.Cached, _Mapping]] = ..., build_log: _Optional[_Union[_notebooks_pb2.LogLine, _Mapping]] = ..., notice: _Optional[_Union[_notebooks_pb2.Notice, _Mapping]] = ..., failed: _Optional[_Union[_notebooks_pb2.Failure, _Mapping]] = ..., status: _Optional[_Union[RunInfo, _Mapping]] = ..., log: _Optional[_Union[RunLog, _Mapping]] = ..., finished: _Optional[_Union[RunInfo, _Mapping]] = ...) -> None: ...

class RunLogsRequest(_message.Message):
    __slots__ = ("run", "target", "follow", "rank")
    RUN_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    run: str
    target: ClusterTarget
    follow: bool
    rank: int
    def __init__(self, run: _Optional[str] = ..., target: _Optional[_Union[ClusterTarget, _Mapping]] = ..., follow: _Optional[bool] = ..., rank: _Optional[int] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("run", "target")
    RUN_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    run: str
    target: ClusterTarget
    def __init__(self, run: _Optional[str] = ..., target: _Optional[_Union[ClusterTarget, _Mapping]] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("target",)
    TARGET_FIELD_NUMBER: _ClassVar[int]
    target: ClusterTarget
    def __init__(self, target: _Optional[_Union[ClusterTarget, _Mapping]] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs", "context", "namespace")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[RunInfo]
    context: str
    namespace: str
    def __init__(self, runs: _Optional[_Iterable[_Union[RunInfo, _Mapping]]] = ..., context: _Optional[str] = ..., namespace: _Optional[str] = ...) -> None: ...

class StopRunRequest(_message.Message):
    __slots__ = ("run", "target")
    RUN_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    run: str
    target: ClusterTarget
    def __init__(self, run: _Optional[str] = ..., target: _Optional[_Union[ClusterTarget, _Mapping]] = ...) -> None: ...

class FetchRequest(_message.Message):
    __slots__ = ("run", "target", "directory", "path")
    RUN_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    run: str
    target: ClusterTarget
    directory: str
    path: str
    def __init__(self, run: _Optional[str] = ..., target: _Optional[_Union[ClusterTarget, _Mapping]] = ..., directory: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class FetchResult(_message.Message):
    __slots__ = ("destination", "written", "unchanged", "bytes", "conflicts")
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    WRITTEN_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    CONFLICTS_FIELD_NUMBER: _ClassVar[int]
    destination: str
    written: int
    unchanged: int
    bytes: int
    conflicts: _containers.RepeatedCompositeFieldContainer[_notebooks_pb2.Conflict]
    def __init__(self, destination: _Optional[str] = ..., written: _Optional[int] = ..., unchanged: _Optional[int] = ..., bytes: _Optional[int] = ..., conflicts: _Optional[_Iterable[_Union[_notebooks_pb2.Conflict, _Mapping]]] = ...) -> None: ...

class FetchEvent(_message.Message):
    __slots__ = ("progress", "notice", "done")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    NOTICE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    progress: _notebooks_pb2.Progress
    notice: _notebooks_pb2.Notice
    done: FetchResult
    def __init__(self, progress: _Optional[_Union[_notebooks_pb2.Progress, _Mapping]] = ..., notice: _Optional[_Union[_notebooks_pb2.Notice, _Mapping]] = ..., done: _Optional[_Union[FetchResult, _Mapping]] = ...) -> None: ...
