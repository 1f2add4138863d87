import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Phase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PHASE_UNSPECIFIED: _ClassVar[Phase]
    PHASE_PACKAGING: _ClassVar[Phase]
    PHASE_UPLOADING: _ClassVar[Phase]
    PHASE_BUILDING: _ClassVar[Phase]
    PHASE_STARTING: _ClassVar[Phase]
    PHASE_READY: _ClassVar[Phase]
    PHASE_FAILED: _ClassVar[Phase]
    PHASE_STOPPED: _ClassVar[Phase]
    PHASE_STOPPING: _ClassVar[Phase]
    PHASE_GONE: _ClassVar[Phase]
    PHASE_SUSPENDED: _ClassVar[Phase]

class ForwardState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FORWARD_STATE_UNSPECIFIED: _ClassVar[ForwardState]
    FORWARD_STATE_ACTIVE: _ClassVar[ForwardState]
    FORWARD_STATE_WAITING_FOR_POD: _ClassVar[ForwardState]
    FORWARD_STATE_ERROR: _ClassVar[ForwardState]
    FORWARD_STATE_STOPPED: _ClassVar[ForwardState]

class SyncState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SYNC_STATE_UNSPECIFIED: _ClassVar[SyncState]
    SYNC_STATE_DISABLED: _ClassVar[SyncState]
    SYNC_STATE_CONNECTING: _ClassVar[SyncState]
    SYNC_STATE_SCANNING: _ClassVar[SyncState]
    SYNC_STATE_SYNCING: _ClassVar[SyncState]
    SYNC_STATE_WATCHING: _ClassVar[SyncState]
    SYNC_STATE_PAUSED: _ClassVar[SyncState]
    SYNC_STATE_HALTED: _ClassVar[SyncState]
    SYNC_STATE_ERROR: _ClassVar[SyncState]

class NotebookState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NOTEBOOK_STATE_UNSPECIFIED: _ClassVar[NotebookState]
    NOTEBOOK_STATE_FOLLOWING: _ClassVar[NotebookState]
    NOTEBOOK_STATE_CHANGED: _ClassVar[NotebookState]
    NOTEBOOK_STATE_SUSPENDED: _ClassVar[NotebookState]
    NOTEBOOK_STATE_DELETED: _ClassVar[NotebookState]
    NOTEBOOK_STATE_ERROR: _ClassVar[NotebookState]

class LogSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOG_SOURCE_UNSPECIFIED: _ClassVar[LogSource]
    LOG_SOURCE_NOTEBOOK: _ClassVar[LogSource]
    LOG_SOURCE_BUILD: _ClassVar[LogSource]

class SessionEventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_EVENT_KIND_UNSPECIFIED: _ClassVar[SessionEventKind]
    SESSION_EVENT_KIND_SNAPSHOT: _ClassVar[SessionEventKind]
    SESSION_EVENT_KIND_ADDED: _ClassVar[SessionEventKind]
    SESSION_EVENT_KIND_UPDATED: _ClassVar[SessionEventKind]
    SESSION_EVENT_KIND_REMOVED: _ClassVar[SessionEventKind]
    SESSION_EVENT_KIND_SYNC_CHANGE: _ClassVar[SessionEventKind]
    SESSION_EVENT_KIND_CONFLICT: _ClassVar[SessionEventKind]
    SESSION_EVENT_KIND_PROBLEM: _ClassVar[SessionEventKind]
