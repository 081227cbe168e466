"""Mosquitto's dynamic-security plugin, implemented by Culex on the same JSON file.

- `model`: clients, groups, roles and their ACLs, the default access, the anonymous group;
- `store`: the file (Mosquitto's format): read with errors naming the entry, written
  atomically;
- `rules`: the access rules the core asks (`AccessRules`), following every change at the next
  check;
- `commands`, `clients`, `groups`, `roles`: the `$CONTROL/dynamic-security/v1` JSON commands,
  with Mosquitto's replies;
- `service`: the API the core hands requests to (`ControlApi`), the authenticator, and what a
  change does with worker processes.
"""
