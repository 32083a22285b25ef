"""The durable workers service: the API's rules, between the routes and the instance actors.

It keeps the directory of running instances (worker id -> actor); each instance owns its own
state. Templates get their version at start: a changed exported interface bumps it.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec
import trio

from ..config import ConfigError
from ..core.actor import ActorUnavailable, RestartBudgetExceeded, supervise
from ..core.clock import rfc3339
from ..core.service import ServiceBase
from . import builtin  # noqa: F401  registers counter, kv and approval
from . import store as sql
from .instance import Complete, Describe, Instance, InstanceEnv, Interrupt, Invoke, NewKey, Outcome, Remove, StopAccepting, worker_key
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


class DurableService(ServiceBase):
    def __init__(self, config, store):
        super().__init__(config, store)
        check_durable_config(self.config.durable)
        self.durable_config = self.config.durable
        self.instances: dict[str, Instance] = {}
        self.versions: dict[str, int] = {}  # templateId -> current version
        self.invocation_outcomes: dict[str, int] = {}  # read by /metrics
        self._nursery: trio.Nursery | None = None
        self._instance_env = InstanceEnv(
            store=store,
            max_retries=self.durable_config.max_retries,
            retry_delay_s=self.durable_config.retry_delay_s,
            count=self._count,
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
        rows = await self.store.read(sql.list_workers)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for row in rows:
                spec = by_id(row.template_id)
                if spec is None:
                    log.warning("durable worker %s: template %s is not registered; not started", row.name, row.template_id)
                    continue
                self._start_instance(spec, row.name)
            task_status.started()
            await trio.sleep_forever()  # instances come and go; the nursery stays open

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
            if instance.removed and self.instances.get(instance.worker) is instance:
                del self.instances[instance.worker]

    def stop_accepting(self) -> None:
        for instance in list(self.instances.values()):
            instance.tell_nowait(StopAccepting())

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
        created = await self.store.write(sql.create_worker, row, self.durable_config.max_workers)
        if created == "exists":
            raise WorkerError(409, f"worker {name} already exists for template {spec.name}")
        if created == "full":
            raise WorkerError(403, f"maximum number of workers exceeded ({self.durable_config.max_workers})")
        self._start_instance(spec, name)
        return VersionedWorkerId(WorkerId(spec.template_id, name), version)

    def _instance(self, template_id: str, name: str) -> Instance:
        spec = self._template(template_id)
        instance = self.instances.get(worker_key(spec.template_id, name))
        if instance is None:
            raise WorkerError(404, f"worker {name} not found for template {template_id}")
        return instance

    async def _ask(self, instance: Instance, msg: Any, timeout: float | None = None) -> Any:
        try:
            return await instance.ask(msg, timeout=timeout if timeout is not None else self.config.actors.ask_timeout_s)
        except ActorUnavailable:
            if instance.removed:
                raise WorkerError(404, f"worker {instance.worker_name} not found") from None
            raise WorkerError(500, f"worker {instance.worker_name} is unavailable") from None

    async def metadata(self, template_id: str, name: str) -> WorkerMetadata:
        instance = self._instance(template_id, name)
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
        instance = self._instance(template_id, name)
        await self._ask(instance, Remove())
        if self.instances.get(instance.worker) is instance:
            del self.instances[instance.worker]

    async def oplog(self, template_id: str, name: str) -> Oplog:
        instance = self._instance(template_id, name)
        rows = await self.store.read(sql.oplog, instance.worker)
        return Oplog([OplogEntry(idx, kind, msgspec.json.decode(detail), rfc3339(at)) for idx, kind, detail, at in rows])

    # -- invocations -------------------------------------------------------------------
    async def new_key(self, template_id: str, name: str) -> str:
        return await self._ask(self._instance(template_id, name), NewKey())

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
        instance = self._instance(template_id, name)
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
        instance = self._instance(template_id, name)
        self._check_call(instance.spec, function, params, "component")
        await self._ask(instance, Invoke(function, params, None, "component", wait=False))

    async def complete(self, template_id: str, name: str, idx: int, data: list[int]) -> bool:
        return await self._ask(self._instance(template_id, name), Complete(idx, data))

    async def interrupt(self, template_id: str, name: str, recover: bool) -> bool:
        return await self._ask(self._instance(template_id, name), Interrupt(recover))