PHASE_UNSPECIFIED: Phase
PHASE_PACKAGING: Phase
PHASE_UPLOADING: Phase
PHASE_BUILDING: Phase
PHASE_STARTING: Phase
PHASE_READY: Phase
PHASE_FAILED: Phase
PHASE_STOPPED: Phase
PHASE_STOPPING: Phase
PHASE_GONE: Phase
PHASE_SUSPENDED: Phase
FORWARD_STATE_UNSPECIFIED: ForwardState
FORWARD_STATE_ACTIVE: ForwardState
FORWARD_STATE_WAITING_FOR_POD: ForwardState
FORWARD_STATE_ERROR: ForwardState
FORWARD_STATE_STOPPED: ForwardState
SYNC_STATE_UNSPECIFIED: SyncState
SYNC_STATE_DISABLED: SyncState
SYNC_STATE_CONNECTING: SyncState
SYNC_STATE_SCANNING: SyncState
SYNC_STATE_SYNCING: SyncState
SYNC_STATE_WATCHING: SyncState
SYNC_STATE_PAUSED: SyncState
SYNC_STATE_HALTED: SyncState
SYNC_STATE_ERROR: SyncState
NOTEBOOK_STATE_UNSPECIFIED: NotebookState
NOTEBOOK_STATE_FOLLOWING: NotebookState
NOTEBOOK_STATE_CHANGED: NotebookState
NOTEBOOK_STATE_SUSPENDED: NotebookState
NOTEBOOK_STATE_DELETED: NotebookState
NOTEBOOK_STATE_ERROR: NotebookState
LOG_SOURCE_UNSPECIFIED: LogSource
LOG_SOURCE_NOTEBOOK: LogSource
LOG_SOURCE_BUILD: LogSource
SESSION_EVENT_KIND_UNSPECIFIED: SessionEventKind
SESSION_EVENT_KIND_SNAPSHOT: SessionEventKind
SESSION_EVENT_KIND_ADDED: SessionEventKind
SESSION_EVENT_KIND_UPDATED: SessionEventKind
SESSION_EVENT_KIND_REMOVED: SessionEventKind
SESSION_EVENT_KIND_SYNC_CHANGE: SessionEventKind
SESSION_EVENT_KIND_CONFLICT: SessionEventKind
SESSION_EVENT_KIND_PROBLEM: SessionEventKind

class NotebookSpec(_message.Message):
    __slots__ = ("image", "gpu_count", "gpu_type", "cpu", "memory", "env", "command", "workdir", "port", "idle_stop_after", "workspace_size", "workspace_storage_class", "shm")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    GPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    GPU_TYPE_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    WORKDIR_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    IDLE_STOP_AFTER_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_SIZE_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_STORAGE_CLASS_FIELD_NUMBER: _ClassVar[int]
    SHM_FIELD_NUMBER: _ClassVar[int]
    image: str
    gpu_count: int
    gpu_type: str
    cpu: str
    memory: str
    env: _containers.ScalarMap[str, str]
    command: _containers.RepeatedScalarFieldContainer[str]
    workdir: str
    port: int
    idle_stop_after: str
    workspace_size: str
    workspace_storage_class: str
    shm: str
    def __init__(self, image: _Optional[str] = ..., gpu_count: _Optional[int] = ..., gpu_type: _Optional[str] = ..., cpu: _Optional[str] = ..., memory: _Optional[str] = ..., env: _Optional[_Mapping[str, str]] = ..., command: _Optional[_Iterable[str]] = ..., workdir: _Optional[str] = ..., port: _Optional[int] = ..., idle_stop_after: _Optional[str] = ..., workspace_size: _Optional[str] = ..., workspace_storage_class: _Optional[str] = ..., shm: _Optional[str] = ...) -> None: ...

class LaunchRequest(_message.Message):
    __slots__ = ("directory", "name", "namespace", "context", "kubeconfig", "notebook_file", "spec", "local_port", "no_sync", "attach", "rebuild", "timeout_seconds")
    DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    KUBECONFIG_FIELD_NUMBER: _ClassVar[int]
    NOTEBOOK_FILE_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    LOCAL_PORT_FIELD_NUMBER: _ClassVar[int]
    NO_SYNC_FIELD_NUMBER: _ClassVar[int]
    ATTACH_FIELD_NUMBER: _ClassVar[int]
    REBUILD_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    directory: str
    name: str
    namespace: str
    context: str
    kubeconfig: str
    notebook_file: str
    spec: NotebookSpec
    local_port: int
    no_sync: bool
    attach: bool
    rebuild: bool
    timeout_seconds: int
    def __init__(self, directory: _Optional[str] = ..., name: _Optional[str] = ..., namespace: _Optional[str] = ..., context: _Optional[str] = ..., kubeconfig: _Optional[str] = ..., notebook_file: _Optional[str] = ..., spec: _Optional[_Union[NotebookSpec, _Mapping]] = ..., local_port: _Optional[int] = ..., no_sync: _Optional[bool] = ..., attach: _Optional[bool] = ..., rebuild: _Optional[bool] = ..., timeout_seconds: _Optional[int] = ...) -> None: ...

