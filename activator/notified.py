"""sd_notify messages carried out: who sent it, may it, and what it changes.

notify.py receives the datagrams, readiness.py says what their fields mean; this module finds
the sending unit's process (by the kernel's pid, through the process table), checks
`notify_access`, and applies the effects in the order readiness.py gives them, calling down
into the supervisor for what changes a unit's life (ready, stop, a main process that ended).
"""

from __future__ import annotations

import os

from activator import reaper, readiness
from activator.notify import Message
from activator.readiness import Effect
from activator.service import FDSTORE_MAX, Process
from activator.states import ACTIVE, S
from activator.supervisor import Supervisor


def _store_total() -> int:
    """A quarter of activator's descriptor limit, at most 1,024: the rest is PID 1's own."""
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1024 if soft == resource.RLIM_INFINITY else max(min(soft // 4, 1024), FDSTORE_MAX)


FDSTORE_TOTAL = _store_total()


class NotifyApplier:
    def __init__(self, supervisor: Supervisor):
        self.supervisor = supervisor
        self.log = supervisor.log
        self.counters = supervisor.counters

    def handle(self, messages: list[Message]) -> None:
        for message in messages:
            proc = self.supervisor.table.sender(message.pid)
            if proc is None or not readiness.allowed(proc.unit.notify_access, message.pid, proc.main_pid):
                self.counters.notify_message(accepted=False)
                self.log.debug(f"notify message from pid {message.pid} ignored: "
                               + ("not a process of a unit" if proc is None else
                                  f"notify_access is {proc.unit.notify_access}"))
                message.close_fds()
                continue
            self.counters.notify_message(accepted=True)
            with self.supervisor.guard(self.supervisor.service_of(proc)):
                self.apply(proc, message)
            message.close_fds()

    def apply(self, proc: Process, message: Message) -> None:
        sup = self.supervisor
        slot = proc.slot
        for effect, value in readiness.effects(message.fields, bool(message.fds)):
            if effect is Effect.MAIN_PID:
                self.move_main_pid(proc, value)
            elif effect is Effect.STATUS:
                proc.notify_status = value
                if proc.current:
                    slot.notify_status = value
                sup.on_change()
            elif effect is Effect.ERRNO:
                proc.notify_errno = value
                if proc.current:
                    slot.notify_errno = value
                sup.on_change()
            elif effect is Effect.EXTEND_START:
                sup.control.extend_start_timeout(proc, value)
            elif effect is Effect.WATCHDOG_INTERVAL:
                proc.watchdog_usec = value
                sup.control.arm_watchdog(proc)
            elif effect is Effect.WATCHDOG_PING:
                sup.control.arm_watchdog(proc)
            elif effect is Effect.WATCHDOG_TRIGGER:
                sup.control.watchdog_expired(proc, triggered=True)
            elif effect is Effect.FDSTORE:
                self.store_fds(proc, value, message)
            elif effect is Effect.FDSTORE_REMOVE:
                sup.service_of(proc).fdstore.remove(value)
            else:
                self.apply_state(proc, effect)

    def apply_state(self, proc: Process, effect: Effect) -> None:
        """STOPPING=1, RELOADING=1, READY=1."""
        slot = proc.slot
        if effect is Effect.STOPPING:
            proc.stopping = True
            proc.cancel_timers("watchdog")  # a service on its way out owes no more pings
            if proc.current and slot.state in ACTIVE + (S.STARTING,):
                slot.enter(S.STOPPING)
        elif effect is Effect.RELOADING:
            proc.reloading = True
            if proc.current and slot.state is S.RUNNING:
                slot.enter(S.RELOADING)
        elif effect is Effect.READY:
            proc.reloading = False
            if not proc.ready:
                self.supervisor.became_ready(proc)
            elif proc.current and slot.state is S.RELOADING:
                slot.enter(S.RUNNING)

    def move_main_pid(self, proc: Process, pid: int) -> None:
        sup = self.supervisor
        if pid == proc.main_pid:
            return
        fields = reaper.stat(pid)
        if fields is None or sup.table.sender(pid) is not proc:
            self.log.warning(f"MAINPID={pid} ignored: not a process of this unit", **proc.where)
            return
        sup.table.move_main(proc, pid)
        sup.on_change()  # status.json shows the new main pid
        if fields[0] != os.getpid():  # not our child: learn of its end through a pidfd
            try:
                proc.pidfd = os.pidfd_open(pid)
                sup.loop.add_reader(proc.pidfd, lambda: self.on_main_pid_gone(proc))
            except OSError:
                proc.pidfd = -1
        self.log.info(f"main process is now {pid}", **proc.where)

    def on_main_pid_gone(self, proc: Process) -> None:
        """pidfd: a MAINPID that is not our child ended. If it was reparented to us, reaping
        gives its real status; only when another process reaps it is the status unknown."""
        sup = self.supervisor
        sup.reap()
        sup.control.close_pidfd(proc)
        if not proc.exited:
            with sup.guard(sup.service_of(proc)):
                sup.on_exit(proc, 0)

    def store_fds(self, proc: Process, name: str, message: Message) -> None:
        """FDSTORE=1, within FDSTORE_MAX per unit and FDSTORE_TOTAL in all, well under
        activator's own descriptor limit: no unit can take the descriptors PID 1 needs."""
        stored = sum(len(s.fdstore.entries) for s in self.supervisor.services.values())
        room = max(FDSTORE_TOTAL - stored, 0)
        kept, full = self.supervisor.service_of(proc).fdstore.add(name, list(message.fds), room)
        for fd in kept:
            message.fds.remove(fd)  # kept: not closed with the message
        if full:
            self.log.warning(f"FDSTORE: the store is full ({FDSTORE_MAX} per unit, {FDSTORE_TOTAL} in "
                             "all); closing the new descriptors", **proc.where)
        if kept:
            self.log.debug(f"stored {len(kept)} descriptor(s) as '{name}'", **proc.where)
