"""The group commands: createGroup, deleteGroup, modifyGroup, addGroupClient,
removeGroupClient, addGroupRole, removeGroupRole, getGroup, listGroups, setAnonymousGroup,
getAnonymousGroup.

Membership and roles apply at the next check and disconnect nobody (see clients.py).
"""

from __future__ import annotations

from .model import Group
from .request import Command, Handler
from .store import group_document


def _group(command: Command) -> Group | None:
    """The group a command names ("groupname"), or None after answering why not."""
    name = command.name_arg("groupname", "Group name")
    if name is None:
        return None
    group = command.state.groups.get(name)
    if group is None:
        command.fail("Group not found")
    return group


def create_group(command: Command) -> None:
    name = command.name_arg("groupname", "Group name")
    texts = command.texts() if name is not None else None
    if name is None or texts is None:
        return
    if name in command.state.groups:
        command.fail("Group already exists")
        return
    checked, roles = command.roles_arg()
    if checked:
        command.state.groups[name] = Group(name, *texts, roles=roles or {})
        command.ok(change=f"groupname={name}")


def delete_group(command: Command) -> None:
    group = _group(command)
    if group is None:
        return
    if group.name == command.state.anonymous_group:
        command.fail("Deleting the anonymous group is forbidden")
        return
    command.state.delete_group(group.name)
    command.ok(change=f"groupname={group.name}")


def modify_group(command: Command) -> None:
    """Every change or none (Mosquitto 2.0.15 and later): all arguments are checked first."""
    group = _group(command)
    if group is None:
        return
    checked, roles = command.roles_arg()
    if not checked:
        return
    checked, clients = command.members_arg("clients", "username", command.state.clients)
    if not checked:
        return
    if clients is not None:
        group.clients = clients
    command.set_texts(group)
    if roles is not None:
        group.roles = roles
    command.ok(change=f"groupname={group.name}")


def _member(command: Command) -> tuple[str, Group] | None:
    """The "username" and "groupname" of addGroupClient and removeGroupClient, both existing;
    None after answering why not (the client is looked up first, as in Mosquitto)."""
    username = command.name_arg("username", "Username")
    groupname = command.name_arg("groupname", "Group name") if username is not None else None
    if username is None or groupname is None:
        return None
    group = command.state.groups.get(groupname)
    if username not in command.state.clients:
        command.fail("Client not found")
    elif group is None:
        command.fail("Group not found")
    else:
        return username, group
    return None


def add_group_client(command: Command) -> None:
    member = _member(command)
    if member is None:
        return
    username, group = member
    if username in group.clients:
        command.fail("Client is already in this group")
        return
    group.clients[username] = command.priority()
    command.ok(change=f"groupname={group.name} username={username} "
               f"priority={group.clients[username]}")


def remove_group_client(command: Command) -> None:
    member = _member(command)
    if member is not None:
        username, group = member
        group.clients.pop(username, None)
        command.ok(change=f"groupname={group.name} username={username}")


def _group_and_role(command: Command) -> tuple[Group, str] | None:
    groupname = command.name_arg("groupname", "Group name")
    rolename = command.name_arg("rolename", "Role name") if groupname is not None else None
    if groupname is None or rolename is None:
        return None
    group = command.state.groups.get(groupname)
    if group is None:
        command.fail("Group not found")
    elif rolename not in command.state.roles:
        command.fail("Role not found")
    else:
        return group, rolename
    return None


def add_group_role(command: Command) -> None:
    found = _group_and_role(command)
    if found is None:
        return
    group, rolename = found
    if rolename in group.roles:
        command.fail("Group is already in this role")
        return
    group.roles[rolename] = command.priority()
    command.ok(change=f"groupname={group.name} rolename={rolename} "
               f"priority={group.roles[rolename]}")


def remove_group_role(command: Command) -> None:
    found = _group_and_role(command)
    if found is not None:
        group, rolename = found
        group.roles.pop(rolename, None)
        command.ok(change=f"groupname={group.name} rolename={rolename}")


def get_group(command: Command) -> None:
    group = _group(command)
    if group is not None:
        command.ok({"group": group_document(group, stored=False)})


def list_groups(command: Command) -> None:
    command.listing("groups", command.state.sorted_groups(), lambda group, verbose: (
        group_document(group, stored=False) if verbose else group.name))


def set_anonymous_group(command: Command) -> None:
    group = _group(command)
    if group is not None:
        command.state.anonymous_group = group.name
        command.ok(change=f"groupname={group.name}")


def get_anonymous_group(command: Command) -> None:
    command.ok({"group": {"groupname": command.state.anonymous_group or ""}})


HANDLERS: dict[str, Handler] = {
    "createGroup": create_group,
    "deleteGroup": delete_group,
    "modifyGroup": modify_group,
    "addGroupClient": add_group_client,
    "removeGroupClient": remove_group_client,
    "addGroupRole": add_group_role,
    "removeGroupRole": remove_group_role,
    "getGroup": get_group,
    "listGroups": list_groups,
    "setAnonymousGroup": set_anonymous_group,
    "getAnonymousGroup": get_anonymous_group,
}