class LaunchEvent(_message.Message):
    __slots__ = ("time", "session", "phase", "progress", "cached", "build_log", "pod", "ready", "failed", "notice")
    TIME_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    BUILD_LOG_FIELD_NUMBER: _ClassVar[int]
    POD_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    NOTICE_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    session: str
    phase: PhaseChanged
    progress: Progress
    cached: Cached
    build_log: LogLine
    pod: PodStatus
    ready: Ready
    failed: Failure
    notice: Notice
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., session: _Optional[str] = ..., phase: _Optional[_Union[PhaseChanged, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., cached: _Optional[_Union[Cached, _Mapping]] = ..., build_log: _Optional[_Union[LogLine, _Mapping]] = ..., pod: _Optional[_Union[PodStatus, _Mapping]] = ..., ready: _Optional[_Union[Ready, _Mapping]] = ..., failed: _Optional[_Union[Failure, _Mapping]] = ..., notice: _Optional[_Union[Notice, _Mapping]] = ...) -> None: ...

class PhaseChanged(_message.Message):
    __slots__ = ("phase", "message")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    phase: Phase
    message: str
    def __init__(self, phase: _Optional[_Union[Phase, str]] = ..., message: _Optional[str] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("phase", "done_bytes", "total_bytes", "done_files", "total_files", "bytes_per_second", "eta_seconds")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    DONE_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DONE_FILES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FILES_FIELD_NUMBER: _ClassVar[int]
    BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    phase: Phase
    done_bytes: int
    total_bytes: int
    done_files: int
    total_files: int
    bytes_per_second: float
    eta_seconds: float
    def __init__(self, phase: _Optional[_Union[Phase, str]] = ..., done_bytes: _Optional[int] = ..., total_bytes: _Optional[int] = ..., done_files: _Optional[int] = ..., total_files: _Optional[int] = ..., bytes_per_second: _Optional[float] = ..., eta_seconds: _Optional[float] = ...) -> None: ...

class Cached(_message.Message):
    __slots__ = ("step", "reason", "md5")
    class Step(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STEP_UNSPECIFIED: _ClassVar[Cached.Step]
        STEP_PACKAGE: _ClassVar[Cached.Step]
        STEP_UPLOAD: _ClassVar[Cached.Step]
        STEP_BUILD: _ClassVar[Cached.Step]
    STEP_UNSPECIFIED: Cached.Step
    STEP_PACKAGE: Cached.Step
    STEP_UPLOAD: Cached.Step
    STEP_BUILD: Cached.Step
    STEP_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MD5_FIELD_NUMBER: _ClassVar[int]
    step: Cached.Step
    reason: str
    md5: str
    def __init__(self, step: _Optional[_Union[Cached.Step, str]] = ..., reason: _Optional[str] = ..., md5: _Optional[str] = ...) -> None: ...

class PodStatus(_message.Message):
    __slots__ = ("pod", "phase", "reason", "message", "ready")
    POD_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    pod: str
    phase: str
    reason: str
    message: str
    ready: bool
    def __init__(self, pod: _Optional[str] = ..., phase: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., ready: _Optional[bool] = ...) -> None: ...

class Ready(_message.Message):
    __slots__ = ("url", "local_port", "session", "ui", "note")
    URL_FIELD_NUMBER: _ClassVar[int]
    LOCAL_PORT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    UI_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    url: str
    local_port: int
    session: Session
    ui: str
    note: str
    def __init__(self, url: _Optional[str] = ..., local_port: _Optional[int] = ..., session: _Optional[_Union[Session, _Mapping]] = ..., ui: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class Failure(_message.Message):
    __slots__ = ("reason", "message", "log_tail")
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LOG_TAIL_FIELD_NUMBER: _ClassVar[int]
    reason: str
    message: str
    log_tail: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, reason: _Optional[str] = ..., message: _Optional[str] = ..., log_tail: _Optional[_Iterable[str]] = ...) -> None: ...

class Notice(_message.Message):
    __slots__ = ("level", "message")
    class Level(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        LEVEL_UNSPECIFIED: _ClassVar[Notice.Level]
        LEVEL_INFO: _ClassVar[Notice.Level]
        LEVEL_WARNING: _ClassVar[Notice.Level]
    LEVEL_UNSPECIFIED: Notice.Level
    LEVEL_INFO: Notice.Level
    LEVEL_WARNING: Notice.Level
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    level: Notice.Level
    message: str
    def __init__(self, level: _Optional[_Union[Notice.Level, str]] = ..., message: _Optional[str] = ...) -> None: ...

class ForwardStatus(_message.Message):
    __slots__ = ("state", "local_port", "remote_port", "pod", "message", "open_connections", "last_probe")
    STATE_FIELD_NUMBER: _ClassVar[int]
    LOCAL_PORT_FIELD_NUMBER: _ClassVar[int]
    REMOTE_PORT_FIELD_NUMBER: _ClassVar[int]
    POD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    OPEN_CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    LAST_PROBE_FIELD_NUMBER: _ClassVar[int]
    state: ForwardState
    local_port: int
    remote_port: int
    pod: str
    message: str
    open_connections: int
    last_probe: _timestamp_pb2.Timestamp
    def __init__(self, state: _Optional[_Union[ForwardState, str]] = ..., local_port: _Optional[int] = ..., remote_port: _Optional[int] = ..., pod: _Optional[str] = ..., message: _Optional[str] = ..., open_connections: _Optional[int] = ..., last_probe: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Conflict(_message.Message):
    __slots__ = ("path", "copy_path", "message", "time")
    PATH_FIELD_NUMBER: _ClassVar[int]
    COPY_PATH_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    path: str
    copy_path: str
    message: str
    time: _timestamp_pb2.Timestamp
    def __init__(self, path: _Optional[str] = ..., copy_path: _Optional[str] = ..., message: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Problem(_message.Message):
    __slots__ = ("path", "message", "time")
    PATH_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    path: str
    message: str
    time: _timestamp_pb2.Timestamp
    def __init__(self, path: _Optional[str] = ..., message: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SyncStatus(_message.Message):
    __slots__ = ("state", "message", "files", "cycles", "bytes_to_remote", "bytes_to_local", "files_to_remote", "files_to_local", "last_cycle", "conflicts", "problems", "local_root", "remote_root", "resolved_conflicts", "not_synced")
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    CYCLES_FIELD_NUMBER: _ClassVar[int]
    BYTES_TO_REMOTE_FIELD_NUMBER: _ClassVar[int]
    BYTES_TO_LOCAL_FIELD_NUMBER: _ClassVar[int]
    FILES_TO_REMOTE_FIELD_NUMBER: _ClassVar[int]
    FILES_TO_LOCAL_FIELD_NUMBER: _ClassVar[int]
    LAST_CYCLE_FIELD_NUMBER: _ClassVar[int]
    CONFLICTS_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    LOCAL_ROOT_FIELD_NUMBER: _ClassVar[int]
    REMOTE_ROOT_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_CONFLICTS_FIELD_NUMBER: _ClassVar[int]
    NOT_SYNCED_FIELD_NUMBER: _ClassVar[int]
    state: SyncState
    message: str
    files: int
    cycles: int
    bytes_to_remote: int
    bytes_to_local: int
    files_to_remote: int
    files_to_local: int
    last_cycle: _timestamp_pb2.Timestamp
    conflicts: _containers.RepeatedCompositeFieldContainer[Conflict]
    problems: _containers.RepeatedCompositeFieldContainer[Problem]
    local_root: str
    remote_root: str
    resolved_conflicts: _containers.RepeatedCompositeFieldContainer[Conflict]
    not_synced: _containers.RepeatedCompositeFieldContainer[NotSynced]
    def __init__(self, state: _Optional[_Union[SyncState, str]] = ..., message: _Optional[str] = ..., files: _Optional[int] = ..., cycles: _Optional[int] = ..., bytes_to_remote: _Optional[int] = ..., bytes_to_local: _Optional[int] = ..., files_to_remote: _Optional[int] = ..., files_to_local: _Optional[int] = ..., last_cycle: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., conflicts: _Optional[_Iterable[_Union[Conflict, _Mapping]]] = ..., problems: _Optional[_Iterable[_Union[Problem, _Mapping]]] = ..., local_root: _Optional[str] = ..., remote_root: _Optional[str] = ..., resolved_conflicts: _Optional[_Iterable[_Union[Conflict, _Mapping]]] = ..., not_synced: _Optional[_Iterable[_Union[NotSynced, _Mapping]]] = ...) -> None: ...

class NotSynced(_message.Message):
    __slots__ = ("path", "size", "reason", "side")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    path: str
    size: int
    reason: str
    side: str
    def __init__(self, path: _Optional[str] = ..., size: _Optional[int] = ..., reason: _Optional[str] = ..., side: _Optional[str] = ...) -> None: ...

class NotebookStatus(_message.Message):
    __slots__ = ("state", "message", "changed_by", "generation", "observed")
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CHANGED_BY_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_FIELD_NUMBER: _ClassVar[int]
    state: NotebookState
    message: str
    changed_by: str
    generation: int
    observed: _timestamp_pb2.Timestamp
    def __init__(self, state: _Optional[_Union[NotebookState, str]] = ..., message: _Optional[str] = ..., changed_by: _Optional[str] = ..., generation: _Optional[int] = ..., observed: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("name", "namespace", "context", "kubeconfig", "directory", "phase", "message", "url", "spec", "context_md5", "image", "pod", "forward", "sync", "created", "updated", "ref", "notebook", "idle_stop_at", "idle_stop_after", "idle_message")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    KUBECONFIG_FIELD_NUMBER: _ClassVar[int]
    DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_MD5_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    POD_FIELD_NUMBER: _ClassVar[int]
    FORWARD_FIELD_NUMBER: _ClassVar[int]
    SYNC_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    NOTEBOOK_FIELD_NUMBER: _ClassVar[int]
    IDLE_STOP_AT_FIELD_NUMBER: _ClassVar[int]
    IDLE_STOP_AFTER_FIELD_NUMBER: _ClassVar[int]
    IDLE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    namespace: str
    context: str
    kubeconfig: str
    directory: str
    phase: Phase
    message: str
    url: str
    spec: NotebookSpec
    context_md5: str
    image: str
    pod: str
    forward: ForwardStatus
    sync: SyncStatus
    created: _timestamp_pb2.Timestamp
    updated: _timestamp_pb2.Timestamp
    ref: str
    notebook: NotebookStatus
    idle_stop_at: _timestamp_pb2.Timestamp
    idle_stop_after: str
    idle_message: str
    def __init__(self, name: _Optional[str] = ..., namespace: _Optional[str] = ..., context: _Optional[str] = ..., kubeconfig: _Optional[str] = ..., directory: _Optional[str] = ..., phase: _Optional[_Union[Phase, str]] = ..., message: _Optional[str] = ..., url: _Optional[str] = ..., spec: _Optional[_Union[NotebookSpec, _Mapping]] = ..., context_md5: _Optional[str] = ..., image: _Optional[str] = ..., pod: _Optional[str] = ..., forward: _Optional[_Union[ForwardStatus, _Mapping]] = ..., sync: _Optional[_Union[SyncStatus, _Mapping]] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ref: _Optional[str] = ..., notebook: _Optional[_Union[NotebookStatus, _Mapping]] = ..., idle_stop_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., idle_stop_after: _Optional[str] = ..., idle_message: _Optional[str] = ...) -> None: ...

class StopRequest(_message.Message):
    __slots__ = ("session", "delete", "delete_workspace")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    DELETE_WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    session: str
    delete: bool
    delete_workspace: bool
    def __init__(self, session: _Optional[str] = ..., delete: _Optional[bool] = ..., delete_workspace: _Optional[bool] = ...) -> None: ...

class StopResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: str
    def __init__(self, session: _Optional[str] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ("sessions",)
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[Session]
    def __init__(self, sessions: _Optional[_Iterable[_Union[Session, _Mapping]]] = ...) -> None: ...

class LogsRequest(_message.Message):
    __slots__ = ("session", "source", "follow", "tail_lines", "container")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    TAIL_LINES_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    session: str
    source: LogSource
    follow: bool
    tail_lines: int
    container: str
    def __init__(self, session: _Optional[str] = ..., source: _Optional[_Union[LogSource, str]] = ..., follow: _Optional[bool] = ..., tail_lines: _Optional[int] = ..., container: _Optional[str] = ...) -> None: ...

class LogLine(_message.Message):
    __slots__ = ("container", "text", "time")
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    container: str
    text: str
    time: _timestamp_pb2.Timestamp
    def __init__(self, container: _Optional[str] = ..., text: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SyncRequest(_message.Message):
    __slots__ = ("session", "action", "force")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACTION_UNSPECIFIED: _ClassVar[SyncRequest.Action]
        ACTION_STATUS: _ClassVar[SyncRequest.Action]
        ACTION_PAUSE: _ClassVar[SyncRequest.Action]
        ACTION_RESUME: _ClassVar[SyncRequest.Action]
        ACTION_FLUSH: _ClassVar[SyncRequest.Action]
    ACTION_UNSPECIFIED: SyncRequest.Action
    ACTION_STATUS: SyncRequest.Action
    ACTION_PAUSE: SyncRequest.Action
    ACTION_RESUME: SyncRequest.Action
    ACTION_FLUSH: SyncRequest.Action
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    session: str
    action: SyncRequest.Action
    force: bool
    def __init__(self, session: _Optional[str] = ..., action: _Optional[_Union[SyncRequest.Action, str]] = ..., force: _Optional[bool] = ...) -> None: ...

class SyncResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: SyncStatus
    def __init__(self, status: _Optional[_Union[SyncStatus, _Mapping]] = ...) -> None: ...

class EventsRequest(_message.Message):
    __slots__ = ("sessions", "initial")
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    INITIAL_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedScalarFieldContainer[str]
    initial: bool
    def __init__(self, sessions: _Optional[_Iterable[str]] = ..., initial: _Optional[bool] = ...) -> None: ...

class SyncChange(_message.Message):
    __slots__ = ("direction", "path", "action", "bytes")
    class Direction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        DIRECTION_UNSPECIFIED: _ClassVar[SyncChange.Direction]
        DIRECTION_TO_LOCAL: _ClassVar[SyncChange.Direction]
        DIRECTION_TO_REMOTE: _ClassVar[SyncChange.Direction]
    DIRECTION_UNSPECIFIED: SyncChange.Direction
    DIRECTION_TO_LOCAL: SyncChange.Direction
    DIRECTION_TO_REMOTE: SyncChange.Direction
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    direction: SyncChange.Direction
    path: str
    action: str
    bytes: int
    def __init__(self, direction: _Optional[_Union[SyncChange.Direction, str]] = ..., path: _Optional[str] = ..., action: _Optional[str] = ..., bytes: _Optional[int] = ...) -> None: ...

class SessionEvent(_message.Message):
    __slots__ = ("time", "kind", "session", "sync_change", "conflict", "problem")
    TIME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    SYNC_CHANGE_FIELD_NUMBER: _ClassVar[int]
    CONFLICT_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    kind: SessionEventKind
    session: Session
    sync_change: SyncChange
    conflict: Conflict
    problem: Problem
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[_Union[SessionEventKind, str]] = ..., session: _Optional[_Union[Session, _Mapping]] = ..., sync_change: _Optional[_Union[SyncChange, _Mapping]] = ..., conflict: _Optional[_Union[Conflict, _Mapping]] = ..., problem: _Optional[_Union[Problem, _Mapping]] = ...) -> None: ...
