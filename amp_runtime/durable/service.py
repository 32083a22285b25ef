"""The durable workers service: the API's rules, between the routes and the instance actors.

It keeps the directory of running instances (worker id -> actor); each instance owns its own
state. Templates get their version at start: a changed exported interface bumps it.

Peers on a shared PostgreSQL store (`[store] url`): an instance runs in one process at a time,
the holder of its lease (`durable_leases`, taken by compare-and-set, renewed every `[registry]
heartbeat_s`, expiring after `[registry] liveness_s`). A request for an instance another live
peer holds raises `OwnedElsewhere` and the routes relay it there; an absent or expired lease is
taken here and the instance rebuilt from the store (state, oplog, keys: the restart path). Each
renewal also takes the expired leases, so queued work of a dead peer resumes unasked. Every
write of an instance is fenced by its lease (`store.fenced`): a peer cut off past its lease
writes nothing once another took over. A draining peer settles its instances and gives its
leases up. On DuckDB the one process owns everything and writes no lease.
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from typing import Any, Callable

import msgspec
import trio

from ..config import ConfigError
from ..core.actor import ActorUnavailable, RestartBudgetExceeded, is_outage, supervise
from ..core.clock import rfc3339
from ..core.service import ServiceBase
from ..core.store import StoreError, StoreUnavailable
from . import builtin  # noqa: F401  registers counter, kv and approval
from . import store as sql
from .instance import Instance
from .messages import (
    Complete, Describe, InstanceEnv, Interrupt, Invoke, NewKey, Outcome, Release, Remove, Settle, StopAccepting,
    worker_key,
)
from .relay import Outgoing, OwnedElsewhere, OwnerFailed, OwnerUnreachable, Relay, Relayed
from .models import (
    IDLE,
    FunctionInfo,
    FunctionParam,
    InvokeResult,
    Oplog,
    OplogEntry,
    TemplateInfo,
    VersionedWorkerId,
    WorkerError,
    WorkerId,
    WorkerMetadata,
)
from .templates import TEMPLATES, InvalidParams, TemplateSpec, by_id, type_name

log = logging.getLogger("amp_runtime.durable")

_WORKER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_durable_config(durable) -> None:
    """Raise ConfigError naming every `[durable]` key whose value cannot work."""
    problems = [
        f"durable.{key}: {rule}"
        for key, ok, rule in (
            ("max_workers", durable.max_workers >= 0, "must not be negative"),
            ("max_retries", durable.max_retries >= 0, "must not be negative"),
            ("retry_delay_s", durable.retry_delay_s >= 0, "must not be negative"),
            ("invoke_timeout_s", durable.invoke_timeout_s > 0, "must be positive"),
        )
        if not ok
    ]
    if problems:
        raise ConfigError("bad config: " + "; ".join(problems))


def peer_id_of(config) -> str:
    """Stable across restarts: the worker ids this process holds (a live process holds them
    alone), so a restarted peer takes its own leases back at once."""
    ids = sorted(worker.id for worker in config.workers)
    return "peer:" + ",".join(ids) if ids else f"peer:{uuid.uuid4()}"


class DurableService(ServiceBase):
    def __init__(self, config, store, *, bound_urls: Callable[[], list[str]] = list):
        super().__init__(config, store)
        check_durable_config(self.config.durable)
        self.durable_config = self.config.durable
        self.instances: dict[str, Instance] = {}
        # Peers on PostgreSQL: instances are leased (see the module docstring).
        self.peers = bool(self.config.store.url)
        self.peer_id = peer_id_of(self.config)
        self._bound_urls = bound_urls
        self._lease_s = self.config.registry.liveness_s
        self._accepting = True
        self._leases_scope = trio.CancelScope()
        self._relay: Relay | None = None
        self.versions: dict[str, int] = {}  # templateId -> current version
        self.invocation_outcomes: dict[str, int] = {}  # read by /metrics
        self._nursery: trio.Nursery | None = None
        self._instance_env = InstanceEnv(
            store=store,
            max_retries=self.durable_config.max_retries,
            retry_delay_s=self.durable_config.retry_delay_s,
            count=self._count,
            lease_owner=self.peer_id if self.peers else None,
        )

    def _count(self, outcome: str) -> None:
        self.invocation_outcomes[outcome] = self.invocation_outcomes.get(outcome, 0) + 1

    # -- lifecycle ---------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Version the templates, bring every stored worker back (its unfinished invocations
        run again first), then supervise the instances until shutdown cancels them."""
        for spec in list(TEMPLATES.values()):
            self.versions[spec.template_id] = await self.store.write(
                sql.sync_template_version, spec.template_id, spec.name, spec.interface_hash
            )
        rows = [] if self.peers else await self.store.read(sql.list_workers)  # peers take leases instead
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for row in rows:
                    spec = by_id(row.template_id)
                    if spec is None:
                        log.warning("durable worker %s: template %s is not registered; not started", row.name, row.template_id)
                        continue
                    self._start_instance(spec, row.name)
                if self.peers:
                    cluster = self.config.cluster
                    self._relay = Relay(
                        peer_id=self.peer_id, cluster_key=cluster.key, connect_timeout_s=cluster.connect_timeout_s,
                        answer_s=self.durable_config.invoke_timeout_s + self.config.actors.ask_timeout_s,
                    )
                    nursery.start_soon(self._keep_leases)
                task_status.started()
                await trio.sleep_forever()  # instances come and go; the nursery stays open
        finally:
            if self._relay is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(1):  # closing sockets only
                    await self._relay.aclose()

    def _start_instance(self, spec: TemplateSpec, name: str) -> Instance:
        instance = Instance(spec, name, self._instance_env, mailbox_size=self.config.actors.mailbox_size)
        self.instances[instance.worker] = instance
        self._nursery.start_soon(self._supervise, instance)
        return instance

    async def _supervise(self, instance: Instance) -> None:
        try:
            await supervise(instance, max_restarts_per_minute=self.config.actors.max_restarts_per_minute)
        except RestartBudgetExceeded:
            # One broken worker must not stop the process: it stays listed, its asks fail.
            log.error("durable worker %s keeps crashing; stopped until the next start", instance.worker)
            instance.close()
        finally:
            if (instance.removed or instance.released) and self.instances.get(instance.worker) is instance:
                del self.instances[instance.worker]
            instance.ended.set()

    def stop_accepting(self) -> None:
        self._accepting = False
        for instance in list(self.instances.values()):
            instance.tell_nowait(StopAccepting(handed_over=self.peers))

    async def drain(self) -> None:
        """Peers: let what runs finish, then give every lease up so other peers take the
        instances at once (the runtime bounds this by the grace period; past it they expire)."""
        if not self.peers:
            return
        self._leases_scope.cancel()  # takes nothing more
        held = list(self.instances.values())
        for instance in held:
            with contextlib.suppress(ActorUnavailable, WorkerError):
                await instance.ask(Settle(), timeout=float("inf"))
        for instance in held:
            with contextlib.suppress(ActorUnavailable, WorkerError):
                await instance.ask(Release(), timeout=float("inf"))
            await instance.ended.wait()  # its last write is in: the next owner reads it
        if held:
            await self.store.write(sql.release_leases, self.peer_id, [i.worker for i in held])
            log.info("durable: released %d instance(s) to the other peers", len(held))

    # -- leases (peers) ------------------------------------------------------------------
    def _own_url(self) -> str:
        if self.config.cluster.advertise_url:
            return self.config.cluster.advertise_url
        urls = self._bound_urls()
        return urls[0] if urls else ""

    async def _keep_leases(self) -> None:
        """Every heartbeat: renew this peer's leases and take the expired ones (one CAS). An
        instance whose lease another peer took stops here; past `liveness_s` without a renewal
        (store trouble) every instance stops, since another peer may hold them by now."""
        with self._leases_scope:
            while not self._own_url():  # the HTTP server binds after the services start
                await trio.sleep(0.05)
            renewed_at = trio.current_time()
            while True:
                running = dict(self.instances)  # those adopted while the write is out are not judged by it
                away = False
                try:
                    held = set(await self.store.write(
                        sql.claim_leases, self.peer_id, self._own_url(), self._lease_s, sorted(self.versions)))
                    renewed_at = trio.current_time()
                except (StoreUnavailable, StoreError) as exc:
                    away = is_outage(exc)
                    if not away:  # the store says when it is away, once
                        log.warning("durable: lease renewal failed (%s)", exc)
                    if trio.current_time() - renewed_at >= self._lease_s:
                        held = set()
                    else:
                        held = set(running)
                for worker, instance in running.items():
                    if worker not in held and self.instances.get(worker) is instance:
                        if away:  # not renewed in time: another peer may take it; this one must stop
                            log.info("durable worker %s: lease not renewed while the store is away; it stops here "
                                     "and is taken again by its next call", worker)
                        else:
                            log.warning("durable worker %s: lease lost; it runs on another peer now", worker)
                        self._give_up(instance)
                for worker in held - set(self.instances):
                    self._adopt(worker)
                await trio.sleep(self.config.registry.heartbeat_s)

    def _give_up(self, instance: Instance) -> None:
        del self.instances[instance.worker]  # new requests look the lease up again
        if not instance.tell_nowait(Release()):
            instance.close()

    def _adopt(self, worker: str) -> Instance | None:
        """Run an instance whose lease this peer just took (rebuilt from the store)."""
        if worker in self.instances:
            return self.instances[worker]
        template_id, _, name = worker.partition(".")
        spec = by_id(template_id)
        if spec is None:
            return None
        log.info("durable worker %s: lease taken; running on this peer", worker)
        return self._start_instance(spec, name)

    async def _leased(self, spec: TemplateSpec, name: str) -> Instance:
        """The local instance, after taking its lease if nobody live holds it; `OwnedElsewhere`
        when a live peer holds it."""
        worker = worker_key(spec.template_id, name)
        for _ in range(2):
            exists, lease = await self.store.read(sql.lease_of, worker)
            if not exists:
                raise WorkerError(404, f"worker {name} not found for template {spec.template_id}")
            if lease is not None and lease.live and lease.owner != self.peer_id:
                raise OwnedElsewhere(worker, lease.owner, lease.owner_url)
            if not self._accepting:
                raise WorkerError(503, "this peer is shutting down; retry (another peer takes the worker over)")
            taken = await self.store.write(
                sql.claim_leases, self.peer_id, self._own_url(), self._lease_s, [spec.template_id], worker)
            if worker in taken:
                instance = self._adopt(worker)
                if instance is not None:
                    return instance
        raise WorkerError(503, f"worker {name} is moving between peers; retry")

    async def forward(self, elsewhere: OwnedElsewhere, outgoing: Outgoing) -> Relayed | None:
        """Relay a request to the owner. None when the owner took no connection (it is gone):
        this returns once its lease has expired, and the caller tries again here."""
        assert self._relay is not None
        try:
            return await self._relay.send(elsewhere.url, outgoing)
        except OwnerFailed as exc:
            raise WorkerError(503, f"the peer running worker {elsewhere.worker} failed while answering ({exc}); "
                                   "retry (with the same invocation key a call runs once)") from None
        except OwnerUnreachable:
            pass
        log.info("durable worker %s: owner %s unreachable; waiting for its lease to expire", elsewhere.worker,
                 elsewhere.url)
        with trio.move_on_after(self._lease_s + 2 * self.config.registry.heartbeat_s + 1):
            while True:
                _, lease = await self.store.read(sql.lease_of, elsewhere.worker)
                if lease is None or not lease.live or lease.owner != elsewhere.owner:
                    return None
                await trio.sleep(min(0.25, self.config.registry.heartbeat_s))
        raise WorkerError(503, f"the peer running worker {elsewhere.worker} does not answer; retry")

    # -- templates ---------------------------------------------------------------------
    def list_templates(self) -> list[TemplateInfo]:
        return [
            TemplateInfo(
                templateId=spec.template_id,
                name=spec.name,
                version=self.versions.get(spec.template_id, 1),
                functions=[
                    FunctionInfo(
                        name=fn.name,
                        params=[FunctionParam(p.name, p.type_name) for p in fn.params],
                        result=type_name(fn.result),
                    )
                    for fn in spec.functions.values()
                ],
            )
            for spec in sorted(TEMPLATES.values(), key=lambda s: s.name)
        ]

    def _template(self, template_id: str) -> TemplateSpec:
        spec = by_id(template_id)
        if spec is None:
            raise WorkerError(404, f"template {template_id} not found")
        return spec

    # -- workers -----------------------------------------------------------------------
    async def create_worker(self, template_id: str, name: str, args: list[str], env: Any) -> VersionedWorkerId:
        spec = self._template(template_id)
        env_map = dict(env) if isinstance(env, dict) else {k: v for k, v in env}
        max_len = self.config.http.max_id_length
        if not _WORKER_NAME.match(name) or len(name) > max_len:
            raise WorkerError(
                400, f"invalid worker name {name!r}: 1 to {max_len} letters, digits, '_', '-' or '.', starting with a letter or digit"
            )
        version = self.versions.get(spec.template_id, 1)
        row = sql.WorkerRow(
            worker_key(spec.template_id, name), spec.template_id, name, version, list(args), env_map, IDLE, 0,
            spec.encode_state(spec.new_object(None)),
        )
        lease = (self.peer_id, self._own_url(), self._lease_s) if self.peers else None
        created = await self.store.write(sql.create_worker, row, self.durable_config.max_workers, lease)
        if created == "exists":
            raise WorkerError(409, f"worker {name} already exists for template {spec.name}")
        if created == "full":
            raise WorkerError(403, f"maximum number of workers exceeded ({self.durable_config.max_workers})")
        self._start_instance(spec, name)
        return VersionedWorkerId(WorkerId(spec.template_id, name), version)

    async def _instance(self, template_id: str, name: str) -> Instance:
        spec = self._template(template_id)
        instance = self.instances.get(worker_key(spec.template_id, name))
        if instance is None:
            if self.peers:
                return await self._leased(spec, name)
            raise WorkerError(404, f"worker {name} not found for template {template_id}")
        return instance

    async def _ask(self, instance: Instance, msg: Any, timeout: float | None = None) -> Any:
        try:
            return await instance.ask(msg, timeout=timeout if timeout is not None else self.config.actors.ask_timeout_s)
        except ActorUnavailable:
            if instance.removed:
                raise WorkerError(404, f"worker {instance.worker_name} not found") from None
            if instance.released:
                raise WorkerError(503, f"worker {instance.worker_name} moved to another peer; retry") from None
            raise WorkerError(500, f"worker {instance.worker_name} is unavailable") from None

    async def metadata(self, template_id: str, name: str) -> WorkerMetadata:
        instance = await self._instance(template_id, name)
        status, retry_count, row = await self._ask(instance, Describe())
        return WorkerMetadata(
            workerId=WorkerId(row.template_id, row.name),
            accountId=self.durable_config.account_id,
            args=row.args,
            env=row.env,
            status=status,
            templateVersion=row.template_version,
            retryCount=retry_count,
        )

    async def parse_worker_id(self, text: str) -> VersionedWorkerId:
        """`templateId.workerName` (a UUID has no dots: split at the first one)."""
        template_id, dot, name = text.partition(".")
        if not dot or not name:
            raise WorkerError(400, f"invalid worker id {text!r}: expected templateId.workerName")
        meta = await self.metadata(template_id, name)
        return VersionedWorkerId(meta.workerId, meta.templateVersion)

    async def delete(self, template_id: str, name: str) -> None:
        instance = await self._instance(template_id, name)
        await self._ask(instance, Remove())
        if self.instances.get(instance.worker) is instance:
            del self.instances[instance.worker]

    async def oplog(self, template_id: str, name: str) -> Oplog:
        instance = await self._instance(template_id, name)
        rows = await self.store.read(sql.oplog, instance.worker)
        return Oplog([OplogEntry(idx, kind, msgspec.json.decode(detail), rfc3339(at)) for idx, kind, detail, at in rows])

    # -- invocations -------------------------------------------------------------------
    async def new_key(self, template_id: str, name: str) -> str:
        return await self._ask(await self._instance(template_id, name), NewKey())

    def _check_call(self, spec: TemplateSpec, function: str | None, params: list[Any], convention: str) -> None:
        """400 listing every problem: missing/unknown function, parameter count and types."""
        if not function:
            raise WorkerError(400, "the query parameter function is required")
        fn = spec.functions.get(function)
        if fn is None:
            known = ", ".join(sorted(spec.functions)) or "none"
            raise WorkerError(400, f"template {spec.name} has no function {function!r} (exported: {known})")
        if convention == "stdio":
            if len(params) != 1 or not isinstance(params[0], str):
                raise WorkerError(400, "calling-convention stdio takes one string parameter: the JSON parameters")
            try:
                decoded = msgspec.json.decode(params[0])
            except msgspec.DecodeError as exc:
                raise WorkerError(400, f"stdio parameter is not JSON: {exc}") from None
            params = decoded if isinstance(decoded, list) else [decoded]
        try:
            fn.convert_params(params)
        except InvalidParams as exc:
            raise WorkerError(400, exc.problems[0], exc.problems) from None

    async def invoke_and_await(
        self, template_id: str, name: str, function: str | None, params: list[Any], key: str | None, convention: str
    ) -> InvokeResult:
        instance = await self._instance(template_id, name)
        problems = [] if key else ["the query parameter invocation-key is required"]
        try:
            self._check_call(instance.spec, function, params, convention)
        except WorkerError as err:
            problems += err.problems
        if problems:
            raise WorkerError(400, problems[0], problems)
        timeout = self.durable_config.invoke_timeout_s
        try:
            outcome: Outcome = await self._ask(instance, Invoke(function, params, key, convention, wait=True), timeout)
        except trio.TooSlowError:
            raise WorkerError(
                504, f"invocation did not finish within {timeout:g}s; it keeps running and its result is "
                "recorded under the invocation key"
            ) from None
        if not outcome.ok:
            raise WorkerError(500, f"invocation failed: {outcome.payload.decode()}")
        return InvokeResult(msgspec.json.decode(outcome.payload))

    async def invoke(self, template_id: str, name: str, function: str | None, params: list[Any]) -> None:
        """Enqueue and return once the invocation is persisted."""
        instance = await self._instance(template_id, name)
        self._check_call(instance.spec, function, params, "component")
        await self._ask(instance, Invoke(function, params, None, "component", wait=False))

    async def complete(self, template_id: str, name: str, idx: int, data: list[int]) -> bool:
        return await self._ask(await self._instance(template_id, name), Complete(idx, data))

    async def interrupt(self, template_id: str, name: str, recover: bool) -> bool:
        return await self._ask(await self._instance(template_id, name), Interrupt(recover))

