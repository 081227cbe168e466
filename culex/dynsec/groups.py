"""The group commands: createGroup, deleteGroup, modifyGroup, addGroupClient,
removeGroupClient, addGroupRole, removeGroupRole, getGroup, listGroups, setAnonymousGroup,
getAnonymousGroup.

Membership and roles apply at the next check and disconnect nobody (see clients.py).
"""

from __future__ import annotations

from .model import Group
from .request import Command, Handler
from .store import group_document


def create_group(command: Command) -> None:
    new = command.new(command.groups(), "Group already exists")
    checked, roles = command.roles_arg() if new is not None else (False, None)
    if new is not None and checked:
        command.state.groups[new[0]] = Group(*new, roles=roles or {})
        command.ok(change=f"groupname={new[0]}")


def delete_group(command: Command) -> None:
    group = command.one(command.groups())
    if group is None:
        return
    if group.name == command.state.anonymous_group:
        command.fail("Deleting the anonymous group is forbidden")
        return
    command.state.delete_group(group.name)
    command.ok(change=f"groupname={group.name}")


def modify_group(command: Command) -> None:
    found = command.modification(command.groups(), "clients", "username",
                                 command.state.clients)
    if found is None:
        return
    group, roles, clients = found
    if clients is not None:
        group.clients = clients
    command.modify(group, roles)
    command.ok(change=f"groupname={group.name}")


def get_group(command: Command) -> None:
    group = command.one(command.groups())
    if group is not None:
        command.ok({"group": group_document(group, stored=False)})


def list_groups(command: Command) -> None:
    command.listing("groups", command.state.sorted_groups(), lambda group, verbose: (
        group_document(group, stored=False) if verbose else group.name))


def set_anonymous_group(command: Command) -> None:
    group = command.one(command.groups())
    if group is not None:
        command.state.anonymous_group = group.name
        command.ok(change=f"groupname={group.name}")


def get_anonymous_group(command: Command) -> None:
    command.ok({"group": {"groupname": command.state.anonymous_group or ""}})


HANDLERS: dict[str, Handler] = {
    "createGroup": create_group,
    "deleteGroup": delete_group,
    "modifyGroup": modify_group,
    "getGroup": get_group,
    "listGroups": list_groups,
    "setAnonymousGroup": set_anonymous_group,
    "getAnonymousGroup": get_anonymous_group,
}
