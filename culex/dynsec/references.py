"""The commands that add or remove a reference: a role of a client (addClientRole,
removeClientRole), a client of a group (addGroupClient, removeGroupClient), a role of a group
(addGroupRole, removeGroupRole). A reference carries a priority; removing one that is not
there succeeds, as in Mosquitto. None disconnects anybody: checks follow at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .request import Command, Handler, Ref


@dataclass(frozen=True, slots=True)
class Reference:
    # What the commands name, in Mosquitto's order (read, then looked up).
    first: Callable[[Command], Ref[Any]]
    second: Callable[[Command], Ref[Any]]
    # For the two things named: the table the reference goes in, and the name it is under.
    target: Callable[[Any, Any], tuple[dict[str, int], str]]
    exists: str

    def add(self, command: Command) -> None:
        found = command.two(self.first(command), self.second(command))
        if found is None:
            return
        table, name = self.target(found[0], found[1])
        if name in table:
            command.fail(self.exists)
            return
        table[name] = command.priority()
        command.ok(change=f"{found[2]} priority={table[name]}")

    def remove(self, command: Command) -> None:
        found = command.two(self.first(command), self.second(command))
        if found is not None:
            table, name = self.target(found[0], found[1])
            table.pop(name, None)
            command.ok(change=found[2])


CLIENT_ROLE = Reference(Command.clients, Command.roles,
                        lambda client, role: (client.roles, role.name),
                        "Client is already in this role")
GROUP_CLIENT = Reference(Command.clients, Command.groups,
                         lambda client, group: (group.clients, client.username),
                         "Client is already in this group")
GROUP_ROLE = Reference(Command.groups, Command.roles,
                       lambda group, role: (group.roles, role.name),
                       "Group is already in this role")

HANDLERS: dict[str, Handler] = {
    "addClientRole": CLIENT_ROLE.add,
    "removeClientRole": CLIENT_ROLE.remove,
    "addGroupClient": GROUP_CLIENT.add,
    "removeGroupClient": GROUP_CLIENT.remove,
    "addGroupRole": GROUP_ROLE.add,
    "removeGroupRole": GROUP_ROLE.remove,
}
