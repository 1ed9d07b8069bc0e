"""Units and services built in memory for the unit layer."""

from activator import templates
from activator.model import Socket, Unit
from activator.listen import parse as parse_listen
from activator.service import Process, Service
from activator.states import P


def unit(name="web", **fields) -> Unit:
    return Unit(name=name, exec=(templates.parse("true"),), **fields)


def socket(name: str, listen: str, owner: str = "web", **fields) -> Socket:
    return Socket(name=name, key=name, unit=owner, listen=parse_listen(listen), **fields)


class Changes:
    def __init__(self):
        self.count = 0

    def __call__(self):
        self.count += 1


def service(name="web", phase=P.ACTIVE, **fields) -> Service:
    s = Service(unit(name, **fields), Changes())
    s.phase = phase
    return s


def process(svc: Service, number: int = 1, pid: int = 1000) -> Process:
    slot = svc.slots[number - 1] if svc.slots else None
    proc = Process(pid, svc.unit, slot, number, svc.label(number))
    if slot is not None:
        slot.proc = proc
    return proc
