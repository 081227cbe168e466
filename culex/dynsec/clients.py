"""The client commands: createClient, deleteClient, enableClient, disableClient, setClientId,
setClientPassword, modifyClient, addClientRole, removeClientRole, getClient, listClients.

A client whose identity changes or goes (deleted, disabled, a new password or client id) is
disconnected, as Mosquitto does; its roles and groups changing disconnects nobody, since every
check follows them at once (Mosquitto disconnects such clients too, so that they subscribe
again under the new rules).
"""

from __future__ import annotations

from .model import Client
from .request import Command, Handler
from .store import client_document, field, is_text


def _clientid(command: Command, label: str) -> tuple[bool, str | None]:
    """An optional "clientid" ("" or absent: none): (checked, the client id); `checked` is
    False after answering an error."""
    present, clientid = command.text_arg("clientid", label)
    if present and clientid is None:
        return False, None
    if clientid is not None and not is_text(clientid):
        command.fail("Client ID not valid UTF-8")
        return False, None
    return True, clientid or None


def create_client(command: Command) -> None:
    username = command.name_arg("username", "Username")
    if username is None:
        return
    present, password = command.text_arg("password")
    if present and password is None:
        return
    checked, clientid = _clientid(command, "client id")
    texts = command.texts() if checked else None
    if texts is None:
        return
    if username in command.state.clients:
        command.fail("Client already exists")
        return
    checked, roles = command.roles_arg()
    if not checked:
        return
    memberships: dict[str, int] = {}
    groups = field(command.obj, "groups")
    for item in groups if isinstance(groups, list) else []:
        name = field(item, "groupname") if isinstance(item, dict) else None
        if isinstance(name, str):  # anything else is skipped, as Mosquitto skips it
            if name not in command.state.groups:
                command.fail("Group not found")
                return
            memberships[name] = command.priority(item)
    client = Client(username, clientid, *texts, roles=roles or {})
    if password is not None:
        client.password = command.request.hashed(password)
    command.state.clients[username] = client
    for name, priority in memberships.items():
        command.state.groups[name].clients[username] = priority
    command.ok(change=f"username={username} password="
               f"{'*****' if password is not None else 'none'}")


def delete_client(command: Command) -> None:
    client = command.one(command.clients())
    if client is not None:
        command.state.delete_client(client.username)
        command.kick(client.username)
        command.ok(change=f"username={client.username}")


def enable_client(command: Command) -> None:
    client = command.one(command.clients())
    if client is not None:
        client.disabled = False
        command.ok(change=f"username={client.username}")


def disable_client(command: Command) -> None:
    client = command.one(command.clients())
    if client is not None:
        client.disabled = True
        command.kick(client.username)
        command.ok(change=f"username={client.username}")


def set_client_id(command: Command) -> None:
    username = command.name_arg("username", "Username")
    if username is None:
        return
    checked, clientid = _clientid(command, "client ID")
    if not checked:
        return
    client = command.state.clients.get(username)
    if client is None:
        command.fail("Client not found")
        return
    client.clientid = clientid
    command.kick(username)
    command.ok(change=f"username={username} clientid={client.clientid}")


def set_client_password(command: Command) -> None:
    username = command.name_arg("username", "Username")
    if username is None:
        return
    password = field(command.obj, "password")
    if not isinstance(password, str):
        command.fail("Invalid/missing password")
        return
    if not password:
        command.fail("Empty password is not allowed")
        return
    client = command.state.clients.get(username)
    if client is None:
        command.fail("Client not found")
        return
    client.password = command.request.hashed(password)
    command.kick(username)
    command.ok(change=f"username={username} password=*****")


def modify_client(command: Command) -> None:
    found = command.modification(command.clients(), "groups", "groupname", command.state.groups)
    if found is None:
        return
    client, roles, memberships = found
    if memberships is not None:
        for group in command.state.groups.values():
            group.clients.pop(client.username, None)
        for name, priority in memberships.items():
            command.state.groups[name].clients[client.username] = priority
    password, clientid = field(command.obj, "password"), field(command.obj, "clientid")
    if isinstance(password, str) and password:  # an empty one is ignored, as in Mosquitto
        client.password = command.request.hashed(password)
        command.kick(client.username)
    if isinstance(clientid, str):
        client.clientid = clientid or None
        command.kick(client.username)
    command.modify(client, roles)
    command.ok(change=f"username={client.username}")


def get_client(command: Command) -> None:
    client = command.one(command.clients())
    if client is not None:
        command.ok({"client": client_document(command.state, client, stored=False)})


def list_clients(command: Command) -> None:
    state = command.state
    command.listing("clients", state.sorted_clients(), lambda client, verbose: (
        client_document(state, client, stored=False) if verbose else client.username))


HANDLERS: dict[str, Handler] = {
    "createClient": create_client,
    "deleteClient": delete_client,
    "enableClient": enable_client,
    "disableClient": disable_client,
    "setClientId": set_client_id,
    "setClientPassword": set_client_password,
    "modifyClient": modify_client,
    "getClient": get_client,
    "listClients": list_clients,
}
