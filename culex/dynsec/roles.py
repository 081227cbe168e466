"""The role commands: createRole, deleteRole, modifyRole, addRoleACL, removeRoleACL, getRole,
listRoles.

An ACL's topic must be a valid topic filter, wherever it comes from: Mosquitto checks it in
addRoleACL only, and takes anything in createRole and modifyRole; here a bad one is refused
everywhere ("Invalid ACL topic"), so that the file always reads back.
"""

from __future__ import annotations

from ..protocol.topics import filter_problem
from .model import ACL_TYPES, Acl, Role, canonical
from .request import Command, Handler
from .store import field, integer, is_text, role_document


def _acl_type(command: Command, value: object) -> str | None:
    if not isinstance(value, str):
        command.fail("Invalid/missing acltype")
        return None
    kind = canonical(value, ACL_TYPES)
    if kind is None:
        command.fail("Unknown acltype")
    return kind


def _acl_topic(command: Command, value: object) -> str | None:
    if not isinstance(value, str):
        command.fail("Invalid/missing topic")
        return None
    if not is_text(value):
        command.fail("Topic not valid UTF-8")
        return None
    if filter_problem(value) is not None:
        command.fail("Invalid ACL topic")
        return None
    return value


def _acls(command: Command, role: Role) -> bool:
    """Fill `role` with the "acls" of createRole or modifyRole; False after answering why
    one cannot be used."""
    value = field(command.obj, "acls")
    for item in value if isinstance(value, list) else []:
        if not isinstance(item, dict):
            command.fail("Invalid/missing acltype")
            return False
        kind = _acl_type(command, field(item, "acltype"))
        topic = _acl_topic(command, field(item, "topic")) if kind is not None else None
        if kind is None or topic is None:
            return False
        if role.find(kind, topic) is None:  # a repeated one is dropped, as in Mosquitto
            role.add(kind, _acl(item, topic))
    return True


def _acl(obj: dict[str, object], topic: str) -> Acl:
    """An ACL's "priority" (0 when absent) and "allow" (false when absent or not a bool)."""
    priority = integer(field(obj, "priority"))
    allow = field(obj, "allow")
    return Acl(topic, 0 if priority is None else priority, allow is True)


def create_role(command: Command) -> None:
    new = command.new(command.roles(), "Role already exists")
    if new is None:
        return
    role = Role(*new)
    if _acls(command, role):
        command.state.roles[role.name] = role
        command.ok(change=f"rolename={role.name}")


def delete_role(command: Command) -> None:
    role = command.one(command.roles())
    if role is not None:
        command.state.delete_role(role.name)
        command.ok(change=f"rolename={role.name}")


def modify_role(command: Command) -> None:
    role = command.one(command.roles("Role does not exist"))
    if role is None:
        return
    if isinstance(field(command.obj, "acls"), list):
        replaced = Role(role.name)
        if not _acls(command, replaced):
            return
        role.acls = replaced.acls
    command.modify_texts(role)
    command.ok(change=f"rolename={role.name}")


def _acl_args(command: Command) -> tuple[Role, str, str] | None:
    """addRoleACL's and removeRoleACL's role, ACL type and topic; None after answering why
    one cannot be used."""
    role = command.one(command.roles())
    kind = _acl_type(command, field(command.obj, "acltype")) if role is not None else None
    topic = _acl_topic(command, field(command.obj, "topic")) if kind is not None else None
    if role is None or kind is None or topic is None:
        return None
    return role, kind, topic


def add_role_acl(command: Command) -> None:
    found = _acl_args(command)
    if found is None:
        return
    role, kind, topic = found
    if role.find(kind, topic) is not None:
        command.fail("ACL with this topic already exists")
        return
    acl = _acl(command.obj, topic)
    role.add(kind, acl)
    command.ok(change=f"rolename={role.name} acltype={kind} topic={topic} "
               f"priority={acl.priority} allow={str(acl.allow).lower()}")


def remove_role_acl(command: Command) -> None:
    found = _acl_args(command)
    if found is None:
        return
    role, kind, topic = found
    acl = role.find(kind, topic)
    if acl is None:
        command.fail("ACL not found")
        return
    role.acls[kind].remove(acl)
    command.ok(change=f"rolename={role.name} acltype={kind} topic={topic}")


def get_role(command: Command) -> None:
    role = command.one(command.roles())
    if role is not None:
        command.ok({"role": role_document(role)})


def list_roles(command: Command) -> None:
    command.listing("roles", command.state.sorted_roles(), lambda role, verbose: (
        role_document(role) if verbose else role.name))


HANDLERS: dict[str, Handler] = {
    "createRole": create_role,
    "deleteRole": delete_role,
    "modifyRole": modify_role,
    "addRoleACL": add_role_acl,
    "removeRoleACL": remove_role_acl,
    "getRole": get_role,
    "listRoles": list_roles,
}
