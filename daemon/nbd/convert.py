"""Conversions between the daemon's domain types and the nbdapi.v1 protobuf messages.

Only the servicers use this module: protobuf types stay at the edge. Domain enums carry the same
numbers as their proto twins, so enums convert by value.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from google.protobuf import timestamp_pb2

from nbd import capabilities as caps
from nbd import events as ev
from nbd import runstate as rs
from nbd.errors import InvalidArgument
from nbd.session import NotebookSpec, Session
from nbd.status import Conflict, ForwardStatus, NotebookStatus, NotSynced, Problem, SyncStatus
from nbdapi.v1 import notebooks_pb2 as pb
from nbdapi.v1 import runs_pb2 as rpb


def timestamp(dt: datetime | None) -> timestamp_pb2.Timestamp | None:
    if dt is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(dt)
    return ts


# --- spec ------------------------------------------------------------------------------------------


def spec_to_proto(spec: NotebookSpec) -> pb.NotebookSpec:
    msg = pb.NotebookSpec(
        image=spec.image,
        gpu_type=spec.gpu_type,
        cpu=spec.cpu,
        memory=spec.memory,
        env=dict(spec.env),
        command=list(spec.command),
        workdir=spec.workdir,
        workspace_size=spec.workspace_size,
        workspace_storage_class=spec.workspace_storage_class,
        shm=spec.shm,
        idle_stop_after=spec.idle_stop_after,
    )
    if spec.gpu_count is not None:
        msg.gpu_count = spec.gpu_count
    if spec.port is not None:
        msg.port = spec.port
    return msg


def spec_from_proto(msg: pb.NotebookSpec) -> NotebookSpec:
    if msg.HasField("gpu_count") and msg.gpu_count < 0:
        raise InvalidArgument(f"gpu_count must be 0 or more, not {msg.gpu_count}")
    if msg.HasField("port") and not 0 < msg.port < 65536:
        raise InvalidArgument(f"the notebook port must be between 1 and 65535, not {msg.port}")
    return NotebookSpec(
        image=msg.image,
        gpu_count=msg.gpu_count if msg.HasField("gpu_count") else None,
        gpu_type=msg.gpu_type,
        cpu=msg.cpu,
        memory=msg.memory,
        env=dict(msg.env),
        command=tuple(msg.command),
        workdir=msg.workdir,
        port=msg.port if msg.HasField("port") else None,
        workspace_size=msg.workspace_size,
        workspace_storage_class=msg.workspace_storage_class,
        shm=msg.shm,
        idle_stop_after=msg.idle_stop_after,
    )


# --- session ---------------------------------------------------------------------------------------


def forward_to_proto(fwd: ForwardStatus) -> pb.ForwardStatus:
    return pb.ForwardStatus(
        state=fwd.state.value,  # type: ignore[arg-type]
        local_port=fwd.local_port,
        remote_port=fwd.remote_port,
        pod=fwd.pod,
        message=fwd.message,
        open_connections=fwd.open_connections,
        last_probe=timestamp(fwd.last_probe),
    )


def conflict_to_proto(c: Conflict) -> pb.Conflict:
    return pb.Conflict(path=c.path, copy_path=c.copy_path, message=c.message, time=timestamp(c.time))


def problem_to_proto(p: Problem) -> pb.Problem:
    return pb.Problem(path=p.path, message=p.message, time=timestamp(p.time))


def not_synced_to_proto(n: NotSynced) -> pb.NotSynced:
    return pb.NotSynced(path=n.path, size=n.size, reason=n.reason, side=n.side)


def sync_to_proto(s: SyncStatus) -> pb.SyncStatus:
    return pb.SyncStatus(
        state=s.state.value,  # type: ignore[arg-type]
        message=s.message,
        files=s.files,
        cycles=s.cycles,
        bytes_to_remote=s.bytes_to_remote,
        bytes_to_local=s.bytes_to_local,
        files_to_remote=s.files_to_remote,
        files_to_local=s.files_to_local,
        last_cycle=timestamp(s.last_cycle),
        conflicts=[conflict_to_proto(c) for c in s.conflicts],
        resolved_conflicts=[conflict_to_proto(c) for c in s.resolved_conflicts],
        problems=[problem_to_proto(p) for p in s.problems],
        not_synced=[not_synced_to_proto(n) for n in s.not_synced],
        local_root=s.local_root,
        remote_root=s.remote_root,
    )


def notebook_to_proto(n: NotebookStatus) -> pb.NotebookStatus:
    return pb.NotebookStatus(
        state=n.state.value,  # type: ignore[arg-type]
        message=n.message,
        changed_by=n.changed_by,
        generation=n.generation,
        observed=timestamp(n.observed),
    )


def session_to_proto(s: Session, ref: str) -> pb.Session:
    return pb.Session(
        name=s.name,
        namespace=s.namespace,
        context=s.context,
        kubeconfig=s.kubeconfig,
        directory=s.directory,
        phase=s.phase.value,  # type: ignore[arg-type]
        message=s.message,
        url=s.url,
        spec=spec_to_proto(s.spec),
        context_md5=s.context_md5,
        image=s.image,
        pod=s.pod,
        forward=forward_to_proto(s.forward),
        sync=sync_to_proto(s.sync),
        created=timestamp(s.created),
        updated=timestamp(s.updated),
        ref=ref,
        notebook=notebook_to_proto(s.notebook),
        idle_stop_at=timestamp(s.notebook.idle_stop_at),
        idle_stop_after=s.notebook.idle_stop_after,
        idle_message=s.notebook.idle_message,
    )


# --- requests --------------------------------------------------------------------------------------


def launch_request_from_proto(msg: pb.LaunchRequest) -> caps.LaunchRequest:
    if not msg.directory:
        raise InvalidArgument("a directory to launch is required")
    if not msg.directory.startswith("/"):
        raise InvalidArgument(f"the directory must be an absolute path, not {msg.directory!r}")
    if not 0 <= msg.local_port < 65536:
        raise InvalidArgument(f"the local port must be between 1 and 65535, not {msg.local_port}")
    return caps.LaunchRequest(
        directory=msg.directory,
        name=msg.name,
        namespace=msg.namespace,
        context=msg.context,
        kubeconfig=msg.kubeconfig,
        notebook_file=msg.notebook_file,
        spec=spec_from_proto(msg.spec),
        local_port=msg.local_port,
        no_sync=msg.no_sync,
        attach=msg.attach,
        rebuild=msg.rebuild,
        timeout_seconds=msg.timeout_seconds,
    )


def logs_query_from_proto(msg: pb.LogsRequest) -> caps.LogsQuery:
    if msg.tail_lines < 0:
        raise InvalidArgument(f"tail_lines must be 0 (all) or more, not {msg.tail_lines}")
    source = caps.LogSource(msg.source) if msg.source else caps.LogSource.NOTEBOOK
    return caps.LogsQuery(
        source=source, follow=msg.follow, tail_lines=msg.tail_lines, container=msg.container
    )


def sync_action_from_proto(action: int) -> caps.SyncAction:
    if action == pb.SyncRequest.ACTION_UNSPECIFIED:
        return caps.SyncAction.STATUS
    try:
        return caps.SyncAction(action)
    except ValueError:
        raise InvalidArgument(f"unknown sync action {action}; use status, pause, resume or flush") from None


def sync_request_from_proto(msg: pb.SyncRequest) -> tuple[caps.SyncAction, bool]:
    """The action and the force flag of a SyncRequest; force goes only with resume."""
    action = sync_action_from_proto(msg.action)
    if msg.force and action != caps.SyncAction.RESUME:
        raise InvalidArgument(
            f"force applies only to resume (it passes the delete guard), not to {action.name.lower()}",
            reason="ForceWithoutResume",
        )
    return action, msg.force


# --- events ----------------------------------------------------------------------------------------


def log_line_to_proto(line: ev.LogLine) -> pb.LogLine:
    return pb.LogLine(container=line.container, text=line.text, time=timestamp(line.time))


def launch_event_to_proto(event: ev.LaunchEvent, ref_of: Callable[[Session], str]) -> pb.LaunchEvent:
    """`ref_of(session) -> str` gives the reference of a session carried by a Ready payload."""
    msg = pb.LaunchEvent(time=timestamp(event.time), session=event.session)
    p = event.payload
    if _fill_step(msg, p):
        pass
    elif isinstance(p, ev.PodStatus):
        msg.pod.CopyFrom(
            pb.PodStatus(pod=p.pod, phase=p.phase, reason=p.reason, message=p.message, ready=p.ready)
        )
    elif isinstance(p, ev.Ready):
        msg.ready.CopyFrom(
            pb.Ready(
                url=p.url,
                local_port=p.local_port,
                session=session_to_proto(p.session, ref_of(p.session)),
                ui=p.ui,
                note=p.note,
            )
        )
    else:  # pragma: no cover - the union above is exhaustive
        raise TypeError(f"unknown launch event payload {type(p).__name__}")
    return msg


def _fill_step(msg: Any, p: object) -> bool:
    """Sets the oneof field of a payload a launch and a run share (their messages name them alike);
    False for any other payload."""
    if isinstance(p, ev.PhaseChanged):
        msg.phase.CopyFrom(pb.PhaseChanged(phase=p.phase.value, message=p.message))  # type: ignore[arg-type]
    elif isinstance(p, ev.Progress):
        msg.progress.CopyFrom(progress_to_proto(p))
    elif isinstance(p, ev.Cached):
        msg.cached.CopyFrom(pb.Cached(step=p.step.value, reason=p.reason, md5=p.md5))  # type: ignore[arg-type]
    elif isinstance(p, ev.LogLine):
        msg.build_log.CopyFrom(log_line_to_proto(p))
    elif isinstance(p, ev.Failure):
        msg.failed.CopyFrom(pb.Failure(reason=p.reason, message=p.message, log_tail=list(p.log_tail)))
    elif isinstance(p, ev.Notice):
        msg.notice.CopyFrom(notice_to_proto(p))
    else:
        return False
    return True


def progress_to_proto(p: ev.Progress) -> pb.Progress:
    return pb.Progress(
        phase=p.phase.value,  # type: ignore[arg-type]
        done_bytes=p.done_bytes,
        total_bytes=p.total_bytes,
        done_files=p.done_files,
        total_files=p.total_files,
        bytes_per_second=p.bytes_per_second,
        eta_seconds=p.eta_seconds,
    )


def notice_to_proto(p: ev.Notice) -> pb.Notice:
    return pb.Notice(level=p.level.value, message=p.message)  # type: ignore[arg-type]


def session_event_to_proto(event: ev.SessionEvent, ref: str) -> pb.SessionEvent:
    msg = pb.SessionEvent(
        time=timestamp(event.time),
        kind=event.kind.value,  # type: ignore[arg-type]
        session=session_to_proto(event.session, ref),
    )
    d = event.detail
    if isinstance(d, ev.SyncChange):
        msg.sync_change.CopyFrom(
            pb.SyncChange(direction=d.direction.value, path=d.path, action=d.action, bytes=d.bytes)  # type: ignore[arg-type]
        )
    elif isinstance(d, Conflict):
        msg.conflict.CopyFrom(conflict_to_proto(d))
    elif isinstance(d, Problem):
        msg.problem.CopyFrom(problem_to_proto(d))
    return msg


# --- runs --------------------------------------------------------------------------------------


def target_from_proto(msg: rpb.ClusterTarget) -> rs.ClusterTarget:
    return rs.ClusterTarget(context=msg.context, namespace=msg.namespace, kubeconfig=msg.kubeconfig)


def run_request_from_proto(msg: rpb.RunRequest) -> rs.RunRequest:
    if not msg.directory:
        raise InvalidArgument("a directory to run is required")
    if not msg.directory.startswith("/"):
        raise InvalidArgument(f"the directory must be an absolute path, not {msg.directory!r}")
    ttl = msg.ttl_seconds_after_finished if msg.HasField("ttl_seconds_after_finished") else None
    if ttl is not None and ttl < 0:
        raise InvalidArgument(f"the time to keep a finished run must be 0 s or more, not {ttl}")
    return rs.RunRequest(
        directory=msg.directory,
        command=tuple(msg.command),
        name=msg.name,
        target=target_from_proto(msg.target),
        notebook_file=msg.notebook_file,
        spec=spec_from_proto(msg.spec),
        nodes=msg.nodes or 1,
        detach=msg.detach,
        rebuild=msg.rebuild,
        ttl_seconds_after_finished=ttl,
    )


def fetch_request_from_proto(msg: rpb.FetchRequest) -> rs.FetchRequest:
    if msg.directory and not msg.directory.startswith("/"):
        raise InvalidArgument(f"the directory must be an absolute path, not {msg.directory!r}")
    return rs.FetchRequest(
        run=msg.run, target=target_from_proto(msg.target), directory=msg.directory, path=msg.path
    )


def run_info_to_proto(r: rs.RunInfo) -> rpb.RunInfo:
    msg = rpb.RunInfo(
        name=r.name,
        namespace=r.namespace,
        context=r.context,
        phase=r.phase.value,  # type: ignore[arg-type]
        reason=r.reason,
        message=r.message,
        command=list(r.command),
        nodes=r.nodes,
        gpus_per_node=r.gpus_per_node,
        gpu_type=r.gpu_type,
        image=r.image,
        context_md5=r.context_md5,
        created=timestamp(r.created),
        started=timestamp(r.started),
        finished=timestamp(r.finished),
        ranks=[
            rpb.RankStatus(index=k.index, pod=k.pod, phase=k.phase, exit_code=k.exit_code) for k in r.ranks
        ],
        outputs_path=r.outputs_path,
        directory=r.directory,
        job=r.job,
    )
    if r.exit_code is not None:
        msg.exit_code = r.exit_code
    if r.failed_rank is not None:
        msg.failed_rank = r.failed_rank
    return msg


def run_event_to_proto(event: rs.RunEvent) -> rpb.RunEvent:
    msg = rpb.RunEvent(time=timestamp(event.time), run=event.run)
    p = event.payload
    if _fill_step(msg, p):
        pass
    elif isinstance(p, rs.RunStatus):
        msg.status.CopyFrom(run_info_to_proto(p.info))
    elif isinstance(p, rs.RunLog):
        msg.log.CopyFrom(rpb.RunLog(rank=p.rank, text=p.text, pod=p.pod, time=timestamp(p.time)))
    elif isinstance(p, rs.RunFinished):
        msg.finished.CopyFrom(run_info_to_proto(p.info))
    else:  # pragma: no cover - the union is exhaustive
        raise TypeError(f"unknown run event payload {type(p).__name__}")
    return msg


def fetch_event_to_proto(p: rs.FetchPayload) -> rpb.FetchEvent:
    if isinstance(p, ev.Progress):
        return rpb.FetchEvent(progress=progress_to_proto(p))
    if isinstance(p, ev.Notice):
        return rpb.FetchEvent(notice=notice_to_proto(p))
    return rpb.FetchEvent(
        done=rpb.FetchResult(
            destination=p.destination,
            written=p.written,
            unchanged=p.unchanged,
            bytes=p.bytes,
            conflicts=[conflict_to_proto(c) for c in p.conflicts],
        )
    )
